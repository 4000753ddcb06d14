"""web.dashboard: the operator dashboard, rendered by Quart's test client against a fake cluster client.

ClusterFake extends test_web_app's FakeRailraft with `status` (the same dicts RailraftClient.status returns,
built with gateway.admin_client.status_to_dict / down_entry from real NodeStatus messages), `whoami` and
`transfer_leader`; tests change its leader, terms, down nodes and answers between requests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status

from gateway.admin_client import down_entry, leader_of, status_to_dict
from gateway.client import FailedPrecondition, Unavailable
from proto.gen.railraft.node.v1 import AdminResponse, Member, NodeStatus
from proto.gen.railraft.v1 import Session, UserInfo
from tests.test_web_app import FakeRailraft, csrf_of, text
from web import dashboard
from web.app import create_app

pytestmark = pytest.mark.trio

ADDRS = ["127.0.0.1:57051", "127.0.0.1:57052", "127.0.0.1:57053"]
JS = Path(__file__).resolve().parent.parent / "web" / "static" / "dashboard.js"


class ClusterFake(FakeRailraft):
    """FakeRailraft plus a three-node cluster whose state the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.users["root"] = "operator pw"
        self.roles = {"root": "ADMIN", "asha": "CUSTOMER"}
        self.leader: int | None = 1
        self.term = 3
        self.down: set[int] = set()  # node ids that do not answer
        self.commit = {1: 1201, 2: 1202, 3: 1203}
        self.applied = {1: 1191, 2: 1192, 3: 1193}
        self.transfer_answer = AdminResponse(ok=True, message="node 2 is now the leader", leader_id=2)

    async def login(self, username: str, password: str, **k: Any) -> Session:
        self._rec("login", (username, password), k)
        if self.users.get(username) != password:
            from gateway.client import Unauthenticated

            raise Unauthenticated(Status.UNAUTHENTICATED, "wrong username or password")
        return Session(token=f"tok-{username}",
                       user=UserInfo(id=1, username=username, role=self.roles.get(username, "CUSTOMER")))

    async def whoami(self, **k: Any) -> UserInfo:
        self._rec("whoami", (), k)
        self._check(k.get("token"))
        name = k["token"][4:]
        return UserInfo(id=1, username=name, role=self.roles.get(name, "CUSTOMER"))

    def node(self, i: int) -> dict[str, Any]:
        addr = ADDRS[i - 1]
        if i in self.down:
            return down_entry(addr, "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5705x)")
        st = NodeStatus(
            id=i, address=addr, pid=40000 + i, role="leader" if i == self.leader else "follower", term=self.term,
            leader_id=self.leader or 0, commit_index=self.commit[i], applied_index=self.applied[i],
            last_log_index=self.commit[i] + 4, snapshot_index=200, log_bytes=1536 * 1024 * i,
            cluster_id="cluster-7f3a", uptime_s=12.5,
            members=[Member(id=j, host="127.0.0.1", port=57050 + j, kind="voter") for j in (1, 2, 3)])
        d = status_to_dict(st)
        d["queried"] = addr
        return d

    async def status(self, **k: Any) -> dict[str, Any]:
        self._rec("status", (), k)
        nodes = [self.node(i) for i in (1, 2, 3)]
        return {"nodes": nodes, "leader": leader_of(nodes)}

    async def transfer_leader(self, to: int = 0, **k: Any) -> AdminResponse:
        self._rec("transfer_leader", (to,), k)
        return self.transfer_answer

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)


@pytest.fixture
def fake() -> ClusterFake:
    return ClusterFake()


@pytest.fixture
def app(fake: ClusterFake) -> Any:
    return create_app(["127.0.0.1:1"], secret_key="test-secret", client=fake)


def expire(app: Any) -> None:
    """Forget the shared status, so the next request asks the fake again (instead of waiting STATUS_TTL_S)."""
    app.extensions["railraft_dashboard"].fetched = float("-inf")


async def login_as(app: Any, username: str, password: str) -> Any:
    client = app.test_client()
    page = await text(await client.get("/login"))
    resp = await client.post("/login", form={"csrf_token": csrf_of(page), "username": username,
                                             "password": password})
    assert resp.status_code == 302
    return client


async def operator(app: Any) -> Any:
    return await login_as(app, "root", "operator pw")


