"""The runs a runner.py process trains side by side: made new (start) or reopened (--resume).

A Group holds its runs (flags, folder, progress) and what they share: the dataset's replay buffer,
the evaluation environment and the agent whose members they are (networks.py). start() loads the
data, builds the agent and makes each run's folder; resume() reopens folders from their
checkpoints. Bad input stops here with one line (exit 2), before anything is trained or written.
"""
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from harness import config
from harness import fitted
from harness import flags
from harness import run_folder
from bc_agent import BCAgent
from harness.config import LaunchConfig, RunConfig
from iql_agent import IQLAgent, advantage_scale
from td3_agent import TD3Agent
from data_checks import DatasetError, check_dataset_id
from dynamics import termination_rule
from mopo import ModelRollouts, real_rows
from harness.files import header_of
from harness.logs import train_columns
from utils import (ReplayBuffer, reason, behaviour_return, discounted_returns, episode_returns,
                   get_buffer_and_environments_for_task, random_episodes, top_episodes)

Agent = TD3Agent | BCAgent | IQLAgent
DIAGNOSTIC_PAIRS = 1000  # dataset (s, a) pairs on which Q, MC return and BC distance are tracked


@dataclass
class Run:
    """One run of a group: its flags, folder, diagnostic sample and progress."""
    cfg: RunConfig
    mc_return: float  # of the fixed dataset rows of the group's probe
    dir: str = ""
    last_return: float = float("nan")  # this and the next two are saved in each checkpoint (run_folder.PROGRESS)
    best_return: float = float("-inf")
    best_step: int = 0
    saved_step: int | None = None  # step of the last checkpoint written
    stopped: str | None = None  # why the run stopped early (it diverged), or None


@dataclass
class Group:
    """Runs trained side by side in this process (members, networks.py), and what the loop carries."""
    runs: list[Run]
    launch: LaunchConfig
    agent: Agent
    buffer: ReplayBuffer
    env: gym.Env
    probe: tuple[torch.Tensor, torch.Tensor]  # each run's probe rows: (M, P, obs_dim), (M, P, act_dim)
    step: int = 0  # the group's runs advance in lockstep: one update of every member per step
    elapsed: float = 0.0
    stop_signal: list = field(default_factory=list)
    data_kept: dict = field(default_factory=dict)  # config.json's figures of the dataset and of what the run kept
    rollouts: ModelRollouts | None = None  # with --rollout_length: the model buffers, and where batches come from
    # the train.csv metrics summed since its last row, (M,) tensors, and their counts: checkpointed with the runs
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def cfg(self) -> RunConfig:
        """The flags the runs share (config.member_key): the first run's."""
        return self.runs[0].cfg

    def running(self) -> list[tuple[int, Run]]:
        """(member index, run) of the runs that have not stopped early."""
        return [(m, run) for m, run in enumerate(self.runs) if not run.stopped]



def fail(message: str) -> SystemExit:
    """runner.py's one-line error with exit status 2 (raise the result)."""
    return flags.fail("runner.py", message)


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


def warn(message: str) -> None:
    """runner.py's one-line warning about the dataset: what was done about it."""
    print(f"runner.py: warning: --dataset: {message}", file=sys.stderr)


def make_agent(cfgs: list[RunConfig], buffer: ReplayBuffer, env: gym.Env, device: torch.device,
               behaviour: torch.nn.Module | None = None) -> Agent:
    """The agent whose members these runs are: TD3Agent, BCAgent or IQLAgent by --agent."""
    shape = (buffer.obs_dim, buffer.act_dim, env.action_space.low, env.action_space.high)
    td3, seeds = [c.td3 for c in cfgs], [c.seed for c in cfgs]
    if cfgs[0].agent == "bc":
        return BCAgent(*shape, td3, seeds, device)
    if cfgs[0].agent == "iql":
        returns = episode_returns(buffer)
        scale = advantage_scale(returns)
        if returns.max() - returns.min() <= 1e-6:
            warn(f"its {len(returns)} episodes all return {returns[0]:.6g}: IQL's advantage scale 1000 / (max - min "
                 f"episode return) is undefined; the advantages are left unscaled (scale 1)")
        return IQLAgent(*shape, td3, [c.iql for c in cfgs], seeds, device, advantage_scale=scale)
    mopo = cfgs[0].mopo
    real = real_rows(mopo.real_ratio, td3[0].batch_size) if mopo.rollout_length else None
    return TD3Agent(*shape, td3, seeds, device, behaviour=behaviour, real_rows=real)


