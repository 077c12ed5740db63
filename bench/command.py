"""The ``bench`` command line: ``python -m agencerdas.bench --size small --jobs 2``.

:func:`add_arguments` and :func:`run_command` let ``agencerdas bench`` reuse it;
nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agencerdas.stores.errors import AgencerdasError


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the bench options to ``parser``; returns it."""
    parser.add_argument("--size", default="small", choices=("tiny", "small", "full"),
                        help="tiny: seconds (tests); small: minutes; full: 100 recordings of 1-4 min (default small)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="feature-build processes (default: cores)")
    parser.add_argument("--audio-dir", type=Path, help="benchmark this corpus instead of a generated one")
    parser.add_argument("--rttm-dir", type=Path, help="RTTMs of --audio-dir (default: --audio-dir)")
    parser.add_argument("--gpu", action="store_true", help="also run the CUDA precision matrix (needs a GPU)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="results directory (default bench/results)")
    parser.add_argument("--work-dir", type=Path, help="corpora cache and scratch (default $AGENCERDAS_CACHE_DIR/bench)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the bench from parsed arguments; print the table and where the files are."""
    from .run import run_bench

    result = run_bench(size=args.size, jobs=args.jobs, audio_dir=args.audio_dir, rttm_dir=args.rttm_dir, gpu=args.gpu,
                       out_dir=args.out, work_dir=args.work_dir, progress=not args.quiet)
    print(result["table"])
    print("wrote " + ", ".join(result["files"].values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m agencerdas.bench", description=__doc__))
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except AgencerdasError as exc:
        print(f"agencerdas bench: error: {exc}", file=sys.stderr)
        return 2
