"""The runs read (run_data.py), grouped into configurations, summarised over seeds.

Runs whose flags differ only in seed, seeds, threads, ray, device, results_dir, resume, video_every
or log_every are seeds of one group (configuration). The summary gives each group's final and best
return over the seeds that finished, as the interquartile mean (IQM) with a 95% percentile-bootstrap
interval (rliable's definitions), and a normalized score; it says how many seeds finished, diverged
or stopped early, and flags copies of a run (two folders of one seed). Reads only CSV and JSON files;
plot.py draws them.
"""
import json
import math
import re

import numpy as np
from scipy import stats

from harness.flags import show_value
from harness.run_data import (PlotError, Run, load_runs, split_copies, statuses,  # noqa: F401 (plot.py's names)
                              target_step)

# config.json records what a run is (harness/config.py's RunConfig): runs differing only in seed are seeds
# of one group. (Folders of older versions also recorded how a run was launched; those keys are left out too.)
NOT_IN_GROUP_KEY = frozenset({"seed", "seeds", "threads", "ray", "device", "results_dir", "resume", "video_every",
                              "workers"})
D4RL_HOPPER = (-20.272305, 3234.3)  # D4RL's hopper random and expert returns: the proxy for Hopper runs alone
BOOTSTRAP_RESAMPLES = 2000
PROXY = "D4RL hopper proxy"
NO_REFERENCE = "none"
# summary.csv's columns: those every reader uses; the spread over seeds only where some group has two finished seeds
# (none can be given from one); a run's troubles only where some group had one. summary_rows has every one.
SUMMARY_COLUMNS = ("group", "seeds", "seeds_reached_final", "final_step", "final_return_iqm", "best_return_iqm",
                   "final_normalized_iqm", "normalized_reference", "final_returns_per_seed", "final_dataset_q",
                   "mc_return", "final_bc_distance", "behaviour_return")
SPREAD_COLUMNS = ("final_return_ci_low", "final_return_ci_high", "final_return_std", "best_return_ci_low",
                  "best_return_ci_high", "final_normalized_ci_low", "final_normalized_ci_high")
TROUBLE_COLUMNS = ("seeds_diverged", "seeds_stopped_early", "why_diverged", "copies", "copy_folders")


def csv_columns(rows: list[dict]) -> list[str]:
    """summary.csv's columns for these rows: SUMMARY_COLUMNS, then the spread and trouble columns that some row
    fills, and runner.py's label (config) where it is not the group's."""
    spread = any(row["seeds_reached_final"] > 1 for row in rows)
    trouble = [name for name in TROUBLE_COLUMNS if any(row[name] for row in rows)]
    config = ["config"] if any(row["config"] != row["group"] for row in rows) else []
    return [*SUMMARY_COLUMNS[:1], *config, *SUMMARY_COLUMNS[1:], *SPREAD_COLUMNS * spread, *trouble]


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
        labels = [" ".join(f"{n}={show_value(json.loads(s[n])) if n in s else 'unset'}" for n in differing)
                  for s in settings]
    else:  # one group: nothing to tell apart
        labels = [str(runs[0].meta.get("config") or "all runs")]
    return dict(sorted(zip(labels, by_key.values()), key=lambda item: natural_key(item[0])))


def completion(runs: list[Run]) -> tuple[int, int]:
    """How many seeds finished (reached the final step, every value finite), and that step (total_steps, else
    the furthest any seed got)."""
    return statuses(runs).count("finished"), target_step(runs)


