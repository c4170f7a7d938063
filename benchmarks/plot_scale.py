"""plot.py on hundreds of runs: its wall-clock and peak memory on made-up run folders, this tree against a revision.

    python benchmarks/plot_scale.py                          # 500 runs of 500 configurations, this tree
    python benchmarks/plot_scale.py --against main           # the same folders, main's plot.py too, in turn

The folders are as runner.py writes them (tests/fake_runs.py's columns and flags): each configuration a
different (bc_weight, cql_alpha) pair, --seeds seeds each, 11 evaluations and 100 train.csv rows per run
(a 100,000-step run at the defaults). plot.py runs as a child process, `python plot.py FOLDER --out OUT`;
the time is its wall-clock, the memory its peak resident set (VmHWM, read every 0.2 s). With --against the
two trees alternate, --rounds times each, on the same folders; a run past --limit seconds is stopped and
reported as such, with the figures it had written.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
from fake_runs import CQL, FLAGS, PROGRESS, TRAIN  # noqa: E402 (the tests' run folders, as runner.py writes them)


def write_run(root: str, config: int, seed: int, rng: np.random.Generator) -> None:
    """One made-up run folder: config.json, progress.csv (11 rows), train.csv (100 rows) of a noisy learning curve."""
    bc_weight, cql_alpha = [0.0, 0.1, 1.0, 2.5, 10.0][config % 5], float(config // 5)
    flags = FLAGS | {"seed": seed, "bc_weight": bc_weight, "cql_alpha": cql_alpha, "total_steps": 100_000,
                     "eval_every": 10_000}
    label = f"td3_bc_weight={bc_weight:g}_cql_alpha={cql_alpha:g}"
    run_dir = os.path.join(root, f"{label}-seed{seed}")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"flags": flags, "config": label, "device": "cpu", "dataset_transitions": 999_190,
                   "behaviour_return_mean": 1673.0, "behaviour_return_std": 476.0}, f)
    skill = rng.uniform(0, 3000)
    with open(os.path.join(run_dir, "progress.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PROGRESS)
        for i, step in enumerate(range(0, 100_001, 10_000)):
            writer.writerow([step, skill * i / 10 + rng.normal(0, 50), 100.0, 250 + rng.normal(0, 30), 278.0,
                             260.0, 0.3, 6.0 * i])
    columns = TRAIN + (CQL if cql_alpha else ())
    with open(os.path.join(run_dir, "train.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for step in range(1000, 100_001, 1000):
            writer.writerow([step, *(rng.normal(1 + step / 1e5, 0.1, len(columns) - 1))])


def make_runs(root: str, configs: int, seeds: int) -> None:
    """configs x seeds run folders under root."""
    rng = np.random.default_rng(0)
    for config in range(configs):
        for seed in range(seeds):
            write_run(root, config, seed, rng)


def tree_of(rev: str, into: str) -> str:
    """The files of git revision rev, written into a folder (a revision is read, never checked out)."""
    archive = subprocess.run(["git", "-C", REPO, "archive", "--end-of-options", rev], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def peak_mb(pid: int) -> float:
    """The peak resident set of a live process so far (VmHWM in /proc/<pid>/status), in MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(float(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def time_plot(tree: str, runs: str, out: str, limit: float) -> tuple[float, float, float, bool]:
    """(seconds, CPU seconds, peak MB, finished) of `python plot.py runs --out out` in tree; stopped after `limit`
    seconds. The CPU seconds (user + system) depend less than the wall-clock on what else the machine runs."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "plot.py", runs, "--out", out], cwd=tree, stdout=subprocess.DEVNULL,
                             env=os.environ | {"MPLBACKEND": "Agg"})
    peak, finished = 0.0, False
    while not finished and time.perf_counter() - start < limit:
        try:
            peak = max(peak, peak_mb(child.pid))
        except (OSError, StopIteration):  # it is ending
            pass
        time.sleep(0.2)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)  # reaps it once it ended: its CPU time comes with it
        finished = pid != 0
    if not finished:
        child.kill()
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = status  # reaped here, not by Popen
    if finished and status != 0:
        raise RuntimeError(f"plot.py in {tree} exited with status {status}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime, peak, finished


def main(argv: list[str] | None = None) -> int:
    """Make the folders, time plot.py of this tree (and of --against) --rounds times in turn, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=500, help="configurations (default 500)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    parser.add_argument("--rounds", type=int, default=1, help="times each tree runs plot.py (default 1)")
    parser.add_argument("--against", metavar="REV", default=None, help="a git revision whose plot.py runs too")
    parser.add_argument("--limit", type=float, default=900.0, help="seconds after which plot.py is stopped and its "
                                                                   "figures so far reported (default 900)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_runs(os.path.join(tmp, "runs"), args.configs, args.seeds)
        print(f"{args.configs * args.seeds} run folders of {args.configs} configurations made in "
              f"{time.perf_counter() - start:.1f} s")
        trees = {"this tree": REPO}
        if args.against:
            trees[args.against] = tree_of(args.against, tempfile.mkdtemp(dir=tmp))
        for i in range(args.rounds):
            for name, tree in trees.items():
                out = os.path.join(tmp, f"out-{name}")
                seconds, cpu, peak, finished = time_plot(tree, os.path.join(tmp, "runs"), out, args.limit)
                figures = len(os.listdir(out)) - 1  # the PNGs, not summary.csv
                print(f"{name}: plot.py {'' if finished else 'stopped after '}{seconds:.1f} s ({cpu:.1f} CPU s), peak "
                      f"{peak:.0f} MB"
                      f"{'' if finished else ' so far'}, {figures} figures written (round {i + 1})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