def fitted_models(cfg: RunConfig, buffer: ReplayBuffer, env: gym.Env, launch: LaunchConfig, device: torch.device,
                  expect: dict) -> tuple[torch.nn.Module | None, torch.nn.Module | None, dict]:
    """The run's fitted models (harness/fitted.run_models) and their files, or one line naming --model_dir."""
    try:
        return fitted.run_models(cfg, buffer, env, launch.model_dir, device, expect)
    except fitted.FittedModelError as err:
        raise fail(f"--model_dir: {err}") from None
    except OSError as err:
        raise fail(f"--model_dir '{launch.model_dir}': cannot write the fitted model ({err.strerror or err}); "
                   f"give a folder this user can write") from None


def rollout_termination(cfg: RunConfig, env: gym.Env):
    """The env's terminal test for model rollouts (dynamics.termination_rule), None without rollouts; checked
    before any fit, so an env with no rule here is refused at once."""
    if not cfg.mopo.rollout_length:
        return None
    try:
        return termination_rule(env)
    except ValueError as err:
        raise fail(f"--rollout_length: {err}") from None


def least_percent(episodes: int) -> float:
    """The smallest --bc_top_percent of 3 significant digits that keeps one of `episodes` (as top_episodes counts)."""
    digits = 2 - math.floor(math.log10(100 / episodes))
    percent = math.ceil(100 / episodes * 10 ** digits) / 10 ** digits
    while int(percent / 100 * episodes) < 1:  # 100 / 3 = 33.4 at 3 digits; float rounding may need one more step
        percent = round(percent + 10 ** -digits, digits)
    return percent


def kept_part(buffer: ReplayBuffer, flag: str, percent: float, keep: Callable) -> tuple[ReplayBuffer, dict]:
    """keep(buffer, percent), the part an --episodes_percent or --bc_top_percent keeps, and its figures; one
    line if it keeps none."""
    kept = keep(buffer, percent)
    if len(kept) == 0:
        raise fail(f"--{flag} {percent:g} keeps none of the dataset's {len(buffer.episode_ends)} "
                   f"episodes; give at least {least_percent(len(buffer.episode_ends)):g}")
    return kept, {f"{flag}_episodes": len(kept.episode_ends), f"{flag}_transitions": len(kept)}


def training_buffer(buffer: ReplayBuffer, cfg: RunConfig) -> tuple[ReplayBuffer, dict]:
    """The transitions the agent (and a fitted model) trains on: all, or --episodes_percent's random episodes, and of
    those with --bc_top_percent the top episodes; and what was kept."""
    ref_min, ref_max = buffer.references
    kept = ({"dataset_transitions": len(buffer), "dataset_fingerprint": buffer.fingerprint,  # the behaviour return:
             "ref_min_score": ref_min, "ref_max_score": ref_max} | behaviour_return(buffer))  # plot.py's dotted line
    keepers = {"episodes_percent": random_episodes, "bc_top_percent": top_episodes}
    for flag in run_folder.KEEPING_FLAGS:
        if getattr(cfg, flag) != 100:
            buffer, figures = kept_part(buffer, flag, getattr(cfg, flag), keepers[flag])
            kept |= figures
    return buffer, kept


