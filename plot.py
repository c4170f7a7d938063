"""Figures and a summary table from the run folders runner.py writes.

    python plot.py results/                                  # figures and summary.csv into results/
    python plot.py results/ --out figs --behaviour_return 1673
    python plot.py models/                                   # each fitted model's losses: <its name>.png


Runs are read and grouped into configurations by summary.py (seeds of one configuration together,
labelled by runner.py's label or the flags that differ). Each seed is a thin line, the mean over
seeds bold, the band the min-max over seeds; a curve of one point is a marker; series sharing a panel
each have a line style of their own, so that coinciding ones all show. Grey lines: the behaviour
policy's return (config.json's, from the dataset) beside the evaluation return, the Monte-Carlo
return of the dataset pairs beside their Q. The figures hold what a student compares; the CSV files
hold the rest (NOT_PANELS), and a column no panel names (a new metric) gets a panel of its own; a
training metric that stayed constant gets none (the title gives its value). Past MAX_COLOURED
configurations, the best by final return are in colour and the others thin grey lines, and only the
best MAX_OWN_FIGURES get a figure of their own. The summary table (summary.py) gives each group's
interquartile mean (IQM) over seeds with a 95% percentile-bootstrap interval.
"""
import argparse
import csv
import hashlib
import io
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable
from functools import reduce

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness import flags
from harness.files import RunFolderError, csv_text, read_text, write_atomically, write_text
from harness.summary import (PlotError, Run, completion, csv_columns, group_runs, load_runs, mean_of_last, series,
                             summary_rows, summary_table)

SYMLOG_DECADES = 3  # an "auto" axis whose |values| span more orders of magnitude than this turns log (symlog if signed)
LOG_DECADES = 1  # a "log" axis (squared losses) stays linear unless its values span more than this
SEED_WIDTH, MEAN_WIDTH = 0.7, 2.6
# series sharing a panel (q1, q2, target_q often coincide; so may two methods' Q): a style each, solid and widest
# first, so that every one shows where they coincide
SERIES_STYLES = (("-", MEAN_WIDTH), ("--", 2.0), (":", 2.2), ("-.", 1.4))
MAX_COLOURED = 10  # configurations in colour; beyond, the best by final return, the others thin grey means
MAX_OWN_FIGURES = 3  # past MAX_COLOURED configurations, the best this many get a training_curves_<label>.png
OTHERS_COLOUR = (0.55, 0.55, 0.55, 0.45)
# tab10 without its grey (the grey of the other configurations and of the reference lines), then black
GROUP_COLOURS = (*(matplotlib.colormaps["tab10"](i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)), (0.0, 0.0, 0.0, 1.0))
LABEL_WIDTH, TITLE_WIDTH = 40, 46  # characters per line of a legend label, of a panel title; longer ones wrap
STEP_LABEL = "training step (gradient updates)"
CAPTION = "thin: each seed, bold: mean over the steps all seeds reached, band: min-max over seeds"
BOTH_CRITICS = "summed over both critics"
# (title, metrics, y-scale): "log" for squared losses, "auto" turns log when values span decades.
# A column no panel names gets one of its own (title: its name), so a new metric needs no entry here.
RETURN_PANELS = (("eval_return_mean (undiscounted episode return)", ("eval_return_mean",), "linear"),)
Q_PANELS = (("dataset_q: mean Q1(s, a) on 1,000 dataset pairs; grey: their Monte-Carlo return", ("dataset_q",),
             "auto"),)
DIAGNOSTIC_PANELS = (("bc_distance: E||a - mu(s)||^2 on 1,000 dataset pairs", ("bc_distance",), "auto"),)
TRAIN_PANELS = (("q1, q2, target_q (batch mean)", ("q1", "q2", "target_q"), "auto"),
                ("td_loss, critic_loss = td_loss + cql_alpha * cql_penalty (one line without CQL)",
                 ("td_loss", "critic_loss"), "log"),
                ("CQL: mean Q on uniform / policy / data actions, mean of both critics",
                 ("cql_q_random", "cql_q_policy", "cql_q_data"), "auto"),
                (f"cql_logsumexp: T logsumexp of Q over the sampled actions, {BOTH_CRITICS}", ("cql_logsumexp",),
                 "auto"),
                (f"cql_penalty ({BOTH_CRITICS})", ("cql_penalty",), "auto"),
                ("cql_alpha", ("cql_alpha",), "auto"),
                ("ddpg_loss, actor_loss = ddpg_loss + bc_weight * bc_loss (one line when bc_weight = 0)",
                 ("ddpg_loss", "actor_loss"), "auto"),
                ("bc_loss", ("bc_loss",), "log"),
                ("bc_weight", ("bc_weight",), "auto"))
