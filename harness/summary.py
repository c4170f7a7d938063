"""The run folders runner.py writes, as data: read, grouped into configurations, summarised over seeds.

Every folder below a results folder holding a config.json or progress.csv is one run. Runs whose
flags differ only in seed, seeds, threads, ray, device, results_dir, resume, video_every or
log_every are seeds of one group (configuration). The summary gives each group's final and best
return as the interquartile mean (IQM) over seeds with a 95% percentile-bootstrap interval, as
rliable defines them, and a normalized score. Reads only CSV and JSON files; plot.py draws them.
"""
import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
from scipy import stats

# config.json records what a run is (harness/config.py's RunConfig): runs differing only in seed are seeds
# of one group. (Folders of older versions also recorded how a run was launched; those keys are left out too.)
NOT_IN_GROUP_KEY = frozenset({"seed", "seeds", "threads", "ray", "device", "results_dir", "resume", "video_every",
                              "workers"})
D4RL_HOPPER = (-20.272305, 3234.3)  # D4RL's hopper random and expert returns: the proxy when config.json has none
BOOTSTRAP_RESAMPLES = 2000
PROXY = "D4RL hopper proxy"
SUMMARY_COLUMNS = ("group", "config", "seeds", "seeds_reached_final", "final_step",
                   *(f"{when}_{kind}_{stat}" for when in ("final", "best") for kind in ("return", "normalized")
                     for stat in ("iqm", "ci_low", "ci_high")),
                   "normalized_reference", "final_return_mean", "final_return_std", "best_return_mean",
                   "best_return_std", "final_returns_per_seed", "final_dataset_q", "mc_return")


class PlotError(Exception):
    """A problem with the input or output folders, reported as one line with exit status 2."""


class BrokenRun(Exception):
    """A run folder that cannot be read; it is skipped with a one-line warning."""


@dataclass
class Run:
    """One run folder: config.json, its flags, progress.csv and train.csv (None if absent) as column -> values."""
    dir: str
    meta: dict
    flags: dict
    progress: dict[str, np.ndarray]
    train: dict[str, np.ndarray] | None


def warn(message: str) -> None:
    """One line on stderr; the other runs are still plotted."""
    print(f"plot.py: warning: {message}", file=sys.stderr)


