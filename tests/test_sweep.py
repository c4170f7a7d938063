"""sweep.py: one run per alpha_reg value in groups trained side by side, and a table that says what each value did."""
import csv
import json
import os

import pytest

from harness import config
import runner
import sweep
from conftest import DATASET_ID


def test_sweep_runs_each_value_and_tabulates_it(tiny_dataset, tmp_path, capsys):
    results = tmp_path / "results"
    status = sweep.main(["--bc_weight", "0", "10", "--total_steps", "20", "--eval_every", "10",
                         "--results_dir", str(results), "--dataset", DATASET_ID, "--batch_size", "32",
                         "--hidden", "32", "32", "--eval_episodes", "1", "--device", "cpu", "--video_every", "0"])
    assert status == 0
    (sweep_dir,) = results.iterdir()
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert ["bc_weight=10_" in r for r in runs] == [False, True]
    with open(sweep_dir / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["bc_weight"] for row in table] == ["0.0", "10.0"]
    assert all(list(row) == sweep.TABLE_COLUMNS and row["seeds"] == "1" for row in table)
    out = capsys.readouterr().out
    assert "sweep.csv" in out and "Q - MC" in out


def test_bad_runner_flag_is_refused_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--bc_weight", "1", "--results_dir", str(tmp_path), "--cql_alpha", "-1"])
    assert exit_info.value.code == 2
    assert "--cql_alpha" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_plan_puts_compatible_runs_side_by_side_and_fills_the_workers():
    common = {"total_steps": 20, "results_dir": "r"}
    runs = [common | {"bc_weight": w, "seed": s} for w in (0.0, 10.0, "auto") for s in (0, 1)]
    groups = sweep.plan(runs, members=0, workers=2)  # numbers share a process, 'auto' computes another weight
    assert [[(r["bc_weight"], r["seed"]) for r in g] for g in groups] == [
        [(0.0, 0), (0.0, 1)], [(10.0, 0), (10.0, 1)], [("auto", 0)], [("auto", 1)]]
    assert [len(g) for g in sweep.plan(runs, members=3, workers=2)] == [3, 1, 2]
    assert [len(g) for g in sweep.plan(runs + [common | {"lr": 1e-3}], members=0, workers=1)] == [4, 2, 1]


def test_a_group_run_again_resumes_its_begun_runs_and_restarts_those_without_a_checkpoint(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    run = {"dataset": DATASET_ID, "batch_size": 32, "hidden": [32, 32], "eval_episodes": 1, "device": "cpu",
           "video_every": 0, "threads": 1, "total_steps": 40, "eval_every": 10, "results_dir": str(results)}
    # a killed process left seed 0 at its checkpoint of step 20 and seed 1 with no checkpoint at all
    assert runner.main(config.command_line(run | {"seed": 0, "total_steps": 20})) == 0
    (begun,) = os.listdir(results)
    meta = json.loads((results / begun / "config.json").read_text())
    json.dump(meta | {"flags": meta["flags"] | {"total_steps": 40}}, open(results / begun / "config.json", "w"))
    unstarted = results / "seed1-no-checkpoint"
    unstarted.mkdir()
    json.dump(meta | {"flags": meta["flags"] | {"total_steps": 40, "seed": 1}}, open(unstarted / "config.json", "w"))
    rows_before = (results / begun / "progress.csv").read_text()

    assert runner.run_group([run | {"seed": 0}, run | {"seed": 1}]) == 0
    assert not unstarted.exists()
    assert len(os.listdir(results)) == 2  # seed 0 continued in place, seed 1 began afresh
    continued = (results / begun / "progress.csv").read_text()
    assert continued.startswith(rows_before)
    for run_dir in os.listdir(results):
        steps = [line.split(",")[0] for line in (results / run_dir / "progress.csv").read_text().splitlines()[1:]]
        assert steps == ["10", "20", "30", "40"]
