"""Steps/s of runner.py and sweep.py at each --threads, alone and beside other runs of the same command.

    MINARI_DATASETS_PATH=../shared/minari python benchmarks/threads.py --threads 1 2 --copies 1 2 3
    MINARI_DATASETS_PATH=../shared/minari python benchmarks/threads.py --script sweep --threads 1 2

For each (threads, copies) it starts `copies` processes of the same short command at once (a student's
runs in several terminals), lets them train for --seconds, stops them (SIGTERM: a checkpoint and exit),
and reads each run's rate from its progress.csv: the last evaluation's step over its time_s (training
time since the data loaded). The figure is the mean over the copies. Each run gets about cores/copies of
the CPU, less whatever else the machine runs: the load average is printed before each measurement.
"""
import argparse
import csv
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(script: str, threads: int, seed: int, results_dir: str) -> list[str]:
    """A short run of runner.py (TD3+BC) or of sweep.py (4 bc_weight values, one process), evaluated every 250 steps
    on one episode, so that the rate is read often and evaluations cost little."""
    common = ["--total_steps", "100000", "--eval_every", "250", "--eval_episodes", "1", "--video_every", "0",
              "--threads", str(threads), "--results_dir", results_dir]
    if script == "runner":
        return [sys.executable, "runner.py", "--bc_weight", "10", "--seed", str(seed), *common]
    return [sys.executable, "sweep.py", "--bc_weight", "0.1", "1", "10", "100", "--seeds", str(seed), *common]


def rate(results_dir: str) -> float:
    """Steps/s of the run (or sweep process) below results_dir: its furthest evaluation's step / time_s; 0 if it
    reached no evaluation (fewer than 250 steps in the time it trained)."""
    best = (0.0, 1.0)
    for path in glob.glob(os.path.join(results_dir, "**", "progress.csv"), recursive=True):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and float(rows[-1]["step"]) > best[0]:
            best = (float(rows[-1]["step"]), float(rows[-1]["time_s"]))
    return best[0] / best[1]


def measure(script: str, threads: int, copies: int, seconds: float) -> list[float]:
    """Steps/s of each of `copies` processes of the command started together and stopped after `seconds`."""
    env = os.environ | {"MPLBACKEND": "Agg"}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [os.path.join(tmp, str(i)) for i in range(copies)]
        procs = [subprocess.Popen(command(script, threads, i, d), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True) for i, d in enumerate(dirs)]
        time.sleep(seconds)
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)  # the sweep's children too; each checkpoints and stops
        for p in procs:
            p.wait()
        return [rate(d) for d in dirs]


def main(argv: list[str] | None = None) -> int:
    """Measure every (threads, copies) pair in turn and print a table row each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", choices=("runner", "sweep"), default="runner", help="command to time (runner)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                        help="--threads values to time (default: 1 and the number of cores)")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 3],
                        help="processes of the command at once (default: 1 2 3: alone, beside one, beside two)")
    parser.add_argument("--seconds", type=float, default=45.0, help="wall-clock per measurement, loading included "
                                                                    "(default 45)")
    args = parser.parse_args(argv)
    print(f"{args.script}.py, {os.cpu_count()} cores; steps/s per process, mean over the copies")
    print("| threads | copies | load avg before | steps/s each |")
    print("|---|---|---|---|")
    for copies in args.copies:
        for threads in args.threads:
            load = os.getloadavg()[0]
            rates = measure(args.script, threads, copies, args.seconds)
            shown = " ".join(f"{r:.0f}" if r else "-" for r in rates)  # -: no evaluation reached
            print(f"| {threads} | {copies} | {load:.2f} | {sum(rates) / len(rates):.0f} ({shown}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
