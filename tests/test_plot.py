"""plot.py as a specification: what it draws and writes, and its one-line errors."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.collections import PolyCollection

import plot
from harness import summary
from fake_runs import write_run

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def figures_of(root: Path, behaviour_return: float | None = None) -> dict:
    """The figures plot.py makes of the runs below root, by file name."""
    return plot.make_figures(summary.group_runs(summary.load_runs(str(root))), behaviour_return)


def panel(fig, title_start: str):
    """The axes of fig whose title starts with title_start."""
    return next(ax for ax in fig.axes if ax.get_title().startswith(title_start))


def lines_of_width(ax, width: float) -> list:
    """The lines drawn with this width: plot.SEED_WIDTH for one seed, plot.MEAN_WIDTH for a mean."""
    return [line for line in ax.get_lines() if line.get_linewidth() == width]


def horizontal_lines(ax, y: float) -> list:
    """Reference lines (axhline) drawn at height y."""
    return [line for line in ax.get_lines() if list(line.get_ydata()) == [y, y]]


def test_band_is_the_min_max_over_seeds_never_outside_their_values(tmp_path):
    seeds = [(100.0, 900.0, 400.0), (100.0, 200.0, 800.0), (400.0, 200.0, 450.0)]  # mean ± std would leave these
    for seed, returns in enumerate(seeds):
        write_run(tmp_path, "td3", seed, returns=returns)
    ax = figures_of(tmp_path)["returns.png"].axes[0]
    values = np.array(seeds)  # (seeds, steps)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    for x, y in bands[0].get_paths()[0].vertices:
        column = values[:, round(x / 1000) - 1]
        assert column.min() - 1e-9 <= y <= column.max() + 1e-9
    mean = lines_of_width(ax, plot.MEAN_WIDTH)[0]
    np.testing.assert_allclose(mean.get_ydata(), values.mean(axis=0))
    assert len(lines_of_width(ax, plot.SEED_WIDTH)) == 3


def test_a_run_that_stopped_early_keeps_the_others_whole_and_is_flagged(tmp_path):
    write_run(tmp_path, "td3", 0)
    write_run(tmp_path, "td3", 1)
    write_run(tmp_path, "td3", 2, returns=(250.0, 550.0))  # stopped at 2000 of total_steps 3000
    ax = figures_of(tmp_path)["returns.png"].axes[0]
    assert sorted(line.get_xdata()[-1] for line in lines_of_width(ax, plot.SEED_WIDTH)) == [2000, 3000, 3000]
    assert list(lines_of_width(ax, plot.MEAN_WIDTH)[0].get_xdata()) == [1000, 2000]  # where all three have data
    groups = summary.group_runs(summary.load_runs(str(tmp_path)))
    row = summary.summary_rows(groups)[0]
    assert (row["seeds"], row["seeds_reached_final"], row["final_step"]) == (3, 2, 3000)
    assert "2 of 3 seeds reached 3000" in summary.summary_table([row])
    assert "2 reached 3000" in plot.legend_label("td3", groups["td3"])


def test_broken_folders_are_skipped_with_a_warning_and_the_others_plotted(tmp_path, capsys):
    write_run(tmp_path, "td3", 0, train=False)
    (write_run(tmp_path, "bad_json", 0) / "config.json").write_text("{")
    (write_run(tmp_path, "empty_csv", 0) / "progress.csv").write_text("")
    (write_run(tmp_path, "bad_csv", 0) / "progress.csv").write_text("step,eval_return_mean\n1000,x\n")
    no_config = write_run(tmp_path, "no_config", 0)
    (no_config / "config.json").unlink()
    assert plot.main([str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    for name in ("bad_json", "empty_csv", "bad_csv", "no_config"):
        assert any(line.startswith(f"plot.py: warning: skipping {tmp_path / name}-seed0: ") for line in err), name
    for name in ("returns.png", "q_values.png", "diagnostics.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    assert (tmp_path / "summary.csv").exists()


def test_summary_is_printed_and_written_as_summary_csv_with_the_promised_columns(tmp_path, capsys):
    for seed in range(3):
        write_run(tmp_path, "td3", seed, returns=(300.0, 600.0, 900.0 + seed), train=False)
    out = tmp_path / "figs"
    assert plot.main([str(tmp_path), "--out", str(out)]) == 0
    assert "td3" in capsys.readouterr().out
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    promised = ("group", "seeds", "seeds_reached_final", "final_step", "final_return_iqm", "final_return_ci_low",
                "final_return_ci_high", "best_return_iqm", "best_return_ci_low", "best_return_ci_high",
                "final_normalized_iqm", "normalized_reference", "final_dataset_q", "mc_return")
    assert set(promised) <= set(rows[0])
    assert (rows[0]["group"], rows[0]["seeds"], float(rows[0]["final_return_iqm"])) == ("td3", "3", 901.0)
    assert float(rows[0]["final_dataset_q"]) == 30.0 and float(rows[0]["mc_return"]) == 280.0


def test_training_curves_per_group_and_across_groups_come_from_train_csv(tmp_path):
    write_run(tmp_path, "td3", 0)
    write_run(tmp_path, "td3_cql5", 0, cql_alpha=5.0, cql=True)
    figures = figures_of(tmp_path)
    per_group = {"training_curves_td3.png", "training_curves_td3_cql5.png"}
    assert {"training_curves.png", *per_group} <= set(figures)
    td3 = [ax.get_title() for ax in figures["training_curves_td3.png"].axes]
    assert any(title.startswith("td_loss") for title in td3)
    assert not any(title.lower().startswith("cql") for title in td3)  # no CQL columns: no CQL panel
    cql = figures["training_curves_td3_cql5.png"]
    assert panel(cql, "CQL").get_legend() is not None
    across = [ax.get_title().split(":")[0].split(" ")[0] for ax in figures["training_curves.png"].axes]
    assert across == ["q1", "td_loss", "cql_penalty", "cql_alpha", "ddpg_loss", "bc_loss", "bc_weight"]  # the rest
    # (q2, target_q, critic_loss, the CQL parts, actor_loss) is in each configuration's figure and in train.csv


def test_series_that_coincide_each_show_in_their_own_style(tmp_path):
    write_run(tmp_path, "td3", 0)  # the fake train.csv gives q1, q2 and target_q the same values
    ax = panel(figures_of(tmp_path)["training_curves_td3.png"], "q1, q2, target_q")
    means = ax.get_lines()
    assert len(means) == 3 and all((line.get_ydata() == means[0].get_ydata()).all() for line in means)
    styles = [(line.get_linestyle(), line.get_linewidth()) for line in means]
    assert len(set(styles)) == 3  # drawn one above the other, each still shows
    assert [w for _, w in styles] == sorted((w for _, w in styles), reverse=True) or styles[1][0] != "-"
    legend = [(h.get_linestyle(), h.get_linewidth()) for h in ax.get_legend().get_lines()]
    assert legend == styles  # each legend entry looks like its line


def test_axes_turn_log_only_over_decades_and_their_ticks_are_plain_numbers(tmp_path):
    def train_csv_with(name: str, values: list[float]) -> dict:
        run_dir = write_run(tmp_path / name, "td3", 0, returns=(1.0,) * len(values))
        rows = ["step,td_loss,actor_loss"] + [f"{1000 * (i + 1)},{v},{-v}" for i, v in enumerate(values)]
        (run_dir / "train.csv").write_text("\n".join(rows) + "\n")
        return figures_of(tmp_path / name)
    narrow = train_csv_with("narrow", [14.0, 19.0, 16.0])["training_curves.png"]
    assert panel(narrow, "td_loss").get_yscale() == "linear"  # 14-19: no log axis of 1.4-1.9 x 10^1
    wide = train_csv_with("wide", [1.0, 100.0, 5000.0])
    td_loss = panel(wide["training_curves.png"], "td_loss")
    assert td_loss.get_yscale() == "log" and td_loss.yaxis.get_major_formatter()(1000.0, 0) == "1,000"
    actor_loss = panel(wide["training_curves_td3.png"], "ddpg_loss, actor_loss")  # -1 to -5,000
    assert actor_loss.get_yscale() == "symlog" and actor_loss.yaxis.get_major_formatter()(-100.0, 0) == "-100"


def test_many_configurations_colour_the_best_and_draw_the_others_thin_and_grey(tmp_path):
    for i in range(plot.MAX_COLOURED + 5):
        write_run(tmp_path, f"td3_bc_weight={i}", 0, returns=(100.0, 200.0, 100.0 * i), bc_weight=float(i))
    figures = figures_of(tmp_path)
    legend = [t.get_text() for t in figures["returns.png"].legends[0].get_texts()]
    best = [f"td3_bc_weight={i}" for i in range(5, plot.MAX_COLOURED + 5)]
    assert [text.split(" (")[0] for text in legend[:plot.MAX_COLOURED]] == best
    assert legend[plot.MAX_COLOURED].replace("\n", " ").startswith("5 other configurations")
    ax = figures["returns.png"].axes[0]
    assert len(ax.get_lines()) == plot.MAX_COLOURED and len(ax.collections[0].get_segments()) == 5
    assert {name for name in figures if name.startswith("training_curves_")} == {
        f"training_curves_{label}.png" for label in best[-plot.MAX_OWN_FIGURES:]}  # a figure each for the very best


def test_training_curves_are_skipped_quietly_without_train_csv(tmp_path, capsys):
    write_run(tmp_path, "td3", 0, train=False)
    assert plot.main([str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
    assert not list(tmp_path.glob("training_curves*.png"))
    assert (tmp_path / "returns.png").exists()


def test_diverging_q_is_drawn_on_a_log_axis_and_calm_q_on_a_linear_one(tmp_path):
    write_run(tmp_path / "calm", "td3", 0)
    assert figures_of(tmp_path / "calm")["q_values.png"].axes[0].get_yscale() == "linear"
    progress = write_run(tmp_path / "diverged", "td3", 0) / "progress.csv"
    progress.write_text(progress.read_text().replace(",30.0,", ",3e6,"))
    assert figures_of(tmp_path / "diverged")["q_values.png"].axes[0].get_yscale() == "log"
    progress.write_text(progress.read_text().replace(",3e6,", ",-3e6,"))
    assert figures_of(tmp_path / "diverged")["q_values.png"].axes[0].get_yscale() == "symlog"  # signed: symlog


def test_mc_return_line_is_drawn_once_per_distinct_value_and_labelled(tmp_path):
    write_run(tmp_path, "td3", 0)
    write_run(tmp_path, "td3_bc10", 0, bc_weight=10.0)  # same seed, same dataset pairs: same MC return
    fig = figures_of(tmp_path)["q_values.png"]
    assert len(horizontal_lines(fig.axes[0], 280.0)) == 1
    write_run(tmp_path, "td3", 1, mc_return=300.0)
    fig = figures_of(tmp_path)["q_values.png"]
    assert len(horizontal_lines(fig.axes[0], 280.0)) == 1 and len(horizontal_lines(fig.axes[0], 300.0)) == 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [text for text in legend if text.startswith("MC return")] == ["MC return of the dataset pairs = 280",
                                                                          "MC return of the dataset pairs = 300"]
    assert len(fig.axes) == 1  # policy_q nearly repeats dataset_q: progress.csv keeps it


def test_behaviour_return_is_one_labelled_reference_line(tmp_path):
    write_run(tmp_path, "td3", 0)
    write_run(tmp_path, "td3_bc10", 0, bc_weight=10.0)
    fig = figures_of(tmp_path, behaviour_return=1673.0)["returns.png"]
    assert len(horizontal_lines(fig.axes[0], 1673.0)) == 1
    assert "behaviour policy return = 1673" in [t.get_text() for t in fig.legends[0].get_texts()]


def assert_one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    """main(argv) exits 2 with one `plot.py: error:` line naming every fragment, and writes nothing."""
    assert plot.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("plot.py: error: ") and err.count("\n") == 1, err
    assert all(fragment in err for fragment in fragments), err
    assert "wrote" not in out


def test_missing_results_dir_is_a_one_line_error(tmp_path, capsys):
    assert_one_line_error(capsys, [str(tmp_path / "nope")], str(tmp_path / "nope"), "does not exist")


def test_folder_without_runs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no runs here")
    assert_one_line_error(capsys, [str(tmp_path)], "no readable run", "run runner.py first")


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    write_run(tmp_path / "results", "td3", 0)
    target = tmp_path / "figure.png"
    target.write_bytes(b"keep me")
    assert_one_line_error(capsys, [str(tmp_path / "results"), "--out", str(target)], "--out", str(target))
    assert target.read_bytes() == b"keep me"


def test_command_line_end_to_end(tmp_path):
    for seed in range(2):
        write_run(tmp_path / "results", "td3", seed)
    done = subprocess.run([sys.executable, str(REPO / "plot.py"), str(tmp_path / "results"), "--out",
                           str(tmp_path / "figs"), "--behaviour_return", "1673"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "final return IQM [95% CI]" in done.stdout
    for name in ("returns.png", "q_values.png", "diagnostics.png", "training_curves.png", "training_curves_td3.png"):
        data = (tmp_path / "figs" / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 10_000, name


def set_column(run_dir: Path, table: str, name: str, values: list[float]) -> None:
    """Write `values` into column `name` of the run's table (added at the end if it has none)."""
    path = run_dir / table
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    if name not in header:
        header, rows = header + [name], [row + [""] for row in rows]
    for row, value in zip(rows, values):
        row[header.index(name)] = str(value)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_a_run_evaluated_once_is_drawn_as_markers_not_as_empty_axes(tmp_path):
    write_run(tmp_path, "td3", 0, returns=(300.0,))  # a short sweep: one evaluation, one train.csv row
    figures = figures_of(tmp_path)
    for name in ("returns.png", "q_values.png", "diagnostics.png", "training_curves.png", "training_curves_td3.png"):
        for ax in figures[name].axes:
            curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 1 and line.get_linestyle() != "--"]
            assert curves and all(line.get_marker() not in ("", "None", None) for line in curves), (name, ax.get_title())


