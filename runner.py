"""Train offline TD3 / TD3+BC / CQL on a Minari dataset: one run, from its flags to its CSV files.

main() reads top to bottom: parse the flags (config.py), build the run (load the data, the agent and
its folder, run_folder.py) or reopen it (--resume), train, log. `--seeds` hands over to sweep.py;
`python runner.py --help` lists every flag, with the homework's commands.
"""
import contextlib
import os

if "DISPLAY" not in os.environ:  # headless: MuJoCo renders videos through EGL unless told otherwise
    os.environ.setdefault("MUJOCO_GL", "egl")

import math
import signal
import sys
import time
from dataclasses import dataclass, field

import gymnasium as gym
import minari
import numpy as np
import torch
from tqdm import tqdm

import config
import flags
import run_folder
import sweep
from config import RunConfig
from run_folder import RunFolderError
from td3_agent import TD3Agent
from utils import (EVAL_SEED_OFFSET, DatasetError, ReplayBuffer, dataset_to_buffer, discounted_returns, evaluate,
                   evaluation_env, load_dataset, reason, record_video, reference_scores, set_seed)

CSV_COLUMNS = ["step", "eval_return_mean", "eval_return_std", "dataset_q", "mc_return", "policy_q",
               "bc_distance", "time_s"]  # progress.csv: one row per evaluation
TRAIN_COLUMNS = ["step", *TD3Agent.METRICS]  # train.csv: one row per --log_every updates
DIAGNOSTIC_PAIRS = 1000  # dataset (s, a) pairs on which Q, MC return and BC distance are tracked


@dataclass
class Run:
    """What the training loop carries between evaluations."""
    cfg: RunConfig
    agent: TD3Agent
    buffer: ReplayBuffer
    env: gym.Env
    probe: tuple[torch.Tensor, torch.Tensor]  # fixed dataset (obs, actions) for diagnostics
    mc_return: float
    dir: str = ""
    step: int = 0  # the next four are run_folder.PROGRESS, saved in each checkpoint
    elapsed: float = 0.0
    last_return: float = float("nan")
    best_return: float = float("-inf")
    best_step: int = 0
    saved_step: int | None = None  # step of the last checkpoint written
    stop_signal: list = field(default_factory=list)


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


def fail(message: str) -> SystemExit:
    """A one-line error with exit status 2 (raise the result)."""
    print(f"runner.py: error: {message}", file=sys.stderr)
    return SystemExit(2)


def resolve_device(name: str) -> torch.device:
    """--device -> torch.device, or a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise fail(f"--device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        raise fail(f"--device '{name}' is not available here; use auto or cpu")
    return device


def build(cfg: RunConfig) -> tuple[Run, minari.MinariDataset]:
    """Load the dataset into a replay buffer, build the agent and the fixed diagnostic sample."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    try:
        dataset = load_dataset(cfg.dataset)
        buffer, env = dataset_to_buffer(dataset, device), evaluation_env(dataset)
    except DatasetError as err:  # nothing is trained or written on data that cannot be used
        raise fail(f"--dataset: {err}") from None
    if cfg.td3.batch_size > len(buffer):
        raise fail(f"--batch_size {cfg.td3.batch_size} is larger than the dataset ({len(buffer)} transitions); "
                   f"use at most {len(buffer)}")
    agent = TD3Agent(buffer.obs_dim, buffer.act_dim, env.action_space.low, env.action_space.high, cfg.td3, device)
    rows = np.sort(np.random.default_rng(cfg.seed).choice(len(buffer), min(DIAGNOSTIC_PAIRS, len(buffer)),
                                                          replace=False))
    obs, actions, *_ = buffer.split(buffer.data[torch.as_tensor(rows, device=device)])
    mc_return = float(discounted_returns(buffer, rows, cfg.td3.gamma).mean())
    return Run(cfg, agent, buffer, env, (obs, actions), mc_return), dataset


def start(cfg: RunConfig, held: contextlib.ExitStack) -> Run:
    """A new run: build it, then make (and hold) its folder with its config.json."""
    config.check_results_dir(cfg.results_dir)
    run, dataset = build(cfg)
    ref_min, ref_max = reference_scores(dataset)
    meta = {"flags": {k: v for k, v in flags.flat(cfg).items() if k != "resume"}, "config": config.config_name(cfg),
            "device": str(run.agent.device), "dataset_transitions": len(run.buffer),
            "ref_min_score": ref_min, "ref_max_score": ref_max}
    run.dir, lock = run_folder.create(cfg, meta)
    held.enter_context(lock)
    return run


def resume(run_dir: str, given: dict, held: contextlib.ExitStack) -> Run | None:
    """--resume: hold the folder, check its flags and checkpoint, rebuild the run as it was; None if finished."""
    meta = run_folder.read_config(run_dir)
    held.enter_context(run_folder.hold(run_dir))
    cfg = run_folder.resumed_config(run_dir, meta, given)
    checkpoint = run_folder.read_checkpoint(run_dir)
    step = checkpoint["step"]
    if step >= cfg.total_steps:
        print(f"runner.py: {run_dir} is finished (step {step} of {cfg.total_steps}); nothing to do. "
              f"A larger --total_steps beside --resume lengthens it.")
        return None
    print(f"resuming {run_dir} at step {step} of {cfg.total_steps}")
    run, _ = build(cfg)
    run.dir = run_dir
    run_folder.restore(run_dir, checkpoint, run.agent)
    for name in run_folder.PROGRESS:
        setattr(run, name, checkpoint[name])
    run.saved_step = step
    run_folder.truncate_logs(run_dir, step)
    run_folder.record_length(run_dir, meta, cfg)
    return run


