"""--resume end to end: it continues exactly, whatever step it was stopped at, and says what it does.
What it refuses is in test_resume_refusals.py."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

import runner
from harness import run_folder
from helpers import FAST, ROOT, only_run, read_csv, short_run
from resume_helpers import files_of
from td3_agent import TD3Agent


def run_cli(*args: str) -> subprocess.Popen:
    """runner.py in a process of its own, on one thread (--resume takes that from config.json)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    fast = [] if "--resume" in args else [*FAST, "--threads", "1"]
    return subprocess.Popen([sys.executable, "runner.py", *fast, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)



def test_sigterm_then_resume_writes_the_same_rows_as_an_uninterrupted_run_for_every_member(tiny_dataset, tmp_path):
    run_flags = ["--total_steps", "1200", "--eval_every", "200", "--bc_weight", "1", "--cql_alpha", "1",
                 "--seeds", "0", "1"]  # two runs side by side, stopped and resumed together
    whole = run_cli(*run_flags, "--results_dir", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    cut = run_cli(*run_flags, "--results_dir", str(tmp_path / "cut"))
    csv_paths = None
    while csv_paths is None or not all(os.path.exists(path) for path in csv_paths):  # the first evaluation
        time.sleep(0.05)
        runs = sorted(os.listdir(tmp_path / "cut")) if (tmp_path / "cut").exists() else []
        csv_paths = [os.path.join(tmp_path / "cut", run, "progress.csv") for run in runs] if len(runs) == 2 else None
        assert cut.poll() is None, "the runs ended before they could be interrupted"
    cut.send_signal(signal.SIGTERM)
    assert cut.wait(timeout=60) == 130
    assert "--resume" in cut.stderr.read()
    run_dirs = [os.path.dirname(path) for path in csv_paths]
    assert all(1 <= len(read_csv(path)) < 6 for path in csv_paths)

    resumed = run_cli("--resume", *run_dirs)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    for path, whole_run in zip(csv_paths, sorted(os.listdir(tmp_path / "whole"))):
        expected = read_csv(os.path.join(tmp_path / "whole", whole_run, "progress.csv"))
        got = read_csv(path)
        assert len(got) == len(expected) == 6
        for mine, theirs in zip(got, expected):
            mine.pop("time_s"), theirs.pop("time_s")
            assert mine == theirs


def test_resume_with_a_larger_total_steps_says_where_it_starts_and_records_the_new_length(tiny_dataset, tmp_path,
                                                                                         capsys):
    run_dir = short_run(tmp_path / "results")
    capsys.readouterr()
    assert runner.main(["--resume", run_dir, "--total_steps", "30"]) == 0
    assert f"resuming {run_dir} at step 20 of 30\n" in capsys.readouterr().out
    assert [row["step"] for row in read_csv(os.path.join(run_dir, "progress.csv"))] == ["10", "20", "30"]
    written = json.loads(Path(run_dir, "config.json").read_text())
    assert written["flags"]["total_steps"] == 30


def cpu_model_name() -> str:
    """This machine's CPU as /proc/cpuinfo names it (read here apart from run_folder.this_machine)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    raise AssertionError("no model name in /proc/cpuinfo")


def test_config_records_the_machine_and_a_resume_on_another_cpu_adds_it_and_says_so(tiny_dataset, tmp_path,
                                                                                  capsys):
    run_dir = short_run(tmp_path / "results", "--total_steps", "10")
    config_path = Path(run_dir, "config.json")
    written = json.loads(config_path.read_text())
    here = {"cpu": cpu_model_name(), "torch": torch.__version__}
    assert written["machines"] == [here | {"from_step": 0}]

    assert runner.main(["--resume", run_dir, "--total_steps", "20"]) == 0  # the same machine: nothing added
    assert json.loads(config_path.read_text())["machines"] == [here | {"from_step": 0}]

    elsewhere = {"cpu": "Another CPU 9000", "torch": "2.0.0", "from_step": 0}  # as if begun on another machine
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | {"machines": [elsewhere]}))
    capsys.readouterr()
    assert runner.main(["--resume", run_dir, "--total_steps", "30"]) == 0
    err = capsys.readouterr().err
    assert f"{run_dir} ran on Another CPU 9000 (torch 2.0.0) until step 20 and resumes on {here['cpu']}" in err
    written = json.loads(config_path.read_text())
    assert written["machines"] == [elsewhere, here | {"from_step": 20}]
    assert written["flags"]["total_steps"] == 30


def test_resuming_a_finished_run_says_so_and_changes_nothing(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    before = files_of(run_dir)
    capsys.readouterr()
    assert runner.main(["--resume", run_dir]) == 0
    assert f"runner.py: {run_dir} is finished (step 20 of 20); nothing to do." in capsys.readouterr().out
    assert files_of(run_dir) == before


def test_resume_of_a_run_from_before_a_flag_existed_takes_the_flags_default(tiny_dataset, tmp_path):
    run_dir = short_run(tmp_path / "results", "--total_steps", "10")
    config_path = Path(run_dir, "config.json")
    written = json.loads(config_path.read_text())
    assert written["flags"].pop("critic_layernorm") is False  # a flag this repo gained after its first runs
    written["flags"]["total_steps"] = 20
    config_path.write_text(json.dumps(written))
    assert run_folder.resumed_config(run_dir, written, {"resume": (run_dir,)}).td3.critic_layernorm is False
    assert runner.main(["--resume", run_dir]) == 0
    assert [row["step"] for row in read_csv(os.path.join(run_dir, "progress.csv"))] == ["10", "20"]


def rows_of(run_dir: str, name: str) -> list[dict]:
    """A log's rows without time_s, the one column an interruption may change."""
    return [{k: v for k, v in row.items() if k != "time_s"} for row in read_csv(os.path.join(run_dir, name))]


def sigterm_at(calls: list, n: int) -> None:
    """Count a call; SIGTERM this process at the nth, as `timeout` or a batch scheduler would."""
    calls.append(1)
    if len(calls) == n:
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_between_train_rows_then_resume_writes_the_uninterrupted_rows(tiny_dataset, tmp_path, monkeypatch,
                                                                              capsys):
    run_flags = [*FAST, "--total_steps", "40", "--eval_every", "20", "--log_every", "10", "--cql_alpha", "1"]
    assert runner.main([*run_flags, "--results_dir", str(tmp_path / "whole")]) == 0
    whole = only_run(tmp_path / "whole")
    update, calls = TD3Agent.update, []

    def update_then_signal(agent, *batch):
        metrics = update(agent, *batch)
        sigterm_at(calls, 15)  # after the 15th update: half way between the rows of steps 10 and 20
        return metrics
    monkeypatch.setattr(TD3Agent, "update", update_then_signal)
    assert runner.main([*run_flags, "--results_dir", str(tmp_path / "cut")]) == 130
    cut = only_run(tmp_path / "cut")
    assert [row["step"] for row in rows_of(cut, "train.csv")] == ["10"]
    assert torch.load(os.path.join(cut, "checkpoint.pt"), weights_only=True)["step"] == 15
    monkeypatch.setattr(TD3Agent, "update", update)
    assert runner.main(["--resume", cut]) == 0
    assert rows_of(cut, "train.csv") == rows_of(whole, "train.csv")
    assert rows_of(cut, "progress.csv") == rows_of(whole, "progress.csv")


def test_sigterm_during_an_evaluation_stops_it_at_once_and_resume_repeats_it(tiny_dataset, tmp_path, monkeypatch,
                                                                             capsys):
    run_flags = [*FAST, "--total_steps", "30", "--eval_every", "10", "--eval_episodes", "3"]
    assert runner.main([*run_flags, "--results_dir", str(tmp_path / "whole")]) == 0
    whole = only_run(tmp_path / "whole")
    evaluate, evaluations, policy_calls = runner.evaluate, [], []

    def evaluate_with_a_signal(policy, *args, **kwargs):
        evaluations.append(1)
        if len(evaluations) == 2:  # the evaluation of step 20: a signal at its first policy step
            signalling = policy
            policy = lambda obs: (sigterm_at(policy_calls, 1), signalling(obs))[1]  # noqa: E731
        return evaluate(policy, *args, **kwargs)
    monkeypatch.setattr(runner, "evaluate", evaluate_with_a_signal)
    capsys.readouterr()
    assert runner.main([*run_flags, "--results_dir", str(tmp_path / "cut")]) == 130
    cut = only_run(tmp_path / "cut")
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"runner.py: interrupted during the evaluation at step 20; resume from the checkpoint of step 10 with: "
        f"python runner.py --resume {cut}")
    assert len(policy_calls) == 1  # no episode went on after the signal
    assert [row["step"] for row in rows_of(cut, "progress.csv")] == ["10"]
    monkeypatch.setattr(runner, "evaluate", evaluate)
    assert runner.main(["--resume", cut]) == 0
    assert rows_of(cut, "progress.csv") == rows_of(whole, "progress.csv")
    assert rows_of(cut, "train.csv") == rows_of(whole, "train.csv")



def test_a_run_that_diverges_before_its_first_checkpoint_does_not_promise_one(tiny_dataset, tmp_path, capsys):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--total_steps", "30", "--eval_every", "10", "--max_abs_q", "1e-9",
                        "--results_dir", str(results)]) == 1
    run_dir = only_run(results)
    assert not os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "stopped:" in line]
    assert "It keeps its CSV files and no checkpoint (none was written before); try a smaller" in line
    assert "last good checkpoint" not in line