def read_csv(path: str, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A CSV file as column -> floats (empty cell -> NaN); BrokenRun says what is wrong with it."""
    name = os.path.basename(path)
    try:
        with open(path, newline="") as f:
            table = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BrokenRun(f"cannot read {name}: {e}") from None
    header, *rows = table or [[]]
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
    return columns


def read_run(run_dir: str) -> Run:
    """One run folder; BrokenRun when its config.json or progress.csv is missing or unreadable."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BrokenRun(f"config.json: {e.strerror if isinstance(e, OSError) else e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("flags"), dict):
        raise BrokenRun("config.json has no 'flags' object")
    progress = read_csv(os.path.join(run_dir, "progress.csv"), ("step", "eval_return_mean"))
    train, train_path = None, os.path.join(run_dir, "train.csv")
    if os.path.exists(train_path):
        try:
            train = read_csv(train_path, ("step",))
        except BrokenRun as e:  # the returns in progress.csv are still worth plotting
            warn(f"skipping {train_path}: {e}")
    return Run(run_dir, meta, meta["flags"], progress, train)


def load_runs(root: str) -> list[Run]:
    """Every readable run at or below root; a broken folder is skipped with a warning."""
    if not os.path.isdir(root):
        problem = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise PlotError(f"results_dir '{root}' {problem}; give the folder runner.py wrote (default: results/)")
    run_dirs = sorted(d for d, _, files in os.walk(root) if {"config.json", "progress.csv"} & set(files))
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append(read_run(run_dir))
        except BrokenRun as e:
            warn(f"skipping {run_dir}: {e}")
    if not runs:
        skipped = f" ({len(run_dirs)} skipped)" if run_dirs else ""
        raise PlotError(f"no readable run in '{root}'{skipped}; run runner.py first "
                        f"(it writes <results_dir>/<config>-seed<k>-<time>/progress.csv)")
    return runs


def show(value: object) -> str:
    """A flag value for a label: 10 not 10.0, 256,256 for a list, exact enough to tell values apart."""
    if isinstance(value, list):
        return ",".join(show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return str(value)


def natural_key(label: str) -> list:
    """Sort key putting bc_weight=2.5 before bc_weight=10: the numbers in a label compared as numbers."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)", label)  # odd positions hold the numbers
    return [float(part) if i % 2 else part for i, part in enumerate(parts)]


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by every flag that changes what is learned or measured, labelled by the flags that differ."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        key = tuple(sorted((k, json.dumps(v)) for k, v in run.flags.items() if k not in NOT_IN_GROUP_KEY))
        by_key.setdefault(key, []).append(run)
    settings = [dict(key) for key in by_key]  # flag -> its value as JSON; a flag older runs lack is absent
    names = dict.fromkeys(name for run in runs for name in run.flags)  # runner.py's flag order
    differing = [n for n in names if len({s.get(n) for s in settings}) > 1]
    # runner.py's own label (every flag off its default) when it names each group, and only it
    own = [{run.meta.get("config") for run in group} for group in by_key.values()]
    if all(len(labels) == 1 and None not in labels for labels in own) and len({*map(min, own)}) == len(own):
        labels = [min(labels) for labels in own]
    elif differing:
        labels = [" ".join(f"{n}={show(json.loads(s[n])) if n in s else 'unset'}" for n in differing)
                  for s in settings]
    else:  # one group: nothing to tell apart
        labels = [str(runs[0].meta.get("config") or "all runs")]
    return dict(sorted(zip(labels, by_key.values()), key=lambda item: natural_key(item[0])))


def completion(runs: list[Run]) -> tuple[int, int]:
    """How many seeds reached the final step (total_steps, else the furthest any seed got), and that step."""
    last_steps = [int(run.progress["step"][-1]) for run in runs]
    target = runs[0].flags.get("total_steps")
    target = int(target) if isinstance(target, (int, float)) else max(last_steps)
    return sum(last >= target for last in last_steps), target


def series(runs: list[Run], table: str, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of `name` in progress.csv or train.csv, finite values only, for each run that logged it."""
    curves = []
    for run in runs:
        columns = getattr(run, table) or {}
        finite = np.isfinite(columns.get(name, np.zeros(0)))
        if finite.any():
            curves.append((columns["step"][finite], columns[name][finite]))
    return curves


def iqm_ci(x: np.ndarray) -> tuple[float, float, float]:
    """IQM over seeds and its 95% percentile-bootstrap interval (NaN for one seed), as rliable defines them."""
    iqm = float(stats.trim_mean(x, 0.25))
    if len(x) < 2:
        return iqm, math.nan, math.nan
    ci = stats.bootstrap((x,), lambda s, axis: stats.trim_mean(s, 0.25, axis=axis), method="percentile",
                         n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(0)).confidence_interval
    return iqm, float(ci.low), float(ci.high)


def reference_scores(meta: dict) -> tuple[float, float, str]:
    """(random, expert, source) for the normalized score: config.json's, else D4RL hopper's as a proxy."""
    low, high = meta.get("ref_min_score"), meta.get("ref_max_score")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and high != low:
        return low, high, "config.json"
    return *D4RL_HOPPER, PROXY


def mean_of_last(runs: list[Run], name: str) -> float:
    """The mean over seeds of each seed's last finite value of a progress.csv column (NaN if none logged it)."""
    last = [values[-1] for _, values in series(runs, "progress", name)]
    return float(np.mean(last)) if last else math.nan


def summary_rows(groups: dict[str, list[Run]]) -> list[dict]:
    """One row per group with SUMMARY_COLUMNS: seeds, final and best return (IQM, CI), normalized, Q."""
    rows = []
    for label, runs in groups.items():
        reached, target = completion(runs)
        random, expert, source = reference_scores(runs[0].meta)
        returns = series(runs, "progress", "eval_return_mean")
        row = {"group": label, "config": runs[0].meta.get("config", ""), "seeds": len(runs),
               "seeds_reached_final": reached, "final_step": target, "normalized_reference": source,
               "final_dataset_q": mean_of_last(runs, "dataset_q"), "mc_return": mean_of_last(runs, "mc_return")}
        for when, per_seed in (("final", [v[-1] for _, v in returns]), ("best", [v.max() for _, v in returns])):
            stat = iqm_ci(np.array(per_seed))
            row |= {f"{when}_return_mean": float(np.mean(per_seed)), f"{when}_return_std": float(np.std(per_seed))}
            row |= dict(zip((f"{when}_return_iqm", f"{when}_return_ci_low", f"{when}_return_ci_high"), stat))
            row |= {f"{when}_normalized_{s}": 100 * (v - random) / (expert - random)
                    for s, v in zip(("iqm", "ci_low", "ci_high"), stat)}
        row["final_returns_per_seed"] = " ".join(f"{v[-1]:.1f}" for _, v in returns)  # in seed-folder order
        rows.append(row)
    return rows


def interval(row: dict, prefix: str) -> str:
    """`910.0 [880.5, 940.2]`, or the IQM alone for one seed."""
    iqm, low, high = (row[f"{prefix}_{s}"] for s in ("iqm", "ci_low", "ci_high"))
    return f"{iqm:.1f}" if math.isnan(low) else f"{iqm:.1f} [{low:.1f}, {high:.1f}]"


def summary_table(rows: list[dict]) -> str:
    """The summary rows as an aligned text table, with footnotes on the statistics and early stops."""
    proxy = [row["normalized_reference"] == PROXY for row in rows]
    mark = "" if all(proxy) else "* "  # mixed references: mark the rows that use the proxy
    header = ["group", "seeds reached final", "final return IQM [95% CI]", "best return IQM [95% CI]",
              f"normalized final{f' ({PROXY})' if all(proxy) else ''}", "final dataset_q", "mc_return"]
    cells = [[row["group"], f"{row['seeds_reached_final']} of {row['seeds']}", interval(row, "final_return"),
              interval(row, "best_return"), mark * p + interval(row, "final_normalized"),
              f"{row['final_dataset_q']:.4g}", f"{row['mc_return']:.4g}"] for row, p in zip(rows, proxy)]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *cells]]
    lines.append("IQM: mean of the middle half of the seeds; CI: percentile bootstrap over seeds; "
                 "best: each seed's best evaluation")
    lines.append("normalized: 100 (R - random) / (expert - random), references from config.json"
                 + (f"; {mark}{PROXY} where it has none: random {D4RL_HOPPER[0]}, expert {D4RL_HOPPER[1]}"
                    if any(proxy) else ""))
    lines += [f"{row['group']}: {row['seeds_reached_final']} of {row['seeds']} seeds reached {row['final_step']}; "
              f"the final return of the others is their last evaluation"
              for row in rows if row["seeds_reached_final"] < row["seeds"]]
    return "\n".join(lines)
