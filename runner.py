"""Train offline TD3 / TD3+BC / CQL on a Minari dataset: one run, from its flags to its CSV files.

main() reads top to bottom: parse the flags (config.py), build the runs (runs.py: load the data, the
agent and each run's folder) or reopen them (--resume), train, log. Runs given together
(--seeds, or sweep.py's groups) train side by side in this process as the members of one agent
(networks.py), each with its own folder and CSV files. `python runner.py --help` lists every flag.
"""
import contextlib
import os

if "DISPLAY" not in os.environ:  # headless: MuJoCo renders videos through EGL unless told otherwise
    os.environ.setdefault("MUJOCO_GL", "egl")

import dataclasses
import math
import shutil
import signal
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from harness import config
from harness import run_folder
from harness import runs
from harness.config import LaunchConfig, RunConfig
from harness.logs import (MetricMeans, progress_columns, progress_row, say_what_was_kept, show_line, status,
                          train_columns, train_rows)
from harness.run_folder import RunFolderError
from harness.runs import Group, Run
from harness.video import record_video
from utils import EVAL_SEED_OFFSET, EvaluationStopped, evaluate, reason

RESUME_ENV = "RUNNER_RESUME_COMMAND"  # set by a launcher (sweep.py): the command that resumes what the user started


def evaluate_and_log(group: Group) -> list[dict[str, float]]:
    """Evaluate every running member's policy, measure its diagnostics, append its progress.csv row."""
    returns = evaluate(group.agent.actor.act, group.env, group.cfg.eval_episodes,
                       seeds=[run.cfg.seed + EVAL_SEED_OFFSET for run in group.runs],
                       stop=lambda: bool(group.stop_signal))  # a signal ends the evaluation within a step
    diagnostics = group.agent.diagnostics(*group.probe)  # dataset_q, policy_q (agents with a critic), bc_distance
    rows = []
    for m, run in enumerate(group.runs):
        row = progress_row(group.step, returns[m], {name: values[m] for name, values in diagnostics.items()},
                           run.mc_return, group.elapsed)
        if not run.stopped:
            run_folder.append_row(os.path.join(run.dir, "progress.csv"), list(row), row)
        rows.append(row)
    return rows


def log_training(group: Group, means: MetricMeans) -> list[dict[str, float]]:
    """Append one train.csv row per running member: the step and each metric's mean since the last row.

    The columns are the agent's metric_names(), whatever updates fell inside the row (blank: none of that kind).
    """
    columns = train_columns(group.agent, group.rollouts)
    rows = train_rows(group.step, means.pop(), columns, len(group.runs))
    for (m, run) in group.running():
        run_folder.append_row(os.path.join(run.dir, "train.csv"), columns, rows[m])
    return rows


def save_video(group: Group, m: int) -> None:
    """videos/step<N>.mp4 of one deterministic episode of member m; a failure is one warning line."""
    run = group.runs[m]
    path = os.path.join(run.dir, "videos", f"step{group.step}.mp4")
    members, steps = len(group.runs), 0

    def policy(obs: np.ndarray) -> np.ndarray:  # asked once per step of the episode: steps is its length
        nonlocal steps
        steps += 1
        return group.agent.actor.act(np.repeat(obs[None], members, axis=0))[m]
    try:
        frames = record_video(policy, group.env, path, seed=run.cfg.seed + EVAL_SEED_OFFSET)
    except Exception as err:  # rendering depends on the machine's GL; training must go on without it
        tqdm.write(f"runner.py: warning: no video at step {group.step} ({reason(err)}); training goes on",
                   file=sys.stderr)
        return
    # a video of 2 frames looks broken; it is a hopper that fell at once
    tqdm.write(f"video: {path} ({frames} frames: the episode ended after {steps} steps)")


def save_checkpoints(group: Group) -> None:
    """Each running member's actor.pt and checkpoint.pt: its networks, optimizer state, generator, progress."""
    states = group.agent.members.state_dicts(group.agent)
    writer = run_folder.written_by(group.cfg.agent, group.agent)  # a digest of source files: once, not per member
    for m, run in group.running():
        progress = {"step": group.step, "elapsed": group.elapsed} | {
            name: getattr(run, name) for name in ("last_return", "best_return", "best_step")} | {
            "metric_sums": {name: sums[m] for name, sums in group.sums.items()}, "metric_counts": dict(group.counts),
            "written_by": writer}
        if group.rollouts:
            progress["model_buffer"] = group.rollouts.state(m)
        run_folder.save_checkpoint(run.dir, progress, states[m])
        run.saved_step = group.step


