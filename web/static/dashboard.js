// Operator dashboard (web/dashboard.py, templates/dashboard.html): polls /dashboard/status.json about once a
// second and updates the page in place -- rows by data-key, cells by data-field, the summary line, the live
// line and the leadership-change log.  The server renders the same page without JS; keep the two alike.
// No innerHTML: every value goes in as text.  Polling pauses while the tab is hidden and after a refusal
// (logged out, not an operator); when the cluster or the web app does not answer it says so and keeps trying.
(function () {
  "use strict";
  var POLL_MS = 1000;      // between the end of one poll and the start of the next
  var RETRY_MS = 2000;     // after a failed poll
  var TIMEOUT_MS = 8000;   // a poll that takes longer than this is given up
  var FIELDS = ["node", "role", "term", "leader", "commit", "applied", "log", "health", "action"];
  var LABELS = ["Node", "Role", "Term", "Leader", "Commit", "Applied", "Log", "Health", ""];
  var DASH = "\u2014";

  // ------------------------------------------------------------------ formatting (pure: tested under node)
  function dash(v) { return v === null || v === undefined ? DASH : String(v); }
  function who(id) { return id === null || id === undefined ? DASH : "node " + id; }
  function nodeName(n) { return n.id === null || n.id === undefined ? "Node ?" : "Node " + n.id; }
  function leaderText(n) {
    if (!n.up) { return DASH; }
    return n.leader_id ? who(n.leader_id) : "none";
  }
  function healthLabel(h) { return h === "down" ? "down" : (h === "ok" ? "healthy" : "unhealthy"); }
  function healthDetail(n) {
    if (n.health === "ok") { return ""; }
    return n.health_text + (n.detail ? ": " + n.detail : "");
  }
  function changeText(c) { return who(c.old) + " \u2192 " + (c["new"] === null ? "no leader" : who(c["new"])); }
  function rowClass(n) { return "node-row" + (n.is_leader ? " is-leader" : "") + " is-" + n.health; }
  function actionSig(n) { return n.can_lead ? "lead:" + n.id : "none"; }
  // What a cell shows, as one string: the cell is rebuilt only when this changes (keeps focus and selection).
  function cellSig(field, n) {
    switch (field) {
      case "node": return [nodeName(n), n.is_leader, n.kind, n.address].join("|");
      case "role": return n.role;
      case "term": return dash(n.term);
      case "leader": return leaderText(n);
      case "commit": return dash(n.commit);
      case "applied": return dash(n.applied);
      case "log": return n.log_text;
      case "health": return n.health + "|" + healthDetail(n);
      case "action": return actionSig(n);
    }
    return "";
  }

  // ------------------------------------------------------------------------------------------ the page
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function start() {
    var root = document.getElementById("dashboard");
    if (!root) { return; }
    var statusUrl = root.getAttribute("data-status-url");
    var transferUrl = root.getAttribute("data-transfer-url");
    var csrf = root.getAttribute("data-csrf");
    var tbody = document.getElementById("nodes");
    var live = document.getElementById("live");
    var summary = document.getElementById("summary");
    var changes = document.getElementById("changes");
    var noChanges = document.getElementById("no-changes");
    var announce = el("p", "sr-only");
    announce.setAttribute("role", "status");
    announce.setAttribute("aria-live", "polite");
    root.appendChild(announce);

    var timer = null, inFlight = false, stopped = false, submitting = false, failing = false;
    var lastAt = "";
    var lastSeq = 0;
    var items = changes.querySelectorAll("li[data-seq]");
    for (var i = 0; i < items.length; i++) {
      lastSeq = Math.max(lastSeq, parseInt(items[i].getAttribute("data-seq"), 10) || 0);
    }
    // The server-rendered action cells are already right: record what they show so the first poll keeps them.
    for (var r = 0; r < tbody.rows.length; r++) {
      var cell = tbody.rows[r].querySelector('[data-field="action"]');
      var to = cell && cell.querySelector('input[name="to"]');
      if (cell) { cell.setAttribute("data-sig", to ? "lead:" + to.value : "none"); }
    }

    function transferForm(to, label, cls) {
      var f = el("form", "transfer-form");
      f.method = "post";
      f.action = transferUrl;
      var t = el("input");
      t.type = "hidden"; t.name = "csrf_token"; t.value = csrf;
      var n = el("input");
      n.type = "hidden"; n.name = "to"; n.value = String(to);
      var b = el("button", "button " + cls, label);
      b.type = "submit";
      f.appendChild(t); f.appendChild(n); f.appendChild(b);
      return f;
    }

    function fill(td, field, n) {
      td.textContent = "";
      switch (field) {
        case "node":
          td.appendChild(el("strong", "", nodeName(n)));
          if (n.is_leader) { td.appendChild(document.createTextNode(" ")); td.appendChild(el("span", "tag tag-leader", "leader")); }
          if (n.kind === "learner") { td.appendChild(document.createTextNode(" ")); td.appendChild(el("span", "tag", "learner")); }
          td.appendChild(document.createTextNode(" "));
          td.appendChild(el("span", "addr", n.address));
          break;
        case "health":
          td.appendChild(el("span", "health health-" + n.health, healthLabel(n.health)));
          if (n.health !== "ok") { td.appendChild(document.createTextNode(" ")); td.appendChild(el("span", "detail", healthDetail(n))); }
          break;
        case "action":
          if (n.can_lead) { td.appendChild(transferForm(n.id, "Make leader", "small")); }
          break;
        default:
          td.textContent = cellSig(field, n);
      }
    }

    function rowFor(key) {
      for (var i = 0; i < tbody.rows.length; i++) {
        if (tbody.rows[i].getAttribute("data-key") === key) { return tbody.rows[i]; }
      }
      var tr = el("tr");
      tr.setAttribute("data-key", key);
      for (var j = 0; j < FIELDS.length; j++) {
        var td = el("td", FIELDS[j] === "action" ? "action" : "");
        td.setAttribute("data-field", FIELDS[j]);
        if (LABELS[j]) { td.setAttribute("data-label", LABELS[j]); }
        tr.appendChild(td);
      }
      return tr;
    }

    function renderNodes(nodes) {
      var keep = {};
      for (var i = 0; i < nodes.length; i++) {
        var n = nodes[i];
        keep[n.key] = true;
        var tr = rowFor(n.key);
        if (tbody.rows[i] !== tr) { tbody.insertBefore(tr, tbody.rows[i] || null); }
        var cls = rowClass(n);
        if (tr.className !== cls) { tr.className = cls; }
        for (var j = 0; j < FIELDS.length; j++) {
          var td = tr.querySelector('[data-field="' + FIELDS[j] + '"]');
          var sig = cellSig(FIELDS[j], n);
          if (td && td.getAttribute("data-sig") !== sig) {
            fill(td, FIELDS[j], n);
            td.setAttribute("data-sig", sig);
          }
        }
      }
      for (var k = tbody.rows.length - 1; k >= 0; k--) {
        if (!keep[tbody.rows[k].getAttribute("data-key")]) { tbody.deleteRow(k); }
      }
    }

    function renderChanges(list) {
      if (!list) { return; }
      var newest = list.length ? list[0].seq : 0;
      var first = changes.querySelector("li[data-seq]");
      var shown = first ? parseInt(first.getAttribute("data-seq"), 10) : 0;
      if (newest === shown && changes.children.length === list.length) { return; }
      changes.textContent = "";
      for (var i = 0; i < list.length; i++) {
        var c = list[i];
        var li = el("li", c.seq > lastSeq && lastSeq > 0 ? "fresh" : "");
        li.setAttribute("data-seq", String(c.seq));
        li.appendChild(el("time", "", c.at + " IST"));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", "change", changeText(c)));
        if (c.term !== null && c.term !== undefined) {
          li.appendChild(document.createTextNode(" "));
          li.appendChild(el("span", "term", "term " + c.term));
        }
        changes.appendChild(li);
      }
      noChanges.hidden = list.length > 0;
      if (newest > lastSeq) {
        if (lastSeq > 0) {
          announce.textContent = "Leadership change: " + changeText(list[0]) +
            (list[0].term !== null ? ", term " + list[0].term : "") + ".";
        }
        lastSeq = newest;
      }
    }

    function setLive(text, bad, link) {
      live.textContent = text;
      live.className = "live " + (bad ? "live-bad" : "live-ok");
      if (link) {
        live.appendChild(document.createTextNode(" "));
        var a = el("a", "", link.text);
        a.href = link.href;
        live.appendChild(a);
      }
      if (bad !== failing) {
        failing = bad;
        announce.textContent = bad ? text : "The cluster is answering again.";
      }
    }

    function staleNote(show) {
      var note = document.getElementById("stale-note");
      if (!show) {
        root.classList.remove("is-stale");
        if (note) { note.parentNode.removeChild(note); }
        return;
      }
      if (tbody.rows.length) { root.classList.add("is-stale"); }
      if (!lastAt) { return; }
      if (!note) {
        note = el("p", "hint");
        note.id = "stale-note";
        summary.parentNode.insertBefore(note, summary);
      }
      note.textContent = "The table shows the last status seen, at " + lastAt + " IST.";
    }

    function render(data) {
      renderNodes(data.nodes || []);
      if (data.summary) {
        summary.textContent = data.summary.text;
        summary.className = "summary-line health-" + data.summary.health;
      }
      renderChanges(data.changes);
      lastAt = data.at;
      setLive("Updated " + data.at + " IST", false);
      staleNote(false);
    }

    function fail(text) {
      setLive(text, true);
      staleNote(true);
    }

    function stop(text, link) {
      stopped = true;
      setLive(text, true, link);
      staleNote(true);
    }

    function schedule(ms) {
      if (timer !== null) { window.clearTimeout(timer); }
      timer = stopped ? null : window.setTimeout(poll, ms);
    }

    function poll() {
      timer = null;
      if (stopped || inFlight || submitting) { return; }
      if (document.hidden) { return; }  // visibilitychange starts it again
      inFlight = true;
      var ctrl = typeof AbortController === "function" ? new AbortController() : null;
      var guard = window.setTimeout(function () { if (ctrl) { ctrl.abort(); } }, TIMEOUT_MS);
      var next = POLL_MS;
      fetch(statusUrl, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" },
                         signal: ctrl ? ctrl.signal : undefined })
        .then(function (resp) {
          var type = resp.headers.get("Content-Type") || "";
          if (resp.redirected || type.indexOf("application/json") < 0) {
            if (resp.redirected && resp.url.indexOf("/login") >= 0) {
              stop("Your session has ended.", { text: "Log in again", href: resp.url });
            } else {
              next = RETRY_MS;
              fail("The web app gave an unexpected answer (HTTP " + resp.status + "); retrying\u2026");
            }
            return null;
          }
          return resp.json().then(function (data) {
            if (resp.ok && data.ok) {
              render(data);
            } else if (resp.status === 403) {
              stop(data.error || "This account cannot use the dashboard.");
            } else {
              next = RETRY_MS;
              fail(data.error || "The cluster status could not be read; retrying\u2026");
              renderChanges(data.changes);
            }
          });
        })
        .catch(function () {
          next = RETRY_MS;
          fail("The web app is not answering (it may be restarting); retrying\u2026");
        })
        .then(function () {
          window.clearTimeout(guard);
          inFlight = false;
          schedule(next);
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && !inFlight) { schedule(0); }
    });
    // A transfer takes a few seconds: say so, and do not let a second click send it again.
    document.addEventListener("submit", function (e) {
      var f = e.target;
      if (!f.classList || !f.classList.contains("transfer-form")) { return; }
      if (submitting) { e.preventDefault(); return; }
      submitting = true;
      var b = f.querySelector("button");
      if (b) { b.disabled = true; b.textContent = "Handing over\u2026"; }
    });
    window.addEventListener("pageshow", function (e) {  // back from the next page (bfcache): start afresh
      if (e.persisted) { window.location.reload(); }
    });
    schedule(POLL_MS);
  }

  var api = { dash: dash, who: who, nodeName: nodeName, leaderText: leaderText, healthLabel: healthLabel,
              healthDetail: healthDetail, changeText: changeText, rowClass: rowClass, cellSig: cellSig };
  if (typeof module === "object" && module.exports) { module.exports = api; }
  if (typeof document !== "undefined") {
    if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
    else { start(); }
  }
}());
