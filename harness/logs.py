"""What a run logs, row by row: train.csv's metric means and progress.csv's row of an evaluation.

train.csv's columns are the names the agent's update() returns; progress.csv's are laid out by
progress_row, whose columns --resume checks against a run folder's header.
"""
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
