"""Figures and a summary table from the run folders runner.py writes.

    python plot.py results/                                  # figures and summary.csv into results/
    python plot.py results/ --out figs --behaviour_return 1673

Runs are read and grouped into configurations by summary.py (seeds of one configuration together,
labelled by runner.py's label or the flags that differ). Each seed is a thin line, the mean over
seeds bold, the band the min-max over seeds. The summary table (summary.py) gives each group's
interquartile mean (IQM) over seeds with a 95% percentile-bootstrap interval.
"""
import argparse
import csv
import hashlib
import math
import os
import re
import sys
from functools import reduce

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness import flags
from harness.summary import (SUMMARY_COLUMNS, PlotError, Run, completion, group_runs, load_runs, series, summary_rows,
                     summary_table)

SYMLOG_DECADES = 3  # an "auto" axis whose |values| span more orders of magnitude than this turns symlog
SEED_WIDTH, MEAN_WIDTH = 0.7, 2.0
STEP_LABEL = "training step (gradient updates)"
CAPTION = "thin: each seed, bold: mean over the steps all seeds reached, band: min-max over seeds"
# (title, metrics, y-scale): "log" for squared losses, "auto" turns symlog when values span decades
RETURN_PANELS = (("eval_return_mean (undiscounted episode return)", ("eval_return_mean",), "linear"),)
Q_PANELS = (("dataset_q: mean Q1 on dataset (s, a)", ("dataset_q",), "auto"),
            ("policy_q: mean Q1 on (s, policy(s))", ("policy_q",), "auto"))
DIAGNOSTIC_PANELS = (("bc_distance", ("bc_distance",), "auto"),
                     ("eval_return_std (across evaluation episodes)", ("eval_return_std",), "linear"),
                     ("time_s (wall clock)", ("time_s",), "linear"))
TRAIN_PANELS = (("q1, q2, target_q (batch mean)", ("q1", "q2", "target_q"), "auto"),
                ("td_loss", ("td_loss",), "log"),
                ("critic_loss", ("critic_loss",), "log"),
                ("CQL: Q on random / policy / data actions",
                 ("cql_q_random", "cql_q_policy", "cql_q_data", "cql_logsumexp"), "auto"),
                ("cql_penalty", ("cql_penalty",), "auto"),
                ("cql_alpha", ("cql_alpha",), "auto"),
                ("ddpg_loss, actor_loss", ("ddpg_loss", "actor_loss"), "auto"),
                ("bc_loss", ("bc_loss",), "log"),
                ("bc_weight", ("bc_weight",), "auto"))
# across configurations one panel per metric, so colour can stand for the configuration
TRAIN_METRIC_PANELS = tuple((name, (name,), scale) for _, names, scale in TRAIN_PANELS for name in names)
METRIC_COLOURS = {name: matplotlib.colormaps["tab10"](i)
                  for _, names, _ in TRAIN_PANELS for i, name in enumerate(names)}


def build_parser() -> flags.Parser:
    """The positional folder, --behaviour_return and --out, each with its default."""
    p = flags.Parser(prog="plot.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", nargs="?", default="results",
                   help="folder runner.py wrote runs into, searched recursively (default: results/)")
    p.add_argument("--behaviour_return", type=float, default=None, metavar="RETURN",
                   help="the dataset's mean episode return, drawn as a reference line in returns.png "
                        "(the hopper-medium stand-in in ../shared/minari: 1673; default: no line)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the PNG figures and summary.csv, created if missing (default: results_dir)")
    return p


def legend_label(label: str, runs: list[Run]) -> str:
    """`bc_weight=10 (3 seeds)`, or `(3 seeds, 2 reached 100000)` when some stopped early."""
    reached, target = completion(runs)
    early = f", {reached} reached {target}" if reached < len(runs) else ""
    return f"{label} ({len(runs)} seed{'' if len(runs) == 1 else 's'}{early})"


def draw_seeds(ax: Axes, curves: list[tuple[np.ndarray, np.ndarray]], colour: tuple) -> list[np.ndarray]:
    """Each seed thin up to where it stopped; the mean bold and the min-max band where all seeds have data."""
    if not curves:
        return []
    if len(curves) > 1:
        for steps, values in curves:
            ax.plot(steps, values, color=colour, linewidth=SEED_WIDTH, alpha=0.6)
    common = reduce(np.intersect1d, [steps for steps, _ in curves])
    on_common = np.stack([values[np.isin(steps, common)] for steps, values in curves])  # (seeds, steps)
    if len(curves) > 1:
        ax.fill_between(common, on_common.min(axis=0), on_common.max(axis=0), color=colour, alpha=0.15, linewidth=0)
    ax.plot(common, on_common.mean(axis=0), color=colour, linewidth=MEAN_WIDTH)
    return [values for _, values in curves]


def set_scale(ax: Axes, drawn: list[np.ndarray], scale: str) -> None:
    """Log y for losses, symlog for signed values spanning decades (diverging Q), else linear."""
    values = np.concatenate([np.zeros(0), *drawn])
    mags = np.abs(values)
    if scale == "log" and values.size and (values > 0).all():
        ax.set_yscale("log")
    elif values.size and (scale == "log" or scale == "auto" and mags.max() > 10 ** SYMLOG_DECADES * max(mags.min(), 1)):
        # a percentile, not the minimum: one value grazing zero should not add empty decades
        small = np.percentile(mags[mags > 0], 5) if (mags > 0).any() else 1.0
        ax.set_yscale("symlog", linthresh=10 ** np.clip(np.floor(np.log10(small)), -3, 0))
    else:  # an offset like "+4.129" above the axis hides the size of the metric
        ax.ticklabel_format(axis="y", useOffset=False)


