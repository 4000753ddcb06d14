"""The `railraft` command line: parsing, `status --json`, account and admin subcommands, `cluster up` under SIGTERM.

Commands run as subprocesses (`python -m gateway.cli ...`) against clusters started by tests/cluster_harness.py,
except `cluster up`, whose supervisor starts its own nodes; every process is stopped and reaped (or, for
nodes that are not our children, waited for by PID) before the test ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from actors.config import ConfigError
from gateway import admin_client
from gateway.cli import JsonFormatter, build_parser, main, parse_crash_spec
from gateway.cluster import prepare_config

from .cluster_harness import ROOT, ProcessCluster, free_port_range, free_ports, port_is_free, run, wait_until

STATUS_KEYS = {"id", "address", "pid", "role", "term", "leader_id", "commit_index", "applied_index",
               "last_log_index", "snapshot_index", "log_bytes", "up"}


def cli(*args: str, timeout: float = 60.0, cwd: Path | None = None,
        env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(cwd or ROOT))


def pid_gone(pid: int) -> bool:
    """True once `pid` no longer runs (a zombie waiting for a reaper that is not us counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM a process we launched indirectly, wait for it by PID, SIGKILL if it lingers."""
    if pid_gone(pid):
        return
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: pid_gone(pid), timeout, f"pid {pid} to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pid_gone(pid), 5.0, f"pid {pid} to die")
        raise


@pytest.fixture
def cluster(tmp_path):
    c = ProcessCluster(tmp_path / "cluster")
    c.start_all()
    c.wait_leader()
    yield c
    print(c.describe())
    c.close()


# ------------------------------------------------------------------------------------ no processes


def test_parser_knows_every_command():
    parser = build_parser()
    help_text = parser.format_help()
    for cmd in ("sim", "node", "status", "cluster", "register", "login", "logout", "dump"):
        assert cmd in help_text
    args = parser.parse_args(["cluster", "add-node", "--id", "4", "--port", "7004", "--start"])
    assert (args.id, args.host, args.port, args.start) == (4, "127.0.0.1", 7004, True)
    args = parser.parse_args(["node", "--id", "2", "--join", "--host", "h", "--port", "1", "--log-format", "json"])
    assert args.join and args.log_format == "json"
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert main([]) == 2


def test_sim_subcommand_still_works():
    r = cli("sim", "--seeds", "1", "--start", "0")
    assert r.returncode == 0, r.stderr + r.stdout


def test_crash_spec_parsing():
    assert parse_crash_spec("replicator-2:1.5") == [("replicator-2", 1.5, 1)]
    assert parse_crash_spec("replicator-2:1:3,applier:0") == [("replicator-2", 1.0, 3), ("applier", 0.0, 1)]
    for bad in ("replicator-2", ":1", "x:y", "a:1:2:3"):
        with pytest.raises(ValueError):
            parse_crash_spec(bad)


def test_json_log_formatter_emits_one_object_per_record():
    import logging

    rec = logging.LogRecord("railraft.node", logging.INFO, __file__, 1, "node %d up", (2,), None)
    rec.node, rec.term = 2, 7
    out = JsonFormatter().format(rec)
    assert "\n" not in out
    obj = json.loads(out)
    assert obj["node"] == 2 and obj["term"] == 7 and obj["level"] == "INFO" and obj["message"] == "node 2 up"
    assert obj["ts"].endswith("Z")


def test_cluster_up_config_is_written_once_and_then_reused(tmp_path):
    cfg, path, created = prepare_config(tmp_path / "d", 3, 41000)
    assert created and path.exists()
    assert [n.address for n in cfg.nodes] == ["127.0.0.1:41000", "127.0.0.1:41001", "127.0.0.1:41002"]
    assert cfg.node_dir(2) == tmp_path / "d" / "node2"
    again, _, created = prepare_config(tmp_path / "d", None, None)
    assert not created and again.nodes == cfg.nodes
    with pytest.raises(ConfigError):
        prepare_config(tmp_path / "d", 5, None)


def test_node_outside_the_configuration_needs_join(tmp_path):
    cfg, path, _ = prepare_config(tmp_path, 3, 41000)
    r = cli("node", "--id", "9", "--config", str(path), timeout=30)
    assert r.returncode == 2
    assert "node 9 is not in the cluster configuration" in r.stderr


def test_status_when_nothing_runs():
    port = free_ports(1)[0]
    r = cli("status", "--nodes", f"127.0.0.1:{port}", "--json")
    assert r.returncode == 1
    st = json.loads(r.stdout)
    assert st["leader"] is None and st["nodes"][0]["role"] == "down" and st["nodes"][0]["up"] is False


# ---------------------------------------------------------------------------------- with a cluster


def test_node_processes_settle_their_heap_once_serving(cluster):
    """Each node process freezes its start-up objects once it serves (gateway/heap.py), and says so."""
    for nid in (1, 2, 3):
        said = re.search(r"node %d: heap settled: (\d+) start-up objects frozen" % nid, cluster.log(nid))
        assert said, cluster.log_tail(nid)
        assert int(said.group(1)) > 20_000


def test_status_json_shape_and_text(cluster):
    down = f"127.0.0.1:{free_ports(1)[0]}"
    r = cli("status", "--nodes", ",".join(cluster.addrs() + [down]), "--json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1  # ONE JSON object
    st = json.loads(r.stdout)
    assert set(st) >= {"nodes", "leader"}
    assert isinstance(st["leader"], int) and st["leader"] in cluster.nodes
    by_addr = {n["address"]: n for n in st["nodes"]}
    assert len(st["nodes"]) == 4
    for nid in cluster.nodes:
        n = by_addr[cluster.address(nid)]
        assert STATUS_KEYS <= set(n)
        assert n["up"] and n["id"] == nid and n["pid"] == cluster.nodes[nid].proc.pid
        assert n["leader_id"] == st["leader"]
    assert by_addr[down]["role"] == "down" and by_addr[down]["up"] is False

    # --config; text output
    r = cli("status", "--config", str(cluster.config_path))
    assert r.returncode == 0, r.stderr
    assert "ROLE" in r.stdout and f"leader: node {st['leader']}" in r.stdout
    # one address is enough: the other members are discovered
    r = cli("status", "--nodes", cluster.address(1), "--json")
    assert {n["id"] for n in json.loads(r.stdout)["nodes"]} == {1, 2, 3}


def test_register_login_logout_and_dump_commands(cluster):
    nodes = ",".join(cluster.addrs())
    r = cli("register", "carol", "password123", "--nodes", nodes, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["success"], r.stdout + r.stderr
    r = cli("register", "carol", "password123", "--nodes", nodes, "--json")
    assert r.returncode == 1 and "taken" in json.loads(r.stdout)["message"]
    r = cli("login", "carol", "wrong-password", "--nodes", nodes, "--json")
    assert r.returncode == 1 and not json.loads(r.stdout)["success"]
    r = cli("login", "carol", "password123", "--nodes", cluster.address(2), "--json")
    res = json.loads(r.stdout)
    assert r.returncode == 0 and res["success"] and res["token"] and res["role"] == "CUSTOMER"
    r = cli("logout", res["token"], "--nodes", cluster.address(3))
    assert r.returncode == 0 and "Logged out" in r.stdout

    cluster.wait_caught_up()
    assert cluster.stop(1) == 0
    r = cli("dump", "--db", str(cluster.nodes[1].db_path))
    assert r.returncode == 0, r.stderr
    assert "table users" in r.stdout and "'carol'" in r.stdout
    assert r.stdout == cluster.dump(1)


def test_admin_subcommands_add_start_transfer_remove(cluster, tmp_path):
    started: list[int] = []
    port = free_ports(1)[0]
    try:
        r = cli("cluster", "add-node", "--id", "4", "--port", str(port), "--start",
                "--config", str(cluster.config_path), "--data-dir", str(cluster.root), "--json", timeout=120)
        res = json.loads(r.stdout.splitlines()[-1])
        if "pid" in res:
            started.append(res["pid"])
        assert r.returncode == 0 and res["ok"], r.stdout + r.stderr
        assert (cluster.root / "node4.log").exists() and (cluster.root / "node4").is_dir()
        st = json.loads(cli("status", "--config", str(cluster.config_path), "--json").stdout)
        four = next(n for n in st["nodes"] if n.get("id") == 4)  # discovered through the members list
        assert four["up"] and four["pid"] == res["pid"]

        r = cli("cluster", "transfer-leader", "--to", "4", "--config", str(cluster.config_path), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
        assert wait_until(lambda: run(admin_client.node_status(f"127.0.0.1:{port}"))["role"] == "leader", 5.0,
                          "node 4 to lead")

        r = cli("cluster", "remove-node", "--id", "1", "--nodes", cluster.address(2), "--json",
                env_extra=cluster.secret_env())  # no --config: the secret comes from the environment
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
        r = cli("register", "dave", "password123", "--nodes", f"127.0.0.1:{port}", "--json")
        assert json.loads(r.stdout)["success"]
        r = cli("cluster", "transfer-leader", "--to", "1", "--nodes", cluster.address(2), "--json",
                env_extra=cluster.secret_env())
        assert r.returncode == 1 and "not a voter" in json.loads(r.stdout)["message"]
    finally:
        for pid in started:
            stop_pid(pid)
    assert port_is_free(port)


def test_cluster_up_supervises_and_stops_cleanly_on_sigterm(tmp_path):
    base = free_port_range(3)
    data = tmp_path / "data"
    out_path = tmp_path / "up.out"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(out_path, "wb") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "cluster", "up", "--nodes", "3", "--port", str(base),
             "--data-dir", str(data), "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path), start_new_session=True,
        )
    child_pids: set[int] = set()

    def output() -> str:
        return out_path.read_text()

    def pids() -> dict[int, int]:
        found = {}
        for line in output().splitlines():
            if "pid" in line and ("] node " in line):
                words = line.split()
                if "pid" in words:
                    nid = int(words[words.index("node") + 1].rstrip(":"))
                    found[nid] = int(words[words.index("pid") + 1])
        child_pids.update(found.values())
        return found

    try:
        wait_until(lambda: "leader: node" in output(), 15.0, "cluster up to report a leader")
        assert (data / "cluster.toml").exists()
        first = pids()
        assert set(first) == {1, 2, 3}
        assert "check status:" in output() and str(data) in output()
        st = json.loads(cli("status", "--config", str(data / "cluster.toml"), "--json").stdout)
        assert st["leader"] in (1, 2, 3)
        assert {n["id"]: n["pid"] for n in st["nodes"]} == first

        # supervision: a node that dies is restarted, and that is logged
        os.kill(first[2], signal.SIGKILL)
        wait_until(lambda: "restarted: pid" in output(), 10.0, "node 2 to be restarted")
        assert "node 2 (pid %d) died (killed by SIGKILL)" % first[2] in output()
        second = wait_until(lambda: pids() if pids()[2] != first[2] else None, 5.0, "node 2's new pid")
        wait_until(lambda: json.loads(cli("status", "--config", str(data / "cluster.toml"), "--json").stdout)
                   ["nodes"][1].get("pid") == second[2], 10.0, "restarted node 2 to serve")

        # node logs are JSON lines
        for line in (data / "node1.log").read_text().splitlines():
            if line and not line.startswith("==="):
                rec = json.loads(line)
                assert rec["node"] == 1 and "term" in rec and "ts" in rec

        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0, output()
        assert "cluster stopped" in output()
        for pid in child_pids:
            assert pid_gone(pid), f"node pid {pid} survived the supervisor"
        for p in range(base, base + 3):
            assert wait_until(lambda p=p: port_is_free(p), 5.0, f"port {p} free")
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)
        for pid in child_pids:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
        print(output())


def test_cluster_up_children_die_with_a_killed_supervisor(tmp_path):
    """Even SIGKILL of the supervisor leaves no node behind (the children get SIGTERM from the kernel)."""
    base = free_port_range(3)
    data = tmp_path / "data"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out_path = tmp_path / "up.out"
    with open(out_path, "wb") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "cluster", "up", "--port", str(base), "--data-dir", str(data)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    pids: list[int] = []
    try:
        wait_until(lambda: out_path.read_text().count(" pid ") >= 3, 15.0, "three nodes")
        for line in out_path.read_text().splitlines():
            words = line.split()
            if "pid" in words and "log" in words:
                pids.append(int(words[words.index("pid") + 1]))
        assert len(pids) == 3
        wait_until(lambda: all(not port_is_free(base + i) for i in range(3)), 15.0, "nodes to listen")
        sup.kill()
        sup.wait(10)
        for pid in pids:
            wait_until(lambda pid=pid: pid_gone(pid), 15.0, f"node pid {pid} to exit")
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)
        for pid in pids:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_admin_create_makes_the_first_administrator_only(cluster, monkeypatch):
    """`railraft admin create` (no RAILRAFT_ADMIN_PASSWORD on the nodes): the first admin, then refusals."""
    nodes = ",".join(cluster.addrs())
    monkeypatch.setenv("RAILRAFT_ADMIN_PASSWORD", "boss-password-1")
    r = cli("admin", "create", "--username", "boss", "--nodes", nodes, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
    r = cli("login", "boss", "boss-password-1", "--nodes", cluster.address(3), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["role"] == "ADMIN", r.stdout
    r = cli("admin", "create", "--username", "boss2", "--nodes", nodes, "--json")
    assert r.returncode == 1 and not json.loads(r.stdout)["ok"], r.stdout
    r = cli("login", "boss2", "boss-password-1", "--nodes", nodes, "--json")
    assert r.returncode == 1, "a second administrator was not created"


def test_node_exits_non_zero_with_the_cause_when_an_actor_keeps_crashing(tmp_path):
    """Escalation: an actor that crashes more often than its restart budget stops the node (exit 3, cause logged)."""
    port = free_ports(1)[0]
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(f'cluster_id = "esc"\ndata_dir = "d"\n\n[[nodes]]\nid = 1\nhost = "127.0.0.1"\nport = {port}\n')
    env = dict(os.environ, RAILRAFT_CRASH_ACTOR="election-timer:0.3:20")
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "node", "--id", "1", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60, env=env, cwd=str(ROOT))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "election-timer" in r.stderr + r.stdout and "crashed" in r.stderr + r.stdout
    assert port_is_free(port)
