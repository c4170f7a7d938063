"""bench.py --against REV: this tree's update step against the one of git revision REV, in one process.

REV may have this tree's API (M members: TD3Agent(..., configs, seeds, device), (M, B, ...) batches)
or the older one of a single run (TD3Agent(..., config, device), (B, ...) batches, up to 53b1660).
Either way one run is timed: this tree at M = 1 against REV's single run (or its M = 1).
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
REVISION_MODULES = ("networks", "flags", "td3_agent")  # what --against imports of a revision


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


def load_revision(commit: str) -> ModuleType:
    """td3_agent.py as of `commit` (a hash), with that commit's networks.py (and flags.py, where it
    has one: td3_agent.py imports it since the flags are declared on TD3Config) under it.

    They are imported from a temporary folder; afterwards this tree's modules are back in
    sys.modules, so both versions live side by side.
    """
    with tempfile.TemporaryDirectory(prefix="bench-against-") as folder:
        for name in REVISION_MODULES:
            shown = subprocess.run(["git", "-C", REPO, "show", f"{commit}:{name}.py"], capture_output=True, text=True)
            if shown.returncode != 0 and name != "flags":  # older commits have no flags.py
                raise ValueError(f"git cannot show its {name}.py")
            if shown.returncode == 0:
                with open(os.path.join(folder, f"{name}.py"), "w") as f:
                    f.write(shown.stdout)
        ours = {name: sys.modules.pop(name) for name in REVISION_MODULES if name in sys.modules}
        sys.path.insert(0, folder)
        try:
            return importlib.import_module("td3_agent")
        finally:
            sys.path.remove(folder)
            for name in REVISION_MODULES:
                sys.modules.pop(name, None)
            sys.modules.update(ours)


def has_members(module: ModuleType) -> bool:
    """Whether the module's TD3Agent trains M members (takes `seeds`), rather than one run."""
    return "seeds" in inspect.signature(module.TD3Agent.__init__).parameters


def single_run(module: ModuleType, cfg, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray):
    """The module's TD3Agent of one run, in whichever API it has (M = 1, seed 0, with members)."""
    if has_members(module):
        return module.TD3Agent(obs_dim, act_dim, low, high, [cfg], [0], torch.device("cpu"))
    return module.TD3Agent(obs_dim, act_dim, low, high, cfg, torch.device("cpu"))


def single_updater(module: ModuleType, agent, buffer: ReplayBuffer, batch: int) -> Callable[[], object]:
    """One update of a one-run agent on a fresh batch, in its API: (1, B, ...) with members, (B, ...) before."""
    if has_members(module):
        return lambda: agent.update(*buffer.sample(batch, agent.generators))
    # what ReplayBuffer.sample(batch) was before members: one randint, one gather
    return lambda: agent.update(*buffer.split(buffer.data[torch.randint(len(buffer), (batch,))]))


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
        single_run(old, old.TD3Config(), 2, 1, np.zeros(1), np.ones(1))
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


def bench_against(old: ModuleType, label: str, methods: dict[str, dict], buffer: ReplayBuffer, low: np.ndarray,
                  high: np.ndarray, batch: int, hidden: tuple[int, ...], rounds: int) -> list[str]:
    """Speed of this tree's update of one run over `old`'s (a td3_agent module), a line per method.

    Both agents sample from the same buffer in alternating windows, so a change of the machine's
    speed hits both; the figure is the median of old / new seconds over the window pairs.
    """
    summary = []
    for name, overrides in methods.items():
        old_cfg, lacking = config_for(old, overrides | {"hidden": hidden})
        if old_cfg is None:
            print(f"against {label}: {name} skipped: its TD3Config has no {', '.join(lacking)}, so not the same update")
            summary.append(f"{name} skipped")
            continue
        updates = []
        for module, cfg in ((old, old_cfg), (td3_agent, TD3Config(**overrides, hidden=hidden))):
            torch.manual_seed(0)
            agent = single_run(module, cfg, buffer.obs_dim, buffer.act_dim, low, high)
            updates.append(single_updater(module, agent, buffer, batch))
        seconds = time_pair(updates, old_cfg.policy_delay, rounds)
        ratios = [old_s / new_s for old_s, new_s in zip(*seconds)]
        low_q, median, high_q = statistics.quantiles(ratios, n=4) if rounds > 1 else ratios * 3
        summary.append(f"{name} {median:.2f}x")
        print(f"against {label}: {name} {median:.3f}x as fast at M = 1 (quartiles {low_q:.3f}-{high_q:.3f} over "
              f"{rounds} window pairs; {1 / statistics.median(seconds[1]):.0f} against "
              f"{1 / statistics.median(seconds[0]):.0f} updates/s)")
    return summary
