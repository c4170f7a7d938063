"""Plot the runs runner.py wrote: evaluation return, Q over-estimation and training diagnostics.

    python plot.py results/              # writes results/returns.png, q_values.png, diagnostics.png
    python plot.py results/ --out figs   # writes them into figs/ instead

Every folder below results_dir holding a progress.csv is one run; runs sharing the `config`
label of their config.json (td3, td3_bc10, td3_cql5, ...) are seeds of one configuration.
"""
import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass
from functools import reduce
from typing import NoReturn

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

REQUIRED_COLUMNS = ("step", "eval_return_mean")
SYMLOG_DECADES = 3  # a y-axis spanning more orders of magnitude than this switches to symlog
STEP_LABEL = "training step (gradient updates)"


class PlotError(Exception):
    """A problem with the input or output folders, reported as one line with exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `plot.py: error: ...`, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass
class RunLog:
    """One run: its configuration label and progress.csv as column name -> values."""
    label: str
    columns: dict[str, np.ndarray]  # one value per evaluation; NaN where the cell was empty

    def column(self, name: str) -> np.ndarray:
        """The named metric, all NaN when this run did not log it."""
        return self.columns.get(name, np.full(len(self.columns["step"]), math.nan))


def build_parser() -> Parser:
    """The positional folder and --out, each with its default."""
    p = Parser(prog="plot.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", nargs="?", default="results",
                   help="folder runner.py wrote runs into, searched recursively for progress.csv "
                        "(default: results/, runner.py's --results_dir default)")
    p.add_argument("--behaviour_return", type=float, default=None, metavar="RETURN",
                   help="draw the dataset's own mean episode return as a dotted reference line in returns.png "
                        "(the hopper-medium stand-in in ../shared/minari: 1673; default: no line)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the PNG figures, created if missing (default: results_dir itself)")
    return p


def find_run_dirs(root: str) -> list[str]:
    """Every folder at or below root that holds a progress.csv, sorted."""
    if not os.path.isdir(root):
        problem = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise PlotError(f"results_dir '{root}' {problem}; give the folder runner.py wrote (default: results/)")
    run_dirs = sorted(d for d, _, files in os.walk(root) if "progress.csv" in files)
    if not run_dirs:
        raise PlotError(f"no run in '{root}': no progress.csv below it; run runner.py first "
                        f"(it writes <results_dir>/<config>-seed<k>-<time>/progress.csv)")
    return run_dirs


def parse_row(path: str, line: int, header: list[str], cells: list[str]) -> list[float]:
    """One CSV row as floats (empty cell -> NaN), or a PlotError naming the file and line."""
    if len(cells) != len(header):
        raise PlotError(f"{path} line {line}: {len(cells)} fields where the header has {len(header)}; "
                        f"the row is truncated or malformed")
    values = []
    for name, cell in zip(header, cells):
        try:
            values.append(float(int(cell)) if name == "step" else float(cell) if cell else math.nan)
        except ValueError:
            kind = "an integer" if name == "step" else "a number"
            raise PlotError(f"{path} line {line}: {name} '{cell}' is not {kind}") from None
    return values


def read_progress(path: str) -> dict[str, np.ndarray]:
    """progress.csv as column name -> values, or a PlotError saying what is wrong with the file."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise PlotError(f"{path} is empty; that run wrote no evaluation (rerun it or move it away)")
            missing = [name for name in REQUIRED_COLUMNS if name not in header]
            if missing:
                raise PlotError(f"{path} has no column {', '.join(missing)}; "
                                f"expected the header runner.py writes (step,eval_return_mean,...)")
            # line_num is read after each row, so it is that row's line in the file
            rows = [parse_row(path, reader.line_num, header, cells) for cells in reader if cells]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PlotError(f"cannot read {path}: {e}") from None
    if not rows:
        raise PlotError(f"{path} has a header but no rows; that run stopped before its first evaluation")
    columns = dict(zip(header, np.array(rows).T))
    steps = columns["step"]
    back = np.flatnonzero(np.diff(steps) <= 0)
    if back.size:  # seeds are aligned on their steps, which needs one row per step, in order
        raise PlotError(f"{path}: step {steps[back[0] + 1]:.0f} follows step {steps[back[0]]:.0f}; "
                        f"steps must increase")
    columns["step"] = steps.astype(np.int64)
    return columns


