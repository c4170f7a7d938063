"""run_folder.py: the lock, checkpoints that load with weights_only=True, CSV rows, writes that fail cleanly."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness import run_folder
from harness.run_folder import RunFolderError
from td3_agent import TD3Agent, TD3Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = {"step": 10, "elapsed": 1.5, "last_return": 3.0, "best_return": 4.0, "best_step": 5}


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


def test_a_held_folder_refuses_a_second_holder_naming_the_first_and_is_free_once_let_go(tmp_path):
    lock = run_folder.hold(str(tmp_path))
    with pytest.raises(RunFolderError, match=f"{tmp_path} is in use by process {os.getpid()} "):
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
    run_folder.save_checkpoint(str(tmp_path), PROGRESS, agent.members.state_dicts(agent)[0])
    expected = agent.members.rand(2).tolist()  # the draws the run would make next
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no allow-list needed
    state = run_folder.read_checkpoint(str(tmp_path))
    other = make_agent(1)
    run_folder.restore([str(tmp_path)], [state], other)
    assert other.members.rand(2).tolist() == expected
    assert {k: state[k] for k in PROGRESS} == PROGRESS
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
])
def test_a_checkpoint_of_the_wrong_shape_is_refused_saying_what_is_wrong(tmp_path, damage, why):
    agent = make_agent(0)
    run_folder.save_checkpoint(str(tmp_path), PROGRESS, agent.members.state_dicts(agent)[0])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.save(damage(state), tmp_path / "checkpoint.pt")
    with pytest.raises(RunFolderError, match=f"checkpoint.pt cannot be restored \\({why}\\)"):
        run_folder.read_checkpoint(str(tmp_path))


def test_resuming_drops_the_rows_logged_after_the_checkpoint_and_a_row_cut_short(tmp_path):
    path = tmp_path / "progress.csv"
    path.write_text("step,eval_return_mean\r\n10,1.5\r\n20,2.5\r\n30,3.5\r\n40")  # the last write was cut
    run_folder.truncate_logs(str(tmp_path), 20)
    assert path.read_bytes() == b"step,eval_return_mean\r\n10,1.5\r\n20,2.5\r\n"
    run_folder.append_row(str(path), ["step", "eval_return_mean"], {"step": 30, "eval_return_mean": 9})
    assert path.read_bytes().endswith(b"20,2.5\r\n30,9\r\n")


def test_a_broken_csv_is_named_and_the_checkpoint_is_said_to_be_intact(tmp_path):
    (tmp_path / "train.csv").write_text("step,td_loss\r\n10,1.5\r\nten,2.5\r\n")
    with pytest.raises(RunFolderError) as error:
        run_folder.truncate_logs(str(tmp_path), 20)
    assert "train.csv cannot be read" in str(error.value) and "checkpoint.pt is intact" in str(error.value)


def test_a_failed_write_leaves_the_old_file_and_no_tmp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    run_folder.write_atomically(str(path), b"the last good checkpoint")
    monkeypatch.setattr(run_folder, "open", full_disk(open, ".tmp"), raising=False)
    with pytest.raises(RunFolderError, match=f"cannot write {path} \\(No space left on device\\)"):
        run_folder.save_tensors({"step": 20}, str(path))
    assert path.read_bytes() == b"the last good checkpoint"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
