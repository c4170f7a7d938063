"""plot.py as a specification: what it draws from runner.py's folders, and how it refuses bad input."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import plot
from runner import CSV_COLUMNS as COLUMNS  # the logger's own header: plot.py must read what runner.py writes

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("returns.png", "q_values.png", "diagnostics.png")


def write_run(root: Path, config: str, seed: int, steps=(1000, 2000, 3000), q_growth: float = 1.0,
              cql: bool = False, folder: str | None = None) -> Path:
    """A run folder as runner.py leaves it: config.json, progress.csv and a checkpoint to ignore."""
    run_dir = root / (folder or f"{config}-seed{seed}-20260101-120000")
    run_dir.mkdir(parents=True)
    flags = {"seed": seed, "bc_weight": 0.0, "cql_alpha": 5.0 if cql else 0.0, "gamma": 0.99}
    (run_dir / "config.json").write_text(json.dumps({"flags": flags, "config": config, "device": "cpu"}))
    (run_dir / "checkpoint.pt").write_bytes(b"not a csv")
    with open(run_dir / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, restval="")
        writer.writeheader()
        for i, step in enumerate(steps, 1):
            q = 10.0 * q_growth ** i
            row = {"step": step, "eval_return_mean": 300.0 * i + 10 * seed, "eval_return_std": 20.0 + i,
                   "dataset_q": q, "mc_return": 280.0 + seed, "policy_q": 1.1 * q, "bc_distance": 0.1 * i,
                   "critic_loss": 0.05 * q, "actor_loss": -q, "time_s": 3.5 * i}
            if cql:
                row |= {"cql_penalty": 1.0, "cql_logsumexp": q + 3.0, "cql_data_q": q}
            writer.writerow(row)
    return run_dir


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file below root with its bytes, to show an error changed nothing."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_valid_png(path: Path) -> None:
    """A real PNG with something drawn in it."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, path


