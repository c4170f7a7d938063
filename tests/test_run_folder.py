"""run_folder.py and files.py: the lock, checkpoints that load with weights_only=True and are checked, CSV rows
under their own header, writes that fail cleanly and never go through a link."""
import builtins
import errno
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import runner
from harness import files
from harness import run_folder
from harness.run_folder import RunFolderError
from helpers import FAST
from td3_agent import TD3Agent, TD3Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = {"step": 10, "elapsed": 1.5, "last_return": 3.0, "best_return": 4.0, "best_step": 5}
COLUMNS = {"progress.csv": ["step", "eval_return_mean"], "train.csv": ["step", "td_loss"]}


def make_agent(seed: int) -> TD3Agent:
    return TD3Agent(3, 1, -np.ones(1), np.ones(1), [TD3Config(hidden=(8, 8))], [seed], torch.device("cpu"))


def full_disk(real_open, failing: str = ""):
    """An `open` for which writing a file whose name ends with `failing` creates it, then fails: ENOSPC."""
    def fake_open(path, mode="r", *args, **kwargs):
        if "r" not in mode and str(path).endswith(failing):
            real_open(path, mode, *args, **kwargs).close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *args, **kwargs)
    return fake_open


def test_a_metric_the_csv_does_not_know_stops_the_first_write(tmp_path):
    with pytest.raises(ValueError, match="new_term"):
        run_folder.append_row(str(tmp_path / "train.csv"), ["step", "td_loss"], {"step": 1, "new_term": 0.5})


def test_a_folder_this_process_holds_is_refused_as_given_twice_and_is_free_once_let_go(tmp_path):
    lock = run_folder.hold(str(tmp_path))
    with pytest.raises(RunFolderError, match=f"^{tmp_path} is held by this process already: give each run folder "
                                             f"once$"):
        run_folder.hold(str(tmp_path))
    lock.close()
    run_folder.hold(str(tmp_path)).close()


def test_the_os_lets_go_of_the_folder_of_a_process_that_died(tmp_path):
    script = "import sys, time; from harness import run_folder; lock = run_folder.hold(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(RunFolderError, match=f"in use by process {holder.pid} "):
        run_folder.hold(str(tmp_path))
    holder.kill()  # SIGKILL: no clean-up code runs
    holder.wait()
    run_folder.hold(str(tmp_path)).close()


def test_a_checkpoint_loads_with_weights_only_and_restores_the_agent_and_its_generator(tmp_path):
    agent = make_agent(0)
    agent.update(*(t[None] for t in (torch.rand(4, 3), torch.rand(4, 1), torch.rand(4), torch.rand(4, 3),
                                     torch.ones(4))))  # Adam now holds moments, part of the state
    progress = PROGRESS | {"step": 1, "best_step": 1}  # one update: the checkpoint's step is its update count
    run_folder.save_checkpoint(str(tmp_path), progress | {"written_by": run_folder.written_by("td3", agent)},
                               agent.members.state_dicts(agent)[0])
    expected = agent.members.rand(2).tolist()  # the draws the run would make next
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no allow-list needed
    state = run_folder.read_checkpoint(str(tmp_path))
    other = make_agent(1)
    run_folder.restore([str(tmp_path)], [state], other)
    assert other.members.rand(2).tolist() == expected
    assert {k: state[k] for k in PROGRESS} == progress
    for mine, theirs in zip(other.critic.parameters(), agent.critic.parameters()):
        assert torch.equal(mine, theirs)
    assert torch.equal(other.critic_opt.state_dict()["state"][0]["exp_avg"],
                       agent.critic_opt.state_dict()["state"][0]["exp_avg"])


def test_a_checkpoint_from_before_members_is_refused_as_another_versions(tmp_path):
    old = {"agent": {"actor": {}, "critic": {}, "updates": 10}, **PROGRESS, "torch_rng": torch.get_rng_state()}
    torch.save(old, tmp_path / "checkpoint.pt")  # the layout of commit 53b1660: one run's agent
    with pytest.raises(RunFolderError, match="cannot be restored .* written by another version of this code"):
        run_folder.restore([str(tmp_path)], [run_folder.read_checkpoint(str(tmp_path))], make_agent(1))


@pytest.mark.parametrize("damage, why", [
    (lambda state: [state], "it holds a list, not a dict"),
    (lambda state: state | {"step": "10"}, "its 'step' is a str"),
    (lambda state: {k: v for k, v in state.items() if k != "agent"}, "it has no 'agent'"),
    (lambda state: state | {"step": True}, "its 'step' is a bool"),
    (lambda state: state | {"step": -3, "best_step": 0}, "its step is -3"),
    (lambda state: state | {"elapsed": float("nan")}, "its elapsed is nan"),
    (lambda state: state | {"best_step": 11}, "its best_step 11 is not in 0..10"),
    (lambda state: state | {"best_return": float("nan")}, "its best_return is NaN"),
    (lambda state: state | {"metric_sums": {"td_loss": torch.tensor(1.0)}, "metric_counts": {}},
     "its metric_sums and metric_counts are not dicts of the same metrics"),
    (lambda state: state | {"metric_sums": {"new_term": torch.tensor(1.0)}, "metric_counts": {"new_term": 1}},
     "its metric_sums hold 'new_term', which train.csv has no column for"),
    (lambda state: state | {"metric_sums": {"td_loss": torch.ones(2)}, "metric_counts": {"td_loss": 1}},
     "its metric_sums\\['td_loss'\\] is not one number"),
    (lambda state: state | {"metric_sums": {"td_loss": torch.tensor(1.0)}, "metric_counts": {"td_loss": 0}},
     "its metric_counts\\['td_loss'\\] is 0, not a count"),
])
def test_a_checkpoint_of_the_wrong_shape_is_refused_saying_what_is_wrong(tmp_path, damage, why):
    agent = make_agent(0)
    run_folder.save_checkpoint(str(tmp_path), PROGRESS, agent.members.state_dicts(agent)[0])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.save(damage(state), tmp_path / "checkpoint.pt")
    names = tuple(agent.update(torch.rand(1, 4, 3), torch.rand(1, 4, 1), torch.rand(1, 4), torch.rand(1, 4, 3),
                               torch.ones(1, 4)))  # the train.csv metrics of a critic step
    with pytest.raises(RunFolderError, match=f"checkpoint.pt cannot be restored \\({why}\\)"):
        run_folder.read_checkpoint(str(tmp_path), names)


