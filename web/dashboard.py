"""The operator dashboard: a live table of the cluster's nodes, a leadership-change log, leadership transfer.

    GET  /dashboard              the page, rendered server-side (works without JS); static/dashboard.js then
                                 polls /dashboard/status.json about once a second and updates it in place
    GET  /dashboard/status.json  a small JSON view of the cluster (no secrets: no pids, tokens, members)
    POST /dashboard/transfer     `to` = node id (0: any up-to-date voter); the outcome is flashed

Only a logged-in user whose session role is ADMIN may use it: logged-out users are sent to the login page,
customers get a 403 sentence (JSON: a 403 JSON error).  The transfer additionally asks the cluster who the
session belongs to (WhoAmI) before acting, because a signed cookie keeps saying ADMIN for 12 h whatever happens
to the account; the node then checks the session token it is given as well (gateway/peer_auth.py).

The status comes from `RailraftClient.status()` (every node asked at once; a node that does not answer is a
"down" entry, so a dead node shows as down).  Fresh results are shared for STATUS_TTL_S between concurrent
pollers (several tabs cost one round of Status RPCs), and each fresh result feeds a small in-memory ring of
leadership changes (old -> new leader, term), so a page load shows recent changes.  That log only sees what the
polls see: changes that happen while nobody watches, or between two polls, are not in it (a leader re-elected
at a higher term between polls is, as a change of term).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio
from quart import flash, jsonify, redirect, render_template, request, session, url_for

from gateway import admin_client
from gateway.client import BookingError, RailraftError, Unauthenticated, Unavailable
from web.app import IST, INTERNAL_SENTENCE, WebContext, humanize_error, is_admin_role, session_is_admin

log = logging.getLogger("railraft.web.dashboard")

STATUS_TIMEOUT_S = 1.5  # per node: a frozen node must not hold up the once-a-second poll for long
STATUS_TTL_S = 0.5  # a fresh status is shared by the polls arriving within this long
CHANGES_KEPT = 50  # leadership changes remembered in memory
CHANGES_SHOWN = 20  # ... of which the page and the JSON show the newest
LAG_WARN = 500  # entries: applied this far behind commit, or commit this far behind the leader's, is unhealthy
DETAIL_MAX = 120  # characters of a down node's error shown

FORBIDDEN_SENTENCE = "The cluster dashboard is for operators; your account cannot use it."
LOGIN_SENTENCE = "Please log in as an operator first."
UNREACHABLE_SENTENCE = "The cluster cannot be reached right now: no node answered the status request."
STATUS_FAILED_SENTENCE = "The cluster status could not be read."


@dataclass
class DashboardState:
    """What the dashboard remembers between requests (one per app, in memory)."""

    changes: deque = field(default_factory=lambda: deque(maxlen=CHANGES_KEPT))  # newest last
    seq: int = 0  # numbers the changes, so the page can tell new ones from old ones
    last_known: tuple[int, int | None] | None = None  # (leader id, its term) last seen
    current_leader: int | None = None  # the leader in the latest status (None: none right now)
    ids: dict[str, int] = field(default_factory=dict)  # queried address -> node id, to name down nodes
    view: dict[str, Any] | None = None  # the latest view of the cluster
    fetched: float = float("-inf")  # trio.current_time() of the latest fetch
    lock: trio.Lock | None = None

    def record(self, old: int | None, new: int | None, term: int | None, now_ms: int) -> None:
        self.seq += 1
        self.changes.append({"seq": self.seq, "at_ms": now_ms, "at": _clock(now_ms), "old": old, "new": new,
                             "term": term})

    def observe(self, leader: int | None, term: int | None, max_term: int | None, now_ms: int) -> None:
        """Log a leadership change if the status shows one: a new leader or term, or the leader gone."""
        if leader is not None:
            if self.last_known != (leader, term):
                self.record(self.last_known[0] if self.last_known else None, leader, term, now_ms)
                self.last_known = (leader, term)
        elif self.current_leader is not None:
            self.record(self.current_leader, None, max_term, now_ms)
        self.current_leader = leader

    def recent(self) -> list[dict[str, Any]]:
        return list(reversed(self.changes))[:CHANGES_SHOWN]


# ============================================================================================ views


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, IST).strftime("%H:%M:%S")


def human_bytes(n: int | None) -> str:
    """Log size for the table ("—" when unknown)."""
    return admin_client.human_bytes(n, unknown="—")


def _num(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _short(text: Any) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= DETAIL_MAX else s[: DETAIL_MAX - 1] + "…"


def node_view(n: dict[str, Any], leader: int | None, leader_commit: int | None, leader_term: int | None,
              kinds: dict[int, str], ids: dict[str, int]) -> dict[str, Any]:
    """One row of the table, from a status dict (gateway.admin_client.status_to_dict or down_entry)."""
    up = bool(n.get("up"))
    key = str(n.get("queried") or n.get("address") or "")
    nid = _num(n.get("id")) if up else ids.get(key)
    term, commit, applied = _num(n.get("term")), _num(n.get("commit_index")), _num(n.get("applied_index"))
    last, snap = _num(n.get("last_log_index")), _num(n.get("snapshot_index"))
    leader_id = _num(n.get("leader_id")) or None
    entries = max(0, last - (snap or 0)) if last is not None else None
    v: dict[str, Any] = {
        "key": key, "id": nid, "address": str(n.get("address") or key), "up": up,
        "role": str(n.get("role") or "unknown") if up else "down",
        "kind": kinds.get(nid) if nid is not None else None,
        "term": term, "leader_id": leader_id, "commit": commit, "applied": applied, "last_index": last,
        "log_entries": entries, "log_bytes": _num(n.get("log_bytes")),
        "is_leader": up and nid is not None and nid == leader,
    }
    v["log_text"] = "—" if entries is None else \
        f"{entries} {'entry' if entries == 1 else 'entries'} · {human_bytes(v['log_bytes'])}"
    problems: list[str] = []
    if not up:
        health, detail = "down", _short(n.get("error")) or "no answer"
        problems.append("not answering")
    else:
        detail = ""
        if v["role"] in ("candidate", "pre_candidate"):
            problems.append("campaigning for leadership")
        elif not leader_id:
            problems.append("no leader known")
        elif leader is None:
            problems.append(f"follows node {leader_id}, which is not leading")
        elif leader_id != leader:
            problems.append(f"follows node {leader_id}, not node {leader}")
        if leader_term is not None and term is not None and term < leader_term:
            problems.append(f"behind on term ({term} < {leader_term})")
        if commit is not None and applied is not None and commit - applied > LAG_WARN:
            problems.append(f"applied {commit - applied} entries behind commit")
        if leader_commit is not None and commit is not None and leader_commit - commit > LAG_WARN:
            problems.append(f"commit {leader_commit - commit} entries behind the leader")
        health = "warn" if problems else "ok"
    v["health"] = health
    v["health_text"] = "; ".join(problems) if problems else "healthy"
    v["detail"] = detail
    v["can_lead"] = bool(up and nid is not None and not v["is_leader"] and leader is not None
                         and v["kind"] != "learner")
    return v


def cluster_view(st: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    """The whole dashboard view (table rows and a summary) of `RailraftClient.status()`'s answer."""
    nodes = [n for n in (st.get("nodes") or []) if isinstance(n, dict)]
    leader = _num(st.get("leader"))
    for n in nodes:  # remember ids, so a node that goes down keeps its name
        if n.get("up") and _num(n.get("id")) is not None:
            ids[str(n.get("queried") or n.get("address") or "")] = int(n["id"])
    lead = next((n for n in nodes if n.get("up") and _num(n.get("id")) == leader), None)
    terms = [t for t in (_num(n.get("term")) for n in nodes if n.get("up")) if t is not None]
    leader_term = _num(lead.get("term")) if lead else None
    # Membership as the leader sees it (else as the up node with the highest term sees it).
    witness = lead or max((n for n in nodes if n.get("up")), key=lambda n: _num(n.get("term")) or 0, default=None)
    kinds: dict[int, str] = {}
    for m in (witness or {}).get("members") or []:
        if isinstance(m, dict) and _num(m.get("id")) is not None:
            kinds[int(m["id"])] = str(m.get("kind") or "")
    rows = [node_view(n, leader, _num(lead.get("commit_index")) if lead else None, leader_term, kinds, ids)
            for n in nodes]
    up = sum(1 for r in rows if r["up"])
    voters = [i for i, k in kinds.items() if k == "voter"]
    summary: dict[str, Any] = {"leader": leader, "term": leader_term if leader_term is not None else
                               (max(terms) if terms else None), "up": up, "total": len(rows)}
    if voters:
        up_ids = {r["id"] for r in rows if r["up"]}
        summary["voters"] = len(voters)
        summary["voters_up"] = sum(1 for i in voters if i in up_ids)
        summary["quorum"] = summary["voters_up"] > len(voters) // 2
    answering = f"{up} of {len(rows)} {'node' if len(rows) == 1 else 'nodes'} answering."
    if leader is None:
        summary["text"] = f"No leader right now: bookings wait until one is elected. {answering}"
        summary["health"] = "down"
    else:
        summary["text"] = f"Node {leader} leads in term {leader_term}. {answering}"
        summary["health"] = "ok" if all(r["health"] == "ok" for r in rows) else "warn"
    if voters and not summary["quorum"]:
        summary["text"] += f" Only {summary['voters_up']} of {len(voters)} voters are up: no majority."
        summary["health"] = "down"
    return {"nodes": rows, "summary": summary}


