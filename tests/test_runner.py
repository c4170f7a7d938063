"""runner.py end to end on a tiny dataset: results folder, CSV, bad input, divergence, resume."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import runner
from helpers import FAST, ROOT, only_run, read_csv, short_run


def test_short_run_writes_config_csv_and_checkpoints(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    status = runner.main([*FAST, "--total_steps", "40", "--eval_every", "20", "--log_every", "10",
                          "--bc_weight", "10", "--cql_alpha", "1", "--results_dir", str(results)])
    assert status == 0
    run_dir = only_run(results)
    assert os.path.basename(run_dir).startswith("td3_total_steps=40_bc_weight=10_cql_alpha=1_")
    assert sorted(os.listdir(run_dir)) == [".lock", "actor.pt", "actor_best.pt", "checkpoint.pt", "config.json",
                                           "progress.csv", "train.csv"]
    rows = read_csv(os.path.join(run_dir, "progress.csv"))
    assert list(rows[0]) == runner.CSV_COLUMNS
    assert [int(r["step"]) for r in rows] == [20, 40]
    assert all(r[column] != "" for r in rows for column in runner.CSV_COLUMNS)
    assert float(rows[-1]["time_s"]) > 0
    train_rows = read_csv(os.path.join(run_dir, "train.csv"))
    assert list(train_rows[0]) == runner.TRAIN_COLUMNS
    assert [int(r["step"]) for r in train_rows] == [10, 20, 30, 40]
    assert all(r[column] != "" for r in train_rows for column in runner.TRAIN_COLUMNS)  # BC and CQL on
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["flags"]["bc_weight"] == 10 and config["flags"]["cql_alpha"] == 1
    assert config["config"].startswith("td3_total_steps=40_bc_weight=10_cql_alpha=1_")
    assert config["dataset_transitions"] == tiny_dataset.total_steps


def test_plain_td3_leaves_the_cql_columns_empty(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--total_steps", "10", "--eval_every", "10", "--results_dir", str(results)]) == 0
    row = read_csv(os.path.join(only_run(results), "train.csv"))[0]
    assert row["cql_penalty"] == row["cql_logsumexp"] == row["cql_alpha"] == ""
    assert float(row["bc_weight"]) == 0.0 and row["td_loss"] != ""


def test_metric_means_average_each_metric_over_the_updates_that_logged_it():
    means = runner.MetricMeans()
    means.add({"td_loss": torch.tensor(1.0)})
    means.add({"td_loss": torch.tensor(3.0), "actor_loss": torch.tensor(-4.0)})  # an actor step
    means.add({"td_loss": torch.tensor(8.0)})
    assert means.pop() == {"td_loss": 4.0, "actor_loss": -4.0}
    means.add({"td_loss": torch.tensor(2.0)})
    assert means.pop() == {"td_loss": 2.0}  # a new interval starts from nothing


def test_a_run_never_overwrites_another(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    for _ in range(2):  # same config, same seed, same second
        assert runner.main([*FAST, "--total_steps", "4", "--eval_every", "4", "--results_dir", str(results)]) == 0
    runs = sorted(os.listdir(results))
    assert len(runs) == 2
    assert all(len(read_csv(os.path.join(results, r, "progress.csv"))) == 1 for r in runs)


BAD_FLAGS = [
    (["--total_steps", "0"], "--total_steps"),
    (["--total_steps", "-5"], "--total_steps"),
    (["--total_steps", "ten"], "--total_steps"),
    (["--batch_size", "100000"], "--batch_size"),
    (["--cql_alpha", "-1"], "--cql_alpha"),
    (["--bc_weight", "-0.5"], "--bc_weight"),
    (["--gamma", "1.5"], "--gamma"),
    (["--lr", "nan"], "--lr"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda:7"], "--device"),
    (["--dataset", "test/hopper/no-such-v0"], "--dataset"),
    (["--resume", "no/such/run"], "--resume"),
]


@pytest.mark.parametrize("flags, named", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_is_a_one_line_error_that_writes_nothing(tiny_dataset, tmp_path, capsys, flags, named):
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*FAST, "--total_steps", "5", "--results_dir", str(results), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "Traceback" not in err, err
    assert not results.exists()


def test_results_dir_that_is_a_file_is_refused_and_kept(tiny_dataset, tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*FAST, "--results_dir", str(a_file)])
    assert exit_info.value.code == 2
    assert "--results_dir" in capsys.readouterr().err
    assert a_file.read_text() == "precious"


def test_bad_flag_from_the_command_line_exits_2_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "runner.py", "--cql_alpha", "-3"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "runner.py: error: argument --cql_alpha: must be a finite number >= 0, got -3"]


def test_q_past_max_abs_q_stops_the_run_and_keeps_its_csv(tiny_dataset, tmp_path, capsys):
    results = tmp_path / "results"
    status = runner.main([*FAST, "--total_steps", "30", "--eval_every", "10", "--max_abs_q", "1e-9",
                          "--results_dir", str(results)])
    assert status == 1
    assert "--max_abs_q" in capsys.readouterr().err
    run_dir = only_run(results)
    assert len(read_csv(os.path.join(run_dir, "progress.csv"))) == 1  # the row that showed it
    assert not os.path.exists(os.path.join(run_dir, "checkpoint.pt"))  # no good checkpoint to keep


@pytest.mark.filterwarnings("ignore:.*reward is a NaN value")  # the diverged policy is still evaluated once
def test_non_finite_loss_stops_the_run_keeping_the_last_good_checkpoint(tiny_dataset, tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working folder on NaN controls
    results = tmp_path / "results"
    # Adam with a step size of 1e6 makes the weights, then Q, then the squared TD error overflow
    status = runner.main([*FAST, "--total_steps", "50", "--eval_every", "1", "--lr", "1e6",
                          "--results_dir", str(results)])
    assert status == 1
    assert "non-finite" in capsys.readouterr().err
    run_dir = only_run(results)
    rows = read_csv(os.path.join(run_dir, "progress.csv"))
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    assert len(rows) >= 2
    assert checkpoint["step"] == len(rows) - 1  # the last row is the bad one, the checkpoint is the one before
    assert all(torch.isfinite(p).all() for p in checkpoint["agent"]["critic"].values())


def test_seeds_run_one_process_each_and_plot_draws_them(tiny_dataset, tmp_path):
    import plot
    results = tmp_path / "results"
    status = runner.main([*FAST, "--total_steps", "6", "--eval_every", "3", "--seeds", "0", "1",
                          "--workers", "2", "--results_dir", str(results)])
    assert status == 0
    runs = sorted(os.listdir(results))
    assert ["-seed0-" in runs[0], "-seed1-" in runs[1]] == [True, True]
    assert plot.main([str(results), "--out", str(tmp_path / "figures")]) == 0
    for name in ("returns.png", "q_values.png", "diagnostics.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
