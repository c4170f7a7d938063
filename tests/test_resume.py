"""--resume end to end: it continues exactly, says what it does, and refuses what it cannot trust in one line."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import config
from harness import flags
from harness import run_folder
import runner
from conftest import rollout_episodes, write_dataset
from td3_agent import TD3Agent
from helpers import FAST, ROOT, only_run, read_csv, short_run


def run_cli(*args: str) -> subprocess.Popen:
    """runner.py in a process of its own, on one thread (--resume takes that from config.json)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    fast = [] if "--resume" in args else [*FAST, "--threads", "1"]
    return subprocess.Popen([sys.executable, "runner.py", *fast, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def files_of(run_dir: str) -> dict[str, bytes]:
    """Every file of a run folder but its lock, by name."""
    return {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file() and p.name != ".lock"}


def resume_error(capsys, *argv: str) -> str:
    """The one line --resume prints when it refuses (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["--resume", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("runner.py: error: ") and "Traceback" not in err, err
    return err


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
    assert written["flags"]["total_steps"] == 30 and written["config"].startswith("td3_total_steps=30_")


def test_resuming_a_finished_run_says_so_and_changes_nothing(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    before = files_of(run_dir)
    capsys.readouterr()
    assert runner.main(["--resume", run_dir]) == 0
    assert f"runner.py: {run_dir} is finished (step 20 of 20); nothing to do." in capsys.readouterr().out
    assert files_of(run_dir) == before


@pytest.mark.parametrize("beside, refused", [
    (["--lr", "1e-3"], "not --lr"),
    (["--seed", "1", "--threads", "2"], "not --seed --threads"),
    (["--total_steps", "10"], "--total_steps 10 beside --resume must be larger than the run's 20"),
])
def test_flags_beside_resume_are_refused_but_a_larger_total_steps(tiny_dataset, tmp_path, capsys, beside, refused):
    run_dir = short_run(tmp_path / "results")
    before = files_of(run_dir)
    assert refused in resume_error(capsys, run_dir, *beside)
    assert files_of(run_dir) == before


def test_resume_of_a_run_from_before_a_flag_existed_takes_the_flags_default(tiny_dataset, tmp_path):
    run_dir = short_run(tmp_path / "results", "--total_steps", "10")
    config_path = Path(run_dir, "config.json")
    written = json.loads(config_path.read_text())
    del written["flags"]["threads"]  # a flag this repo gained after its first runs
    written["flags"]["total_steps"] = 20
    config_path.write_text(json.dumps(written))
    assert runner.main(["--resume", run_dir]) == 0
    assert [row["step"] for row in read_csv(os.path.join(run_dir, "progress.csv"))] == ["10", "20"]


def fake_run(tmp_path: Path, config_text: str) -> str:
    """A run folder with this config.json and a checkpoint.pt that --resume must never reach."""
    run_dir = tmp_path / "results" / "td3-seed0-20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(config_text)
    (run_dir / "checkpoint.pt").write_bytes(b"not reached")
    return str(run_dir)


DAMAGED_FLAGS = [
    ("lr", -0.001, "argument --lr: must be a finite number > 0, got -0.001"),
    ("agent", "sac", "argument --agent: invalid choice: 'sac' (choose from 'td3')"),
    ("lr", "fast", "argument --lr: expected a finite number, got 'fast'"),
    ("batch_size", 0, "argument --batch_size: must be an integer >= 1, got 0"),
    ("gamma", None, "argument --gamma: expected a finite number, got 'None'"),
    ("hidden", [], "argument --hidden: expected at least one argument"),
    ("cql_uniform_only", "yes", "argument --cql_uniform_only: ignored explicit argument 'yes'"),
]


@pytest.mark.parametrize("name, value, message", DAMAGED_FLAGS, ids=[f"{n}={v}" for n, v, _ in DAMAGED_FLAGS])
def test_flags_edited_in_config_json_are_checked_as_on_the_command_line(tiny_dataset, tmp_path, capsys,
                                                                        name, value, message):
    good = flags.flat(config.parse(FAST)[0])
    run_dir = fake_run(tmp_path, json.dumps({"flags": good | {name: value}}))
    assert resume_error(capsys, run_dir) == f"runner.py: error: {run_dir}/config.json: {message}\n"


@pytest.mark.parametrize("text, message", [
    ('{"flags": {"lr": 0.1,}}', "config.json cannot be read (JSONDecodeError: Expecting property name"),
    ('{"config": "td3"}', 'config.json has no "flags" object'),
    ('{"flags": {"dataset": "test/hopper/tiny-v0", "learning_rate": 0.1}}',
     "config.json: unrecognized arguments: --learning_rate=0.1"),
])
def test_a_config_json_that_is_not_a_runs_is_one_line(tiny_dataset, tmp_path, capsys, text, message):
    assert message in resume_error(capsys, fake_run(tmp_path, text))


def test_a_run_stopped_before_its_first_checkpoint_says_so(tmp_path, capsys):
    run_dir = fake_run(tmp_path, json.dumps({"flags": {}}))
    os.remove(os.path.join(run_dir, "checkpoint.pt"))
    err = resume_error(capsys, run_dir)
    assert f"{run_dir} has a config.json but no checkpoint.pt: the run was stopped before its first evaluation" in err
    assert "start it again without --resume" in err


def test_a_run_folder_held_by_another_process_is_refused_naming_it(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    before = files_of(run_dir)
    script = ("import sys, time; from harness import run_folder; lock = run_folder.hold(sys.argv[1]); "
              "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, run_dir], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:  # as a running runner.py holds it
        assert holder.stdout.readline() == "held\n"
        err = resume_error(capsys, run_dir, "--total_steps", "30")
    finally:
        holder.kill()
        holder.wait()
    assert f"runner.py: error: {run_dir} is in use by process {holder.pid} (the pid in its .lock)" in err
    assert files_of(run_dir) == before


def test_a_run_folder_given_twice_is_refused_as_such(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    err = resume_error(capsys, run_dir, run_dir + "/", "--total_steps", "30")
    assert err == (f"runner.py: error: --resume: {run_dir}/ is given twice (as {run_dir} too); give each run folder "
                   f"once\n")
    assert str(os.getpid()) not in err


class RunsCode:
    """A pickle that creates a folder when it is loaded: what an untrusted checkpoint could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


@pytest.mark.parametrize("damage", ["garbage", "old_optimizer_layout", "runs_code", "step_as_text"])
def test_a_checkpoint_it_cannot_restore_is_one_line_keeping_the_csv(tiny_dataset, tmp_path, capsys, damage):
    run_dir = short_run(tmp_path / "results")
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    state = torch.load(checkpoint, weights_only=False)  # a file this test just wrote
    if damage == "garbage":
        state = None
        Path(checkpoint).write_bytes(b"not a checkpoint")
    elif damage == "old_optimizer_layout":  # as written before the agent had its own Adam
        state["agent"]["agent"]["critic_opt"] = {"state": {}, "param_groups": []}
    elif damage == "runs_code":
        state["elapsed"] = RunsCode(str(tmp_path / "ran"))
    else:
        state["step"] = "20"
    if state is not None:
        torch.save(state, checkpoint)
    before = files_of(run_dir)
    err = resume_error(capsys, run_dir, "--total_steps", "30")  # a finished run would not be restored
    assert f"--resume: {checkpoint} cannot be restored" in err
    assert files_of(run_dir) == before
    assert not (tmp_path / "ran").exists()


def test_a_long_reason_is_cut_between_words(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    state = torch.load(checkpoint, weights_only=False)  # a file this test just wrote
    state["agent"]["updates"] = "qwerty " * 60
    torch.save(state, checkpoint)
    err = resume_error(capsys, run_dir, "--total_steps", "30")
    assert "(ValueError: invalid literal for int()" in err
    assert set(re.findall(r"\bqw\w*", err)) == {"qwerty"}  # no "qwer" cut short


def test_a_broken_progress_csv_is_named_and_the_checkpoint_not_blamed(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    with open(os.path.join(run_dir, "progress.csv"), "a") as f:
        f.write("twenty,1,2,3,4,5,6,7\n")
    before = files_of(run_dir)
    err = resume_error(capsys, run_dir, "--total_steps", "30")
    assert "progress.csv cannot be read" in err and "checkpoint.pt is intact" in err
    assert "cannot be restored" not in err and "damaged" not in err
    assert files_of(run_dir) == before


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



@pytest.mark.parametrize("name", [".lock", "checkpoint.pt.tmp", "progress.csv", "config.json", "videos"])
def test_a_run_folder_holding_a_link_is_refused_and_nothing_is_written_through_it(tiny_dataset, tmp_path, capsys,
                                                                                  name):
    run_dir = short_run(tmp_path / "results")
    target = tmp_path / "precious"
    target.mkdir() if name == "videos" else target.write_text("precious")
    if os.path.exists(os.path.join(run_dir, name)):
        os.rename(os.path.join(run_dir, name), tmp_path / "moved")
    os.symlink(target, os.path.join(run_dir, name))
    err = resume_error(capsys, run_dir, "--total_steps", "30")
    assert err == (f"runner.py: error: --resume: {run_dir}/{name} is a symbolic link; this code writes through no "
                   f"link it did not make: remove the link (and see what it points to), then resume\n")
    assert os.listdir(target) == [] if name == "videos" else target.read_text() == "precious"


def test_a_dataset_id_in_config_json_that_leaves_the_datasets_folder_is_refused(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    config_path = Path(run_dir, "config.json")
    written = json.loads(config_path.read_text())
    written["flags"]["dataset"] = "../elsewhere/hopper-v0"
    config_path.write_text(json.dumps(written))
    err = resume_error(capsys, run_dir, "--total_steps", "30")
    assert err.startswith(f"runner.py: error: {config_path}: --dataset: '../elsewhere/hopper-v0' is not a Minari "
                          f"dataset id")


@pytest.mark.parametrize("change", ["longer", "same size, other values"])
def test_resume_notices_that_the_dataset_under_the_runs_id_changed(minari_root, tmp_path, capsys, change):
    write_dataset(minari_root)
    run_dir = short_run(tmp_path / "results")
    before = files_of(run_dir)
    shutil.rmtree(minari_root / "test")
    episodes = rollout_episodes((8,) + (200,) * (16 if change == "longer" else 15))
    if change != "longer":
        episodes[3].rewards[0] += 1.0
    write_dataset(minari_root, episodes=episodes)
    err = resume_error(capsys, run_dir, "--total_steps", "30")
    changed = "holds " if change == "longer" else "is not the one it began on (its fingerprint differs)"
    assert f"--resume: the dataset 'test/hopper/tiny-v0' of {run_dir} changed since the run began: it {changed}" in err
    assert "put the original dataset back, or start a new run" in err
    assert files_of(run_dir) == before


@pytest.mark.parametrize("header", ["step,eval_return_std,eval_return_mean,dataset_q,mc_return,policy_q,bc_distance,time_s",
                                    "step,eval_return_mean,eval_return_std,dataset_q,mc_return,policy_q,bc_distance"])
def test_a_log_whose_header_is_not_the_codes_columns_is_refused(tiny_dataset, tmp_path, capsys, header):
    run_dir = short_run(tmp_path / "results")
    path = Path(run_dir, "progress.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n")  # swapped columns, or one short
    before = files_of(run_dir)
    err = resume_error(capsys, run_dir, "--total_steps", "30")
    assert f"runner.py: error: {path} has the columns {header}, this code writes step,eval_return_mean," in err
    assert files_of(run_dir) == before


def test_a_run_that_diverges_before_its_first_checkpoint_does_not_promise_one(tiny_dataset, tmp_path, capsys):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--total_steps", "30", "--eval_every", "10", "--max_abs_q", "1e-9",
                        "--results_dir", str(results)]) == 1
    run_dir = only_run(results)
    assert not os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "stopped:" in line]
    assert "It keeps its CSV files and no checkpoint (none was written before); try a smaller" in line
    assert "last good checkpoint" not in line
