"""Run many simulation seeds, in parallel, and summarise: `python -m tests.simulation.run --seeds N --start S`.

Ends with the line `N passed, M failed`.  Each failing seed is printed with its reason and a one-line command
that replays it exactly (`python -m tests.simulation.run --seed S -v`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

from tests.simulation.cluster import SeedResult, run_seed


def _replay_command(seed: int) -> str:
    return f".venv/bin/python -m tests.simulation.run --seed {seed} -v"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    ap = argparse.ArgumentParser(prog="railraft sim", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="run exactly this one seed (replay)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every seed's statistics")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    started = time.monotonic()
    failed: list[SeedResult] = []
    passed = 0
    if args.jobs > 1 and len(seeds) > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.imap_unordered(run_seed, seeds, chunksize=4)
            for res in results:
                passed, failed = _collect(res, passed, failed, args.verbose)
    else:
        for seed in seeds:
            passed, failed = _collect(run_seed(seed), passed, failed, args.verbose)
    elapsed = time.monotonic() - started
    for res in sorted(failed, key=lambda r: r.seed):
        print(f"FAILED seed {res.seed}: {res.reason}")
        print(f"  replay: {_replay_command(res.seed)}")
    print(f"simulated {len(seeds)} seeds in {elapsed:.1f}s with {args.jobs} jobs")
    print(f"{passed} passed, {len(failed)} failed")
    return 1 if failed else 0


def _collect(res: SeedResult, passed: int, failed: list[SeedResult], verbose: bool) -> tuple[int, list]:
    if res.ok:
        passed += 1
    else:
        failed.append(res)
    if verbose:
        print(f"seed {res.seed}: {'ok' if res.ok else 'FAILED'} {json.dumps(res.stats, default=str)}")
        sys.stdout.flush()
    return passed, failed


if __name__ == "__main__":
    sys.exit(main())
