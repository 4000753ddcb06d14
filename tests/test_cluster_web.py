"""`railraft cluster up --web-port P` (what `make run` uses): the web app runs beside the nodes, supervised like them.

A real supervisor with one node and the web app: the URL is printed, the app answers, a killed web app is
restarted, and SIGTERM stops everything and frees the ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

from .cluster_harness import ROOT, free_ports, port_is_free, wait_until
from .test_cli import pid_gone


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except OSError:
        return 0


def test_cluster_up_starts_supervises_and_stops_the_web_app(tmp_path):
    node_port, web_port = free_ports(2)
    data = tmp_path / "data"
    out_path = tmp_path / "up.out"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(out_path, "wb") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "cluster", "up", "--nodes", "1", "--port", str(node_port),
             "--data-dir", str(data), "--web-port", str(web_port), "--no-metrics"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path), start_new_session=True)
    web_pids: set[int] = set()

    def output() -> str:
        return out_path.read_text()

    def web_pid() -> int | None:
        found = re.findall(r"web app(?: restarted)?: pid (\d+)", output())
        web_pids.update(int(p) for p in found)
        return int(found[-1]) if found else None

    url = f"http://127.0.0.1:{web_port}/"
    try:
        wait_until(lambda: f"web app: {url}" in output(), 15.0, "cluster up to print the web app's URL")
        first = wait_until(web_pid, 15.0, "the web app to start")
        wait_until(lambda: _get(url + "healthz") == 200, 30.0, "the web app to answer")
        assert (data / "web_secret").exists() and (data / "web.log").exists()

        os.kill(first, signal.SIGKILL)
        wait_until(lambda: "web app restarted: pid" in output(), 15.0, "the web app to be restarted")
        assert f"web app (pid {first}) died (killed by SIGKILL)" in output()
        wait_until(lambda: _get(url + "healthz") == 200, 30.0, "the restarted web app to answer")

        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0, output()
        assert "web app stopped (exit code 0)" in output()
        for pid in web_pids:
            assert pid_gone(pid), f"web app pid {pid} survived the supervisor"
        assert wait_until(lambda: port_is_free(web_port) and port_is_free(node_port), 5.0, "ports free")
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)
        for pid in web_pids:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
        print(output())
