"""The client library runs on a plain asyncio loop: importing it (or the benchmark's load generator) does not
import trio_asyncio, and `gateway.client.run` avoids trio-asyncio's loop even where trio_asyncio is loaded
(trio-asyncio's loop cost the load generator about twice the CPU per call)."""

import subprocess
import sys

CHECK = """
import asyncio, sys
import gateway.client, gateway.bench
assert "trio_asyncio" not in sys.modules, "the client library imported trio_asyncio"
import trio_asyncio  # as in the node, the web app and the CLI
from gateway.client import run

async def loop_type():
    return type(asyncio.get_running_loop()).__name__

print(run(loop_type()))
"""


def test_the_client_library_runs_on_a_plain_asyncio_loop() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("_UnixSelectorEventLoop", "SelectorEventLoop")