def test_long_labels_wrap_in_a_legend_below_the_panels_and_titles_stay_inside(tmp_path):
    long = "td3_" + "_".join(f"flag{i}=value{i}" for i in range(20))  # some 300 characters
    for weight in (1.0, 10.0):
        config = write_run(tmp_path, f"td3_bc_weight={weight:g}", 0, bc_weight=weight) / "config.json"
        config.write_text(json.dumps(json.loads(config.read_text()) | {"config": f"{long}_bc_weight={weight:g}"}))
    for name, fig in figures_of(tmp_path).items():
        fig.draw_without_rendering()
        labels = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []
        assert all(len(line) <= plot.LABEL_WIDTH for label in labels for line in label.split("\n")), name
        bottom = min(ax.get_position().y0 for ax in fig.axes)
        assert not fig.legends or fig.legends[0].get_window_extent().y1 <= bottom * fig.bbox.height, name
        assert all(ax.get_position().width > 0.6 / min(len(fig.axes), 4) for ax in fig.axes), name  # not squeezed
        for text in [fig._suptitle, *(ax.title for ax in fig.axes)]:
            box = text.get_window_extent()
            assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, (name, text.get_text())


def test_the_seed_caption_is_printed_only_where_there_are_several_seeds(tmp_path):
    write_run(tmp_path / "one", "td3", 0)
    assert "thin: each seed" not in figures_of(tmp_path / "one")["returns.png"]._suptitle.get_text()
    for seed in range(2):
        write_run(tmp_path / "two", "td3", seed)
    assert "thin: each seed" in figures_of(tmp_path / "two")["returns.png"]._suptitle.get_text()