def build(cfgs: list[RunConfig], launch: LaunchConfig, expect: dict | None = None) -> Group:
    """Load the dataset into a replay buffer, the fitted models, build the agent of these runs and their diagnostic
    samples; `expect`: a resumed run's config.json, naming the fitted models it began with."""
    cfg = cfgs[0]
    device = resolve_device(launch.device)
    if launch.threads:
        torch.set_num_threads(launch.threads)
    try:
        buffer, env = get_buffer_and_environments_for_task(cfg.dataset, device, warn)
    except DatasetError as err:  # nothing is trained or written on data that cannot be used
        raise fail(f"--dataset: {err}") from None
    train_buffer, kept = training_buffer(buffer, cfg)
    if cfg.td3.batch_size > len(train_buffer):
        raise fail(f"--batch_size {cfg.td3.batch_size} is larger than the dataset ({len(train_buffer)} transitions); "
                   f"use at most {len(train_buffer)}")
    terminal = rollout_termination(cfg, env)
    dynamics, behaviour, paths = fitted_models(cfg, train_buffer, env, launch, device, expect or {})
    agent = make_agent(cfgs, train_buffer, env, device, behaviour)
    rollouts = None if dynamics is None else ModelRollouts(dynamics, terminal, cfg.mopo, train_buffer, agent.members,
                                                           cfg.td3.batch_size)
    rows = [np.sort(np.random.default_rng(c.seed).choice(len(buffer), min(DIAGNOSTIC_PAIRS, len(buffer)),
                                                         replace=False)) for c in cfgs]  # each run's own sample
    runs = [Run(c, float(discounted_returns(buffer, r, c.td3.gamma).mean())) for c, r in zip(cfgs, rows)]
    obs, actions, *_ = buffer.split(buffer.data[torch.as_tensor(np.stack(rows), device=device)])
    return Group(runs, launch, agent, train_buffer, env, (obs, actions), data_kept=kept | paths, rollouts=rollouts)


def check_members(cfgs: list[RunConfig], what: str) -> None:
    """Runs trained side by side must differ only in config.MEMBER_FLAGS; else one line and exit 2."""
    if len({config.member_key(c) for c in cfgs}) > 1:
        raise fail(f"{what}: runs trained side by side may differ only in {', '.join(config.MEMBER_FLAGS)} "
                   f"(bc_weight all numbers or all 'auto', cql_alpha all 0 or all > 0); run them apart")


def check_distinct(cfgs: list[RunConfig]) -> None:
    """Runs given together must differ: the same flags and seed twice is one run, not two seeds."""
    seen = set()
    for c in cfgs:
        key = json.dumps(config.recorded_flags(c), sort_keys=True)
        if key in seen:
            raise fail(f"--seeds gives seed {c.seed} twice; give each seed once (runs with the same flags and "
                       f"seed are the same run, not independent seeds)")
        seen.add(key)


def start(cfgs: list[RunConfig], launch: LaunchConfig, held: contextlib.ExitStack) -> Group:
    """New runs: build them, then make (and hold) each one's folder with its config.json."""
    check_members(cfgs, "runs given together")
    check_distinct(cfgs)
    config.check_results_dir(launch.results_dir)
    group = build(cfgs, launch)
    machine = run_folder.this_machine() | {"from_step": 0}  # one process: every run trains on it
    for run in group.runs:
        meta = {"flags": config.recorded_flags(run.cfg),
                "config": config.config_name(run.cfg), "device": str(group.agent.device),
                "machines": [machine], "env_id": group.env.spec.id, **group.data_kept}
        run.dir, lock = run_folder.create(launch.results_dir, run.cfg, meta)
        held.enter_context(lock)
    return group


def reopen(run_dir: str, given: dict, held: contextlib.ExitStack, names: tuple[str, ...]
           ) -> tuple[RunConfig, dict, dict]:
    """One --resume folder, held, checked: no links, its flags and dataset id, its checkpoint; (flags, meta, state)."""
    run_folder.check_no_links(run_dir)
    meta = run_folder.read_config(run_dir)
    held.enter_context(run_folder.hold(run_dir))
    cfg = run_folder.resumed_config(run_dir, meta, given)
    try:
        check_dataset_id(cfg.dataset)
    except DatasetError as err:
        raise fail(f"{os.path.join(run_dir, run_folder.CONFIG)}: --dataset: {err}") from None
    return cfg, meta, run_folder.read_checkpoint(run_dir, names, cfg.agent)


def train_metrics(run_dir: str) -> tuple[str, ...]:
    """The metrics of the run's train.csv header (the names its checkpoint's metric sums may hold)."""
    path = os.path.join(run_dir, "train.csv")
    try:
        header = header_of(path) or ["step"]
    except (OSError, ValueError) as err:  # a FIFO or folder there, or not UTF-8
        raise run_folder.RunFolderError(f"--resume: {path} cannot be read ({reason(err)}); repair or delete it, "
                                        f"then resume again") from None
    return tuple(header[1:])


def check_given_once(run_dirs: tuple[str, ...]) -> None:
    """Each --resume folder once: a folder given twice would be trained twice over."""
    seen = {}
    for run_dir in run_dirs:
        real = os.path.realpath(run_dir)
        if real in seen:
            raise fail(f"--resume: {run_dir} is given twice (as {seen[real]} too); give each run folder once")
        seen[real] = run_dir