def evaluate_and_log(run: Run) -> dict[str, float]:
    """Evaluate the policy, measure the diagnostics, append one progress.csv row; returns the row."""
    returns = evaluate(run.agent.act, run.env, run.cfg.eval_episodes, seed=run.cfg.seed + EVAL_SEED_OFFSET)
    row = run.agent.diagnostics(*run.probe)
    row |= {"step": run.step, "eval_return_mean": float(returns.mean()), "eval_return_std": float(returns.std()),
            "mc_return": run.mc_return, "time_s": round(run.elapsed, 2)}
    run_folder.append_row(os.path.join(run.dir, "progress.csv"), CSV_COLUMNS, row)
    return row


def log_training(run: Run, means: MetricMeans) -> dict[str, float]:
    """Append one train.csv row: the step and each metric's mean since the last row."""
    row = {"step": run.step} | means.pop()
    run_folder.append_row(os.path.join(run.dir, "train.csv"), TRAIN_COLUMNS, row)
    return row


def save_video(run: Run) -> None:
    """videos/step<N>.mp4 of one deterministic evaluation episode; a failure is one warning line."""
    path = os.path.join(run.dir, "videos", f"step{run.step}.mp4")
    try:
        frames = record_video(run.agent.act, run.env, path, seed=run.cfg.seed + EVAL_SEED_OFFSET)
    except Exception as err:  # rendering depends on the machine's GL; training must go on without it
        print(f"runner.py: warning: no video at step {run.step} ({reason(err)}); training goes on",
              file=sys.stderr)
        return
    tqdm.write(f"video: {path} ({frames} frames)")


def save_checkpoint(run: Run) -> None:
    """actor.pt and checkpoint.pt: networks, optimizers, progress and every RNG state."""
    progress = {name: getattr(run, name) for name in run_folder.PROGRESS}
    run_folder.save_checkpoint(run.dir, progress, run.agent.state_dict(), run.agent.actor.state_dict())
    run.saved_step = run.step


def divergence(run: Run, row: dict[str, float]) -> str | None:
    """Why the run must stop (a non-finite value, or Q past --max_abs_q), or None."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        return f"non-finite {', '.join(sorted(bad))} at step {run.step}"
    bound = run.cfg.max_abs_q
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
        run_folder.save_tensors(run.agent.actor.state_dict(), os.path.join(run.dir, "actor_best.pt"))
    save_checkpoint(run)
    return None


def video_due(cfg: RunConfig, step: int) -> bool:
    """Whether this step gets a video: --video_every multiples, or only the last step by default."""
    final = step == cfg.total_steps
    return final if cfg.video_every is None else cfg.video_every > 0 and (step % cfg.video_every == 0 or final)


def training_loop(run: Run, bar: tqdm) -> tuple[int, str]:
    """Update; log every --log_every; evaluate, checkpoint every --eval_every; returns (status, last line)."""
    cfg, means = run.cfg, MetricMeans()
    clock_start = time.perf_counter() - run.elapsed  # wall-clock survives --resume
    while run.step < cfg.total_steps:
        means.add(run.agent.update(*run.buffer.sample(cfg.td3.batch_size)))
        run.step += 1
        bar.update(1)
        final, reason = run.step == cfg.total_steps, None
        if run.step % cfg.log_every == 0 or final:
            train_row = log_training(run, means)
            reason = divergence(run, train_row)
            bar.set_postfix(eval_return=f"{run.last_return:.0f}", q1=f"{train_row['q1']:.1f}")
        if not reason and (run.step % cfg.eval_every == 0 or final):
            reason = evaluation_step(run, clock_start)
        if reason:
            return 1, (f"stopped: {reason}. {run.dir} keeps its CSV files and the last good checkpoint; "
                       f"try a smaller --lr or --cql_alpha.")
        if video_due(cfg, run.step):
            save_video(run)
        if run.stop_signal and not final:
            run.elapsed = time.perf_counter() - clock_start
            save_checkpoint(run)
            return 130, f"interrupted at step {run.step}; resume with: python runner.py --resume {run.dir}"
    return 0, (f"finished {run.dir}: final return {run.last_return:.0f}, best {run.best_return:.0f} "
               f"at step {run.best_step}")


def train(run: Run) -> int:
    """The training loop under a progress bar, Ctrl-C and SIGTERM ending it at a checkpoint.

    Returns the exit status: 0 done, 1 diverged or a file could not be written, 130 interrupted.
    """
    def request_stop(signum, frame):
        run.stop_signal.append(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C stops at once
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tqdm(total=run.cfg.total_steps, initial=run.step, desc=os.path.basename(run.dir), unit="step") as bar:
            status, line = training_loop(run, bar)
    except RunFolderError as err:
        kept = (f"the last checkpoint (step {run.saved_step}) is intact: free the disk, then python runner.py "
                f"--resume {run.dir}" if run.saved_step else "no checkpoint was written yet: free the disk, then "
                "start the run again")
        status, line = 1, f"error: {err} at step {run.step}; {kept}"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(line if status == 0 else f"runner.py: {line}", file=sys.stdout if status == 0 else sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, build the run (or reopen --resume's), train; returns the exit status."""
    cfg, given = config.parse(argv)
    if cfg.seeds and not cfg.resume:
        config.check_results_dir(cfg.results_dir)
        return sweep.run_seeds(given, cfg.workers)
    with contextlib.ExitStack() as held:  # the run folder's lock, let go when the run ends
        try:
            run = resume(cfg.resume, given, held) if cfg.resume else start(cfg, held)
        except RunFolderError as err:
            raise fail(str(err)) from None
        except KeyboardInterrupt:
            print("runner.py: interrupted while loading; nothing was trained", file=sys.stderr)
            return 130
        return train(run) if run else 0


if __name__ == "__main__":
    sys.exit(main())