# across configurations one panel per metric, colour standing for the configuration; what a student compares
# between methods (the other metrics are in each configuration's own figure and in train.csv)
TRAIN_OVERVIEW_PANELS = (("q1: batch mean Q1(s, a)", ("q1",), "auto"),
                         (f"td_loss ({BOTH_CRITICS})", ("td_loss",), "log"),
                         (f"cql_penalty ({BOTH_CRITICS})", ("cql_penalty",), "auto"),
                         ("cql_alpha", ("cql_alpha",), "auto"),
                         ("ddpg_loss = -Q1(s, mu(s))", ("ddpg_loss",), "auto"),
                         ("bc_loss = E||a - mu(s)||^2 on the batch", ("bc_loss",), "log"),
                         ("bc_weight", ("bc_weight",), "auto"))
# columns with no panel: mc_return is a line beside dataset_q; policy_q nearly repeats dataset_q, and the spread
# of the evaluation episodes and the wall-clock say little as curves: progress.csv keeps them
NOT_PANELS = {"progress": ("step", "mc_return", "policy_q", "eval_return_std", "time_s"), "train": ("step",)}
Reference = tuple[float, str]  # a grey horizontal line: its height and its legend label


def build_parser() -> flags.Parser:
    """The positional folder, --behaviour_return and --out, each with its default."""
    p = flags.Parser(prog="plot.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", nargs="?", default="results",
                   help="folder runner.py wrote runs into, searched recursively (default: results/)")
    p.add_argument("--behaviour_return", type=float, default=None, metavar="RETURN",
                   help="the behaviour policy's mean episode return, drawn as a reference line in returns.png "
                        "(default: the one each run's config.json records, computed from its dataset as it "
                        "loaded; hopper medium-v0: 1673)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the PNG figures and summary.csv, created if missing (default: results_dir)")
    return p


def wrap(label: str, width: int = LABEL_WIDTH) -> str:
    """A long label on several lines, broken after a '_' or ' ' (a legend label must not squeeze the axes)."""
    lines = [""]
    for piece in re.findall(r"[^_ ]+[_ ]*", label):
        if lines[-1] and len(lines[-1]) + len(piece.rstrip()) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip(" ") for line in lines)


def legend_label(label: str, runs: list[Run]) -> str:
    """`bc_weight=10 (3 seeds)`, or `(3 seeds, 2 reached 100000)` when some stopped early; wrapped when long."""
    reached, target = completion(runs)
    early = f", {reached} reached {target}" if reached < len(runs) else ""
    return wrap(f"{label} ({len(runs)} seed{'' if len(runs) == 1 else 's'}{early})")


def draw_seeds(ax: Axes, curves: list[tuple[np.ndarray, np.ndarray]], colour: tuple,
               style: tuple[str, float] = ("-", MEAN_WIDTH)) -> list[np.ndarray]:
    """Each seed thin up to where it stopped; the mean bold (in `style`: line style, width) and the min-max band
    where all seeds have data. A line of one point (a run evaluated once) is drawn as a marker: without one it
    would not show."""
    if not curves:
        return []
    if len(curves) > 1:
        for steps, values in curves:
            ax.plot(steps, values, color=colour, linewidth=SEED_WIDTH, linestyle=style[0], alpha=0.6,
                    marker="o" if len(steps) == 1 else "")
    common, mean = mean_curve(curves)
    if len(curves) > 1:
        on_common = np.stack([values[np.isin(steps, common)] for steps, values in curves])  # (seeds, steps)
        ax.fill_between(common, on_common.min(axis=0), on_common.max(axis=0), color=colour, alpha=0.15, linewidth=0)
    ax.plot(common, mean, color=colour, linestyle=style[0], linewidth=style[1], marker="o" if len(common) == 1 else "")
    return [values for _, values in curves]


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean over seeds) on the steps every seed reached."""
    common = reduce(np.intersect1d, [steps for steps, _ in curves])
    return common, np.mean([values[np.isin(steps, common)] for steps, values in curves], axis=0)


def draw_others(ax: Axes, means: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The configurations not in colour: their means as thin grey lines, beneath the coloured ones (one
    collection: hundreds of lines draw as fast as one)."""
    if means:
        ax.add_collection(LineCollection([np.column_stack(mean) for mean in means], colors=[OTHERS_COLOUR],
                                         linewidths=SEED_WIDTH, zorder=1))
        ax.autoscale_view()