def restore_sums(group: Group, checkpoints: list[dict]) -> None:
    """The train.csv metrics summed since the last row, as the runs' checkpoints hold them, into the group."""
    sums = [c.get("metric_sums", {}) for c in checkpoints]
    counts = [c.get("metric_counts", {}) for c in checkpoints]
    if any(n != counts[0] for n in counts):
        raise fail("--resume: these runs' checkpoints hold metrics summed over different updates; resume them apart")
    group.counts = dict(counts[0])
    group.sums = {name: torch.stack([s[name] for s in sums]).to(group.agent.device) for name in counts[0]}


def resume(launch: LaunchConfig, given: dict, held: contextlib.ExitStack,
           progress_columns: Callable[[Group], list[str]]) -> Group | None:
    """--resume: hold each folder, check it, rebuild the runs as they were; None if all are finished.

    progress_columns: progress.csv's columns as this code writes them for the group (another header is refused).
    """
    run_dirs = launch.resume
    check_given_once(run_dirs)
    cfgs, metas, checkpoints, dirs = [], [], [], []
    for run_dir in run_dirs:
        cfg, meta, checkpoint = reopen(run_dir, given, held, train_metrics(run_dir))
        if checkpoint["step"] >= cfg.total_steps:
            print(f"runner.py: {run_dir} is finished (step {checkpoint['step']} of {cfg.total_steps}); nothing to "
                  f"do. A larger --total_steps beside --resume lengthens it.")
            continue
        cfgs.append(cfg), metas.append(meta), checkpoints.append(checkpoint), dirs.append(run_dir)
    if not cfgs:
        return None
    steps = sorted({c["step"] for c in checkpoints})
    if len(steps) > 1:
        raise fail(f"--resume: these runs' checkpoints are at different steps ({', '.join(map(str, steps))}); "
                   f"resume the runs of each step together, apart from the others")
    check_members(cfgs, "--resume")
    group = build(cfgs, launch, metas[0])
    for run_dir, meta in zip(dirs, metas):
        run_folder.check_dataset(run_dir, meta, group.data_kept["dataset_transitions"],
                                 group.data_kept["dataset_fingerprint"])
        run_folder.check_kept(run_dir, meta, group.data_kept)
    run_folder.restore(dirs, checkpoints, group.agent, group.rollouts)
    writer = run_folder.written_by(group.cfg.agent, group.agent)
    for run_dir, checkpoint in zip(dirs, checkpoints):
        run_folder.check_code(run_dir, checkpoint, writer)
    restore_sums(group, checkpoints)
    group.step, group.elapsed = checkpoints[0]["step"], checkpoints[0]["elapsed"]
    for run, run_dir, meta, checkpoint in zip(group.runs, dirs, metas, checkpoints):
        run.dir = run_dir
        for name in ("last_return", "best_return", "best_step"):
            setattr(run, name, checkpoint[name])
        run.saved_step = group.step
        run_folder.truncate_logs(run.dir, group.step, {"progress.csv": progress_columns(group),
                                                       "train.csv": train_columns(group.agent, group.rollouts)})
        run_folder.record_resume(run.dir, meta, run.cfg, group.step)
        print(f"resuming {run.dir} at step {group.step} of {run.cfg.total_steps}")
    return group


def begun_runs(runs: list[dict], older: frozenset[str] = frozenset()) -> dict[int, str]:
    """Which of these runs already have a folder in their results_dir (index -> folder): a retried group's.

    Folders named in `older` (there before the runs were submitted) belong to other runs with the same flags.
    """
    found = {}
    for i, run in enumerate(runs):
        wanted = config.recorded_flags(config.from_flags(run)[0])
        parent = run["results_dir"]
        for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
            run_dir = os.path.join(parent, name)
            if os.path.isfile(os.path.join(run_dir, run_folder.CONFIG)) and run_dir not in older:
                try:  # a damaged config.json is one line, as --resume says it
                    meta = run_folder.read_config(run_dir)
                except run_folder.RunFolderError as err:
                    raise fail(str(err)) from None
                if meta["flags"] == wanted:
                    found[i] = run_dir
    return found
