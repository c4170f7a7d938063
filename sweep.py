"""Sweep alpha_reg (--bc_weight) for TD3+BC and tabulate what each value does (Problem 1.4).

    python sweep.py --bc_weight 0.1 1 10 100
    python sweep.py --bc_weight 1 10 auto --seeds 0 1 --total_steps 50000 --workers 2

Each value is one runner.py run per seed, all in results/sweep-<time>/; then sweep.csv there
holds, per value, the final evaluation return, the final BC distance E||a - mu(s)||^2 and the
Q over-estimation (final dataset Q minus the Monte-Carlo return of the same pairs), and the same
table is printed. `python plot.py results/sweep-<time>/` draws the runs.
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np

import runner

TABLE_COLUMNS = ["bc_weight", "seeds", "final_return_mean", "final_return_std", "bc_distance",
                 "dataset_q", "mc_return", "q_overestimation"]


def build_parser() -> argparse.ArgumentParser:
    """Sweep flags; anything else is passed to every runner.py run unchanged."""
    p = runner.Parser(prog="sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bc_weight", type=runner.bc_weight_type, nargs="+", required=True,
                   help="alpha_reg values to try, numbers >= 0 or 'auto', e.g. 0.1 1 10 100")
    p.add_argument("--seeds", type=runner.number(int, 0), nargs="+", default=[0], help="seeds per value (default: 0)")
    p.add_argument("--total_steps", type=runner.number(int, 1), default=30_000,
                   help="gradient updates per run; smaller than a full run to keep the sweep short (default: 30000)")
    p.add_argument("--eval_every", type=runner.number(int, 1), default=5_000, help="steps between evaluations (default: 5000)")
    p.add_argument("--workers", type=runner.number(int, 1), default=1, help="runs at a time (default: 1)")
    p.add_argument("--results_dir", default="results", help="parent of the sweep folder (default: results/)")
    return p


def last_rows(sweep_dir: str) -> list[tuple[dict, dict]]:
    """(config flags, last progress.csv row) of every run in the sweep folder."""
    found = []
    for name in sorted(os.listdir(sweep_dir)):
        run_dir = os.path.join(sweep_dir, name)
        if not os.path.isfile(os.path.join(run_dir, "progress.csv")):
            continue
        with open(os.path.join(run_dir, "config.json")) as f:
            flags = json.load(f)["flags"]
        with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            found.append((flags, rows[-1]))
    return found


def summarise(runs: list[tuple[dict, dict]], values: list) -> list[dict]:
    """One table row per swept value, averaged over its seeds."""
    table = []
    for value in values:
        rows = [row for flags, row in runs if flags["bc_weight"] == value]
        if not rows:
            continue
        column = {k: np.array([float(r[k]) for r in rows]) for k in ("eval_return_mean", "bc_distance",
                                                                       "dataset_q", "mc_return")}
        table.append({"bc_weight": value, "seeds": len(rows),
                      "final_return_mean": column["eval_return_mean"].mean(),
                      "final_return_std": column["eval_return_mean"].std(),
                      "bc_distance": column["bc_distance"].mean(), "dataset_q": column["dataset_q"].mean(),
                      "mc_return": column["mc_return"].mean(),
                      "q_overestimation": (column["dataset_q"] - column["mc_return"]).mean()})
    return table


def print_table(table: list[dict]) -> None:
    """The table as aligned text."""
    print(f"{'bc_weight':>9} {'seeds':>5} {'final return':>16} {'BC dist':>8} {'dataset Q':>10} "
          f"{'MC return':>10} {'Q - MC':>9}")
    for r in table:
        spread = f"± {r['final_return_std']:<4.0f}" if r["seeds"] > 1 else " " * 6  # no spread from one seed
        print(f"{r['bc_weight']!s:>9} {r['seeds']:>5} {r['final_return_mean']:>9.0f} {spread} "
              f"{r['bc_distance']:>8.3f} {r['dataset_q']:>10.1f} {r['mc_return']:>10.1f} {r['q_overestimation']:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, then write and print its table; returns the worst run's exit status."""
    args, passthrough = build_parser().parse_known_args(argv)
    runner.build_parser().parse_args(passthrough)  # a bad runner flag fails here, once, not in every run
    runner.check_results_dir(args.results_dir)
    sweep_dir = os.path.join(args.results_dir, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(sweep_dir)
    base = [sys.executable, runner.__file__, "--total_steps", str(args.total_steps),
            "--eval_every", str(args.eval_every), "--results_dir", sweep_dir, *passthrough]
    commands = [base + ["--bc_weight", str(w), "--seed", str(s)] for w in args.bc_weight for s in args.seeds]
    status = runner.run_processes(commands, args.workers)
    table = summarise(last_rows(sweep_dir), args.bc_weight)
    with open(os.path.join(sweep_dir, "sweep.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    print_table(table)
    print(f"wrote {os.path.join(sweep_dir, 'sweep.csv')}; figures: python plot.py {sweep_dir}")
    return status


if __name__ == "__main__":
    sys.exit(main())
