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
from conftest import DATASET_ID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--dataset", DATASET_ID, "--batch_size", "32", "--hidden", "32", "32", "--eval_episodes", "2",
        "--device", "cpu", "--video_every", "0"]


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def only_run(results) -> str:
    runs = os.listdir(results)
    assert len(runs) == 1, runs
    return os.path.join(results, runs[0])


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


@pytest.mark.parametrize("damage", ["garbage", "old_format"])
def test_resume_from_a_checkpoint_it_cannot_restore_is_a_one_line_error_keeping_the_csv(
        tiny_dataset, tmp_path, capsys, damage):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--total_steps", "20", "--eval_every", "10", "--results_dir", str(results)]) == 0
    run_dir = only_run(results)
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    if damage == "garbage":
        with open(checkpoint, "wb") as f:
            f.write(b"not a checkpoint")
    else:  # as written before the agent had its own Adam: torch.optim state, no "t"
        state = torch.load(checkpoint, weights_only=False)
        state["agent"]["critic_opt"] = {"state": {}, "param_groups": []}
        torch.save(state, checkpoint)
    csv_path = Path(run_dir, "progress.csv")
    csv_before = csv_path.read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["--resume", run_dir, "--total_steps", "30"])  # a finished run would not be restored
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "checkpoint.pt cannot be restored" in err
    assert csv_path.read_text() == csv_before


def test_resume_of_a_run_from_before_a_flag_existed_takes_the_flags_default(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--total_steps", "10", "--eval_every", "10", "--results_dir", str(results)]) == 0
    run_dir = only_run(results)
    config_path = Path(run_dir, "config.json")
    config = json.loads(config_path.read_text())
    for flag in ("seeds", "workers", "threads"):  # flags this repo gained after its first runs
        del config["flags"][flag]
    config["flags"]["total_steps"] = 20
    config_path.write_text(json.dumps(config))
    assert runner.main(["--resume", run_dir]) == 0
    assert [row["step"] for row in read_csv(os.path.join(run_dir, "progress.csv"))] == ["10", "20"]


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


def run_cli(*args: str) -> subprocess.Popen:
    """runner.py in a process of its own, on one thread (--resume takes that from config.json)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    fast = [] if "--resume" in args else [*FAST, "--threads", "1"]
    return subprocess.Popen([sys.executable, "runner.py", *fast, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigterm_then_resume_writes_the_same_rows_as_an_uninterrupted_run(tiny_dataset, tmp_path):
    flags = ["--total_steps", "1200", "--eval_every", "200", "--bc_weight", "1", "--cql_alpha", "1"]
    whole = run_cli(*flags, "--results_dir", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    cut = run_cli(*flags, "--results_dir", str(tmp_path / "cut"))
    csv_path = None
    while csv_path is None or not os.path.exists(csv_path):  # wait for the first evaluation
        time.sleep(0.05)
        runs = os.listdir(tmp_path / "cut") if (tmp_path / "cut").exists() else []
        csv_path = os.path.join(tmp_path / "cut", runs[0], "progress.csv") if runs else None
        assert cut.poll() is None, "the run ended before it could be interrupted"
    cut.send_signal(signal.SIGTERM)
    assert cut.wait(timeout=60) == 130
    assert "--resume" in cut.stderr.read()
    run_dir = os.path.dirname(csv_path)
    interrupted_rows = read_csv(csv_path)
    assert 1 <= len(interrupted_rows) < 6

    resumed = run_cli("--resume", run_dir)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    expected = read_csv(os.path.join(only_run(tmp_path / "whole"), "progress.csv"))
    got = read_csv(csv_path)
    assert len(got) == len(expected) == 6
    for mine, theirs in zip(got, expected):
        mine.pop("time_s"), theirs.pop("time_s")
        assert mine == theirs


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