def series(runs: list[Run], table: str, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of `name` in progress.csv or train.csv, finite values only, for each run that logged it."""
    curves = []
    for run in runs:
        columns = getattr(run, table) or {}
        finite = np.isfinite(columns.get(name, np.zeros(0)))
        if finite.any():
            curves.append((columns["step"][finite], columns[name][finite]))
    return curves


def iqm_ci(x: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """IQM over seeds and its 95% percentile-bootstrap interval, as rliable defines them; None where the seeds
    cannot give it (no interval from one seed, nothing from none)."""
    if len(x) == 0:
        return None, None, None
    iqm = float(stats.trim_mean(x, 0.25))
    if len(x) < 2:
        return iqm, None, None
    ci = stats.bootstrap((x,), lambda s, axis: stats.trim_mean(s, 0.25, axis=axis), method="percentile",
                         n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(0)).confidence_interval
    return iqm, float(ci.low), float(ci.high)


def is_hopper(meta: dict) -> bool:
    """Whether a run's environment is Hopper: config.json's env_id, else a 'hopper' in its dataset id."""
    env_id, dataset = meta.get("env_id"), meta["flags"].get("dataset")
    if isinstance(env_id, str):
        return env_id.split("-")[0].lower() == "hopper"
    return isinstance(dataset, str) and re.search(r"(^|[/_-])hopper([/_-]|$)", dataset.lower()) is not None


def reference_scores(meta: dict) -> tuple[float | None, float | None, str]:
    """(random, expert, source) for the normalized score: config.json's, else D4RL hopper's as a proxy for a
    Hopper run, else none (None, None)."""
    low, high = meta.get("ref_min_score"), meta.get("ref_max_score")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and high != low:
        return low, high, "config.json"
    return (*D4RL_HOPPER, PROXY) if is_hopper(meta) else (None, None, NO_REFERENCE)


def mean_of_last(runs: list[Run], name: str) -> float | None:
    """The mean over runs of each one's last finite value of a progress.csv column (None if none logged it)."""
    last = [values[-1] for _, values in series(runs, "progress", name)]
    return float(np.mean(last)) if last else None


def spread(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, std) over seeds; the std None for one seed, both None for none."""
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else None


def normalized(value: float | None, random: float | None, expert: float | None) -> float | None:
    """100 (R - random) / (expert - random), None without references or a value."""
    return None if value is None or random is None else 100 * (value - random) / (expert - random)


def return_stats(row: dict, finished: list[Run], random: float | None, expert: float | None) -> None:
    """The final and best return columns of a summary row, over the finished seeds."""
    returns = series(finished, "progress", "eval_return_mean")
    for when, per_seed in (("final", [v[-1] for _, v in returns]), ("best", [v.max() for _, v in returns])):
        stat = iqm_ci(np.array(per_seed))
        row |= dict(zip((f"{when}_return_mean", f"{when}_return_std"), spread(per_seed)))
        row |= dict(zip((f"{when}_return_iqm", f"{when}_return_ci_low", f"{when}_return_ci_high"), stat))
        row |= {f"{when}_normalized_{s}": normalized(v, random, expert)
                for s, v in zip(("iqm", "ci_low", "ci_high"), stat)}
    row["final_returns_per_seed"] = " ".join(f"{v[-1]:.1f}" for _, v in returns)  # in folder order


def summary_rows(groups: dict[str, list[Run]]) -> list[dict]:
    """One row per group with SUMMARY_COLUMNS: seeds finished / diverged / stopped early, copies, final and best
    return (IQM, CI) and normalized score over the finished seeds, Q; None where there is nothing to give."""
    rows = []
    for label, runs in groups.items():
        distinct, copies = split_copies(runs)
        status = statuses(distinct)
        finished = [run for run, s in zip(distinct, status) if s == "finished"]
        random, expert, source = reference_scores(runs[0].meta)
        row = {"group": label, "config": runs[0].meta.get("config", ""), "seeds": len(distinct),
               "seeds_reached_final": len(finished), "seeds_diverged": status.count("diverged"),
               "seeds_stopped_early": status.count("stopped early"), "copies": len(copies),
               "final_step": target_step(runs), "normalized_reference": source,
               "final_dataset_q": mean_of_last(finished, "dataset_q"), "mc_return": mean_of_last(finished, "mc_return"),
               "final_bc_distance": mean_of_last(finished, "bc_distance"),
               "behaviour_return": runs[0].meta.get("behaviour_return_mean", math.nan),
               "why_diverged": "; ".join(run.diverged for run in distinct if run.diverged),
               "copy_folders": " ".join(run.dir for run in copies)}
        return_stats(row, finished, random, expert)
        rows.append(row)
    return rows


def number(value: float | None, digits: str = ".4g") -> str:
    """A table cell: the value, or '-' where there is none."""
    return "-" if value is None else f"{value:{digits}}"


def interval(row: dict, prefix: str) -> str:
    """`910.0 [880.5, 940.2]`, the IQM alone for one seed, '-' for none."""
    iqm, low, high = (row[f"{prefix}_{s}"] for s in ("iqm", "ci_low", "ci_high"))
    return number(iqm, ".1f") if low is None else f"{iqm:.1f} [{low:.1f}, {high:.1f}]"


def footnotes(row: dict) -> list[str]:
    """What a group's row leaves out: seeds that did not finish, copies of a run."""
    lines = []
    if row["seeds_reached_final"] < row["seeds"]:
        why = row["why_diverged"]
        lines.append(f"{row['group']}: {row['seeds_reached_final']} of {row['seeds']} seeds reached "
                     f"{row['final_step']} ({row['seeds_diverged']} diverged{f': {why}' if why else ''}, "
                     f"{row['seeds_stopped_early']} stopped early); its returns are over the seeds that finished")
    if row["copies"]:
        lines.append(f"{row['group']}: {row['copies']} run folder(s) repeat the flags and seed of another (copies, "
                     f"not seeds), each counted once: {row['copy_folders']}")
    return lines


def summary_table(rows: list[dict]) -> str:
    """The summary rows as an aligned text table, with footnotes on the statistics and the seeds left out."""
    proxy = [row["normalized_reference"] == PROXY for row in rows]
    mark = "" if all(proxy) else "* "  # mixed references: mark the rows that use the proxy
    several = any(row["seeds_reached_final"] > 1 for row in rows)
    stat = " IQM [95% CI]" if several else ""
    header = ["group", "seeds finished/diverged/stopped", f"final return{stat}", f"best return{stat}",
              f"normalized final{f' ({PROXY})' if all(proxy) else ''}", "final dataset_q", "mc_return"]
    cells = [[row["group"], f"{row['seeds']}: {row['seeds_reached_final']}/{row['seeds_diverged']}/"
              f"{row['seeds_stopped_early']}", interval(row, "final_return"), interval(row, "best_return"),
              NO_REFERENCE if row["normalized_reference"] == NO_REFERENCE
              else mark * p + interval(row, "final_normalized"),
              number(row["final_dataset_q"]), number(row["mc_return"])] for row, p in zip(rows, proxy)]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *cells]]
    lines.append("IQM: mean of the middle half of the seeds; CI: percentile bootstrap over seeds; best: each seed's "
                 "best evaluation; over the seeds that finished" if several else
                 "one seed finished per configuration: its final and best evaluation, no spread or interval")
    lines.append("normalized: 100 (R - random) / (expert - random), references from config.json"
                 + (f"; {mark}{PROXY} for Hopper runs where it has none: random {D4RL_HOPPER[0]}, expert "
                    f"{D4RL_HOPPER[1]}" if any(proxy) else "")
                 + ("; none: no references for that environment" if NO_REFERENCE in
                    [row["normalized_reference"] for row in rows] else ""))
    return "\n".join(lines + [line for row in rows for line in footnotes(row)])