# ============================================================================================ routes


def register(app: Any, web: WebContext) -> None:
    state = DashboardState()
    app.extensions["railraft_dashboard"] = state

    def access() -> str:
        if not session.get("token"):
            return "login"
        if not session_is_admin():
            return "forbidden"
        return "ok"

    def operators_only(as_json: bool) -> Callable[[Callable], Callable]:
        def deco(view: Callable) -> Callable:
            @functools.wraps(view)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                verdict = access()
                if verdict == "login":
                    if not as_json:  # no flash for a poll: unread flashes would pile up in the cookie
                        await flash(LOGIN_SENTENCE, "info")
                    return redirect(url_for("login", next=url_for("dashboard")))
                if verdict == "forbidden":
                    if as_json:
                        return _no_store(jsonify(ok=False, error=FORBIDDEN_SENTENCE)), 403
                    return await web.error_page(FORBIDDEN_SENTENCE, 403)
                return await view(*args, **kwargs)

            return wrapper

        return deco

    async def fetch() -> tuple[dict[str, Any] | None, str]:
        """The current view (shared for STATUS_TTL_S between concurrent polls), or None and a sentence."""
        if state.lock is None:
            state.lock = trio.Lock()
        async with state.lock:
            if state.view is not None and trio.current_time() - state.fetched < STATUS_TTL_S:
                return state.view, ""
            try:
                st = await web.call("status", timeout=STATUS_TIMEOUT_S)
            except Unavailable:
                return None, UNREACHABLE_SENTENCE
            except BookingError as exc:
                return None, f"{STATUS_FAILED_SENTENCE} {humanize_error(exc)}"
            except Exception:  # noqa: BLE001 - the page must stay up whatever the client does
                log.exception("dashboard: cluster status failed")
                return None, STATUS_FAILED_SENTENCE
            now_ms = int(time.time() * 1000)
            view = cluster_view(st if isinstance(st, dict) else {}, state.ids)
            max_term = max((r["term"] for r in view["nodes"] if r["term"] is not None), default=None)
            state.observe(view["summary"]["leader"], view["summary"]["term"], max_term, now_ms)
            view["at_ms"], view["at"] = now_ms, _clock(now_ms)
            state.view, state.fetched = view, trio.current_time()
            return view, ""

    @app.get("/dashboard", endpoint="dashboard")
    @operators_only(as_json=False)
    async def dashboard_page() -> Any:
        view, error = await fetch()
        stale = state.view if view is None else None  # the last good view, shown as stale
        html = await render_template(
            "dashboard.html", view=view or stale, stale=stale is not None, error=error, changes=state.recent(),
            status_url=url_for("dashboard_status"), transfer_url=url_for("dashboard_transfer"))
        return html, (503 if error else 200), {"Cache-Control": "no-store"}

    @app.get("/dashboard/status.json", endpoint="dashboard_status")
    @operators_only(as_json=True)
    async def dashboard_status() -> Any:
        view, error = await fetch()
        if view is None:
            return _no_store(jsonify(ok=False, error=error + " Retrying…", changes=state.recent())), 503
        return _no_store(jsonify(ok=True, nodes=view["nodes"], summary=view["summary"], at_ms=view["at_ms"],
                                 at=view["at"], changes=state.recent()))

    @app.post("/dashboard/transfer", endpoint="dashboard_transfer")
    @operators_only(as_json=False)
    async def dashboard_transfer() -> Any:
        form = await request.form
        raw = str(form.get("to", "")).strip()
        to = _num(raw) if raw.isdigit() else None
        if to is None or to >= 2 ** 64:
            await flash("Choose the node to hand leadership to.", "error")
            return redirect(url_for("dashboard"))
        try:
            # The cookie's role may be hours old: ask the cluster whose session this is before acting.
            user = await web.call("whoami", token=web.token())
            if not is_admin_role(getattr(user, "role", "")):
                session["role"] = str(getattr(user, "role", ""))
                return await web.error_page(FORBIDDEN_SENTENCE, 403)
            res = await web.call("transfer_leader", to, token=web.token())  # the node checks it too
        except Unauthenticated:
            raise  # the app's handler ends the session and sends the user to the login page
        except RailraftError as exc:
            log.warning("dashboard: %s asked to hand leadership to %s: %s", session.get("username"), to or "any", exc)
            await flash(humanize_error(exc), "error")
            return redirect(url_for("dashboard"))
        except Exception:  # noqa: BLE001 - a sentence, never a traceback
            log.exception("dashboard: transfer to %s failed", to)
            await flash(INTERNAL_SENTENCE, "error")
            return redirect(url_for("dashboard"))
        ok, message = bool(getattr(res, "ok", False)), _sentence(getattr(res, "message", ""))
        log.info("dashboard: %s asked to hand leadership to %s: ok=%s %s", session.get("username"), to or "any",
                 ok, message)
        if ok:
            state.fetched = float("-inf")  # the next poll asks the cluster afresh
            await flash(message or "Leadership was handed over.", "success")
        else:
            await flash(message or "The cluster refused to hand leadership over.", "error")
        return redirect(url_for("dashboard"))


def _sentence(text: Any) -> str:
    s = str(text or "").strip()
    if not s:
        return ""
    s = s[0].upper() + s[1:]
    return s if s.endswith((".", "!", "?")) else s + "."


def _no_store(resp: Any) -> Any:
    resp.headers["Cache-Control"] = "no-store"
    return resp