def plain(value: float, _position: object = None) -> str:
    """A tick label as a number a reader knows at a glance: 1,000 and 0.01, not 10^3 and 10^-2."""
    return f"{value:,.0f}" if abs(value) >= 1 else f"{value:g}"


def set_scale(ax: Axes, drawn: list[np.ndarray], scale: str) -> None:
    """Linear, unless the values span decades: log for a positive loss spanning more than LOG_DECADES, log (symlog
    if signed) for values spanning more than SYMLOG_DECADES (a diverging Q); the ticks plain numbers."""
    values = np.concatenate([np.zeros(0), *drawn])
    mags = np.abs(values)
    positive = values.size > 0 and (values > 0).all()
    span = mags.max() / max(mags[mags > 0].min(), 1e-12) if (mags > 0).any() else 1.0
    if positive and span > 10 ** (LOG_DECADES if scale == "log" else SYMLOG_DECADES) and scale != "linear":
        ax.set_yscale("log")
    elif scale != "linear" and values.size and mags.max() > 10 ** SYMLOG_DECADES * max(mags.min(), 1):
        # a percentile, not the minimum: one value grazing zero should not add empty decades
        small = np.percentile(mags[mags > 0], 5) if (mags > 0).any() else 1.0
        ax.set_yscale("symlog", linthresh=10 ** np.clip(np.floor(np.log10(small)), -3, 0))
    else:  # an offset like "+4.129" above the axes hides the size of the metric
        ax.ticklabel_format(axis="y", useOffset=False)
        return
    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    ax.yaxis.set_minor_formatter(NullFormatter())


def style_of(colours: dict[str, tuple], label: str) -> tuple[str, float]:
    """A coloured group's line style and width: the groups in turn take SERIES_STYLES' styles."""
    return SERIES_STYLES[list(colours).index(label) % len(SERIES_STYLES)]


def draw_panel(ax: Axes, groups: dict[str, list[Run]], table: str, panel: tuple, colours: dict[str, tuple] | None,
               references: dict[str, list[Reference]]) -> list[Line2D]:
    """One panel's curves: a colour per group (groups `colours` leaves out: thin grey means), or without `colours`
    a colour and line style per metric (one group); returns its reference lines."""
    panel_title, names, scale = panel
    metric_colour = matplotlib.colormaps["tab10"]
    drawn, others = [], []
    for label, runs in groups.items():
        for i, name in enumerate(names):
            curves = series(runs, table, name)
            if colours is None:
                drawn += draw_seeds(ax, curves, metric_colour(i), SERIES_STYLES[i % len(SERIES_STYLES)])
            elif label in colours:
                drawn += draw_seeds(ax, curves, colours[label], style_of(colours, label))
            elif curves:
                others.append(mean_curve(curves))
                drawn.append(others[-1][1])
    draw_others(ax, others)
    set_scale(ax, drawn, scale)
    ax.set_title(textwrap.fill(panel_title, TITLE_WIDTH), fontsize="medium")
    ax.set_xlabel(STEP_LABEL)
    ax.xaxis.set_major_formatter(FuncFormatter(plain))
    ax.grid(alpha=0.3)
    if not colours and len(names) > 1:
        ax.legend(handles=[Line2D([], [], color=metric_colour(i), linestyle=SERIES_STYLES[i % len(SERIES_STYLES)][0],
                                  linewidth=SERIES_STYLES[i % len(SERIES_STYLES)][1], label=n)
                           for i, n in enumerate(names)], fontsize="small")
    lines = [reference for name in names for reference in references.get(name, [])]
    return [ax.axhline(value, color="grey", linestyle=(":", "-.", (0, (5, 5)))[i % 3], linewidth=1.2, label=label)
            for i, (value, label) in enumerate(lines)]


