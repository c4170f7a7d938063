"""What a run logs, row by row: train.csv's metric means and progress.csv's row of an evaluation; and what the
terminal shows of it (the bar's status, its one line per evaluation where the output is no terminal).

train.csv's columns are the step and the names the agent's update() may return (its metric_names()),
fixed for the run: a metric that no update of a row returned (the actor's in a row of critic steps
alone) is a blank cell, never a missing column. progress.csv's are laid out by progress_row. --resume
checks both against a run folder's headers.
"""
import math
import sys

import numpy as np
import torch


class MetricMeans:
    """Running sums of the update's metrics (one value per member), kept on the device, read once per --log_every."""

    def __init__(self, sums: dict[str, torch.Tensor] | None = None, counts: dict[str, int] | None = None):
        # the group's, when given: its checkpoints hold them, so a resumed interval sums what it would have
        self.sums, self.counts = ({} if sums is None else sums), ({} if counts is None else counts)

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        """Add one update's metrics (the actor's appear only on actor steps, so counts differ)."""
        for name, value in metrics.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> dict[str, list[float]]:
        """Each metric's mean since the last pop, one float per member (one device-to-host copy)."""
        names = list(self.sums)
        values = torch.stack([self.sums[n] for n in names]).tolist() if names else []
        means = {n: [v / self.counts[n] for v in per_member] for n, per_member in zip(names, values)}
        self.sums.clear(), self.counts.clear()
        return means


def train_columns(agent, rollouts=None) -> list[str]:
    """train.csv's columns for an agent: the step, then every metric its update() may return, then those of the
    latest model rollouts (mopo.ModelRollouts) if there are any."""
    return ["step", *agent.metric_names(), *(rollouts.METRICS if rollouts else ())]


def train_rows(step: int, means: dict[str, list[float]], columns: list[str], members: int) -> list[dict[str, float]]:
    """One train.csv row per member: the step and each metric's mean; a metric with no update in the row is absent
    (a blank cell). A metric that is not among the columns is a ValueError: the agent must declare it."""
    undeclared = [name for name in means if name not in columns]
    if undeclared:
        raise ValueError(f"update() returned {', '.join(undeclared)}, which the agent's metric_names() does not "
                         f"declare: add it there (train.csv's columns are fixed for a run)")
    return [{"step": step} | {name: values[m] for name, values in means.items()} for m in range(members)]


def progress_row(step: int, returns: np.ndarray, measured: dict[str, float], mc_return: float,
                 elapsed: float) -> dict[str, float]:
    """One progress.csv row: the evaluation's returns, the diagnostics (the MC return beside dataset_q), the time."""
    row = {"step": step, "eval_return_mean": float(returns.mean()), "eval_return_std": float(returns.std())}
    if "dataset_q" in measured:  # the Monte-Carlo return of the same pairs goes beside it
        row["dataset_q"] = measured["dataset_q"]
    others = {name: value for name, value in measured.items() if name != "dataset_q"}
    return row | {"mc_return": mc_return} | others | {"time_s": round(elapsed, 2)}


def progress_columns(group) -> list[str]:
    """progress.csv's columns for a group's agent (harness/runs.py's Group), as progress_row lays them out."""
    names = group.agent.diagnostics(*group.probe)
    return list(progress_row(0, np.zeros(1), dict.fromkeys(names, 0.0), 0.0, 0.0))


def status(group, rows: list[dict[str, float]] | None) -> dict[str, str]:
    """What the bar shows beside the steps: each run's last evaluation return, and its batch mean Q1 (BC: bc_loss)
    of the last train.csv row (none before the first)."""
    shown = {"eval_return": " ".join("-" if math.isnan(r.last_return) else f"{r.last_return:.0f}" for r in group.runs)}
    if rows:
        name = "q1" if "q1" in rows[0] else "bc_loss"  # BC has no critic
        shown[name] = " ".join(f"{row[name]:.3g}" for row in rows)
    return shown


def show_line(name: str, group, shown: dict[str, str], steps_per_s: float) -> None:
    """The bar's state as one line, for output that is not a terminal (a log file, nohup): one per evaluation."""
    values = ", ".join(f"{key}={value}" for key, value in shown.items())
    print(f"{name}: step {group.step}/{group.cfg.total_steps}: {values}, {steps_per_s:.0f} steps/s", file=sys.stderr,
          flush=True)


def say_what_was_kept(group) -> None:
    """--episodes_percent, --bc_top_percent: a line each of the episodes and transitions kept (config.json records
    them too)."""
    kept, before = group.data_kept, (group.data_kept["dataset_episodes"], group.data_kept["dataset_transitions"])
    for flag, which, how in (("episodes_percent", "randomly drawn", ""), ("bc_top_percent", "best", " by return")):
        if f"{flag}_episodes" in kept:
            now = kept[f"{flag}_episodes"], kept[f"{flag}_transitions"]
            print(f"--{flag} {getattr(group.cfg, flag):g}: training on the {now[0]:,} {which} episodes of "
                  f"{before[0]:,}{how} ({now[1]:,} of {before[1]:,} transitions)")
            before = now