def divergence(run: Run, row: dict[str, float]) -> str | None:
    """Why the run must stop (a non-finite value, or Q past --max_abs_q), or None."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        return f"non-finite {', '.join(sorted(bad))} at step {row['step']}"
    bound = run.cfg.max_abs_q
    if bound is not None and "dataset_q" in row and abs(row["dataset_q"]) > bound:
        return f"|dataset Q| = {abs(row['dataset_q']):.3g} passed --max_abs_q {bound:g} at step {row['step']}"
    return None


def stop_diverged(group: Group, rows: list[dict[str, float]]) -> None:
    """Stop each running member whose row shows divergence; the others train on."""
    for m, run in group.running():
        run.stopped = divergence(run, rows[m])
        if run.stopped:
            kept = "the last good checkpoint" if run.saved_step else "no checkpoint (none was written before)"
            tqdm.write(f"runner.py: {run.dir} stopped: {run.stopped}. It keeps its CSV files and {kept}; try a "
                       f"smaller --lr or --cql_alpha.", file=sys.stderr)


def evaluation_step(group: Group, clock_start: float) -> None:
    """Evaluate, log, keep each member's best actor, checkpoint (members that diverge stop here)."""
    group.elapsed = time.perf_counter() - clock_start
    rows = evaluate_and_log(group)
    stop_diverged(group, rows)
    for m, run in group.running():
        run.last_return = rows[m]["eval_return_mean"]
        if run.last_return > run.best_return:
            run.best_return, run.best_step = run.last_return, group.step
            run_folder.save_tensors(group.agent.members.member_state(group.agent.actor, m),
                                    os.path.join(run.dir, "actor_best.pt"))
    save_checkpoints(group)


def video_due(group: Group) -> bool:
    """Whether this step gets a video: --video_every multiples, or only the last step by default."""
    every, final = group.launch.video_every, group.step == group.cfg.total_steps
    return final if every is None else every > 0 and (group.step % every == 0 or final)


def next_batch(group: Group) -> tuple:
    """This update's batch per member: the dataset's, or with model rollouts (mopo.py) the dataset's leading rows
    and the model buffer's, after this step's rollout round if one is due."""
    generators = group.agent.members.generators
    if group.rollouts is None:
        return group.buffer.sample(group.cfg.td3.batch_size, generators)
    if group.step % group.cfg.mopo.rollout_every == 0:
        group.rollouts.rollout(group.agent.actor)
    return group.rollouts.sample(generators)


def resume_command(dirs: list[str]) -> str:
    """The command that continues these runs: runner.py's --resume, or that of the launcher that started them."""
    return os.environ.get(RESUME_ENV) or f"python runner.py --resume {' '.join(dirs)}"


def interrupted(where: str, dirs: list[str], resume: str = "resume") -> str:
    """The line of a run stopped by a signal; the resume command only when this process was started alone (a
    launcher that was stopped too, sweep.py, prints its own, once)."""
    return f"runner.py: interrupted {where}" + ("" if os.environ.get(RESUME_ENV) else
                                                 f"; {resume} with: {resume_command(dirs)}")


def training_loop(group: Group, bar: tqdm, name: str) -> int:
    """Update every member; log every --log_every; evaluate, checkpoint every --eval_every; returns the status.

    The bar shows the progress (named `name`); where it is disabled, one line per evaluation does.
    """
    cfg, agent, means = group.cfg, group.agent, MetricMeans(group.sums, group.counts)
    clock_start = time.perf_counter() - group.elapsed  # wall-clock survives --resume
    first_step, loop_start, rows = group.step, time.perf_counter(), None
    while group.step < cfg.total_steps and group.running():
        means.add(agent.update(*next_batch(group)) | (group.rollouts.last if group.rollouts else {}))
        group.step += 1
        bar.update(1)
        final = group.step == cfg.total_steps
        logged = group.step % cfg.log_every == 0 or final
        if logged:
            rows = log_training(group, means)
            stop_diverged(group, rows)
        evaluated = group.step % cfg.eval_every == 0 or final
        if evaluated:
            evaluation_step(group, clock_start)
        if logged:  # after the evaluation, so that the bar shows this step's return when there was one
            bar.set_postfix(status(group, rows))
        if bar.disable and evaluated:
            show_line(name, group, status(group, rows),
                      (group.step - first_step) / (time.perf_counter() - loop_start))
        if video_due(group):
            for m, _ in group.running():
                save_video(group, m)
        if group.stop_signal and not final:
            group.elapsed = time.perf_counter() - clock_start
            save_checkpoints(group)
            tqdm.write(interrupted(f"at step {group.step}", [run.dir for _, run in group.running()]), file=sys.stderr)
            return 130
    for run in group.runs:
        if not run.stopped:
            tqdm.write(f"finished {run.dir}: final return {run.last_return:.0f}, best {run.best_return:.0f} "
                       f"at step {run.best_step}")
    return 1 if any(run.stopped for run in group.runs) else 0


