"""sweep.py: one run per alpha_reg value in groups trained side by side, and a table that says what each value did."""
import contextlib
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

from harness import config
from harness import run_folder
from harness import sweep_table
import runner
import sweep
from conftest import DATASET_ID
from fake_runs import write_run
from helpers import FAST, ROOT

RUN = ["--dataset", DATASET_ID, "--batch_size", "32", "--hidden", "32", "32", "--eval_episodes", "1", "--device", "cpu",
       "--video_every", "0"]


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
    assert all(list(row) == sweep_table.TABLE_COLUMNS and row["seeds"] == "1" for row in table)
    out = capsys.readouterr().out
    assert "sweep.csv" in out and "Q - MC" in out
    assert all(row["finished"] == "1" and row["diverged"] == row["stopped_early"] == "0" for row in table)
    assert "Q has not grown to the return's scale yet" in out  # 20 updates: Q is still near 0


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
    assert runner.run_group([run | {"seed": 0, "total_steps": 20}]) == 0
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


def one_line_error(capsys, argv: list[str], prog: str = "sweep.py", main=sweep.main) -> str:
    """The one line main(argv) prints when it refuses, `prog: error: ...`, exit status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--bc_weight", "1", "1"], "--bc_weight gives 1.0 twice; give each value once"),
    (["--bc_weight", "auto", "1", "auto"], "--bc_weight gives auto twice"),
    (["--bc_weight", "1", "--seeds", "0", "1", "0"], "--seeds gives 0 twice"),
])
def test_a_value_or_seed_given_twice_is_refused_before_any_run(tiny_dataset, tmp_path, capsys, argv, message):
    results = tmp_path / "sweeps"
    assert message in one_line_error(capsys, [*argv, "--results_dir", str(results), *RUN, "--total_steps", "4"])
    assert not results.exists()


def test_runner_seeds_given_twice_are_refused(tiny_dataset, tmp_path, capsys):
    err = one_line_error(capsys, [*FAST, "--seeds", "0", "0", "--results_dir", str(tmp_path / "r")], "runner.py",
                         runner.main)
    assert "--seeds gives seed 0 twice; give each seed once" in err
    assert not (tmp_path / "r").exists()


def test_the_default_folder_is_sweeps_and_a_sweep_begun_in_the_same_second_gets_its_own(tiny_dataset, tmp_path,
                                                                                          monkeypatch, capsys):
    assert "sweeps/" in Path(ROOT, ".gitignore").read_text().split()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(sweep.time, "strftime", lambda fmt: "20260101-000000")  # two sweeps in one second
    (tmp_path / "cwd" / "sweeps" / "sweep-20260101-000000").mkdir(parents=True)
    assert sweep.main(["--bc_weight", "1", "--total_steps", "10", "--eval_every", "10", *RUN]) == 0
    assert sorted(os.listdir(tmp_path / "cwd")) == ["sweeps"]  # nothing in results/, which plot.py results/ reads
    assert (tmp_path / "cwd" / "sweeps" / "sweep-20260101-000000-1" / "sweep.csv").exists()


def test_a_run_that_stopped_early_or_diverged_gives_no_number_and_is_counted(tmp_path):
    for seed, returns in enumerate([(300.0, 600.0, 900.0), (300.0, 500.0), (300.0, float("nan"))]):
        write_run(tmp_path, "td3_bc_weight=1", seed, returns=returns, bc_weight=1.0)  # seed 1's worker died at 2000
    write_run(tmp_path, "td3_bc_weight=10", 0, returns=(300.0,), bc_weight=10.0)
    write_run(tmp_path / "copied", "td3_bc_weight=10", 0, returns=(300.0,), bc_weight=10.0)  # the same run again
    table = sweep_table.summarise(sweep_table.sweep_runs(str(tmp_path)), [1.0, 10.0], seeds=3)
    assert [(r["finished"], r["diverged"], r["stopped_early"]) for r in table] == [(1, 1, 1), (0, 0, 3)]
    assert [r["copies"] for r in table] == [0, 1]
    assert table[0]["final_return_mean"] == 900.0 and table[0]["final_return_std"] is None  # one finished seed
    assert table[1]["final_return_mean"] is None  # not its step-1000 return
    text = sweep_table.table_text(table)
    assert "bc_weight 10.0: 0 of 3 seeds finished (0 diverged, 3 stopped early)" in text
    assert "bc_weight 10.0: 1 run folder(s) repeat a seed's flags (copies), counted once" in text
    path = sweep_table.write_table(str(tmp_path), table)
    with open(path, newline="") as f:
        assert list(csv.DictReader(f))[1]["final_return_mean"] == ""


def test_q_minus_mc_is_marked_only_where_q_has_not_reached_the_scale_of_the_return():
    row = {"bc_weight": 1.0, "seeds": 1, "finished": 1, "diverged": 0, "stopped_early": 0, "copies": 0,
           "final_return_mean": 1000.0, "final_return_std": None, "bc_distance": 0.1, "mc_return": 240.0}
    grown = sweep_table.table_text([row | {"dataset_q": 230.0, "q_overestimation": -10.0}])
    short = sweep_table.table_text([row | {"dataset_q": 3.0, "q_overestimation": -237.0}])
    assert "not under-estimation" not in grown and not grown.splitlines()[1].endswith("*")
    assert short.splitlines()[1].endswith("-237.0*")
    assert short.splitlines()[-1] == ("* dataset Q is below 0.5 x the MC return: Q has not grown to the return's scale "
                                      "yet (too few updates), so Q - MC is not under-estimation; compare the values by "
                                      "BC dist instead")


def sweep_cli(results, *args: str) -> subprocess.Popen:
    """sweep.py in a process of its own, one thread a run."""
    return subprocess.Popen([sys.executable, "sweep.py", "--bc_weight", "0", "1", "--results_dir", str(results), *RUN,
                             "--threads", "1", *args], cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def first_evaluations(results, launcher: subprocess.Popen) -> list[Path]:
    """Wait until each run of the sweep has evaluated once; their folders."""
    while True:
        time.sleep(0.05)
        runs = sorted(results.glob("sweep-*/*/progress.csv"))
        if len(runs) == 2:
            return [path.parent for path in runs]
        assert launcher.poll() is None, "the sweep ended before it could be stopped"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_sweeps_workers_at_a_checkpoint_and_writes_no_table(tiny_dataset, tmp_path, sig):
    results = tmp_path / "sweeps"
    launcher = sweep_cli(results, "--total_steps", "1000", "--eval_every", "100")
    run_dirs = first_evaluations(results, launcher)
    launcher.send_signal(sig)  # to the launcher alone, as `timeout` or a batch scheduler sends it
    assert launcher.wait(timeout=120) == 130
    sweep_dir = run_dirs[0].parent
    err = launcher.stderr.read()
    assert err.splitlines()[-1] == (
        f"sweep.py: stopped by {sig.name}; its runs stopped at their checkpoints and no table was written. Resume "
        f"with: python sweep.py --resume {sweep_dir}")
    assert err.count("--resume") == 1, err  # the one line that continues what the user started
    assert not (sweep_dir / "sweep.csv").exists()
    for run_dir in run_dirs:
        run_folder.hold(str(run_dir)).close()  # no worker holds it any more: none trains on, unwatched
        assert 100 <= torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] < 1000
    if sig == signal.SIGTERM:
        assert sweep.main(["--resume", str(sweep_dir)]) == 0
        with open(sweep_dir / "sweep.csv", newline="") as f:
            assert [row["finished"] for row in csv.DictReader(f)] == ["1", "1"]
        for run_dir in run_dirs:
            assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 1000


def test_resume_beside_other_flags_or_of_a_folder_that_is_no_sweep_is_refused(tiny_dataset, tmp_path, capsys):
    assert sweep.main(["--bc_weight", "1", "--results_dir", str(tmp_path / "sweeps"), *RUN, "--total_steps", "4",
                       "--eval_every", "4"]) == 0
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    os.remove(sweep_dir / "sweep.csv")
    assert sweep.main(["--resume", str(sweep_dir), "--workers", "2"]) == 0  # finished: nothing to train
    assert (sweep_dir / "sweep.csv").exists()
    err = one_line_error(capsys, ["--resume", str(sweep_dir), "--bc_weight", "1", "--total_steps", "8"])
    assert "--resume continues a sweep with the flags of its sweep.json; only --workers may be given beside it, not " \
           "--bc_weight --total_steps" in err
    assert f"cannot read {tmp_path}/sweep.json" in one_line_error(capsys, ["--resume", str(tmp_path)])
    record = json.loads((sweep_dir / "sweep.json").read_text())
    (run_dir,) = [p for p in sweep_dir.iterdir() if p.is_dir()]
    (run_dir / "config.json").write_text('{"flags": {"lr": 0.1,}}')  # a hand edit gone wrong
    err = one_line_error(capsys, record["groups"][0], "runner.py", runner.run_group)  # what --resume runs
    assert err.startswith(f"runner.py: error: --resume: {run_dir}/config.json cannot be read (JSONDecodeError")
    record["groups"][0][0]["lr"] = -1
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    err = one_line_error(capsys, ["--resume", str(sweep_dir)], "runner.py")  # runner.py's flags, checked as its
    assert f"{sweep_dir}/sweep.json: argument --lr: must be a finite number > 0, got -1" in err


def test_a_sweep_leaves_threads_to_runner_unless_given(tmp_path):
    for argv, threads in (([], None), (["--threads", "2"], 2)):
        values, _, passthrough = sweep.parse(["--bc_weight", "1", "10", "--results_dir", str(tmp_path), *argv])
        with contextlib.ExitStack() as held:  # the sweep folder's lock, let go at once
            _, record = sweep.new_sweep(values, config.parse(passthrough)[2], held)
        assert [run.get("threads") for group in record["groups"] for run in group] == [threads, threads]
