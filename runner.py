"""Train offline TD3 / TD3+BC / CQL on a Minari dataset: CLI, training loop, CSV logging.

    python runner.py --agent td3 --total_steps 100000                 # TD3 (Problem 1.2)
    python runner.py --agent td3 --total_steps 100000 --bc_weight 10  # TD3+BC (Problem 1.3)
    python runner.py --agent td3 --total_steps 100000 --cql_alpha 5   # TD3+CQL (Problem 2.1)
"""
import argparse
import csv
import hashlib
import os

if "DISPLAY" not in os.environ:  # headless: MuJoCo renders videos through EGL unless told otherwise
    os.environ.setdefault("MUJOCO_GL", "egl")

import json
import math
import pickle
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from td3_agent import TD3Agent, TD3Config
from utils import (DatasetError, ReplayBuffer, dataset_to_buffer, discounted_returns, evaluate, load_dataset,
                   record_video, reference_scores, set_seed)

CSV_COLUMNS = ["step", "eval_return_mean", "eval_return_std", "dataset_q", "mc_return", "policy_q",
               "bc_distance", "time_s"]  # progress.csv: one row per evaluation
# train.csv: one row per --log_every updates, each metric's mean over them; a metric the agent
# returns that is not named here stops the first write (csv.DictWriter raises on unknown keys)
TRAIN_COLUMNS = ["step", "q1", "q2", "target_q", "td_loss", "cql_penalty", "cql_logsumexp", "cql_q_random",
                 "cql_q_policy", "cql_q_data", "cql_alpha", "critic_loss", "ddpg_loss", "bc_loss", "bc_weight",
                 "actor_loss"]
DIAGNOSTIC_PAIRS = 1000  # dataset (s, a) pairs on which Q, MC return and BC distance are tracked


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `runner.py: error: ...`, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(kind: type, low: float, inclusive: bool = True):
    """An argparse type: `kind` (int or float) that must be >= low (or > low)."""
    noun = "an integer" if kind is int else "a finite number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got '{text}'") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise argparse.ArgumentTypeError(f"must be {noun} {bound}, got {text}")
        return value
    return parse


def bc_weight_type(text: str) -> float | str:
    """--bc_weight: a number >= 0, or 'auto'."""
    return "auto" if text == "auto" else number(float, 0)(text)


