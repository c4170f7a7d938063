"""Many runs at once: an alpha_reg sweep (Problem 1.4), trained as groups of members, locally or on Ray.

    python sweep.py --bc_weight 0.1 1 10 100
    python sweep.py --bc_weight 1 10 auto --seeds 0 1 --total_steps 50000 --workers 2
    python sweep.py --bc_weight 0.1 1 10 100 --seeds 0 1 2 --members 3 --ray auto

Each (value, seed) is one runner.py run, all in results/sweep-<time>/. Runs that may train side by
side (config.member_key: every numeric value with every seed) do, as the members of one agent in
one process (networks.py): --members runs per process, --workers processes at a time; or with --ray
each group is a task on a Ray cluster, as many at a time as its CPUs hold. Then
sweep.csv there holds, per value, the final evaluation return, the final BC distance
E||a - mu(s)||^2 and the Q over-estimation (final dataset Q minus the Monte-Carlo return of the
same pairs), and the same table is printed. `python plot.py results/sweep-<time>/` draws the runs.
"""
import argparse
import csv
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from harness import config
from harness import flags
from harness.flags import flag

TABLE_COLUMNS = ["bc_weight", "seeds", "final_return_mean", "final_return_std", "bc_distance",
                 "dataset_q", "mc_return", "q_overestimation"]


@dataclass
class SweepConfig:
    """The sweep's own flags; every other runner.py flag is passed to each run unchanged."""
    bc_weight: tuple[float | str, ...] = flag(dataclasses.MISSING, "alpha_reg values to try, e.g. 0.1 1 10 100",
                                              low=0, also=("auto",), aliases=("alpha_reg",))
    seeds: tuple[int, ...] = flag((0,), "seeds per value", low=0)
    total_steps: int = flag(30_000, "gradient updates per run; smaller than a full run to keep the sweep short",
                            low=1)
    eval_every: int = flag(5_000, "steps between evaluations", low=1)
    workers: int = flag(1, "processes at a time, each on cores/workers threads unless --threads is given; with "
                           "--ray, the tasks each set of compatible runs is split into", low=1)
    members: int = flag(0, "runs trained side by side per process; 0 = as many as fill --workers processes",
                        low=0)
    results_dir: str = flag("results", "parent of the sweep folder", metavar="DIR")
    ray: str | None = flag(None, config.RAY_HELP, unset="off, local processes", metavar="local|auto|ADDRESS")


def plan(runs: list[dict], members: int, workers: int) -> list[list[dict]]:
    """The runs (dicts of given flags) in groups that train side by side: compatible runs, at most
    `members` a group (0: each compatible set split evenly over `workers` processes)."""
    compatible: dict[tuple, list[dict]] = {}
    for run in runs:
        compatible.setdefault(config.member_key(config.from_flags(run)[0]), []).append(run)
    groups = []
    for same in compatible.values():
        size = members or math.ceil(len(same) / workers)
        groups += [same[i:i + size] for i in range(0, len(same), size)]
    return groups


def train_group():
    """runner.run_group, imported here so that the launcher loads torch and MuJoCo only when it trains."""
    import runner
    return runner.run_group


def group_process(runs: list[dict], slot: int) -> None:
    """A child process's work: one group, its progress bar on line `slot`; exits with the group's status."""
    os.environ["TQDM_POSITION"] = str(slot)
    sys.exit(train_group()(runs))


def run_processes(groups: list[list[dict]], workers: int) -> int:
    """Each group in its own process, `workers` at a time; returns the worst exit status.

    A run given no --threads gets cores/workers of them. Ctrl-C reaches the children too: each
    checkpoints and stops, and no further group starts.
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state shared with the launcher
    pending = [[{"threads": threads} | run for run in group] for group in groups]
    running: dict[int, multiprocessing.Process] = {}
    worst = 0
    while pending or running:
        for slot in range(workers):
            if slot not in running and pending:
                running[slot] = context.Process(target=group_process, args=(pending.pop(0), slot))
                running[slot].start()
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:
            pending.clear()
        for slot, child in list(running.items()):
            if child.exitcode is not None:
                del running[slot]
                worst = max(worst, child.exitcode if child.exitcode >= 0 else 128 - child.exitcode)  # -N: signal N
    return worst


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
    parser = flags.Parser(prog="sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_flags(parser, SweepConfig)
    values, passthrough = parser.parse_known_args(argv)
    sweep = flags.build(SweepConfig, vars(values))
    _, _, given = config.parse(passthrough)  # a bad runner flag fails here, once, not in every run
    config.check_results_dir(sweep.results_dir)
    if sweep.ray:
        from harness import ray_launch  # Ray is imported only when asked for
        ray = ray_launch.connect_ray(sweep.ray, "sweep.py")
    sweep_dir = os.path.join(sweep.results_dir, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.makedirs(sweep_dir)
    except OSError as err:
        raise flags.fail("sweep.py", f"--results_dir: cannot make {sweep_dir} ({err.strerror}); give a folder you "
                                f"can write") from None
    common = given | {"total_steps": sweep.total_steps, "eval_every": sweep.eval_every, "results_dir": sweep_dir}
    runs = [common | {"bc_weight": w, "seed": s} for w in sweep.bc_weight for s in sweep.seeds]
    groups = plan(runs, sweep.members, sweep.workers)
    status = ray_launch.run_on_ray(ray, groups, "sweep.py", train_group()) if sweep.ray else run_processes(groups, sweep.workers)
    table = summarise(last_rows(sweep_dir), sweep.bc_weight)
    with open(os.path.join(sweep_dir, "sweep.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    print_table(table)
    print(f"wrote {os.path.join(sweep_dir, 'sweep.csv')}; figures: python plot.py {sweep_dir}")
    return status


if __name__ == "__main__":
    sys.exit(main())
