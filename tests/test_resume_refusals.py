"""--resume refuses, in one line and changing nothing, what it cannot trust: flags beside it, a config.json or
checkpoint that is damaged or edited, a folder held or given twice or holding a link, a dataset that changed,
a log under another header."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import config
from harness import flags
from conftest import rollout_episodes, write_dataset
from helpers import FAST, ROOT, short_run
from resume_helpers import files_of, resume_error


@pytest.mark.parametrize("beside, refused", [
    (["--lr", "1e-3"], "not --lr"),
    (["--seed", "1", "--threads", "2"], "not --seed\n"),
    (["--total_steps", "10"], "--total_steps 10 beside --resume must be larger than the run's 20"),
])
def test_flags_beside_resume_are_refused_but_a_larger_total_steps(tiny_dataset, tmp_path, capsys, beside, refused):
    run_dir = short_run(tmp_path / "results")
    before = files_of(run_dir)
    assert refused in resume_error(capsys, run_dir, *beside)
    assert files_of(run_dir) == before


def fake_run(tmp_path: Path, config_text: str) -> str:
    """A run folder with this config.json and a checkpoint.pt that --resume must never reach."""
    run_dir = tmp_path / "results" / "td3-seed0-20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(config_text)
    (run_dir / "checkpoint.pt").write_bytes(b"not reached")
    return str(run_dir)


DAMAGED_FLAGS = [
    ("lr", -0.001, "argument --lr: must be a finite number > 0, got -0.001"),
    ("agent", "sac", "argument --agent: invalid choice: 'sac' (choose from 'td3', 'bc', 'iql')"),
    ("lr", "fast", "argument --lr: expected a finite number, got 'fast'"),
    ("batch_size", 0, "argument --batch_size: must be an integer >= 1, got 0"),
    ("gamma", None, "argument --gamma: expected a finite number, got None"),
    ("hidden", [], "argument --hidden: expected at least one argument"),
    ("cql_uniform_only", "yes", "argument --cql_uniform_only: expected true or false, got 'yes'"),
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
     "config.json: unrecognized flag 'learning_rate'"),
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


@pytest.mark.parametrize("header", [
    "step,eval_return_std,eval_return_mean,dataset_q,mc_return,policy_q,bc_distance,time_s",  # two swapped
    "step,eval_return_mean,eval_return_std,dataset_q,mc_return,policy_q,bc_distance"])  # one short
def test_a_log_whose_header_is_not_the_codes_columns_is_refused(tiny_dataset, tmp_path, capsys, header):
    run_dir = short_run(tmp_path / "results")
    path = Path(run_dir, "progress.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n")  # swapped columns, or one short
    before = files_of(run_dir)
    err = resume_error(capsys, run_dir, "--total_steps", "30")
    assert f"runner.py: error: {path} has the columns {header}, this code writes step,eval_return_mean," in err
    assert files_of(run_dir) == before


