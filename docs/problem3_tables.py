"""The tables and figures of docs/problem3.md, from the runs' logs docs/problem3.sh kept.

    python docs/problem3_tables.py                       # reads docs/problem3/runs/, writes docs/problem3/
    python docs/problem3_tables.py --results results/problem3 --out docs/problem3

Reads <results>/<dataset>/<method>/ (one folder per method, its seeds inside) as plot.py reads run folders
(harness/summary.py: only seeds that reached the final step are counted, the others are said). The default,
docs/problem3/runs/, holds copies of each run's config.json, progress.csv and train.csv that docs/problem3.sh
makes after each method; results/problem3/ holds the whole run folders, checkpoints included, and is not
kept in git. Writes
  <out>/summary.csv      one row per dataset and method: every number the page quotes;
  <out>/returns.png      one panel per dataset: each method's return over training (mean over its seeds),
                         the behaviour policy's return dotted;
  <out>/q_vs_mc.png      one panel per dataset: each method's dataset Q over the Monte-Carlo return of the
                         same pairs (1 = exact; above = over-estimation), log axis;
and puts the three tables into docs/problem3.md between its '<!-- tables -->' and '<!-- /tables -->' lines.
"""
import argparse
import csv
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402

from harness import run_data, summary  # noqa: E402
from plot import mean_curve  # noqa: E402

DATASETS = (("expert-v0", "expert (narrow, strong)"), ("medium-v0", "medium (one policy)"),
            ("medium-replay-v0", "medium-replay (broad, mostly poor)"),
            ("medium-v0-2pct", "medium, 2 % of its episodes (few samples per state)"))
# folder under each dataset -> (label, colour, line style): imitation dashed, the model-based pair dotted
METHODS = {"bc": ("BC", "0.45", "--"), "bc_top10": ("filtered BC (top 10 %)", "0.1", "--"),
           "td3": ("TD3", "tab:red", "-"), "td3_bc": ("TD3+BC (alpha_reg 10)", "tab:blue", "-"),
           "td3_bc_auto": ("TD3+BC (normalised, alpha 2.5)", "tab:blue", "-."),
           "td3_bc_35": ("TD3+BC (alpha_reg 35)", "tab:blue", ":"),
           "cql": ("CQL (alpha 5)", "tab:green", "-"), "iql": ("IQL", "tab:purple", "-"),
           "mopo": ("model-based TD3 (MOPO penalty)", "tab:orange", ":"),
           "mopo_bc": ("model-based TD3 + BC (alpha_reg 10)", "tab:brown", ":"),
           "spot": ("SPOT (support, lambda 0.1)", "tab:cyan", "-")}
COLUMNS = ("dataset", "method", "seeds", "seeds_finished", "final_return_mean", "final_return_std",
           "final_returns_per_seed", "best_return_mean", "best_return_std", "behaviour_return_mean", "behaviour_return_std",
           "dataset_episodes", "dataset_transitions", "episodes_kept", "transitions_kept", "final_dataset_q",
           "final_dataset_q_per_seed", "mc_return", "q_over_mc", "final_bc_distance", "reward_penalty", "minutes")


def load(folder: str) -> list[run_data.Run]:
    """The run folders below `folder` (none if it does not exist or holds no evaluated run yet)."""
    try:
        return run_data.load_runs(folder, prog="problem3_tables.py") if os.path.isdir(folder) else []
    except run_data.PlotError:  # a method not yet evaluated: the table and figures leave it out
        return []


def method_rows(runs_of: dict[str, list[run_data.Run]]) -> dict[str, dict]:
    """method folder name -> its summary row (harness/summary.py) and a few more columns, for one dataset's runs."""
    rows = {}
    for name, runs in runs_of.items():
        if not runs:
            continue
        row = summary.summary_rows({name: runs})[0]
        q, mc, meta = row["final_dataset_q"], row["mc_return"], runs[0].meta
        times = [run.progress["time_s"][-1] for run in runs if len(run.progress.get("time_s", ()))]
        finished = [run for run, status in zip(runs, run_data.statuses(runs)) if status == "finished"]
        q_per_seed = [values[-1] for _, values in summary.series(finished, "progress", "dataset_q")]
        rows[name] = row | {"q_over_mc": q / mc if q is not None and mc else None,
                            "final_dataset_q_per_seed": " ".join(f"{v:.4g}" for v in q_per_seed),
                            "behaviour_return_std": meta.get("behaviour_return_std"),
                            "dataset_episodes": meta.get("dataset_episodes"),
                            "dataset_transitions": meta.get("dataset_transitions"),
                            "dataset_id": runs[0].flags["dataset"],
                            "episodes_kept": meta.get("episodes_percent_episodes", meta["dataset_episodes"]),
                            "transitions_kept": meta.get("episodes_percent_transitions", meta["dataset_transitions"]),
                            "reward_penalty": runs[0].flags.get("reward_penalty") if "mopo" in name else None,
                            "minutes": max(times) / 60 if times else None}
    return rows


def cell(value: float | None, digits: str = ",.0f") -> str:
    """A number for the table, '-' where there is none."""
    return "-" if value is None or value != value else f"{value:{digits}}"


