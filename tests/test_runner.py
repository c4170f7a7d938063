"""runner.py end to end on a tiny dataset: results folder, CSV, bad input, divergence, a full disk, --seeds."""
import builtins
import errno
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import runner
import utils
from harness import logs
from conftest import rollout_episodes, write_dataset
from helpers import FAST, ROOT, only_run, read_csv, short_run


def test_short_run_writes_config_csv_and_checkpoints(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    status = runner.main([*FAST, "--total_steps", "40", "--eval_every", "20", "--log_every", "10",
                          "--bc_weight", "10", "--cql_alpha", "1", "--results_dir", str(results)])
    assert status == 0
    run_dir = only_run(results)
    label = "td3_dataset=test-hopper-tiny-v0_bc_weight=10_cql_alpha=1_batch_size=32_hidden=32-32"
    assert os.path.basename(run_dir).startswith(label)
    assert sorted(os.listdir(run_dir)) == [".lock", "actor.pt", "actor_best.pt", "checkpoint.pt", "config.json",
                                           "progress.csv", "train.csv"]
    rows = read_csv(os.path.join(run_dir, "progress.csv"))
    assert list(rows[0]) == ["step", "eval_return_mean", "eval_return_std", "dataset_q", "mc_return", "policy_q",
                             "bc_distance", "time_s"]  # the names plot.py reads
    assert [int(r["step"]) for r in rows] == [20, 40]
    assert all(value != "" for r in rows for value in r.values())
    assert float(rows[-1]["time_s"]) > 0
    train_rows = read_csv(os.path.join(run_dir, "train.csv"))
    header = list(train_rows[0])  # "step", then the names the update returns, whatever they are
    assert header[0] == "step" and set(header) >= {"q1", "q2", "target_q", "td_loss", "cql_penalty", "cql_logsumexp",
                                                   "cql_q_random", "cql_q_policy", "cql_q_data", "cql_alpha",
                                                   "critic_loss", "ddpg_loss", "bc_loss", "bc_weight", "actor_loss"}
    assert [int(r["step"]) for r in train_rows] == [10, 20, 30, 40]
    assert all(value != "" for r in train_rows for value in r.values())  # BC and CQL on
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["flags"]["bc_weight"] == 10 and config["flags"]["cql_alpha"] == 1
    assert config["config"].startswith(label)
    assert config["dataset_transitions"] == tiny_dataset.total_steps


def test_train_csv_holds_the_terms_the_update_returns_and_no_others(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--total_steps", "10", "--eval_every", "10", "--results_dir", str(results)]) == 0
    row = read_csv(os.path.join(only_run(results), "train.csv"))[0]
    assert not any(name.startswith("cql_") for name in row)  # plain TD3 has no CQL term
    assert float(row["bc_weight"]) == 0.0 and row["td_loss"] != ""


def test_metric_means_average_each_metric_over_the_updates_that_logged_it_per_member():
    means = logs.MetricMeans()
    means.add({"td_loss": torch.tensor([1.0, 10.0])})  # two members
    means.add({"td_loss": torch.tensor([3.0, 30.0]), "actor_loss": torch.tensor([-4.0, -40.0])})  # an actor step
    means.add({"td_loss": torch.tensor([8.0, 80.0])})
    assert means.pop() == {"td_loss": [4.0, 40.0], "actor_loss": [-4.0, -40.0]}
    means.add({"td_loss": torch.tensor([2.0, 20.0])})
    assert means.pop() == {"td_loss": [2.0, 20.0]}  # a new interval starts from nothing


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
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert len(rows) >= 2
    assert checkpoint["step"] == len(rows) - 1  # the last row is the bad one, the checkpoint is the one before
    assert all(torch.isfinite(p).all() for p in checkpoint["agent"]["agent"]["critic"].values())


def test_seeds_train_side_by_side_as_the_single_runs_would_and_plot_draws_them(tiny_dataset, tmp_path):
    import plot
    results, alone = tmp_path / "results", tmp_path / "alone"
    assert runner.main([*FAST, "--total_steps", "6", "--eval_every", "3", "--seeds", "0", "1",
                        "--results_dir", str(results)]) == 0
    assert runner.main([*FAST, "--total_steps", "6", "--eval_every", "3", "--seed", "1",
                        "--results_dir", str(alone)]) == 0
    runs = sorted(os.listdir(results))
    assert ["-seed0-" in runs[0], "-seed1-" in runs[1]] == [True, True]
    for name in ("train.csv", "progress.csv"):  # seed 1's member wrote what seed 1 alone writes
        together, single = read_csv(os.path.join(results, runs[1], name)), read_csv(os.path.join(only_run(alone), name))
        assert [row.keys() for row in together] == [row.keys() for row in single]
        for row, expected in zip(together, single):
            for key in row.keys() - {"time_s"}:
                assert (float(row[key]) == pytest.approx(float(expected[key]), rel=1e-4, abs=1e-5)
                        if expected[key] else row[key] == "")
    assert plot.main([str(results), "--out", str(tmp_path / "figures")]) == 0
    for name in ("returns.png", "q_values.png", "diagnostics.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeds_pass_the_users_threads_to_each_run(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    threads = torch.get_num_threads()
    try:
        assert runner.main([*FAST, "--total_steps", "2", "--eval_every", "2", "--seeds", "0", "1", "--threads", "3",
                            "--results_dir", str(results)]) == 0
        assert torch.get_num_threads() == 3  # the process that trained them used the user's threads
    finally:
        torch.set_num_threads(threads)
    for run_dir in results.iterdir():  # how it ran is not what it is: not recorded
        assert "threads" not in json.loads((run_dir / "config.json").read_text())["flags"]


def test_threads_default_to_one_and_obey_omp_num_threads(tiny_dataset, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    try:
        for omp, expected in ((None, 1), ("2", 2)):  # torch read OMP_NUM_THREADS=2 at import: 2 threads already
            torch.set_num_threads(2)
            if omp:
                monkeypatch.setenv("OMP_NUM_THREADS", omp)
            else:
                monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
            assert runner.main([*FAST, "--total_steps", "2", "--eval_every", "2",
                                "--results_dir", str(tmp_path / str(omp))]) == 0
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(threads)


def test_ctrl_c_while_the_dataset_loads_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(dataset_id: str):
        raise KeyboardInterrupt
    monkeypatch.setattr(utils, "load_dataset", interrupted)  # where runs load their data (Problem 1.1's function)
    assert runner.main([*FAST, "--results_dir", str(tmp_path / "results")]) == 130
    assert capsys.readouterr().err == "runner.py: interrupted while loading; nothing was trained\n"
    assert not (tmp_path / "results").exists()


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def full_disk_at(monkeypatch, name: str, nth: int) -> None:
    """From now on, the nth opening for writing of the file `name` (or name.tmp) finds the disk full."""
    writes = []

    def full_open(path, mode="r", *args, **kwargs):
        if os.path.basename(str(path)) in (name, name + ".tmp") and mode[0] in "wa":
            writes.append(path)
            if len(writes) == nth:
                io.open(path, mode, *args, **kwargs).close()  # the file is made, its bytes are not
                raise no_space(path)
        return io.open(path, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", full_open)


@pytest.mark.parametrize("name", ["checkpoint.pt", "progress.csv"])
def test_a_full_disk_during_training_stops_the_run_and_resume_goes_on_from_the_last_checkpoint(
        tiny_dataset, tmp_path, capsys, monkeypatch, name):
    full_disk_at(monkeypatch, name, nth=2)  # at the second evaluation
    results = tmp_path / "results"
    assert runner.main([*FAST, "--total_steps", "30", "--eval_every", "10", "--results_dir", str(results)]) == 1
    run_dir = only_run(results)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"runner.py: error: cannot write {run_dir}/{name} (No space left on device) at step 20; the last "
        f"checkpoint is intact (step 10): free the disk, then python runner.py --resume {run_dir}")
    assert torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["step"] == 10
    assert not [file for file in os.listdir(run_dir) if file.endswith(".tmp")]
    monkeypatch.setattr(builtins, "open", io.open)  # room again
    assert runner.main(["--resume", run_dir]) == 0
    assert [row["step"] for row in read_csv(os.path.join(run_dir, "progress.csv"))] == ["10", "20", "30"]


@pytest.mark.parametrize("failing", ["read-only results folder", "full disk at config.json"])
def test_a_results_folder_that_cannot_be_written_is_one_line_before_training(tiny_dataset, tmp_path, capsys,
                                                                             monkeypatch, failing):
    results = tmp_path / "results"
    results.mkdir()
    real_makedirs = os.makedirs

    def read_only_makedirs(path, *args, **kwargs):  # tests run as root, whom chmod would not stop
        if str(path).startswith(str(results)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_makedirs(path, *args, **kwargs)
    if failing == "read-only results folder":
        monkeypatch.setattr(os, "makedirs", read_only_makedirs)
    else:
        full_disk_at(monkeypatch, "config.json", nth=1)
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*FAST, "--total_steps", "10", "--results_dir", str(results)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    reason = "Read-only file system" if failing == "read-only results folder" else "No space left on device"
    assert err.count("\n") == 1 and f"({reason}); nothing was trained\n" in err, err
    assert err.startswith(f"runner.py: error: cannot {'create' if 'read-only' in failing else 'write'} {results}/")
    assert os.listdir(results) == []


def test_a_nan_in_the_dataset_stops_the_run_before_anything_is_written(minari_root, tmp_path, capsys):
    episodes = rollout_episodes()
    episodes[4].observations[3, 2] = np.nan
    write_dataset(minari_root, episodes=episodes)
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*FAST, "--total_steps", "4", "--results_dir", str(results)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("runner.py: error: --dataset:") and "\n" not in err
    assert "observations of episode 4, step 3" in err and "--lr" not in err
    assert not results.exists()


def test_videos_are_written_when_due_and_a_failed_render_is_one_warning(tiny_dataset, tmp_path, capsys, monkeypatch):
    run_dir = short_run(tmp_path / "ok", "--video_every", "10")
    assert sorted(os.listdir(os.path.join(run_dir, "videos"))) == ["step10.mp4", "step20.mp4"]

    def broken_renderer(*args, **kwargs):
        raise RuntimeError("no GL context\nsecond line")
    monkeypatch.setattr(runner, "record_video", broken_renderer)  # the machine's GL, not the runner, fails
    capsys.readouterr()
    run_dir = short_run(tmp_path / "broken", "--video_every", "10")  # still finishes, exit 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 2 and "no GL context" in warnings[0] and "second line" not in warnings[0]
    assert len(read_csv(os.path.join(run_dir, "progress.csv"))) == 2