def grid_figure(title: str, groups: dict[str, list[Run]], table: str, panels: tuple,
                colours: dict[str, tuple] | None = None, references: list[float] = (), what: str = "") -> Figure | None:
    """One panel per entry of `panels` that some run logged (None if none did), up to 4 per row.

    With `colours`, each group has its colour and a legend; without, each metric has its own (one group).
    """
    def colour_of(label: str, name: str) -> tuple:
        return colours[label] if colours else METRIC_COLOURS[name]
    present = [(t, [n for n in names if any(series(runs, table, n) for runs in groups.values())], scale)
               for t, names, scale in panels]
    present = [panel for panel in present if panel[1]]
    if not present:
        return None
    cols, rows = min(len(present), 4), math.ceil(len(present) / 4)
    # A bare Figure (no pyplot) renders PNGs with Agg: no screen needed, no global state to close.
    fig = Figure(figsize=(4.3 * cols + 3, 3.3 * rows + 0.9), layout="constrained")
    fig.suptitle(f"{title}\n{CAPTION}", fontsize="medium")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(present):]:
        fig.delaxes(ax)
    for ax, (panel_title, names, scale) in zip(axes, present):
        drawn = [v for label, runs in groups.items() for name in names
                 for v in draw_seeds(ax, series(runs, table, name), colour_of(label, name))]
        set_scale(ax, drawn, scale)
        ax.set(title=panel_title, xlabel=STEP_LABEL)
        ax.grid(alpha=0.3)
        if not colours and len(names) > 1:
            ax.legend(handles=[Line2D([], [], color=METRIC_COLOURS[n], linewidth=MEAN_WIDTH, label=n) for n in names],
                      fontsize="small")
    for ax in axes[1:len(present)]:
        draw_references(ax, references, what)
    reference_lines = draw_references(axes[0], references, what)
    if colours:  # outside the axes, so the legend never covers a curve
        handles = [Line2D([], [], color=colours[label], linewidth=MEAN_WIDTH, label=legend_label(label, runs))
                   for label, runs in groups.items()]
        fig.legend(handles=handles + reference_lines, loc="outside right center", fontsize="small")
    return fig


def draw_references(ax: Axes, values: list[float], what: str) -> list[Line2D]:
    """One grey line per distinct value (to 4 significant digits), labelled for the legend."""
    distinct = sorted({float(f"{v:.4g}") for v in values if math.isfinite(v)})
    styles = (":", "-.", (0, (5, 5)))
    return [ax.axhline(v, color="grey", linestyle=styles[i % 3], linewidth=1.2, label=f"{what} = {v:g}")
            for i, v in enumerate(distinct)]


def file_safe(label: str) -> str:
    """A label as part of a file name: bc_weight=10 cql_alpha=5 -> bc_weight=10_cql_alpha=5; a label too long for
    a file name is cut, with a hash of the whole label appended."""
    name = re.sub(r"[^\w.=+-]+", "_", label).strip("_") or "run"
    return f"{name[:110]}~{hashlib.sha1(label.encode()).hexdigest()[:8]}" if len(name) > 120 else name


def make_figures(groups: dict[str, list[Run]], behaviour_return: float | None) -> dict[str, Figure]:
    """File name -> figure: returns, q_values, diagnostics, and the training curves where train.csv exists."""
    cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
    colours = {label: cmap(i % cmap.N) for i, label in enumerate(groups)}
    mc_returns = [v for runs in groups.values() for run in runs for v in run.progress.get("mc_return", [])]
    figures = {
        "returns.png": grid_figure("Evaluation return", groups, "progress", RETURN_PANELS, colours,
                                   [] if behaviour_return is None else [behaviour_return], "behaviour policy return"),
        "q_values.png": grid_figure("Q of dataset and policy actions against the dataset's Monte-Carlo return",
                                    groups, "progress", Q_PANELS, colours, mc_returns, "mc_return of dataset (s, a)"),
        "diagnostics.png": grid_figure("Diagnostics", groups, "progress", DIAGNOSTIC_PANELS, colours),
        "training_curves.png": grid_figure("Training curves (train.csv: means over log_every updates)",
                                           groups, "train", TRAIN_METRIC_PANELS, colours)}
    figures |= {f"training_curves_{file_safe(label)}.png": grid_figure(
        f"Training curves: {legend_label(label, runs)}", {label: runs}, "train", TRAIN_PANELS)
        for label, runs in groups.items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def write_outputs(figures: dict[str, Figure], rows: list[dict], out: str) -> list[str]:
    """Write the figures and summary.csv into out; returns their paths."""
    paths = [os.path.join(out, name) for name in [*figures, "summary.csv"]]
    try:
        os.makedirs(out, exist_ok=True)
        for path, fig in zip(paths, figures.values()):
            fig.savefig(path, dpi=110)
        with open(paths[-1], "w", newline="") as f:
            writer = csv.DictWriter(f, SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as e:
        raise PlotError(f"cannot write into --out '{out}': {e.strerror}") from None
    return paths


def main(argv: list[str] | None = None) -> int:
    """Read every run, write the figures and summary.csv, print the summary; 2 on a one-line error."""
    args = build_parser().parse_args(argv)
    try:
        groups = group_runs(load_runs(args.results_dir))
        rows = summary_rows(groups)
        paths = write_outputs(make_figures(groups, args.behaviour_return), rows, args.out or args.results_dir)
    except PlotError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
    print(summary_table(rows))
    print("\n".join(f"wrote {path}" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