def grid_figure(title: str, groups: dict[str, list[Run]], table: str, panels: tuple,
                colours: dict[str, tuple] | None = None, references: dict[str, list[Reference]] | None = None
                ) -> Figure | None:
    """One panel per entry of `panels` that some run logged (None if none did), up to 4 per row.

    With `colours`, each group it names has its colour, named in a legend below the panels, and the
    others are thin grey lines; without, each metric has its own (one group). `references`: metric ->
    grey lines drawn in that metric's panels.
    """
    present = [(t, [n for n in names if any(series(runs, table, n) for runs in groups.values())], scale)
               for t, names, scale in panels]
    present = [panel for panel in present if panel[1]]
    if not present:
        return None
    cols, rows = min(len(present), 4), math.ceil(len(present) / 4)
    width = max(6.4, 4.3 * cols)
    legend_cols = max(1, int(width // 3.2))
    legend_rows = math.ceil((len(colours) + 2) / legend_cols) if colours else 0  # a group a label, + others, refs
    # A bare Figure (no pyplot) renders PNGs with Agg: no screen needed, no global state to close.
    fig = Figure(figsize=(width, 3.4 * rows + 1.2 + 0.4 * legend_rows), layout="constrained")
    several = any(len(runs) > 1 for runs in groups.values())
    lines = [textwrap.fill(line, int(width * 13)) for line in (*title.split("\n"), *[CAPTION] * several)]
    fig.suptitle("\n".join(lines), fontsize="medium")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(present):]:
        fig.delaxes(ax)
    reference_lines = {}
    for ax, panel in zip(axes, present):
        reference_lines |= {line.get_label(): line for line in draw_panel(ax, groups, table, panel, colours,
                                                                          references or {})}
    handles = [Line2D([], [], color=colours[label], linestyle=style_of(colours, label)[0],
                      linewidth=style_of(colours, label)[1], label=legend_label(label, runs))
               for label, runs in groups.items() if label in colours] if colours else []
    if colours and len(colours) < len(groups):
        handles.append(Line2D([], [], color=OTHERS_COLOUR, linewidth=SEED_WIDTH, label=wrap(
            f"{len(groups) - len(colours)} other configurations (their means; summary.csv lists every one)")))
    handles += reference_lines.values()
    if handles:  # below the panels: it never covers a curve, and long labels do not squeeze the axes
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), legend_cols),
                   fontsize="small")
    return fig


def columns(groups: dict[str, list[Run]], table: str) -> list[str]:
    """Every column of progress.csv or train.csv that some run has, in the order first met."""
    return list(dict.fromkeys(name for runs in groups.values() for run in runs for name in getattr(run, table) or {}))


def with_unknown(panels: tuple, groups: dict[str, list[Run]], table: str, elsewhere: tuple = ()) -> tuple:
    """The panels, and one more for each column that neither they nor `elsewhere` (other figures' panels) name."""
    known = {name for _, names, _ in panels + elsewhere for name in names} | set(NOT_PANELS[table])
    return (*panels, *((name, (name,), "auto") for name in columns(groups, table) if name not in known))


def constants(groups: dict[str, list[Run]]) -> dict[str, str]:
    """train.csv metrics no run varied (bc_weight, a fixed cql_alpha) -> their values: '10', '1 / 10 (by configuration)'."""
    found = {}
    for name in columns(groups, "train"):
        curves = [values for runs in groups.values() for _, values in series(runs, "train", name)]
        if any(len(v) > 1 for v in curves) and all(np.allclose(v, v[0], rtol=1e-6, atol=0) for v in curves):
            values = sorted({float(f"{v[0]:.4g}") for v in curves})
            found[name] = " / ".join(f"{v:g}" for v in values) + (" (by configuration)" if len(values) > 1 else "")
    return found


def training_figure(title: str, groups: dict[str, list[Run]], panels: tuple,
                    colours: dict[str, tuple] | None = None, elsewhere: tuple = ()) -> Figure | None:
    """train.csv's panels (and one for each metric neither they nor `elsewhere` name), less the metrics that
    stayed constant: the title gives their values instead."""
    fixed = constants(groups)
    kept = tuple((t, tuple(n for n in names if n not in fixed), scale)
                 for t, names, scale in with_unknown(panels, groups, "train", elsewhere))
    note = "; ".join(f"{name} = {value}" for name, value in fixed.items())
    return grid_figure(title + (f"\nconstant during training (no panel): {note}" if note else ""), groups, "train",
                       kept, colours)


