"""The `railraft` command line.

    railraft --version
    railraft sim --seeds N --start S [--jobs J]   run the deterministic cluster simulation

More subcommands (node, client) come with the node runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

DIST_NAME = "railraft"


def version() -> str:
    """The installed distribution's version, or a marker when running from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DIST_NAME)
    except PackageNotFoundError:
        return "0+unknown"


def _load_simulation():  # noqa: ANN202 - returns a module
    """Import tests.simulation.run lazily.

    The simulation lives in the source tree's tests/ package, which is not installed: when the console
    script runs from outside the checkout, look for it next to this package.
    """
    name = "tests.simulation.run"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("tests", "tests.simulation", name):
            raise  # the module exists but something it imports is missing: show that
    root = Path(__file__).resolve().parents[1]
    if (root / "tests" / "simulation").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
        return importlib.import_module(name)
    return None


def _cmd_sim(args: argparse.Namespace) -> int:
    sim = _load_simulation()
    if sim is None:
        print(
            "railraft sim: the simulation (tests/simulation/run.py) is not available; "
            "run it from a source checkout",
            file=sys.stderr,
        )
        return 2
    argv = ["--seeds", str(args.seeds), "--start", str(args.start)]
    if args.jobs is not None:
        argv += ["--jobs", str(args.jobs)]
    rc = sim.main(argv)
    return int(rc or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="railraft",
        description="railraft: a distributed train-ticket booking system on Raft.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser("sim", help="run the deterministic cluster simulation over a range of seeds")
    sim.add_argument("--seeds", type=int, default=100, metavar="N", help="how many seeds to run (default 100)")
    sim.add_argument("--start", type=int, default=0, metavar="S", help="first seed (default 0)")
    sim.add_argument("--jobs", type=int, default=None, metavar="J", help="worker processes (simulation's default)")
    sim.set_defaults(func=_cmd_sim)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `railraft` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