def train(group: Group) -> int:
    """The training loop under a progress bar, Ctrl-C and SIGTERM ending it at a checkpoint.

    Returns the exit status: 0 done, 1 a run diverged or a file could not be written, 130 interrupted.
    """
    def request_stop(signum, frame):
        group.stop_signal.append(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C stops at once
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    name = (os.path.basename(os.path.normpath(group.runs[0].dir)) if len(group.runs) == 1 else
            f"{len(group.runs)} runs: {config.group_label([run.cfg for run in group.runs])}")
    try:
        # where stderr is no terminal (a log file, nohup) the bar's carriage-return redraws would pile up
        with tqdm(total=group.cfg.total_steps, initial=group.step, desc=name, unit="step",
                  disable=not sys.stderr.isatty()) as bar:
            return training_loop(group, bar, name)
    except RunFolderError as err:
        saved = group.runs[0].saved_step
        last = "the last checkpoint is" if len(group.runs) == 1 else "the last checkpoints are"
        kept = (f"{last} intact (step {saved}): free the disk, then {resume_command([run.dir for run in group.runs])}"
                if saved else "no checkpoint was written yet: free the disk, then start again")
        print(f"runner.py: error: {err} at step {group.step}; {kept}", file=sys.stderr)
        return 1
    except EvaluationStopped:  # the step's evaluation was abandoned: resume repeats it from the last checkpoint
        saved, where = group.runs[0].saved_step, f"during the evaluation at step {group.step}"
        dirs = [run.dir for _, run in group.running()]
        line = (interrupted(where, dirs, f"resume from the checkpoint of step {saved}") if saved else
                f"runner.py: interrupted {where}; no checkpoint was written yet: start the run again")
        tqdm.write(line, file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(cfgs: list[RunConfig] | None, launch: LaunchConfig, given: dict) -> int:
    """Train new runs side by side (cfgs), or with cfgs None those of --resume; returns the exit status."""
    if not launch.threads and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # torch's default, a thread per core, spins on cores other work holds
    with contextlib.ExitStack() as held:  # the run folders' locks, let go when the runs end
        try:
            group = runs.start(cfgs, launch, held) if cfgs else runs.resume(launch, given, held, progress_columns)
        except RunFolderError as err:
            raise runs.fail(str(err)) from None
        except KeyboardInterrupt:
            print("runner.py: interrupted while loading; nothing was trained", file=sys.stderr)
            return 130
        if group:
            say_what_was_kept(group)
        return train(group) if group else 0


def run_group(group_runs: list[dict], older: frozenset[str] = frozenset()) -> int:
    """Train runs side by side in this process; returns the worst exit status.

    Runs that a killed process already began continue: from their checkpoint with --resume, or
    from step 0 if it wrote none (their folder, holding nothing to continue from, is removed, unless a
    live process holds it: then one line, exit 2).
    """
    begun, status = runs.begun_runs(group_runs, older), 0
    by_step: dict[int, list[str]] = {}
    for i, run_dir in list(begun.items()):
        if os.path.isfile(os.path.join(run_dir, "checkpoint.pt")):
            step = int(run_folder.read_checkpoint(run_dir)["step"])
            by_step.setdefault(step, []).append(run_dir)
        else:
            try:
                with run_folder.hold(run_dir):  # a folder another process holds (a run not yet checkpointed) stays
                    shutil.rmtree(run_dir)
            except RunFolderError as err:
                raise runs.fail(str(err)) from None
            del begun[i]
    for dirs in by_step.values():
        status = max(status, main(["--resume", *dirs]))
    fresh = [run for i, run in enumerate(group_runs) if i not in begun]
    if fresh:
        configs = [config.from_flags(run) for run in fresh]
        status = max(status, run([cfg for cfg, _ in configs], configs[0][1], {}))
    return status


def run_on_ray(cfg: RunConfig, launch: LaunchConfig, given: dict) -> int:
    """--ray: the one run, or --seeds' runs side by side, as one task on a Ray cluster (ray_launch.py)."""
    from harness import ray_launch  # Ray is imported there, and only when asked for
    run = {k: v for k, v in given.items() if k not in ("seeds", "ray")} | {"results_dir": launch.results_dir}
    ray = ray_launch.connect_ray(launch.ray, "runner.py")
    return ray_launch.run_on_ray(ray, [[run | {"seed": seed} for seed in launch.seeds or [cfg.seed]]], "runner.py",
                                 run_group)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, then train one run, --seeds' runs side by side, or --resume's; returns the exit status.

    With --ray the runs train as a task on a Ray cluster instead of in this process.
    """
    cfg, launch, given = config.parse(argv)
    if launch.resume:
        return run(None, launch, given)
    if launch.ray:
        return run_on_ray(cfg, launch, given)
    return run([dataclasses.replace(cfg, seed=seed) for seed in launch.seeds or [cfg.seed]], launch, given)


if __name__ == "__main__":
    sys.exit(main())