def build_parser() -> Parser:
    """Every flag, with its unit and the homework default."""
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", choices=["td3"], default="td3", help="learner (default: td3; BC and CQL are flags)")
    p.add_argument("--total_steps", type=number(int, 1), default=100_000, help="gradient updates (default: 100000)")
    p.add_argument("--bc_weight", type=bc_weight_type, default=0.0,
                   help="alpha_reg on E||a - mu(s)||^2 in the actor loss; 0 = plain TD3, 10 = Problem 1.3, "
                        "'auto' = TD3+BC normalisation with --bc_alpha (default: 0)")
    p.add_argument("--bc_alpha", type=number(float, 0, False), default=2.5,
                   help="TD3+BC's alpha, used only with --bc_weight auto (default: 2.5)")
    p.add_argument("--cql_alpha", type=number(float, 0), default=0.0,
                   help="weight of the CQL penalty on each critic; 5 = Problem 2.1 (default: 0, off)")
    p.add_argument("--cql_n_actions", type=number(int, 1), default=4,
                   help="uniform actions per state in the CQL logsumexp, besides mu(s) and mu(s') (default: 4, the homework's)")
    p.add_argument("--cql_uniform_only", action="store_true",
                   help="leave the policy's actions mu(s), mu(s') out of the CQL logsumexp: the handout's eq. 3, an ablation (default: off)")
    p.add_argument("--cql_target_gap", type=number(float, 0), default=None,
                   help="tune the CQL weight as a Lagrange multiplier, starting at --cql_alpha, so that the "
                        "penalty per critic settles at this gap (default: off, fixed --cql_alpha)")
    p.add_argument("--cql_temp", type=number(float, 0, False), default=1.0, help="CQL temperature (default: 1)")
    p.add_argument("--seed", type=number(int, 0), default=0, help="seed of torch, numpy and the eval envs (default: 0)")
    p.add_argument("--seeds", type=number(int, 0), nargs="+", default=None,
                   help="run one process per seed, e.g. --seeds 0 1 2 (default: off; --seed alone)")
    p.add_argument("--workers", type=number(int, 1), default=1,
                   help="with --seeds: runs at a time, each on cores/workers threads (default: 1)")
    p.add_argument("--threads", type=number(int, 0), default=0,
                   help="torch CPU threads; 0 = torch's default, one per core (default: 0)")
    p.add_argument("--batch_size", type=number(int, 1), default=128, help="transitions per update (default: 128, the homework's)")
    p.add_argument("--hidden", type=number(int, 1), nargs="+", default=[128, 128],
                   help="hidden layer widths of actor and critics (default: 128 128, the homework's; "
                        "256 256 is the TD3+BC paper's)")
    p.add_argument("--lr", type=number(float, 0, False), default=3e-4, help="Adam step size, actor and critic (default: 3e-4)")
    p.add_argument("--gamma", type=number(float, 0), default=0.99, help="discount factor in [0, 1) (default: 0.99)")
    p.add_argument("--tau", type=number(float, 0, False), default=0.005, help="target-network Polyak rate in (0, 1] (default: 0.005)")
    p.add_argument("--policy_noise", type=number(float, 0), default=0.2,
                   help="std of target-policy smoothing noise, in units of the action half-range (default: 0.2)")
    p.add_argument("--noise_clip", type=number(float, 0), default=0.5,
                   help="clip of that noise, same units (default: 0.5)")
    p.add_argument("--policy_delay", type=number(int, 1), default=2, help="critic updates per actor update (default: 2)")
    p.add_argument("--eval_every", type=number(int, 1), default=10_000, help="steps between evaluations (default: 10000)")
    p.add_argument("--eval_episodes", type=number(int, 1), default=10, help="episodes per evaluation (default: 10)")
    p.add_argument("--log_every", type=number(int, 1), default=1000,
                   help="updates per train.csv row, each metric averaged over them (default: 1000)")
    p.add_argument("--video_every", type=number(int, 0), default=None,
                   help="steps between evaluation videos (videos/step<N>.mp4); 0 = none "
                        "(default: one, at the end of the run)")
    p.add_argument("--max_abs_q", type=number(float, 0, False), default=None,
                   help="stop the run when |mean dataset Q1| exceeds this (default: off)")
    p.add_argument("--dataset", default="mujoco/hopper/medium-v0", help="Minari dataset id (default: mujoco/hopper/medium-v0)")
    p.add_argument("--device", default="auto", help="'auto' (cuda when present), 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    p.add_argument("--results_dir", default="results", help="folder that receives one sub-folder per run (default: results/)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its checkpoint; other flags are taken from its config.json")
    return p


def resolve_device(name: str) -> torch.device:
    """--device -> torch.device, or a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise fail(f"--device '{name}' is not a device; use auto, cpu, cuda or cuda:N")
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        raise fail(f"--device '{name}' is not available here; use auto or cpu")
    return device


# Flags that change neither what is learned nor what is measured: left out of a run's label.
NOT_CONFIG = ("agent", "seed", "seeds", "workers", "threads", "device", "results_dir", "resume", "log_every",
              "video_every")


def config_name(args: argparse.Namespace) -> str:
    """The run's label: the agent, then every flag that differs from its default, e.g. td3_bc_weight=10."""
    defaults = vars(build_parser().parse_args([]))
    parts = [args.agent]
    for name, value in vars(args).items():
        if name not in NOT_CONFIG and value != defaults.get(name):
            if isinstance(value, list):
                value = "-".join(map(str, value))
            parts.append(name if value is True else f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return "_".join(parts).replace("/", "-")


def make_run_dir(args: argparse.Namespace) -> str:
    """results/<config>-seed<k>-<timestamp>[-n]/, never an existing folder.

    A label too long for a folder name is cut, with a hash of the whole label appended; the
    full label is in config.json, and plot.py groups runs by their flags, not by this name.
    """
    label = config_name(args)
    if len(label) > 120:
        label = f"{label[:110]}~{hashlib.sha1(label.encode()).hexdigest()[:8]}"
    stem = os.path.join(args.results_dir, f"{label}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir, n = stem, 1
    while True:
        try:
            os.makedirs(run_dir)
            return run_dir
        except FileExistsError:
            run_dir, n = f"{stem}-{n}", n + 1


@dataclass
class Run:
    """What the training loop carries between evaluations."""
    dir: str
    args: argparse.Namespace
    agent: TD3Agent
    buffer: ReplayBuffer
    env: gym.Env
    probe: tuple[torch.Tensor, torch.Tensor]  # fixed dataset (obs, actions) for diagnostics
    mc_return: float
    step: int = 0
    elapsed: float = 0.0
    last_return: float = float("nan")
    best_return: float = float("-inf")
    best_step: int = 0
    stop_signal: list = field(default_factory=list)


def agent_config(args: argparse.Namespace) -> TD3Config:
    """The TD3Config named by the flags."""
    return TD3Config(gamma=args.gamma, tau=args.tau, lr=args.lr, policy_noise=args.policy_noise,
                     noise_clip=args.noise_clip, policy_delay=args.policy_delay,
                     bc_weight=args.bc_weight, bc_alpha=args.bc_alpha, cql_alpha=args.cql_alpha,
                     cql_n_actions=args.cql_n_actions, cql_temp=args.cql_temp,
                     cql_uniform_only=args.cql_uniform_only, cql_target_gap=args.cql_target_gap,
                     hidden=tuple(args.hidden))


class MetricMeans:
    """Running sums of the update's metrics, kept on the device and read once per --log_every."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        """Add one update's metrics (the actor's appear only on actor steps, so counts differ)."""
        for name, value in metrics.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        """Each metric's mean since the last pop, as floats (one device-to-host copy)."""
        names = list(self.sums)
        values = torch.stack([self.sums[n] for n in names]).tolist() if names else []
        means = {n: v / self.counts[n] for n, v in zip(names, values)}
        self.sums, self.counts = {}, {}
        return means


def append_row(path: str, columns: list[str], row: dict) -> None:
    """Append a row to a CSV file, writing the header first if the file is new."""
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def evaluate_and_log(run: Run) -> dict[str, float]:
    """Evaluate the policy, measure the diagnostics, append one progress.csv row; returns the row."""
    returns = evaluate(run.agent.act, run.env, run.args.eval_episodes, seed=run.args.seed + 10_000)
    row = run.agent.diagnostics(*run.probe)
    row |= {"step": run.step, "eval_return_mean": float(returns.mean()), "eval_return_std": float(returns.std()),
            "mc_return": run.mc_return, "time_s": round(run.elapsed, 2)}
    append_row(os.path.join(run.dir, "progress.csv"), CSV_COLUMNS, row)
    return row


def log_training(run: Run, means: MetricMeans) -> dict[str, float]:
    """Append one train.csv row: the step and each metric's mean since the last row."""
    row = {"step": run.step} | means.pop()
    append_row(os.path.join(run.dir, "train.csv"), TRAIN_COLUMNS, row)
    return row


def save_video(run: Run) -> None:
    """videos/step<N>.mp4 of one deterministic evaluation episode; a failure is one warning line."""
    path = os.path.join(run.dir, "videos", f"step{run.step}.mp4")
    try:
        frames = record_video(run.agent.act, run.env, path, seed=run.args.seed + 10_000)
    except Exception as err:  # rendering depends on the machine's GL; training must go on without it
        reason = (str(err).splitlines() or [""])[0]
        print(f"runner.py: warning: no video at step {run.step} ({type(err).__name__}: {reason}); "
              f"training goes on", file=sys.stderr)
        return
    tqdm.write(f"video: {path} ({frames} frames)")


def save_checkpoint(run: Run) -> None:
    """Networks, targets, optimizers, step and every RNG state, written atomically."""
    state = {"agent": run.agent.state_dict(), "step": run.step, "elapsed": run.elapsed,
             "last_return": run.last_return, "best_return": run.best_return, "best_step": run.best_step,
             "torch_rng": torch.get_rng_state(),
             "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    for name, obj in (("checkpoint.pt", state), ("actor.pt", run.agent.actor.state_dict())):
        save_atomically(obj, os.path.join(run.dir, name))


def save_atomically(obj, path: str) -> None:
    """torch.save to path via a temporary file, so a crash never leaves half a file."""
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(run: Run) -> None:
    """Restore what save_checkpoint wrote, and drop CSV rows logged after it."""
    state = torch.load(os.path.join(run.dir, "checkpoint.pt"), map_location=run.agent.device, weights_only=False)
    run.agent.load_state_dict(state["agent"])
    run.step, run.elapsed, run.last_return = state["step"], state["elapsed"], state["last_return"]
    run.best_return, run.best_step = state["best_return"], state["best_step"]
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    for name, columns in (("progress.csv", CSV_COLUMNS), ("train.csv", TRAIN_COLUMNS)):
        path = os.path.join(run.dir, name)
        if os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= run.step]
            with open(path + ".tmp", "w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(path + ".tmp", path)


def divergence(run: Run, row: dict[str, float]) -> str | None:
    """Why the run must stop (a non-finite value, or Q past --max_abs_q), or None."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        return f"non-finite {', '.join(sorted(bad))} at step {run.step}"
    bound = run.args.max_abs_q
    if bound is not None and abs(row["dataset_q"]) > bound:
        return f"|dataset Q| = {abs(row['dataset_q']):.3g} passed --max_abs_q {bound:g} at step {run.step}"
    return None


def evaluation_step(run: Run, clock_start: float) -> str | None:
    """Evaluate, log, keep the best actor, checkpoint; returns why the run must stop, or None."""
    run.elapsed = time.perf_counter() - clock_start
    row = evaluate_and_log(run)
    reason = divergence(run, row)
    if reason:
        return reason
    run.last_return = row["eval_return_mean"]
    if run.last_return > run.best_return:
        run.best_return, run.best_step = run.last_return, run.step
        save_atomically(run.agent.actor.state_dict(), os.path.join(run.dir, "actor_best.pt"))
    save_checkpoint(run)
    return None


def video_due(args: argparse.Namespace, step: int) -> bool:
    """Whether this step gets a video: --video_every multiples, or only the last step by default."""
    final = step == args.total_steps
    return final if args.video_every is None else args.video_every > 0 and (step % args.video_every == 0 or final)


def train(run: Run) -> int:
    """The training loop: update; log every --log_every; evaluate, checkpoint every --eval_every.

    Returns the exit status: 0 done, 1 diverged, 130 interrupted (checkpoint written).
    """
    args, means = run.args, MetricMeans()
    clock_start = time.perf_counter() - run.elapsed  # wall-clock survives --resume
    bar = tqdm(total=args.total_steps, initial=run.step, desc=os.path.basename(run.dir), unit="step")
    while run.step < args.total_steps:
        means.add(run.agent.update(*run.buffer.sample(args.batch_size)))
        run.step += 1
        bar.update(1)
        final = run.step == args.total_steps
        reason = None
        if run.step % args.log_every == 0 or final:
            train_row = log_training(run, means)
            reason = divergence(run, train_row)
            bar.set_postfix(eval_return=f"{run.last_return:.0f}", q1=f"{train_row['q1']:.1f}")
        if not reason and (run.step % args.eval_every == 0 or final):
            reason = evaluation_step(run, clock_start)
        if reason:
            bar.close()
            print(f"runner.py: stopped: {reason}. {run.dir} keeps its CSV files and the last good "
                  f"checkpoint; try a smaller --lr or --cql_alpha.", file=sys.stderr)
            return 1
        if video_due(args, run.step):
            save_video(run)
        if run.stop_signal and not final:
            run.elapsed = time.perf_counter() - clock_start
            save_checkpoint(run)
            bar.close()
            print(f"runner.py: interrupted at step {run.step}; resume with: "
                  f"python runner.py --resume {run.dir}", file=sys.stderr)
            return 130
    bar.close()
    print(f"runner.py: finished {run.dir}: final return {run.last_return:.0f}, "
          f"best {run.best_return:.0f} at step {run.best_step}")
    return 0


def fail(message: str) -> SystemExit:
    """A one-line error with exit status 2 (raise the result)."""
    print(f"runner.py: error: {message}", file=sys.stderr)
    return SystemExit(2)


def resume_args(run_dir: str) -> argparse.Namespace:
    """The flags of the run in run_dir, from its config.json."""
    for name in ("config.json", "checkpoint.pt"):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise fail(f"--resume '{run_dir}' has no {name}; give a run folder written by runner.py")
    with open(os.path.join(run_dir, "config.json")) as f:
        flags = json.load(f)["flags"]
    defaults = vars(build_parser().parse_args([]))  # for flags added after the run was made
    return argparse.Namespace(**defaults | flags | {"resume": run_dir})


def check_results_dir(path: str) -> None:
    """--results_dir must be a folder or not exist yet."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise fail(f"--results_dir '{path}' is a file; give a folder path")


def check_flags(args: argparse.Namespace) -> None:
    """Checks argparse's types cannot make on their own."""
    if not args.gamma < 1:
        raise fail(f"--gamma must be in [0, 1), got {args.gamma:g}")
    if not args.tau <= 1:
        raise fail(f"--tau must be in (0, 1], got {args.tau:g}")
    check_results_dir(args.results_dir)


def setup(args: argparse.Namespace) -> Run:
    """Load the data, build the agent and the run folder (or reopen it with --resume)."""
    device = resolve_device(args.device)
    set_seed(args.seed)
    try:
        dataset = load_dataset(args.dataset)
    except DatasetError as err:
        raise fail(f"--dataset: {err}")
    buffer, env = dataset_to_buffer(dataset, device), dataset.recover_environment(eval_env=True)
    if args.batch_size > len(buffer):
        raise fail(f"--batch_size {args.batch_size} is larger than the dataset ({len(buffer)} transitions); "
                   f"use at most {len(buffer)}")
    agent = TD3Agent(buffer.obs_dim, buffer.act_dim, env.action_space.low, env.action_space.high,
                     agent_config(args), device)
    rows = np.random.default_rng(args.seed).choice(len(buffer), min(DIAGNOSTIC_PAIRS, len(buffer)), replace=False)
    rows = np.sort(rows)
    obs, actions, *_ = buffer.split(buffer.data[torch.as_tensor(rows, device=device)])
    mc_return = float(discounted_returns(buffer, rows, args.gamma).mean())
    run_dir = args.resume or make_run_dir(args)
    run = Run(run_dir, args, agent, buffer, env, (obs, actions), mc_return)
    if args.resume:
        try:
            load_checkpoint(run)
        except (OSError, EOFError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as err:
            reason = (str(err).splitlines() or [""])[0][:200]
            raise fail(f"--resume: {os.path.join(run_dir, 'checkpoint.pt')} cannot be restored "
                       f"({type(err).__name__}: {reason}); it is damaged or was written by another version "
                       f"of this code. Its progress.csv is untouched; start a new run.")
    else:
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            flags = {k: v for k, v in vars(args).items() if k != "resume"}
            ref_min, ref_max = reference_scores(dataset)
            json.dump({"flags": flags, "config": config_name(args), "device": str(device),
                       "dataset_transitions": len(buffer), "ref_min_score": ref_min, "ref_max_score": ref_max},
                      f, indent=2)
    return run


def run_argv(args: argparse.Namespace, **overrides) -> list[str]:
    """The runner.py command line of a single run with these flags (and overrides)."""
    flags = {k: v for k, v in vars(args).items() if k not in ("seeds", "workers", "resume")} | overrides
    argv = [sys.executable, os.path.abspath(__file__)]
    for name, value in flags.items():
        if value is True:
            argv.append(f"--{name}")
        elif isinstance(value, list):
            argv += [f"--{name}", *map(str, value)]
        elif value is not None and value is not False:
            argv += [f"--{name}", str(value)]
    return argv


def run_processes(commands: list[list[str]], workers: int) -> int:
    """Run the commands as child processes, `workers` at a time; returns the worst exit status.

    Each child gets cores/workers threads and its own progress-bar line. Ctrl-C reaches the
    children too: each checkpoints and stops, and no further command starts.
    """
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    pending, running, worst = list(commands), {}, 0
    while pending or running:
        for slot in range(workers):
            if slot not in running and pending:
                command = pending.pop(0)
                env = os.environ | {"TQDM_POSITION": str(slot), "OMP_NUM_THREADS": threads}
                running[slot] = subprocess.Popen(command + ["--threads", threads], env=env)
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:
            pending.clear()
        for slot, child in list(running.items()):
            if child.poll() is not None:
                del running[slot]
                worst = max(worst, child.returncode)
                if child.returncode:
                    print(f"runner.py: '{' '.join(child.args[1:])}' exited with status {child.returncode}",
                          file=sys.stderr)
    return worst


def main(argv: list[str] | None = None) -> int:
    """Parse flags, set up, train; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.resume:
        args = resume_args(args.resume)
    check_flags(args)
    if args.seeds:
        return run_processes([run_argv(args, seed=seed, threads=None) for seed in args.seeds], args.workers)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run = setup(args)
    except KeyboardInterrupt:
        print("runner.py: interrupted while loading; nothing was trained", file=sys.stderr)
        return 130

    def request_stop(signum, frame):
        run.stop_signal.append(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C stops at once
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return train(run)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