def file_safe(label: str) -> str:
    """A label as part of a file name: bc_weight=10 cql_alpha=5 -> bc_weight=10_cql_alpha=5; a label too long for
    a file name is cut, with a hash of the whole label appended."""
    name = re.sub(r"[^\w.=+-]+", "_", label).strip("_") or "run"
    return f"{name[:110]}~{hashlib.sha1(label.encode()).hexdigest()[:8]}" if len(name) > 120 else name


def distinct(references: list[Reference]) -> list[Reference]:
    """One reference per label (values to 4 significant digits), lowest first."""
    return sorted(dict((label, (value, label)) for value, label in references if math.isfinite(value)).values())


def behaviour_lines(groups: dict[str, list[Run]], behaviour_return: float | None) -> list[Reference]:
    """--behaviour_return, else the dataset return each run's config.json recorded (none for older runs)."""
    if behaviour_return is not None:
        return [(behaviour_return, f"behaviour policy return = {behaviour_return:g}")]
    metas = [run.meta for runs in groups.values() for run in runs]
    return distinct([(float(f"{m['behaviour_return_mean']:.4g}"), f"behaviour policy return (dataset) = "
                      f"{m['behaviour_return_mean']:.4g} ± {m.get('behaviour_return_std', math.nan):.3g}")
                     for m in metas if isinstance(m.get("behaviour_return_mean"), (int, float))])


def best(groups: dict[str, list[Run]], count: int) -> list[str]:
    """The labels of the `count` groups of highest final return (the mean over seeds of each one's last
    evaluation), in the groups' order."""
    final = {label: mean_of_last(runs, "eval_return_mean") for label, runs in groups.items()}
    ranked = sorted(groups, key=lambda label: -math.inf if final[label] is None else final[label], reverse=True)
    return [label for label in groups if label in ranked[:count]]


def coloured(groups: dict[str, list[Run]]) -> dict[str, tuple]:
    """A colour for each group, or past MAX_COLOURED groups for the best MAX_COLOURED by final return: hundreds
    of colours tell nothing apart."""
    return {label: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, label in enumerate(best(groups, MAX_COLOURED))}


def figure_makers(groups: dict[str, list[Run]],
                  behaviour_return: float | None) -> dict[str, Callable[[], Figure | None]]:
    """File name -> what makes that figure: returns, q_values, diagnostics, the training curves across
    configurations, and each configuration's own (past MAX_COLOURED, the best MAX_OWN_FIGURES' alone): each
    made when it is written, one at a time, a figure being large."""
    colours = coloured(groups)
    which = f": the {len(colours)} best by final return in colour" if len(colours) < len(groups) else ""
    mc_returns = distinct([(float(f"{v:.4g}"), f"MC return of the dataset pairs = {v:.4g}")
                           for runs in groups.values() for run in runs for v in run.progress.get("mc_return", [])])
    makers = {
        "returns.png": lambda: grid_figure(f"Evaluation return{which}", groups, "progress", RETURN_PANELS, colours,
                                           {"eval_return_mean": behaviour_lines(groups, behaviour_return)}),
        "q_values.png": lambda: grid_figure("Q on the dataset's pairs against their Monte-Carlo return" + which, groups,
                                            "progress", Q_PANELS, colours, {"dataset_q": mc_returns}),
        "diagnostics.png": lambda: grid_figure("Diagnostics" + which, groups, "progress", with_unknown(
            DIAGNOSTIC_PANELS, groups, "progress", RETURN_PANELS + Q_PANELS), colours),
        "training_curves.png": lambda: training_figure(
            f"Training curves (train.csv: means over log_every updates){which}; training_curves_<label>.png has "
            f"every metric", groups, TRAIN_OVERVIEW_PANELS, colours, TRAIN_PANELS)}
    for label in best(groups, MAX_OWN_FIGURES) if len(colours) < len(groups) else groups:
        makers[f"training_curves_{file_safe(label)}.png"] = (lambda label=label: training_figure(
            f"Training curves: {legend_label(label, groups[label])}", {label: groups[label]}, TRAIN_PANELS))
    return makers


