"""bench.py --against REV: this tree's update step against the one of git revision REV, in one process.

REV may have this tree's API (M members: TD3Agent(..., configs, seeds, device), (M, B, ...) batches;
its generators in agent.members.generators, or in agent.generators up to 6640ddb) or the older one
of a single run (TD3Agent(..., config, device), (B, ...) batches, up to 53b1660). With members both
sides are timed at each M asked for; a single-run REV only at M = 1.
"""
import dataclasses
import importlib
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch

import td3_agent
from td3_agent import TD3Config
from timing import seconds_per_call, window_steps
from utils import ReplayBuffer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REVISION_FOLDERS = ("", "harness")  # where a revision's td3_agent.py finds what it imports


def resolve_revision(rev: str) -> str:
    """The hash of the commit `rev` names; ValueError if none.

    --end-of-options makes git read `rev` as a revision even when it starts with '-': a value
    such as --output=FILE would otherwise be one of git's options, and write that file.
    """
    try:
        found = subprocess.run(["git", "-C", REPO, "rev-parse", "--quiet", "--verify", "--end-of-options",
                                f"{rev}^{{commit}}"], capture_output=True, text=True)
    except FileNotFoundError:
        raise ValueError("git is not installed") from None
    if found.returncode != 0:
        why = found.stderr.strip().splitlines()
        raise ValueError("not a commit of this repository" + (f" ({why[-1]})" if why else "") + "; give e.g. HEAD~1")
    return found.stdout.strip()


def git(*args: str) -> str:
    """The output of `git -C REPO *args`, which must succeed."""
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=True).stdout