def test_a_metric_that_stayed_constant_has_no_panel_and_its_value_is_in_the_title(tmp_path):
    set_column(write_run(tmp_path, "td3_bc_weight=10", 0, bc_weight=10.0), "train.csv", "bc_weight", [10.0] * 3)
    for name in ("training_curves.png", "training_curves_td3_bc_weight=10.png"):
        fig = figures_of(tmp_path)[name]
        assert not [ax for ax in fig.axes if ax.get_title().startswith("bc_weight")], name
        assert "constant during training (no panel): bc_weight = 10" in fig._suptitle.get_text(), name
        assert [ax for ax in fig.axes if ax.get_title().startswith("bc_loss")], name  # the others stay


def test_cql_logsumexp_summed_over_both_critics_has_a_panel_apart_from_the_mean_q_of_each_action(tmp_path):
    write_run(tmp_path, "td3_cql5", 0, cql_alpha=5.0, cql=True)
    fig = figures_of(tmp_path)["training_curves_td3_cql5.png"]
    mean_q = panel(fig, "CQL: mean Q")
    assert "mean of both critics" in mean_q.get_title()
    assert "cql_logsumexp" not in [t.get_text() for t in mean_q.get_legend().get_texts()]
    assert "summed over both critics" in panel(fig, "cql_logsumexp").get_title().replace("\n", " ")