def table(title: str, rows: dict[str, dict]) -> str:
    """One dataset's Markdown table."""
    first = next(iter(rows.values()))
    part = "" if first["episodes_kept"] == first["dataset_episodes"] else (
        f"; trained on {cell(first['episodes_kept'])} of its episodes drawn at random "
        f"({cell(first['transitions_kept'])} transitions)")
    lines = [f"**{title}**: {cell(first['dataset_transitions'])} transitions in {cell(first['dataset_episodes'])} "
             f"episodes, behaviour policy {cell(first['behaviour_return'])} ± {cell(first['behaviour_return_std'])} "
             f"per episode{part}\n",
             "| method | final return, mean ± std (per seed) | best, mean ± std | dataset Q / MC return (ratio) | BC distance "
             "| seeds finished | minutes |", "|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        seeds = ", ".join(f"{float(v):,.0f}" for v in row["final_returns_per_seed"].split())
        penalty = f", lambda {row['reward_penalty']:g}" if row["reward_penalty"] is not None else ""
        lines.append(f"| {METHODS[key][0]}{penalty} | {cell(row['final_return_mean'])} ± "
                     f"{cell(row['final_return_std'])} ({seeds}) | {cell(row['best_return_mean'])} ± "
                     f"{cell(row['best_return_std'])} | "
                     f"{cell(row['final_dataset_q'], ',.4g')} / {cell(row['mc_return'])} "
                     f"({cell(row['q_over_mc'], '.2g')}) | {cell(row['final_bc_distance'], '.3f')} | "
                     f"{row['seeds_reached_final']} of {row['seeds']} | {cell(row['minutes'])} |")
    return "\n".join(lines)


def curve(runs: list[run_data.Run], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean over seeds) of the evaluation return ('return') or of dataset Q over the mean MC return ('q',
    as the table's ratio), at the steps every seed reached (plot.py's mean_curve)."""
    curves = summary.series(runs, "progress", "eval_return_mean" if kind == "return" else "dataset_q")
    if not curves:
        return np.zeros(0), np.zeros(0)
    steps, values = mean_curve(curves)
    return steps, values if kind == "return" else values / summary.mean_of_last(runs, "mc_return")


def figure(runs_of: dict[str, dict[str, list[run_data.Run]]], kind: str) -> plt.Figure:
    """returns.png ('return') or q_vs_mc.png ('q'): one panel per dataset, one line per method."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.4))
    for ax, (name, title) in zip(axes.flat, DATASETS):
        behaviour = None
        for key, (label, colour, style) in METHODS.items():
            runs = runs_of[name][key]
            steps, values = curve(runs, kind)
            if len(steps):
                ax.plot(steps / 1000, values, style, color=colour, label=label, lw=1.6)
                behaviour = runs[0].meta.get("behaviour_return_mean")
        if kind == "return" and behaviour is not None:
            ax.axhline(behaviour, color="k", ls=(0, (1, 2)), lw=1.2, label="behaviour policy")
        if kind == "q":
            ax.axhline(1, color="k", ls=(0, (1, 2)), lw=1.2, label="Q = MC return")
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # ticks 0.5, 1, 2, 5, ... as plain numbers
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.3g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set(title=title, xlabel="updates (thousands)",
               ylabel="evaluation return" if kind == "return" else "dataset Q / its MC return")
        ax.grid(alpha=0.3)
    shown = {}  # every method drawn in any panel, once, in METHODS' order
    for ax in axes.flat:
        shown |= {label: handle for handle, label in zip(*ax.get_legend_handles_labels()) if label not in shown}
    fig.legend(list(shown.values()), list(shown), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def write_page(page: str, tables: list[str]) -> None:
    """The tables into the page, between its '<!-- tables -->' and '<!-- /tables -->' lines."""
    with open(page) as f:
        text = f.read()
    new, count = re.subn(r"(<!-- tables -->\n).*?(<!-- /tables -->)",
                         lambda m: m.group(1) + "\n\n".join(tables) + "\n" + m.group(2), text, flags=re.S)
    if count != 1:
        sys.exit(f"problem3_tables.py: {page} needs one '<!-- tables -->' ... '<!-- /tables -->' block")
    with open(page, "w") as f:
        f.write(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="docs/problem3/runs",
                        help="the runs' logs docs/problem3.sh kept (or the run folders it wrote, results/problem3)")
    parser.add_argument("--out", default="docs/problem3", help="folder of summary.csv and the figures")
    parser.add_argument("--page", default="docs/problem3.md", help="the page whose tables block is rewritten")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs_of = {name: {key: load(os.path.join(args.results, name, key)) for key in METHODS} for name, _ in DATASETS}
    found = {name: method_rows(runs_of[name]) for name, _ in DATASETS}
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for name, rows in found.items():
            for key, row in rows.items():
                writer.writerow({k: v for k, v in row.items() if v is not None} | {
                    "dataset": name, "method": METHODS[key][0], "seeds_finished": row["seeds_reached_final"],
                    "behaviour_return_mean": row["behaviour_return"]})
    tables = [table(f"{title}, `{next(iter(rows.values()))['dataset_id']}`", rows)
              for (name, title), rows in zip(DATASETS, found.values()) if rows]
    for kind, file in (("return", "returns.png"), ("q", "q_vs_mc.png")):
        fig = figure(runs_of, kind)
        fig.savefig(os.path.join(args.out, file), dpi=110)
        plt.close(fig)
    write_page(args.page, tables)
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