def make_figures(groups: dict[str, list[Run]], behaviour_return: float | None) -> dict[str, Figure]:
    """File name -> figure, every one made (figure_makers' figures, for a reader or a test to look at)."""
    figures = {name: make() for name, make in figure_makers(groups, behaviour_return).items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def save_figure(fig: Figure, path: str) -> None:
    """The figure as a PNG at path, as runner.py writes: a temporary file and a rename, never through a link."""
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    write_atomically(path, image.getvalue())


def write_outputs(makers: dict[str, Callable[[], Figure | None]], rows: list[dict], out: str) -> list[str]:
    """Make and write each figure in turn (one in memory at a time), then summary.csv, into out; their paths."""
    paths = []
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise PlotError(f"cannot write into --out '{out}': {e.strerror}") from None
    try:  # as runner.py writes: a temporary file and a rename, never through a link
        for name, make in makers.items():
            fig = make()
            if fig is not None:
                paths.append(os.path.join(out, name))
                save_figure(fig, paths[-1])
        paths.append(os.path.join(out, "summary.csv"))
        write_text(paths[-1], csv_text(csv_columns(rows), rows))
    except RunFolderError as e:
        raise PlotError(f"--out '{out}': {e}") from None
    return paths


FIT_PANELS = {  # a fitted model's CSV (harness/fitted.py): x, then panels of (columns, title)
    "epoch": ((("train_nll", "holdout_nll"), "Gaussian NLL (train, held-out)"),
              (("holdout_mse", "best_holdout_mse"), "held-out MSE of the elites' means (now, kept)"),
              (("holdout_mse_next_obs", "holdout_mse_reward"), "held-out MSE: next state, reward")),
    "step": ((("train_loss", "holdout_loss"), "-ELBO (train, held-out)"),
             (("holdout_recon", "holdout_kl"), "held-out parts: reconstruction, beta_kl x KL"))}


def fit_figure(path: str) -> Figure:
    """A fitted model's losses, per epoch (dynamics) or per 1,000 steps (VAE), and where its fit stopped."""
    rows = list(csv.DictReader(io.StringIO(read_text(path))))
    x_name = "epoch" if "epoch" in rows[0] else "step"
    x = np.array([float(row[x_name]) for row in rows])
    panels = FIT_PANELS[x_name]
    fig = Figure(figsize=(4.5 * len(panels), 3.4), layout="constrained")
    for ax, (names, title) in zip(fig.subplots(1, len(panels)), panels):
        for name, style in zip(names, ("-", "--")):
            values = np.array([float(row[name]) for row in rows])
            ax.plot(x, values, style, label=name, linewidth=2 if style == "-" else 1.2)
        ax.set(title=title, xlabel=x_name)
        set_scale(ax, [np.array([float(row[n]) for row in rows]) for n in names], "log")
        ax.legend(fontsize=7)
    fig.suptitle(f"{os.path.basename(path)[:-4]}: stopped after {x_name} {x[-1]:.0f}", fontsize=9)
    return fig


def write_fit_figures(folder: str, out: str) -> list[str]:
    """<name>.png of every fitted model's CSV in folder (plot.py models/); their paths."""
    found = sorted(f for f in os.listdir(folder) if re.search(r"-(dynamics|behaviour)-[0-9a-f]+\.csv$", f))
    paths = []
    for name in found:
        try:
            fig = fit_figure(os.path.join(folder, name))
        except (OSError, ValueError, KeyError, IndexError, csv.Error) as err:
            print(f"plot.py: warning: skipping {os.path.join(folder, name)} ({err})", file=sys.stderr)
            continue
        paths.append(os.path.join(out, name[:-4] + ".png"))
        try:
            os.makedirs(out, exist_ok=True)
            save_figure(fig, paths[-1])
        except (OSError, RunFolderError) as err:
            raise PlotError(f"--out '{out}': {err}") from None
    return paths


def main(argv: list[str] | None = None) -> int:
    """Read every run, write the figures and summary.csv, print the summary; 2 on a one-line error.

    A folder of fitted models (models/) gets a figure per fit instead."""
    args = build_parser().parse_args(argv)
    out = args.out or args.results_dir
    try:
        fits = write_fit_figures(args.results_dir, out) if os.path.isdir(args.results_dir) else []
        if fits:
            print("\n".join(f"wrote {path}" for path in fits))
            return 0
        groups = group_runs(load_runs(args.results_dir))
        rows = summary_rows(groups)
        paths = write_outputs(figure_makers(groups, args.behaviour_return), rows, out)
    except PlotError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
    print(summary_table(rows))
    print("\n".join(f"wrote {path}" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
