"""Benchmark echostat against the baseline echo servers, all in one run, and write the tables.

The servers run pinned to CPU 0 and the load generator (`loadgen.py`) pinned to CPU 1
(with ``--loadgen-procs N``: N load generators on the last N CPUs, the server on the rest);
every cell is repeated, and the medians go into a Markdown report (with the ratio of
echostat to every baseline and to the C epoll floor) and a JSON file under
``bench/results/``. Any echo mismatch or failed cell stops the run with a non-zero exit.

    .venv/bin/python bench/run.py --quick      # about a minute
    .venv/bin/python bench/run.py              # the full matrix
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from measure import measure_all
from plan import make_plan, plan_parser
from report import RunInfo, date, load_average, machine, report, write_results
from servers import (
    BENCH,
    REFERENCE,
    build_floor,
    extract_ref,
    make_certificate,
    pin_cpus,
    servers,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = plan_parser(__doc__, "fewer cells, 1 s each, one rep")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only servers whose name contains NAME (repeatable)",
    )
    parser.add_argument(
        "--cells",
        action="append",
        default=[],
        metavar="LABEL",
        help="run only cells whose label contains LABEL, e.g. 'stream' (repeatable)",
    )
    parser.add_argument(
        "--echostat-ref",
        metavar="GITREF",
        help="also run echostat as of this git ref (before/after in one run)",
    )
    parser.add_argument("--subscribers", type=int, default=50, help="SSE subscribers (default 50)")
    parser.add_argument("--no-pin", action="store_true", help="don't pin with taskset")
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        metavar="N",
        help="run a cell again, up to N times, while processes outside the benchmark keep more"
        " than a quarter of a core busy; the quietest run counts, and one still busy is marked"
        " in the report (default 2)",
    )
    parser.add_argument(
        "--loadgen-procs",
        type=int,
        default=1,
        metavar="N",
        help="drive each cell with N load generator processes, each pinned to one of the last"
        " N CPUs, results merged (default 1: server on CPU 0, load generator on CPU 1)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an echostat setting for every echostat row, e.g. --set workers=4 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args.quick, args.subscribers)
    plan.reps = args.reps or plan.reps
    plan.duration_s = args.duration or plan.duration_s
    plan.busy_retries = max(0, args.busy_retries)
    if args.cells:
        plan.keep_only(args.cells)
    if args.loadgen_procs < 1:
        print("bench: --loadgen-procs must be 1 or more", file=sys.stderr)
        return 2
    cpus = pin_cpus(not args.no_pin, args.loadgen_procs)
    started_at = time.time()
    load_before = load_average()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="echostat-bench-") as tmp:
        workdir = Path(tmp)
        tree = extract_ref(args.echostat_ref, workdir) if args.echostat_ref else None
        floor = build_floor(workdir, notes)
        certificate = make_certificate(workdir, notes) if any(c.tls for c in plan.cells) else None
        chosen = [
            dataclasses.replace(s, overrides=(*s.overrides, *args.set)) if s.is_echostat else s
            for s in servers(args.echostat_ref, tree, floor)
            if not args.only or s.name == REFERENCE or any(o in s.name for o in args.only)
        ]
        try:
            measured = measure_all(plan, chosen, workdir, cpus, certificate)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"bench: run failed: {exc}", file=sys.stderr)
            return 1
    summaries = {name: m.summaries() for name, m in measured.items()}
    info = RunInfo(
        date=date(started_at),
        machine=machine(),
        server_cpu=cpus[0] if cpus[0] is not None else "any",
        client_cpu=",".join(c for c in cpus[1] if c is not None) or "any",
        loadgen_procs=args.loadgen_procs,
        echostat_settings=args.set,
        notes=notes,
        elapsed_s=round(time.time() - started_at, 1),
        load_before=load_before,
        load_after=load_average(),
        echostat_ref=args.echostat_ref,
    )
    markdown = report(plan, chosen, summaries, info)
    document = {
        "meta": info.to_json(plan),
        "summary": {
            n: {k: s.to_json() for k, s in cells.items()} for n, cells in summaries.items()
        },
        "raw": {name: m.to_json() for name, m in measured.items()},
    }
    write_results(args.out, plan.name, started_at, markdown, info.elapsed_s, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