def run_label(run_dir: str) -> str:
    """The `config` label of config.json, else the folder name before `-seed` (td3_bc10-seed0-... -> td3_bc10)."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            label = json.load(f).get("config")
        if isinstance(label, str) and label:
            return label
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        pass  # a missing or broken config.json still leaves the folder name, which runner.py derives from it
    return os.path.basename(os.path.normpath(run_dir)).partition("-seed")[0]


def load_runs(root: str) -> dict[str, list[RunLog]]:
    """Every run below root, grouped by configuration label (labels sorted)."""
    groups: dict[str, list[RunLog]] = {}
    for run_dir in find_run_dirs(root):
        run = RunLog(run_label(run_dir), read_progress(os.path.join(run_dir, "progress.csv")))
        groups.setdefault(run.label, []).append(run)
    return dict(sorted(groups.items()))


def seed_stats(runs: list[RunLog], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps common to all seeds (where all logged a finite `name`), with the mean and std across seeds."""
    steps = reduce(np.intersect1d, [run.columns["step"] for run in runs])
    values = np.stack([run.column(name)[np.isin(run.columns["step"], steps)] for run in runs])  # (seeds, steps)
    finite = np.isfinite(values).all(axis=0)
    return steps[finite], values[:, finite].mean(axis=0), values[:, finite].std(axis=0)