def test_resuming_drops_the_rows_logged_after_the_checkpoint_and_a_row_cut_short(tmp_path):
    path = tmp_path / "progress.csv"
    path.write_text("step,eval_return_mean\r\n10,1.5\r\n20,2.5\r\n30,3.5\r\n40")  # the last write was cut
    run_folder.truncate_logs(str(tmp_path), 20, COLUMNS)
    assert path.read_bytes() == b"step,eval_return_mean\r\n10,1.5\r\n20,2.5\r\n"
    run_folder.append_row(str(path), ["step", "eval_return_mean"], {"step": 30, "eval_return_mean": 9})
    assert path.read_bytes().endswith(b"20,2.5\r\n30,9\r\n")


def test_a_broken_csv_is_named_and_the_checkpoint_is_said_to_be_intact(tmp_path):
    (tmp_path / "train.csv").write_text("step,td_loss\r\n10,1.5\r\nten,2.5\r\n")
    with pytest.raises(RunFolderError) as error:
        run_folder.truncate_logs(str(tmp_path), 20, COLUMNS)
    assert "train.csv cannot be read" in str(error.value) and "checkpoint.pt is intact" in str(error.value)


def test_a_failed_write_leaves_the_old_file_and_no_tmp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    run_folder.write_atomically(str(path), b"the last good checkpoint")
    monkeypatch.setattr(files, "open", full_disk(open, ".tmp"), raising=False)
    with pytest.raises(RunFolderError, match=f"cannot write {path} \\(No space left on device\\)"):
        run_folder.save_tensors({"step": 20}, str(path))
    assert path.read_bytes() == b"the last good checkpoint"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def victim(tmp_path) -> str:
    """A file outside the run folder that a link in it points to: it must never change."""
    path = tmp_path / "precious.txt"
    path.write_text("precious")
    return str(path)


@pytest.mark.parametrize("name", ["checkpoint.pt.tmp", "checkpoint.pt"])
def test_a_checkpoint_is_never_written_through_a_link(tmp_path, name):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = victim(tmp_path)
    os.symlink(target, run_dir / name)
    try:
        run_folder.save_tensors({"step": 20}, str(run_dir / "checkpoint.pt"))
    except RunFolderError as err:  # a link at the temporary name is refused, naming it
        assert str(err) == (f"{run_dir}/checkpoint.pt.tmp is a symbolic link; this code writes through no link it "
                            f"did not make: remove the link (and see what it points to)")
    else:  # a link at the final name is replaced by the file, not written through
        assert not os.path.islink(run_dir / name) and name == "checkpoint.pt"
    assert open(target).read() == "precious"


def test_a_row_or_a_lock_is_never_written_through_a_link(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = victim(tmp_path)
    os.symlink(target, run_dir / "progress.csv")
    os.symlink(target, run_dir / ".lock")
    with pytest.raises(RunFolderError, match=f"^{run_dir}/progress.csv is a symbolic link; this code writes"):
        run_folder.append_row(str(run_dir / "progress.csv"), ["step"], {"step": 1})
    with pytest.raises(RunFolderError, match=f"^{run_dir}/.lock is a symbolic link; this code writes"):
        run_folder.hold(str(run_dir))
    assert open(target).read() == "precious"


def test_a_stale_temporary_file_left_by_a_killed_run_is_replaced(tmp_path):
    (tmp_path / "config.json.tmp").write_text("half written before a SIGKILL")
    run_folder.write_config(str(tmp_path), {"flags": {}})
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_rows_are_appended_only_under_the_header_they_follow(tmp_path):
    path = tmp_path / "progress.csv"
    run_folder.append_row(str(path), ["step", "eval_return_mean", "eval_return_std"], {"step": 1})
    path.write_bytes(b"step,eval_return_std,eval_return_mean\r\n1,,\r\n")  # the header as a hand edit left it
    with pytest.raises(RunFolderError, match=f"^{path} has the columns step,eval_return_std,eval_return_mean, this "
                                             f"code writes step,eval_return_mean,eval_return_std; rows would land"):
        run_folder.append_row(str(path), ["step", "eval_return_mean", "eval_return_std"], {"step": 2})
    assert path.read_bytes() == b"step,eval_return_std,eval_return_mean\r\n1,,\r\n"


class NoRoom:
    """A file whose writes find the disk full; everything else is the real file's."""

    def __init__(self, f):
        self.f = f

    def __getattr__(self, name):
        return getattr(self.f, name)

    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_taking_a_run_folders_lock_is_one_line(tiny_dataset, tmp_path, capsys, monkeypatch):
    def full_lock(path, mode="r", *args, **kwargs):
        f = io.open(path, mode, *args, **kwargs)
        return NoRoom(f) if str(path).endswith(".lock") else f
    monkeypatch.setattr(builtins, "open", full_lock)
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*FAST, "--total_steps", "2", "--results_dir", str(results)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"runner.py: error: cannot write {results}/"), err
    assert err.endswith("/.lock (No space left on device); nothing was trained\n") and os.listdir(results) == []