def load_revision(commit: str) -> ModuleType:
    """td3_agent.py as of `commit` (a hash), imported with that commit's .py files of REVISION_FOLDERS
    (networks.py, and flags.py or harness/flags.py where it has them) under it.

    They are imported from a temporary folder, this tree's modules of the same names set aside;
    afterwards those are back in sys.modules, so both versions live side by side.
    """
    files = [path for path in git("ls-tree", "-r", "--name-only", commit).splitlines()
             if path.endswith(".py") and os.path.dirname(path) in REVISION_FOLDERS]
    if "td3_agent.py" not in files:
        raise ValueError("it has no td3_agent.py")
    tops = {path.split("/")[0].removesuffix(".py") for path in files}  # module and package names

    def shadowed() -> list[str]:
        return [name for name in sys.modules if name.split(".")[0] in tops]
    with tempfile.TemporaryDirectory(prefix="bench-against-") as folder:
        for path in files:
            os.makedirs(os.path.join(folder, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(folder, path), "w") as f:
                f.write(git("show", f"{commit}:{path}"))
        ours = {name: sys.modules.pop(name) for name in shadowed()}
        sys.path.insert(0, folder)
        try:
            return importlib.import_module("td3_agent")
        finally:
            sys.path.remove(folder)
            for name in shadowed():
                sys.modules.pop(name)
            sys.modules.update(ours)


def has_members(module: ModuleType) -> bool:
    """Whether the module's TD3Agent trains M members (takes `seeds`), rather than one run."""
    return "seeds" in inspect.signature(module.TD3Agent.__init__).parameters


def build(module: ModuleType, cfg, members: int, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray):
    """The module's TD3Agent of `members` members (seeds 0 .. M - 1), or of one run in the single-run API."""
    if has_members(module):
        return module.TD3Agent(obs_dim, act_dim, low, high, [cfg] * members, list(range(members)), torch.device("cpu"))
    return module.TD3Agent(obs_dim, act_dim, low, high, cfg, torch.device("cpu"))


def updater(module: ModuleType, agent, buffer: ReplayBuffer, batch: int) -> Callable[[], object]:
    """One update of the agent on a fresh batch per member, in its API: (M, B, ...) with members, (B, ...) before."""
    if not has_members(module):  # what ReplayBuffer.sample(batch) was before members: one randint, one gather
        return lambda: agent.update(*buffer.split(buffer.data[torch.randint(len(buffer), (batch,))]))
    # networks.Members holds the generators since bd2c215; the agent itself did before
    generators = agent.members.generators if hasattr(agent.members, "generators") else agent.generators
    return lambda: agent.update(*buffer.sample(batch, generators))


def config_for(module: ModuleType, overrides: dict) -> tuple[object | None, list[str]]:
    """module.TD3Config with this tree's value of each field it has, and the fields of `overrides`
    it lacks; the config is None when some are lacking (its update would not be the same)."""
    theirs = {field.name for field in dataclasses.fields(module.TD3Config)}
    lacking = sorted(set(overrides) - theirs)
    ours = dataclasses.asdict(TD3Config(**overrides))
    return None if lacking else module.TD3Config(**{k: v for k, v in ours.items() if k in theirs}), lacking


def load_against(rev: str) -> ModuleType:
    """The td3_agent module of revision `rev`, checked to build a one-run agent; ValueError in one line if not."""
    old = load_revision(resolve_revision(rev))
    try:
        build(old, old.TD3Config(), 1, 2, 1, np.zeros(1), np.ones(1))
    except (TypeError, AttributeError, ImportError) as error:
        raise ValueError(f"its TD3Agent cannot be built as TD3Agent(obs_dim, act_dim, low, high, TD3Config(), "
                         f"device), nor with configs and seeds ({type(error).__name__}); give a later commit") from None
    return old


def time_pair(updates: list[Callable[[], object]], policy_delay: int, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per update of each of two updaters over `rounds` window pairs, which goes first alternating."""
    window_steps(updates[0], policy_delay)  # warm-up
    steps, seconds = window_steps(updates[1], policy_delay), ([], [])
    for round_ in range(rounds):
        for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):
            seconds[which].append(seconds_per_call(updates[which], steps))
    return seconds


def compare(old: ModuleType, configs: tuple, members: int, buffer: ReplayBuffer, low: np.ndarray,
            high: np.ndarray, batch: int, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per update of `old`'s agent and of this tree's (configs: theirs, ours) at M = members."""
    updates = []
    for module, cfg in zip((old, td3_agent), configs):
        torch.manual_seed(0)
        agent = build(module, cfg, members, buffer.obs_dim, buffer.act_dim, low, high)
        updates.append(updater(module, agent, buffer, batch))
    return time_pair(updates, configs[1].policy_delay, rounds)


def bench_against(old: ModuleType, label: str, methods: dict[str, dict], members: list[int],
                  buffer: ReplayBuffer, low: np.ndarray, high: np.ndarray, batch: int, rounds: int) -> list[str]:
    """Speed of this tree's update over `old`'s (a td3_agent module), a line per method and M; a summary item each.

    methods: the TD3Config fields each method sets (hidden included); REV must have them all.

    Both agents sample from the same buffer in alternating windows, so a change of the machine's
    speed hits both; the figure is the median of old / new seconds over the window pairs.
    """
    summary = []
    for name, overrides in methods.items():
        old_cfg, lacking = config_for(old, overrides)
        if old_cfg is None:
            print(f"against {label}: {name} skipped: its TD3Config has no {', '.join(lacking)}, so not the same update")
            summary.append(f"{name} skipped")
            continue
        figures = []
        for m in members:
            if m > 1 and not has_members(old):
                print(f"against {label}: {name} at M = {m} skipped: its TD3Agent trains one run")
                continue
            seconds = compare(old, (old_cfg, TD3Config(**overrides)), m, buffer, low, high, batch, rounds)
            ratios = [old_s / new_s for old_s, new_s in zip(*seconds)]
            low_q, median, high_q = statistics.quantiles(ratios, n=4) if rounds > 1 else ratios * 3
            figures.append(f"{median:.2f}x at M = {m}")
            print(f"against {label}: {name} at M = {m}: {median:.3f}x as fast (quartiles {low_q:.3f}-{high_q:.3f} "
                  f"over {rounds} window pairs; {1 / statistics.median(seconds[1]):.0f} against "
                  f"{1 / statistics.median(seconds[0]):.0f} updates/s)")
        summary.append(f"{name} {', '.join(figures)}")
    return summary