def assert_one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    """main(argv) exits 2 with one line on stderr that names every fragment, and prints no figure."""
    assert plot.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("plot.py: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err
    assert "wrote" not in out
    return err


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with three seeds of td3_bc10, one diverging td3 run and one CQL run."""
    root = tmp_path / "results"
    for seed in range(3):
        write_run(root, "td3_bc10", seed)
    write_run(root, "td3", 0, q_growth=30.0)
    write_run(root, "td3_cql5", 0, cql=True)
    return root


def test_writes_return_q_and_diagnostic_figures_into_the_results_folder(results, capsys):
    assert plot.main([str(results)]) == 0
    out = capsys.readouterr().out
    assert "td3_bc10" in out  # the summary table
    for name in FIGURES:
        assert_valid_png(results / name)
        assert f"wrote {results / name}" in out


def test_summary_table_gives_seeds_final_and_best_return_q_and_mc_return(results):
    table = plot.summary_table(plot.load_runs(str(results)))
    rows = {line.split()[0]: line.split() for line in table.splitlines()}
    # config, seeds, last step, final mean, +-, std across seeds, best, final dataset_q, mc_return
    assert rows["td3_bc10"] == ["td3_bc10", "3", "3000", "910.0", "+-", "8.2", "910.0", "10", "281"]
    assert rows["td3"][1:3] == ["1", "3000"] and rows["td3"][5] == "23.0"  # one seed: episode std


def test_seeds_of_one_config_are_grouped_and_labelled_with_their_count(results):
    groups = plot.load_runs(str(results))
    assert {label: len(runs) for label, runs in groups.items()} == {"td3": 1, "td3_bc10": 3, "td3_cql5": 1}
    fig = plot.figure_returns(groups, plot.colours_for(list(groups)))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["td3 (1 seed)", "td3_bc10 (3 seeds)", "td3_cql5 (1 seed)"]


def test_seed_mean_and_std_are_taken_on_the_steps_all_seeds_reached(tmp_path):
    write_run(tmp_path, "td3_bc10", 0, steps=(1000, 2000, 3000))
    write_run(tmp_path, "td3_bc10", 1, steps=(1000, 2000))  # stopped early
    steps, mean, std = plot.seed_stats(plot.load_runs(str(tmp_path))["td3_bc10"], "eval_return_mean")
    np.testing.assert_array_equal(steps, [1000, 2000])
    np.testing.assert_allclose(mean, [305.0, 605.0])
    np.testing.assert_allclose(std, [5.0, 5.0])


def test_one_seed_band_is_the_std_across_its_episodes(tmp_path):
    write_run(tmp_path, "td3", 0)
    _, mean, std = plot.return_curve(plot.load_runs(str(tmp_path))["td3"])
    np.testing.assert_allclose(mean, [300.0, 600.0, 900.0])
    np.testing.assert_allclose(std, [21.0, 22.0, 23.0])


def test_q_figure_uses_symlog_only_when_q_blows_up(results, tmp_path):
    calm = tmp_path / "calm"
    write_run(calm, "td3_bc10", 0)
    for root, scale in ((results, "symlog"), (calm, "linear")):
        groups = plot.load_runs(str(root))
        assert plot.figure_q_values(groups, plot.colours_for(list(groups))).axes[0].get_yscale() == scale


def test_each_config_keeps_its_colour_in_every_figure(results):
    groups = plot.load_runs(str(results))
    colours = plot.colours_for(list(groups))
    q_lines = plot.figure_q_values(groups, colours).axes[0].get_lines()
    cql_lines = plot.figure_diagnostics(groups, colours).axes[3].get_lines()
    assert q_lines[2].get_color() == colours["td3_bc10"]  # lines go dataset_q, mc_return per config
    assert q_lines[3].get_color() == colours["td3_bc10"] and q_lines[3].get_linestyle() == "--"
    assert [line.get_color() for line in cql_lines] == [colours["td3_cql5"]] * 2


def test_cql_panel_says_so_when_no_run_uses_cql(tmp_path):
    write_run(tmp_path, "td3", 0)
    groups = plot.load_runs(str(tmp_path))
    cql_panel = plot.figure_diagnostics(groups, plot.colours_for(list(groups))).axes[3]
    assert [t.get_text() for t in cql_panel.texts] == ["no CQL runs"]
    assert cql_panel.get_lines() == []


def test_nested_runs_are_found_and_other_files_ignored(tmp_path):
    write_run(tmp_path / "sweep-lr", "td3", 0)
    (tmp_path / "sweep.csv").write_text("lr,return\n0.1,5\n")
    (tmp_path / "notes.txt").write_text("random file")
    assert list(plot.load_runs(str(tmp_path))) == ["td3"]


def test_missing_or_broken_config_json_falls_back_to_the_folder_name(tmp_path):
    (write_run(tmp_path, "ignored", 0, folder="td3_bcauto-seed0-20260101-120000") / "config.json").unlink()
    (write_run(tmp_path, "ignored", 1, folder="td3_bcauto-seed1-20260101-120000") / "config.json").write_text("{")
    assert {label: len(runs) for label, runs in plot.load_runs(str(tmp_path)).items()} == {"td3_bcauto": 2}


def test_missing_results_dir_is_a_one_line_error_naming_it(tmp_path, capsys):
    assert_one_line_error(capsys, [str(tmp_path / "nope")], "results_dir", str(tmp_path / "nope"), "does not exist")


def test_empty_folder_is_a_one_line_error_saying_to_run_runner_first(tmp_path, capsys):
    (tmp_path / "sweep.csv").write_text("lr\n")
    assert_one_line_error(capsys, [str(tmp_path)], str(tmp_path), "run runner.py first")
    assert not (tmp_path / "returns.png").exists()


def test_truncated_csv_names_the_file_and_leaves_everything_untouched(results, capsys):
    progress = results / "td3-seed0-20260101-120000" / "progress.csv"
    progress.write_text(progress.read_text() + "4000,1200.5,20.1,9")
    (results / "returns.png").write_bytes(b"an older figure")
    before = snapshot(results)
    assert_one_line_error(capsys, [str(results)], str(progress), "line 5", "truncated")
    assert snapshot(results) == before


def test_header_only_csv_is_an_error(tmp_path, capsys):
    progress = write_run(tmp_path, "td3", 0, steps=()) / "progress.csv"
    assert_one_line_error(capsys, [str(tmp_path)], str(progress), "no rows")


def test_empty_csv_is_an_error(tmp_path, capsys):
    progress = write_run(tmp_path, "td3", 0) / "progress.csv"
    progress.write_text("")
    assert_one_line_error(capsys, [str(tmp_path)], str(progress), "empty")


def test_csv_without_eval_return_names_the_missing_column(tmp_path, capsys):
    progress = write_run(tmp_path, "td3", 0) / "progress.csv"
    progress.write_text("step,dataset_q\n1000,5.0\n")
    assert_one_line_error(capsys, [str(tmp_path)], str(progress), "eval_return_mean")


def test_non_numeric_step_is_an_error(tmp_path, capsys):
    progress = write_run(tmp_path, "td3", 0) / "progress.csv"
    lines = progress.read_text().splitlines()
    lines[2] = "x" + lines[2]
    progress.write_text("\n".join(lines) + "\n")
    assert_one_line_error(capsys, [str(tmp_path)], str(progress), "line 3", "step 'x2000'")


def test_out_that_is_a_file_is_a_one_line_error(results, capsys):
    target = results.parent / "figure.png"
    target.write_bytes(b"keep me")
    assert_one_line_error(capsys, [str(results), "--out", str(target)], "--out", str(target))
    assert target.read_bytes() == b"keep me"


def test_command_line_end_to_end(results, tmp_path):
    out = tmp_path / "figs"
    done = subprocess.run([sys.executable, str(REPO / "plot.py"), str(results), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "td3_bc10" in done.stdout
    for name in FIGURES:
        assert_valid_png(out / name)


def test_steps_that_go_back_are_an_error(tmp_path, capsys):
    progress = write_run(tmp_path, "td3", 0, steps=(1000, 3000, 2000)) / "progress.csv"
    assert_one_line_error(capsys, [str(tmp_path)], str(progress), "step 2000 follows step 3000")


def test_critic_loss_is_always_on_a_symlog_axis(tmp_path):
    write_run(tmp_path, "td3_bc10", 0)
    groups = plot.load_runs(str(tmp_path))
    panels = plot.figure_diagnostics(groups, plot.colours_for(list(groups))).axes
    assert [ax.get_title() for ax in panels[:3]] == ["policy_q", "bc_distance", "critic_loss (symlog)"]
    assert panels[2].get_yscale() == "symlog"


def test_behaviour_return_is_drawn_as_a_labelled_reference_line(results):
    groups = plot.load_runs(str(results))
    fig = plot.figure_returns(groups, plot.colours_for(list(groups)), 1673.0)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "behaviour policy (dataset mean, 1673)" in legend
    assert any(list(line.get_ydata()) == [1673.0, 1673.0] for line in fig.axes[0].get_lines())
