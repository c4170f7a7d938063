"""sweep.py: one run per alpha_reg value, and a table that says what each value did."""
import csv
import os

import pytest

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


def test_a_retried_group_finds_its_begun_run_when_a_flag_is_a_list(tiny_dataset, tmp_path):
    # config.json holds --hidden 32 32 as a JSON list; the run's flags hold a tuple
    results = tmp_path / "results"
    run = {"total_steps": 20, "eval_every": 10, "results_dir": str(results), "dataset": DATASET_ID,
           "batch_size": 32, "hidden": [32, 32], "eval_episodes": 1, "device": "cpu", "video_every": 0, "seed": 0}
    assert sweep.run_group([run]) == 0
    (run_dir,) = results.iterdir()
    assert sweep.begun_runs([run]) == {0: str(run_dir)}