async def customer(app: Any) -> Any:
    return await login_as(app, "asha", "correct horse")


def rows(html: str) -> dict[str, str]:
    """data-key -> the row's text, tags stripped and spaces squeezed."""
    out = {}
    for key, body in re.findall(r'<tr class="node-row[^"]*" data-key="([^"]+)">(.*?)</tr>', html, re.S):
        out[key] = " ".join(re.sub(r"<[^>]+>", " ", body).split())
    return out


def cells(html: str, key: str) -> dict[str, str]:
    body = re.search(r'data-key="' + re.escape(key) + r'">(.*?)</tr>', html, re.S).group(1)
    return {f: " ".join(re.sub(r"<[^>]+>", " ", v).split())
            for f, v in re.findall(r'<td data-field="(\w+)"[^>]*>(.*?)</td>', body, re.S)}


async def status_json(client: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/dashboard/status.json")
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp.status_code, json.loads(await text(resp))


# ------------------------------------------------------------------------------------------ the page


async def test_operator_sees_every_node(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    resp = await client.get("/dashboard")
    assert resp.status_code == 200
    html = await text(resp)
    assert set(rows(html)) == set(ADDRS)
    for i, addr in enumerate(ADDRS, start=1):
        c = cells(html, addr)
        assert c["node"].startswith(f"Node {i}") and addr in c["node"]
        assert c["role"] == ("leader" if i == 1 else "follower")
        assert c["term"] == "3"
        assert c["leader"] == "node 1"
        assert c["commit"] == str(1200 + i) and c["applied"] == str(1190 + i)
        assert c["log"] == f"{1200 + i + 4 - 200} entries · {1.5 * i:.1f} MiB"
        assert c["health"] == "healthy"
    leader_row = re.search(r'<tr class="([^"]*)" data-key="127.0.0.1:57051">', html).group(1)
    assert "is-leader" in leader_row
    assert "Node 1 leads in term 3. 3 of 3 nodes answering." in html
    assert "/static/dashboard.js" in html and "/static/dashboard.css" in html
    assert 'href="/dashboard"' in html  # the nav's Cluster link, for operators


async def test_followers_have_make_leader_and_everyone_has_hand_over(app: Any) -> None:
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    forms = re.findall(r'<form class="transfer-form" method="post" action="/dashboard/transfer">(.*?)</form>',
                       html, re.S)
    targets = sorted(re.search(r'name="to" value="(\d+)"', f).group(1) for f in forms)
    assert targets == ["0", "2", "3"]  # no "Make leader" on the leader itself
    assert all('name="csrf_token"' in f for f in forms)
    assert "Hand over to any</button>" in html and html.count("Make leader</button>") == 2


async def test_a_down_node_shows_as_down(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    await client.get("/dashboard")  # node 3 seen up once: it keeps its name when it goes down
    fake.down = {3}
    expire(app)
    html = await text(await client.get("/dashboard"))
    c = cells(html, ADDRS[2])
    assert c["role"] == "down" and c["health"].startswith("down not answering")
    assert c["node"].startswith("Node 3") and c["term"] == "—" and c["action"] == ""
    assert "is-down" in re.search(r'<tr class="([^"]*)" data-key="127.0.0.1:57053">', html).group(1)
    assert cells(html, ADDRS[1])["health"] == "healthy"
    code, data = await status_json(client)
    n3 = data["nodes"][2]
    assert code == 200 and n3["role"] == "down" and n3["up"] is False and n3["health"] == "down"
    assert n3["id"] == 3 and n3["can_lead"] is False


async def test_the_whole_cluster_down_still_renders(app: Any, fake: ClusterFake) -> None:
    fake.down = {1, 2, 3}
    client = await operator(app)
    resp = await client.get("/dashboard")
    assert resp.status_code == 200
    html = await text(resp)
    assert len(rows(html)) == 3 and all("down" in r for r in rows(html).values())
    assert "No leader right now" in html and "0 of 3 nodes answering" in html
    assert "Make leader</button>" not in html


async def test_unhealthy_nodes_say_why(app: Any, fake: ClusterFake) -> None:
    fake.applied[2] = 100  # far behind its commit index
    fake.commit[3], fake.applied[3] = 10, 10  # far behind the leader
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    assert "unhealthy applied 1102 entries behind commit" in cells(html, ADDRS[1])["health"]
    assert "commit 1191 entries behind the leader" in cells(html, ADDRS[2])["health"]
    assert cells(html, ADDRS[0])["health"] == "healthy"
    fake.leader = None  # nobody leads: every node knows no leader
    expire(app)
    code, data = await status_json(client)
    assert code == 200 and data["summary"]["leader"] is None and data["summary"]["health"] == "down"
    assert all(n["health"] == "warn" and "no leader known" in n["health_text"] for n in data["nodes"])
    assert not any(n["can_lead"] for n in data["nodes"])


async def test_followers_of_a_dead_leader_are_unhealthy(app: Any, fake: ClusterFake) -> None:
    fake.down = {1}  # the leader died; nodes 2 and 3 still name it until one of them wins an election
    client = await operator(app)
    _, data = await status_json(client)
    assert data["summary"]["leader"] is None and "No leader right now" in data["summary"]["text"]
    assert [n["health"] for n in data["nodes"]] == ["down", "warn", "warn"]
    assert data["nodes"][1]["health_text"] == "follows node 1, which is not leading"


async def test_no_majority_is_called_out(app: Any, fake: ClusterFake) -> None:
    fake.down = {2, 3}
    client = await operator(app)
    _, data = await status_json(client)
    assert data["summary"]["quorum"] is False and "no majority" in data["summary"]["text"]
    assert data["summary"]["health"] == "down"


# ------------------------------------------------------------------------------------------ live status


async def test_status_json_follows_leader_changes_and_logs_them(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    code, data = await status_json(client)
    assert code == 200 and data["ok"] is True and data["summary"]["leader"] == 1
    assert [n["is_leader"] for n in data["nodes"]] == [True, False, False]
    assert [(c["old"], c["new"], c["term"]) for c in data["changes"]] == [(None, 1, 3)]  # first seen

    fake.leader, fake.term = 2, 4
    expire(app)
    _, data = await status_json(client)
    assert data["summary"]["leader"] == 2 and data["summary"]["term"] == 4
    assert [n["is_leader"] for n in data["nodes"]] == [False, True, False]
    assert [n["role"] for n in data["nodes"]] == ["follower", "leader", "follower"]
    assert [(c["old"], c["new"], c["term"]) for c in data["changes"]] == [(1, 2, 4), (None, 1, 3)]
    assert re.fullmatch(r"\d\d:\d\d:\d\d", data["changes"][0]["at"])

    expire(app)
    _, data = await status_json(client)
    assert len(data["changes"]) == 2  # no change, no entry

    fake.leader = None  # the leader is lost: logged once
    expire(app)
    await status_json(client)
    expire(app)
    await status_json(client)
    fake.leader, fake.term = 2, 5  # node 2 re-elected in a later term
    expire(app)
    _, data = await status_json(client)
    assert [(c["old"], c["new"], c["term"]) for c in data["changes"]][:2] == [(2, 2, 5), (2, None, 4)]

    html = await text(await client.get("/dashboard"))  # a page load shows the recent changes
    log = re.search(r'<ol id="changes" class="changes">(.*?)</ol>', html, re.S).group(1)
    entries = [" ".join(re.sub(r"<[^>]+>", " ", li).split()) for li in re.findall(r"<li.*?</li>", log, re.S)]
    assert entries[0].endswith("node 2 → node 2 term 5") and "IST" in entries[0]
    assert entries[1].endswith("node 2 → no leader term 4")
    assert entries[2].endswith("node 1 → node 2 term 4")
    assert entries[3].endswith("— → node 1 term 3")


async def test_status_json_is_small_and_leaks_nothing(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    resp = await client.get("/dashboard/status.json")
    body = await text(resp)
    assert resp.headers["Cache-Control"] == "no-store"
    assert len(body) < 4096
    for secret in ("tok-root", "pid", "40001", "cluster-7f3a", "members", "operator pw", "csrf"):
        assert secret not in body


async def test_concurrent_polls_share_one_status_call(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    for _ in range(3):
        await client.get("/dashboard/status.json")
    assert fake.count("status") == 1
    assert fake.calls[-1][2] == {"timeout": dashboard.STATUS_TIMEOUT_S}


# ------------------------------------------------------------------------------------------ transfer


async def test_make_leader_calls_transfer_with_the_chosen_node(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    resp = await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": "2"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/dashboard"
    assert [c[1] for c in fake.calls if c[0] == "transfer_leader"] == [(2,)]
    assert ("whoami", (), {"token": "tok-root"}) in fake.calls
    html = await text(await client.get("/dashboard"))
    assert 'flash-success' in html and "Node 2 is now the leader." in html


async def test_hand_over_to_any_sends_zero(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": "0"})
    assert [c[1] for c in fake.calls if c[0] == "transfer_leader"] == [(0,)]


async def test_refusal_shows_the_servers_message(app: Any, fake: ClusterFake) -> None:
    fake.transfer_answer = AdminResponse(ok=False, message="node 9 is not a voter", leader_id=1)
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    resp = await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": "9"})
    assert resp.status_code == 302
    html = await text(await client.get("/dashboard"))
    assert "flash-error" in html and "Node 9 is not a voter." in html


async def test_transfer_errors_are_sentences(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    fake.fail["transfer_leader"] = Unavailable("no node could serve TransferLeader within 10s (a: refused)")
    resp = await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": "2"})
    assert resp.status_code == 302
    html = await text(await client.get("/dashboard"))
    assert "busy electing a new leader" in html and "refused" not in html
    fake.fail["transfer_leader"] = FailedPrecondition(Status.FAILED_PRECONDITION, "a transfer is already running")
    await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": "2"})
    assert "A transfer is already running" in await text(await client.get("/dashboard"))
    fake.fail["transfer_leader"] = RuntimeError("boom <internals>")
    await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": "2"})
    html = await text(await client.get("/dashboard"))
    assert "Something went wrong" in html and "boom" not in html


async def test_bad_target_is_refused_without_a_call(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    for to in ("", "two", "-1", str(2 ** 64)):
        resp = await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": to})
        assert resp.status_code == 302
    assert fake.count("transfer_leader") == 0
    assert "Choose the node to hand leadership to." in await text(await client.get("/dashboard"))


async def test_transfer_without_csrf_is_refused(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    await client.get("/dashboard")
    resp = await client.post("/dashboard/transfer", form={"to": "2"})
    assert resp.status_code == 400
    resp = await client.post("/dashboard/transfer", form={"to": "2", "csrf_token": "forged"})
    assert resp.status_code == 400
    assert fake.count("transfer_leader") == 0


async def test_transfer_rechecks_the_role_with_the_cluster(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    fake.roles["root"] = "CUSTOMER"  # demoted since logging in: the cookie still says ADMIN
    resp = await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(html), "to": "2"})
    assert resp.status_code == 403
    assert fake.count("transfer_leader") == 0
    assert (await client.get("/dashboard")).status_code == 403  # the session learnt the role


# ------------------------------------------------------------------------------------------ who may use it


async def test_customers_are_refused_everywhere(app: Any, fake: ClusterFake) -> None:
    client = await customer(app)
    home = await text(await client.get("/"))
    assert 'href="/dashboard"' not in home  # no Cluster link
    resp = await client.get("/dashboard")
    assert resp.status_code == 403
    html = await text(resp)
    assert dashboard.FORBIDDEN_SENTENCE in html and "node-row" not in html
    code, data = await status_json(client)
    assert code == 403 and data == {"ok": False, "error": dashboard.FORBIDDEN_SENTENCE}
    resp = await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(home), "to": "2"})
    assert resp.status_code == 403
    assert fake.count("status") == 0 and fake.count("transfer_leader") == 0


async def test_logged_out_users_go_to_login(app: Any, fake: ClusterFake) -> None:
    client = app.test_client()
    page = await text(await client.get("/login"))
    for resp in (await client.get("/dashboard"), await client.get("/dashboard/status.json"),
                 await client.post("/dashboard/transfer", form={"csrf_token": csrf_of(page), "to": "2"})):
        assert resp.status_code == 302
        assert resp.headers["Location"].startswith("/login?next=") and "dashboard" in resp.headers["Location"]
    assert fake.count("status") == 0 and fake.count("transfer_leader") == 0
    assert 'href="/dashboard"' not in await text(await client.get("/"))


# ------------------------------------------------------------------------------------------ failures


async def test_unreachable_cluster_is_a_sentence_on_page_and_json(app: Any, fake: ClusterFake) -> None:
    fake.fail["status"] = Unavailable("no node could serve Status within 2s (127.0.0.1:57051: refused)")
    client = await operator(app)
    resp = await client.get("/dashboard")
    assert resp.status_code == 503
    html = await text(resp)
    assert dashboard.UNREACHABLE_SENTENCE in html and "Retrying" in html
    assert "Traceback" not in html and "refused" not in html
    assert "No status has been seen yet." in html and "dashboard.js" in html  # the page keeps polling
    code, data = await status_json(client)
    assert code == 503 and data["ok"] is False and data["error"].startswith(dashboard.UNREACHABLE_SENTENCE)
    assert "refused" not in data["error"]


async def test_failure_after_success_keeps_the_last_view_marked_stale(app: Any, fake: ClusterFake) -> None:
    client = await operator(app)
    await client.get("/dashboard")
    fake.fail["status"] = RuntimeError("boom <internals>")
    expire(app)
    resp = await client.get("/dashboard")
    html = await text(resp)
    assert resp.status_code == 503
    assert dashboard.STATUS_FAILED_SENTENCE in html and "boom" not in html and "Traceback" not in html
    assert "The table shows the last status seen" in html and len(rows(html)) == 3
    assert 'class="dashboard is-stale"' in html
    code, data = await status_json(client)
    assert code == 503 and "boom" not in json.dumps(data) and data["changes"]
    del fake.fail["status"]
    expire(app)
    code, data = await status_json(client)
    assert code == 200 and data["ok"] is True


# ------------------------------------------------------------------------------------------ the page's rules


async def test_no_inline_script_style_or_handlers(app: Any) -> None:
    client = await operator(app)
    resp = await client.get("/dashboard")
    html = await text(resp)
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/dashboard.js" defer>']
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)
    assert "http://" not in html and "https://" not in html
    for path in ("/static/dashboard.js", "/static/dashboard.css"):
        assert (await client.get(path)).status_code == 200


async def test_node_fields_are_escaped(app: Any, fake: ClusterFake) -> None:
    orig = fake.node

    def evil(i: int) -> dict[str, Any]:
        d = orig(i)
        if i == 2:
            d["address"] = "<script>alert(1)</script>"
        return d

    fake.node = evil  # type: ignore[method-assign]
    client = await operator(app)
    html = await text(await client.get("/dashboard"))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


async def test_cluster_view_of_an_empty_answer() -> None:
    view = dashboard.cluster_view({"nodes": [], "leader": None}, {})
    assert view["nodes"] == [] and view["summary"]["leader"] is None


node_bin = shutil.which("node")


@pytest.mark.skipif(node_bin is None, reason="node is not installed")
async def test_dashboard_js_parses() -> None:
    res = subprocess.run([node_bin, "--check", str(JS)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(node_bin is None, reason="node is not installed")
async def test_dashboard_js_formats_like_the_page() -> None:
    script = f"""
      const d = require({json.dumps(str(JS))});
      const down = {{id: 3, up: false, role: "down", health: "down", health_text: "not answering",
                    detail: "refused", leader_id: null, is_leader: false, can_lead: false}};
      const lead = {{id: 1, up: true, role: "leader", health: "ok", health_text: "healthy", detail: "",
                    leader_id: 1, is_leader: true, can_lead: false}};
      console.log(JSON.stringify([
        d.changeText({{old: 1, "new": 2}}), d.changeText({{old: null, "new": 1}}),
        d.changeText({{old: 2, "new": null}}), d.leaderText(down), d.leaderText(lead),
        d.healthLabel("down"), d.healthDetail(down), d.rowClass(lead), d.rowClass(down),
        d.cellSig("action", {{can_lead: true, id: 2}}), d.nodeName({{id: null}}), d.dash(null), d.dash(0)]));
    """
    res = subprocess.run([node_bin, "-e", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        "node 1 → node 2", "— → node 1", "node 2 → no leader", "—", "node 1", "down", "not answering: refused",
        "node-row is-leader is-ok", "node-row is-down", "lead:2", "Node ?", "—", "0"]
