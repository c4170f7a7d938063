"""The estimated wall-clock of the Results set, from 1-thread measurements of its parts.

The Results set (docs/reproduce.sh's runs), run as groups of members, one process each: TD3, TD3+BC
(bc_weight 10), CQL (cql_alpha 5) and CQL uniform-only, 3 seeds x 100,000 updates each, and the
alpha_reg sweep (bc_weight 0.1 1 10 100, seed 0) x 30,000 updates. Two processes run at a time,
one thread each, on 2 cores. A group's time is its updates at its measured rate, its evaluations
and one dataset load; the groups are then laid on 2 lanes, longest first.
"""
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from td3_agent import TD3Agent
from utils import evaluate

LANES = 2  # processes side by side, one thread each
EVAL_EPISODES = 10  # the runner's --eval_episodes


class Group(NamedTuple):
    """One process of the Results set: `members` members of one method, trained side by side."""
    label: str
    method: str  # a key of bench.METHODS: the update step it times
    members: int
    updates: int
    eval_every: int  # the runner's (10,000) or the sweep's (5,000); also one at the last update

    def evaluations(self) -> int:
        """Evaluations of the run: every eval_every updates, and after the last one."""
        return self.updates // self.eval_every + (self.updates % self.eval_every != 0)


RESULTS = [Group("TD3, seeds 0 1 2", "td3", 3, 100_000, 10_000),
           Group("TD3+BC bc_weight 10, seeds 0 1 2", "td3_bc", 3, 100_000, 10_000),
           Group("CQL cql_alpha 5, seeds 0 1 2", "cql", 3, 100_000, 10_000),
           Group("CQL uniform-only, seeds 0 1 2", "cql_uniform", 3, 100_000, 10_000),
           # bc_weight is a per-member weight in the same update: it costs what TD3+BC's does at M = 4
           Group("sweep bc_weight 0.1 1 10 100, seed 0", "td3_bc", 4, 30_000, 5_000)]


class EvalTiming(NamedTuple):
    """One `evaluate` of EVAL_EPISODES episodes per member, medians over repeats."""
    seconds: float  # the whole call
    setup: float  # before the first policy call: making and resetting the env copies
    per_step: float  # the rest per env step taken, the policy's calls included
    episode_steps: float  # mean steps per episode

    def full_length(self, members: int, limit: int) -> float:
        """Seconds of the same evaluation were every episode to run `limit` steps (the time limit)."""
        return self.setup + members * EVAL_EPISODES * limit * self.per_step


def needed() -> set[tuple[str, int]]:
    """The (method, members) update rates the estimate needs."""
    return {(group.method, group.members) for group in RESULTS}


def evaluate_once(act: Callable[[np.ndarray], np.ndarray], members: int, env: gym.Env) -> tuple[float, float, int]:
    """Seconds of one `evaluate` of `members` policies (act: (M, n, obs_dim) -> (M, n, act_dim)), seconds
    before its first policy call, and env steps taken.

    evaluate steps only the running episodes, in place in the (M, n, obs_dim) array it hands the
    policy each time; so the rows that changed between two calls (or after the last) are env steps.
    """
    seen = {"first": None, "live": None, "copy": None, "steps": 0}

    def stepped() -> int:
        return int(np.any(seen["live"] != seen["copy"], axis=-1).sum())

    def policy(obs: np.ndarray) -> np.ndarray:
        if seen["first"] is None:
            seen["first"] = time.perf_counter()
        else:
            seen["steps"] += stepped()
        seen["live"], seen["copy"] = obs, obs.copy()
        return act(obs)
    start = time.perf_counter()
    evaluate(policy, env, EVAL_EPISODES, seeds=list(range(members)))
    end = time.perf_counter()
    return end - start, seen["first"] - start, seen["steps"] + stepped()


def time_evaluation(agent: TD3Agent, env: gym.Env, repeats: int = 5) -> EvalTiming:
    """EvalTiming of the agent's actor (medians over `repeats` calls)."""
    calls = [evaluate_once(agent.actor.act, agent.members.count, env) for _ in range(repeats)]
    episodes = agent.members.count * EVAL_EPISODES
    return EvalTiming(statistics.median(s for s, _, _ in calls), statistics.median(f for _, f, _ in calls),
                      statistics.median((s - f) / n for s, f, n in calls), statistics.median(n for _, _, n in calls)
                      / episodes)


def schedule(seconds: list[float], lanes: int = LANES) -> list[tuple[int, float]]:
    """Lane and start second of each job, the longest first, each on the lane that frees first."""
    free, placed = [0.0] * lanes, {}
    for job in sorted(range(len(seconds)), key=lambda j: -seconds[j]):
        lane = free.index(min(free))
        placed[job] = (lane, free[lane])
        free[lane] += seconds[job]
    return [placed[job] for job in range(len(seconds))]


def group_seconds(rates: dict[tuple[str, int], float], eval_s: dict[int, float],
                  load_s: float) -> list[tuple[float, float, float]]:
    """Seconds of training, of evaluations and in all of each group of RESULTS.

    rates: updates/s (all members at once) by (method, members); eval_s: one evaluation by members.
    """
    rows = []
    for group in RESULTS:
        train = group.updates / rates[group.method, group.members]
        evaluation = group.evaluations() * eval_s[group.members]
        rows.append((train, evaluation, train + evaluation + load_s))
    return rows


def wall_clock(totals: list[float]) -> float:
    """Seconds until the last group ends, scheduled on LANES lanes."""
    return max(start + total for total, (_, start) in zip(totals, schedule(totals)))


def print_estimate(rates: dict[tuple[str, int], float], evals: dict[int, EvalTiming], load_s: float,
                   limit: int) -> None:
    """The per-group table, then the estimated wall-clock as one line (evaluations at full length)."""
    full = group_seconds(rates, {m: timing.full_length(m, limit) for m, timing in evals.items()}, load_s)
    at_init = group_seconds(rates, {m: timing.seconds for m, timing in evals.items()}, load_s)
    placed = schedule([total for *_, total in full])
    print(f"{'group (one process)':37} {'M':>2} {'updates':>8} {'updates/s':>9} {'train s':>8} {'evals':>5} "
          f"{'eval s':>7} {'load s':>6} {'total s':>8} {'lane':>4} {'start s':>8}")
    for group, (train, evaluation, total), (lane, start) in zip(RESULTS, full, placed):
        print(f"{group.label:37} {group.members:>2} {group.updates:>8,} {rates[group.method, group.members]:>9.0f} "
              f"{train:>8.0f} {group.evaluations():>5} {evaluation:>7.0f} {load_s:>6.1f} {total:>8.0f} "
              f"{lane + 1:>4} {start:>8.0f}")
    wall, wall_init = wall_clock([t for *_, t in full]), wall_clock([t for *_, t in at_init])
    print(f"estimated wall-clock of the Results set: {wall / 60:.1f} min on {LANES} lanes of 1 thread "
          f"(evaluations at full length, {limit:,} steps per episode: an upper bound; {wall_init / 60:.1f} min "
          f"with episodes as short as at init); not included: videos, process start-up, checkpoints, and "
          f"how much two processes side by side slow each other")
