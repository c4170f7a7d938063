"""The run folders runner.py writes, read back as data, and what became of each run.

Every folder below a results folder holding a config.json or progress.csv is one run. A run
finished (its last evaluation at total_steps, every value finite), diverged (a non-finite value in
its last progress.csv or train.csv row, or |dataset Q| past its --max_abs_q), or stopped early
(killed, interrupted, or still running). Reads only CSV and JSON files.
"""
import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from harness.files import read_text


class PlotError(Exception):
    """A problem with the input or output folders, reported as one line with exit status 2."""


class BrokenRun(Exception):
    """A run folder that cannot be read; it is skipped with a one-line warning."""


@dataclass
class Run:
    """One run folder: config.json, its flags, progress.csv and train.csv (None if absent) as column -> values.

    diverged: why the run stopped as diverged ('non-finite eval_return_mean at step 3000'), or None.
    """
    dir: str
    meta: dict
    flags: dict
    progress: dict[str, np.ndarray]
    train: dict[str, np.ndarray] | None
    diverged: str | None = None


def warn(message: str, prog: str = "plot.py") -> None:
    """One line on stderr; the other runs are still read."""
    print(f"{prog}: warning: {message}", file=sys.stderr)


def read_csv(path: str, required: tuple[str, ...], prog: str = "plot.py") -> tuple[dict[str, np.ndarray], list[str]]:
    """A CSV file as column -> floats (empty cell -> NaN), and the columns its last row logged as NaN or
    infinity (an empty cell is no value, not a non-finite one); BrokenRun says what is wrong with it."""
    name = os.path.basename(path)
    try:  # a FIFO or device there is refused, never waited on
        table = [row for row in csv.reader(io.StringIO(read_text(path), newline="")) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BrokenRun(f"cannot read {name}: {e.strerror if isinstance(e, OSError) else e}") from None
    header, *rows = table or [[]]
    if len(rows) > 1 and len(rows[-1]) < len(header):  # cut short by a killed write: the run stopped before it
        warn(f"{path}: its last row is cut short (the run was killed while writing it); read without it", prog)
        rows.pop()
    missing = [column for column in required if column not in header]
    problems = (("is empty", not header), (f"has no column {', '.join(missing)}", missing),
                ("has a header but no rows", not rows),
                ("has a truncated or malformed row", any(len(row) != len(header) for row in rows)))
    problem = next((what for what, found in problems if found), None)
    if problem:
        raise BrokenRun(f"{name} {problem}")
    try:
        columns = dict(zip(header, np.array([[float(c) if c else math.nan for c in row] for row in rows]).T))
    except ValueError as e:
        raise BrokenRun(f"{name}: {e}") from None
    if not (np.diff(columns["step"]) > 0).all() or not np.isfinite(columns["step"]).all():
        raise BrokenRun(f"{name}: steps do not increase")  # seeds are aligned on their steps
    return columns, [h for h, cell in zip(header, rows[-1]) if cell and not math.isfinite(float(cell))]


def divergence(flags: dict, progress: dict[str, np.ndarray], bad: list[str]) -> str | None:
    """Why a run's last rows show it diverged (non-finite values, |dataset Q| past --max_abs_q), or None."""
    if bad:
        return f"non-finite {', '.join(bad)}"
    bound, q = flags.get("max_abs_q"), progress.get("dataset_q", np.zeros(1))[-1]
    if isinstance(bound, (int, float)) and not isinstance(bound, bool) and abs(q) > bound:
        return f"|dataset_q| {abs(q):.3g} past --max_abs_q {bound:g}"
    return None


def meta_problem(meta) -> str | None:
    """What makes a loaded config.json unusable here (labels are texts, all of it valid Unicode), or None."""
    if not isinstance(meta, dict) or not isinstance(meta.get("flags"), dict):
        return "has no 'flags' object"
    if "config" in meta and not isinstance(meta["config"], str):
        return f"has a label ('config') that is a {type(meta['config']).__name__}, not a text"
    try:
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # JSON's \ud800 escapes make text no file or terminal can hold
        return "holds text that is not valid Unicode (an unpaired surrogate)"
    return None


def read_run(run_dir: str, prog: str = "plot.py") -> Run:
    """One run folder; BrokenRun when its config.json or progress.csv is missing or unreadable."""
    try:  # a FIFO or device there is refused, never waited on
        meta = json.loads(read_text(os.path.join(run_dir, "config.json")))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BrokenRun(f"config.json: {e.strerror if isinstance(e, OSError) else e}") from None
    problem = meta_problem(meta)
    if problem:
        raise BrokenRun(f"config.json {problem}")
    progress, bad = read_csv(os.path.join(run_dir, "progress.csv"), ("step", "eval_return_mean"), prog)
    where = f" at step {progress['step'][-1]:.0f}"
    train, train_path = None, os.path.join(run_dir, "train.csv")
    if os.path.exists(train_path):
        try:
            train, train_bad = read_csv(train_path, ("step",), prog)
            bad, where = (bad, where) if bad or not train_bad else (train_bad, f" at step {train['step'][-1]:.0f}")
        except BrokenRun as e:  # the returns in progress.csv are still worth plotting
            warn(f"skipping {train_path}: {e}", prog)
    why = divergence(meta["flags"], progress, bad)
    return Run(run_dir, meta, meta["flags"], progress, train, why and why + where)


def load_runs(root: str, prog: str = "plot.py") -> list[Run]:
    """Every readable run at or below root; a broken folder is skipped with a warning."""
    if not os.path.isdir(root):
        problem = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise PlotError(f"results_dir '{root}' {problem}; give the folder runner.py wrote (default: results/)")
    run_dirs = sorted(d for d, _, files in os.walk(root) if {"config.json", "progress.csv"} & set(files))
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append(read_run(run_dir, prog))
        except BrokenRun as e:
            warn(f"skipping {run_dir}: {e}", prog)
    if not runs:
        skipped = f" ({len(run_dirs)} skipped)" if run_dirs else ""
        raise PlotError(f"no readable run in '{root}'{skipped}; run runner.py first "
                        f"(it writes <results_dir>/<config>-seed<k>-<time>/progress.csv)")
    return runs


def target_step(runs: list[Run]) -> int:
    """The step the runs of a group should reach: their total_steps, else the furthest any got."""
    target = runs[0].flags.get("total_steps")
    return int(target) if isinstance(target, (int, float)) else max(int(run.progress["step"][-1]) for run in runs)


def statuses(runs: list[Run]) -> list[str]:
    """'finished', 'diverged' or 'stopped early' for each run of a group."""
    target = target_step(runs)
    return ["diverged" if run.diverged else "finished" if run.progress["step"][-1] >= target else "stopped early"
            for run in runs]


def split_copies(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(distinct runs, copies) of a group: a copy has the seed of another (the same flags: a copied folder).

    Of runs with one seed, the one that got furthest is kept (finished before the others).
    """
    ranked = sorted(zip(runs, statuses(runs)),
                    key=lambda pair: (pair[1] != "finished", -pair[0].progress["step"][-1], pair[0].dir))
    kept, seeds = set(), set()
    for run, _ in ranked:
        seed = json.dumps(run.flags.get("seed"))
        if seed not in seeds:
            kept.add(run.dir)
            seeds.add(seed)
    return [r for r in runs if r.dir in kept], [r for r in runs if r.dir not in kept]