def test_the_actor_loss_panel_says_it_is_the_ddpg_loss_when_bc_weight_is_0_and_the_overview_shows_ddpg_loss(tmp_path):
    write_run(tmp_path, "td3", 0)
    figures = figures_of(tmp_path)
    assert "one line when bc_weight = 0" in panel(figures["training_curves_td3.png"], "ddpg_loss").get_title().replace(
        "\n", " ")
    assert not [ax for ax in figures["training_curves.png"].axes if "actor_loss" in ax.get_title()]


def test_a_metric_plot_py_does_not_know_gets_a_panel_of_its_own(tmp_path):
    run_dir = write_run(tmp_path, "td3", 0)
    set_column(run_dir, "train.csv", "ensemble_spread", [1.0, 2.0, 4.0])
    set_column(run_dir, "progress.csv", "dataset_q_std", [5.0, 6.0, 7.0])
    figures = figures_of(tmp_path)
    for name in ("training_curves.png", "training_curves_td3.png"):
        np.testing.assert_array_equal(panel(figures[name], "ensemble_spread").get_lines()[0].get_ydata(), [1, 2, 4])
    np.testing.assert_array_equal(panel(figures["diagnostics.png"], "dataset_q_std").get_lines()[0].get_ydata(),
                                  [5, 6, 7])
