"""Timing of calls in windows: what bench.py, against.py and estimate.py share.

The machine drifts between a fast and a slow state, so the benchmarks time short windows of each
thing in turn, round after round, in one process, and take medians over the rounds.
"""
import time
from collections.abc import Callable

from harness.runs import Agent
from utils import ReplayBuffer

WINDOW_S = 0.1  # seconds of updates per timed window


def seconds_per_call(call: Callable[[], object], repeats: int) -> float:
    """Mean seconds of `call()` over `repeats` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def updater(agent: Agent, buffer: ReplayBuffer, batch: int) -> Callable[[], object]:
    """One update of all of `agent`'s members, each on a fresh batch of its own (sampling included), as a call."""
    return lambda: agent.update(*buffer.sample(batch, agent.members.generators))


def window_steps(update: Callable[[], object], policy_delay: int) -> int:
    """Updates in about WINDOW_S s, timed after a warm-up; a multiple of policy_delay, so actor
    steps count in proportion."""
    seconds_per_call(update, 4 * policy_delay)
    seconds = seconds_per_call(update, 4 * policy_delay)
    return policy_delay * max(1, round(WINDOW_S / seconds / policy_delay))