def return_curve(runs: list[RunLog]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean eval return across seeds with its std across seeds; for one seed, the std across its episodes."""
    steps, mean, std = seed_stats(runs, "eval_return_mean")
    if len(runs) == 1:
        run = runs[0]
        std = run.column("eval_return_std")[np.isin(run.columns["step"], steps)]
    return steps, mean, std


def legend_label(label: str, runs: list[RunLog]) -> str:
    """`td3_bc10 (3 seeds)`."""
    return f"{label} ({len(runs)} seed{'' if len(runs) == 1 else 's'})"


def colours_for(labels: list[str]) -> dict[str, tuple]:
    """One colour per configuration, the same in every figure."""
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def magnitudes(values: list[np.ndarray]) -> np.ndarray:
    """The finite |v| of every array drawn on an axis."""
    mags = np.abs(np.concatenate([np.zeros(0), *values]))
    return mags[np.isfinite(mags)]


def needs_symlog(values: list[np.ndarray]) -> bool:
    """True when |values| span more than SYMLOG_DECADES orders of magnitude (|v| < 1 counts as 1)."""
    mags = magnitudes(values)
    return mags.size > 0 and mags.max() > 10 ** SYMLOG_DECADES * max(mags.min(), 1.0)


def set_symlog(ax: Axes, values: list[np.ndarray]) -> None:
    """Symlog y-axis, linear only below the small drawn |v| (kept in [1e-3, 1]) so small losses get ticks."""
    mags = magnitudes(values)
    # a percentile, not the minimum: one band edge grazing zero should not add empty decades
    small = np.percentile(mags[mags > 0], 5) if (mags > 0).any() else 1.0
    ax.set_yscale("symlog", linthresh=10 ** np.clip(np.floor(np.log10(small)), -3, 0))


def draw_band(ax: Axes, steps: np.ndarray, mean: np.ndarray, std: np.ndarray, colour: tuple,
              linestyle: str = "-") -> list[np.ndarray]:
    """A mean line with a shaded +- std band; returns what was drawn, for the y-scale decision."""
    ax.plot(steps, mean, color=colour, linestyle=linestyle, linewidth=1.6)
    ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    return [mean - std, mean + std]


def new_figure(size: tuple[float, float], title: str, groups: dict[str, list[RunLog]],
               colours: dict[str, tuple], extra: tuple[Line2D, ...] = ()) -> Figure:
    """A titled figure with the configuration legend outside the axes, so it never covers a curve."""
    # A bare Figure (no pyplot) renders PNGs with Agg: no screen needed, no global state to close.
    fig = Figure(figsize=size, layout="constrained")
    fig.suptitle(title)
    handles = [Line2D([], [], color=colours[label], label=legend_label(label, runs)) for label, runs in groups.items()]
    fig.legend(handles=handles + list(extra), loc="outside right center", fontsize="small")
    return fig


def figure_returns(groups: dict[str, list[RunLog]], colours: dict[str, tuple],
                   behaviour_return: float | None = None) -> Figure:
    """eval_return_mean vs step per configuration, +- std across seeds (or across episodes for one seed)."""
    reference = () if behaviour_return is None else (
        Line2D([], [], color="grey", linestyle=":", label=f"behaviour policy (dataset mean, {behaviour_return:g})"),)
    fig = new_figure((9, 5), "Evaluation return: mean ± std across seeds (one seed: across its episodes)",
                     groups, colours, reference)
    ax = fig.add_subplot()
    for label, runs in groups.items():
        draw_band(ax, *return_curve(runs), colours[label])
    if behaviour_return is not None:
        ax.axhline(behaviour_return, color="grey", linestyle=":")
    ax.set(xlabel=STEP_LABEL, ylabel="eval_return_mean (undiscounted episode return)")
    ax.grid(alpha=0.3)
    return fig


def figure_q_values(groups: dict[str, list[RunLog]], colours: dict[str, tuple]) -> Figure:
    """dataset_q (solid) against mc_return (dashed) per configuration: the gap is over-estimation."""
    styles = (Line2D([], [], color="black", label="dataset_q: mean Q1 on dataset (s, a)"),
              Line2D([], [], color="black", linestyle="--", label="mc_return: discounted return of those (s, a)"))
    fig = new_figure((9, 5), "Q over-estimation: dataset_q (solid) vs mc_return (dashed), mean ± std across seeds",
                     groups, colours, styles)
    ax = fig.add_subplot()
    drawn = []
    for label, runs in groups.items():
        drawn += draw_band(ax, *seed_stats(runs, "dataset_q"), colours[label])
        drawn += draw_band(ax, *seed_stats(runs, "mc_return"), colours[label], linestyle="--")
    symlog = needs_symlog(drawn)
    if symlog:  # diverging offline Q reaches 1e3-1e5 and would flatten the MC returns (~100-300) to zero
        set_symlog(ax, drawn)
    ax.set(xlabel=STEP_LABEL, ylabel="Q value / discounted return" + (" (symlog scale)" if symlog else ""))
    ax.grid(alpha=0.3)
    return fig


def plot_metric(ax: Axes, groups: dict[str, list[RunLog]], colours: dict[str, tuple],
                name: str, symlog: bool = False) -> None:
    """One diagnostics panel: `name` vs step per configuration, mean ± std across seeds."""
    drawn = []
    for label, runs in groups.items():
        drawn += draw_band(ax, *seed_stats(runs, name), colours[label])
    symlog = symlog or needs_symlog(drawn)
    if symlog:
        set_symlog(ax, drawn)
    else:  # an offset like "+4.129" above the axis hides the actual size of the metric
        ax.ticklabel_format(axis="y", useOffset=False)
    if not any(v.size for v in drawn):
        ax.text(0.5, 0.5, f"no {name} logged", transform=ax.transAxes, ha="center", va="center")
    ax.set(title=name + (" (symlog)" if symlog else ""), xlabel=STEP_LABEL, ylabel=name)
    ax.grid(alpha=0.3)


def plot_cql(ax: Axes, groups: dict[str, list[RunLog]], colours: dict[str, tuple]) -> None:
    """cql_logsumexp (solid) and cql_data_q (dashed) for the configurations that log them."""
    cql_groups = {label: runs for label, runs in groups.items()
                  if any(np.isfinite(run.column("cql_logsumexp")).any() for run in runs)}
    if not cql_groups:
        ax.text(0.5, 0.5, "no CQL runs", transform=ax.transAxes, ha="center", va="center")
    drawn = []
    for label, runs in cql_groups.items():
        drawn += draw_band(ax, *seed_stats(runs, "cql_logsumexp"), colours[label])
        drawn += draw_band(ax, *seed_stats(runs, "cql_data_q"), colours[label], linestyle="--")
    if needs_symlog(drawn):
        set_symlog(ax, drawn)
    ax.set(title="CQL: cql_logsumexp (solid) vs cql_data_q (dashed)", xlabel=STEP_LABEL, ylabel="Q value")
    ax.grid(alpha=0.3)


def figure_diagnostics(groups: dict[str, list[RunLog]], colours: dict[str, tuple]) -> Figure:
    """2x2 grid: policy_q, bc_distance, critic_loss (symlog) and the CQL terms."""
    fig = new_figure((13, 8), "Training diagnostics: mean ± std across seeds", groups, colours)
    axes = fig.subplots(2, 2).ravel()
    plot_metric(axes[0], groups, colours, "policy_q")
    plot_metric(axes[1], groups, colours, "bc_distance")
    plot_metric(axes[2], groups, colours, "critic_loss", symlog=True)
    plot_cql(axes[3], groups, colours)
    return fig


def summary_table(groups: dict[str, list[RunLog]]) -> str:
    """Per configuration: seeds, last step, final and best eval return, final dataset_q, mc_return."""
    width = max(len("config"), *(len(label) for label in groups))
    lines = [f"{'config':<{width}}  seeds  last step  final return +- std  best return  final dataset_q  mc_return"]
    for label, runs in groups.items():
        last_steps = sorted({int(run.columns["step"][-1]) for run in runs})
        final = np.array([run.columns["eval_return_mean"][-1] for run in runs])
        spread = final.std() if len(runs) > 1 else runs[0].column("eval_return_std")[-1]
        best = return_curve(runs)[1]
        steps = str(last_steps[0]) if len(last_steps) == 1 else f"{last_steps[0]}-{last_steps[-1]}"
        lines.append(f"{label:<{width}}  {len(runs):>5}  {steps:>9}  {final.mean():>10.1f} +- {spread:<6.1f}"
                     f"  {best.max() if best.size else math.nan:>11.1f}"
                     f"  {np.mean([run.column('dataset_q')[-1] for run in runs]):>15.4g}"
                     f"  {np.mean([run.column('mc_return')[-1] for run in runs]):>9.4g}")
    lines.append("(+- is the std across seeds; for a single seed, across its evaluation episodes)")
    return "\n".join(lines)


def prepare_out_dir(out: str) -> None:
    """Create --out if missing; a PlotError if it is a file or cannot be made."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise PlotError(f"--out '{out}' is a file; give a folder (created if missing) or leave --out off")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise PlotError(f"--out '{out}' cannot be created: {e.strerror}") from None


def write_figures(groups: dict[str, list[RunLog]], out: str, behaviour_return: float | None = None) -> list[str]:
    """Write returns.png, q_values.png and diagnostics.png into out; returns their paths."""
    colours = colours_for(list(groups))
    figures = {"returns.png": figure_returns(groups, colours, behaviour_return),
               "q_values.png": figure_q_values(groups, colours),
               "diagnostics.png": figure_diagnostics(groups, colours)}
    paths = []
    for name, fig in figures.items():
        paths.append(os.path.join(out, name))
        try:
            fig.savefig(paths[-1], dpi=110)
        except OSError as e:
            raise PlotError(f"cannot write {paths[-1]}: {e.strerror}") from None
    return paths


def main(argv: list[str] | None = None) -> int:
    """Read every run, write the three figures, print the summary table; 2 on a one-line error."""
    args = build_parser().parse_args(argv)
    try:
        groups = load_runs(args.results_dir)
        out = args.out or args.results_dir
        prepare_out_dir(out)
        paths = write_figures(groups, out, args.behaviour_return)
    except PlotError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
    print(summary_table(groups))
    print("\n".join(f"wrote {path}" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
