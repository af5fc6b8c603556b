"""``python -m pixelis_ros.fuzz --cases N --json``: the fuzz benchmark (``bench_fuzz``) as a command.

Prints the summary as one JSON object with ``--json`` (else a short table); exits 1 when any case
ended in an internal error, a hang, an unbounded message or an over-memory case.
"""

from __future__ import annotations

import argparse
import json
import sys

from pixelis_ros.fuzz.run import TARGETS, bench_fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixelis_ros.fuzz", description="Seeded fuzz cases against the agent loop, the image codec, the bag reader "
                                     "and model folders: counts of internal errors, hangs and peak RSS.")
    parser.add_argument("--cases", type=int, default=10000, help="total cases, shared over the targets by weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), help="default: all")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at a time")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        summary = bench_fuzz(args.cases, args.seed, args.targets, jobs=args.jobs)
    except ValueError as e:
        parser.error(str(e))
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        for name, t in summary["targets"].items():
            print(f"{name:6} {t['cases']:6} cases  {t['errors']:6} errors  {t['internal_errors']:5} internal  "
                  f"{t['hangs']:4} hangs  peak {t['peak_rss_mb']:.0f} MB")
        for key, n in summary["failure_classes"].items():
            print(f"  {n:5}  {key}")
    bad = sum(summary[k] for k in ("internal_errors", "hangs", "unbounded_messages", "over_memory"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
