"""sweep.py's table: per swept value, how many seeds finished, diverged or stopped early, and what the finished
ones reached (final return, BC distance, dataset Q against the Monte-Carlo return of the same pairs).

Only finished runs give numbers: a run that diverged or stopped early (a worker killed, a sweep stopped)
is counted, never shown as a final return. Reads the run folders as plot.py does (run_data.py).
"""
import os

import numpy as np

from harness.files import csv_text, write_text
from harness.run_data import PlotError, Run, load_runs, split_copies, statuses

TABLE_COLUMNS = ["bc_weight", "seeds", "finished", "diverged", "stopped_early", "final_return_mean",
                 "final_return_std", "bc_distance", "dataset_q", "mc_return", "q_overestimation"]
# Below this fraction of the MC return, dataset Q has not grown to the return's scale yet (a short run):
# Q - MC then says how far Q has to grow, not that it under-estimates.
Q_SCALE = 0.5


def sweep_runs(sweep_dir: str) -> list[Run]:
    """Every readable run of the sweep folder (none if no run wrote an evaluation yet)."""
    try:
        return load_runs(sweep_dir, prog="sweep.py")
    except PlotError:
        return []


def last_values(runs: list[Run], name: str) -> np.ndarray:
    """Each run's last progress.csv value of `name`."""
    return np.array([run.progress[name][-1] for run in runs])


def value_row(value, runs: list[Run], seeds: int) -> dict:
    """The table row of one swept value: its seeds' fates, and the finished seeds' means (None with none)."""
    distinct, copies = split_copies(runs) if runs else ([], [])
    status = statuses(distinct) if distinct else []
    finished = [run for run, s in zip(distinct, status) if s == "finished"]
    row = {"bc_weight": value, "seeds": seeds, "finished": len(finished), "diverged": status.count("diverged"),
           "stopped_early": seeds - len(finished) - status.count("diverged"), "copies": len(copies)}
    if not finished:
        return row | {column: None for column in TABLE_COLUMNS[5:]}
    returns, q, mc = (last_values(finished, n) for n in ("eval_return_mean", "dataset_q", "mc_return"))
    return row | {"final_return_mean": returns.mean(), "final_return_std": returns.std() if len(finished) > 1 else None,
                  "bc_distance": last_values(finished, "bc_distance").mean(), "dataset_q": q.mean(),
                  "mc_return": mc.mean(), "q_overestimation": (q - mc).mean()}


def summarise(runs: list[Run], values: list, seeds: int) -> list[dict]:
    """One table row per swept value, over its seeds (`seeds` of them were planned)."""
    return [value_row(value, [run for run in runs if run.flags.get("bc_weight") == value], seeds) for value in values]


def q_below_scale(row: dict) -> bool:
    """Whether the row's dataset Q is still below Q_SCALE of its (positive) MC return."""
    return row["dataset_q"] is not None and row["mc_return"] > 0 and row["dataset_q"] < Q_SCALE * row["mc_return"]


def cell(value, width: int, digits: str) -> str:
    """A number right-aligned in width, or '-' where there is none."""
    return f"{'-' if value is None else format(value, digits):>{width}}"


def table_text(table: list[dict]) -> str:
    """The table as aligned text, with a line for each value whose seeds did not all finish, and a note where
    Q - MC does not measure over-estimation yet."""
    lines = [f"{'bc_weight':>9} {'seeds fin/div/stop':>18} {'final return':>16} {'BC dist':>8} {'dataset Q':>10} "
             f"{'MC return':>10} {'Q - MC':>9}"]
    for r in table:
        spread = f"± {r['final_return_std']:<4.0f}" if r["final_return_std"] is not None else " " * 6
        fates = f"{r['seeds']}: {r['finished']}/{r['diverged']}/{r['stopped_early']}"
        lines.append(f"{r['bc_weight']!s:>9} {fates:>18} {cell(r['final_return_mean'], 9, '.0f')} {spread} "
                     f"{cell(r['bc_distance'], 8, '.3f')} {cell(r['dataset_q'], 10, '.1f')} "
                     f"{cell(r['mc_return'], 10, '.1f')} {cell(r['q_overestimation'], 8, '.1f')}"
                     f"{'*' if q_below_scale(r) else ' '}")
    lines += [f"bc_weight {r['bc_weight']}: {r['finished']} of {r['seeds']} seeds finished ({r['diverged']} diverged, "
              f"{r['stopped_early']} stopped early); the numbers are the finished seeds' only"
              for r in table if r["finished"] < r["seeds"]]
    lines += [f"bc_weight {r['bc_weight']}: {r['copies']} run folder(s) repeat a seed's flags (copies), counted once"
              for r in table if r["copies"]]
    if any(map(q_below_scale, table)):
        lines.append(f"* dataset Q is below {Q_SCALE:g} x the MC return: Q has not grown to the return's scale yet "
                     f"(too few updates), so Q - MC is not under-estimation; compare the values by BC dist instead")
    return "\n".join(lines)


def write_table(sweep_dir: str, table: list[dict]) -> str:
    """sweep.csv in the sweep folder (blank cells where there is no number), atomically, through no link; its path.

    A RunFolderError says what could not be written."""
    path = os.path.join(sweep_dir, "sweep.csv")
    write_text(path, csv_text(TABLE_COLUMNS, table))
    return path
