"""What a dataset must be: damaged files, arrays and counts that disagree, odd actions and terminations, ids that
leave MINARI_DATASETS_PATH and environments that would run a dataset's code are each one line, never a traceback."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

import runner
from conftest import DATASET_ID, rollout_episodes, write_dataset
from helpers import FAST
from utils import DatasetError, dataset_to_buffer, load_dataset

CPU = torch.device("cpu")


def data_file(dataset) -> str:
    return os.path.join(dataset.spec.data_path, "main_data.hdf5")


def runner_error(capsys, tmp_path, *flags: str) -> str:
    """The one line runner.py prints when it refuses to train (exit 2), having written nothing."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*FAST, "--total_steps", "4", "--results_dir", str(tmp_path / "results"), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("runner.py: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()
    return err


def replace_field(dataset, episode: int, field: str, change) -> None:
    """Rewrite one array of one episode in the dataset's HDF5 file, as a damaged copy would hold it."""
    with h5py.File(data_file(dataset), "r+") as f:
        values = change(f[f"episode_{episode}"][field][()])
        del f[f"episode_{episode}"][field]
        f[f"episode_{episode}"][field] = values


def edit_metadata(dataset, **changes) -> None:
    path = os.path.join(dataset.spec.data_path, "metadata.json")
    with open(path) as f:
        metadata = json.load(f)
    with open(path, "w") as f:
        json.dump(metadata | changes, f)


@pytest.mark.parametrize("dataset_id", ["../minari/test/hopper/tiny-v0", "/etc/hopper-v0", "test/../../x-v0"])
def test_a_dataset_id_that_leaves_the_datasets_folder_is_refused(tiny_dataset, tmp_path, capsys, dataset_id):
    err = runner_error(capsys, tmp_path, "--dataset", dataset_id)
    assert f"--dataset: '{dataset_id}' is not a Minari dataset id: ids are names like mujoco/hopper/medium-v0" in err


def test_datasets_path_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "datasets").write_text("not a folder")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    err = runner_error(capsys, tmp_path, "--dataset", DATASET_ID)
    assert f"MINARI_DATASETS_PATH '{tmp_path / 'datasets'}' is a file, not a folder" in err


def test_a_dataset_file_cut_short_is_one_line(tiny_dataset, tmp_path, capsys):
    path = data_file(tiny_dataset)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)  # a download cut halfway
    err = runner_error(capsys, tmp_path)
    assert "cannot read its episodes" in err and "damaged or incomplete" in err and "download or write it again" in err


def test_an_episode_missing_a_field_is_one_line(tiny_dataset, tmp_path, capsys):
    with h5py.File(data_file(tiny_dataset), "r+") as f:
        del f["episode_1"]["rewards"]
    assert "cannot read its episodes" in runner_error(capsys, tmp_path)


@pytest.mark.parametrize("field, change, message", [
    ("rewards", lambda r: r[:-1], "episode 1: rewards has shape (12,), not (13,)"),
    ("actions", lambda a: a[:, :2], "episode 1: actions has shape (13, 2), not (13, 3)"),
    ("observations", lambda o: o[:-1], "episode 1: observations has shape (13, 11), not (14, 11)"),
])
def test_episode_arrays_that_disagree_in_length_or_width_are_one_line(minari_root, tmp_path, capsys, field, change,
                                                                      message):
    dataset = write_dataset(minari_root, max_steps=(8, 13, 20))
    assert len(next(e for e in dataset.iterate_episodes() if e.id == 1).actions) == 13  # terminates later
    replace_field(dataset, 1, field, change)
    assert message in runner_error(capsys, tmp_path)


@pytest.mark.parametrize("changes, message", [
    (lambda steps, episodes: {"total_steps": steps - 5}, "its metadata says {s} steps in {e} episodes"),
    (lambda steps, episodes: {"total_steps": steps + 5}, "its metadata says {s} steps in {e} episodes"),
    (lambda steps, episodes: {"total_episodes": episodes - 1}, "its metadata says {s} steps in {e} episodes"),
    (lambda steps, episodes: {"total_episodes": episodes + 1}, "cannot read its episodes"),
])
def test_metadata_counts_that_disagree_with_the_episodes_are_one_line(tiny_dataset, tmp_path, capsys, changes,
                                                                      message):
    edit = changes(tiny_dataset.total_steps, tiny_dataset.total_episodes)
    edit_metadata(tiny_dataset, **edit)
    expected = message.format(s=edit.get("total_steps", tiny_dataset.total_steps),
                              e=edit.get("total_episodes", tiny_dataset.total_episodes))
    err = runner_error(capsys, tmp_path)
    assert expected in err and "damaged" in err


def test_a_dataset_with_no_transitions_says_so_not_use_at_most_0(minari_root, tmp_path, capsys):
    write_dataset(minari_root, episodes=[])
    err = runner_error(capsys, tmp_path)
    assert f"dataset '{DATASET_ID}' holds no transitions (0 episodes); give a dataset with data" in err
    assert "at most 0" not in err


def test_terminations_that_are_not_0_or_1_are_refused(minari_root, tmp_path, capsys):
    dataset = write_dataset(minari_root, max_steps=(8, 13, 20))
    replace_field(dataset, 1, "terminations", lambda t: np.where(np.arange(len(t)) == 4, 0.5, t))
    assert "episode 1: terminations hold 0.5 at step 4; they must be 0 or 1" in runner_error(capsys, tmp_path)


def test_actions_outside_the_action_space_are_clipped_with_one_warning(minari_root, tmp_path, capsys):
    episodes = rollout_episodes((8, 13, 20))
    episodes[1].actions[2] = [1.5, -3.0, 0.2]  # the space is [-1, 1]^3: two values beyond it
    dataset = write_dataset(minari_root, episodes=episodes)
    warnings = []
    buffer = dataset_to_buffer(dataset, CPU, warn=warnings.append)
    actions = buffer.split(buffer.data)[1]
    row = buffer.episode_ends[0] + 2
    assert actions[row].tolist() == pytest.approx([1.0, -1.0, 0.2])
    assert actions.abs().max() <= 1.0
    assert warnings == [f"dataset '{DATASET_ID}' holds 2 of {actions.numel()} action values outside the action "
                        f"space's bounds (up to 2 beyond them); they were clipped to the bounds, which the actor "
                        f"cannot leave"]
    capsys.readouterr()
    assert runner.main([*FAST, "--total_steps", "2", "--eval_every", "2", "--results_dir", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "warning" in line] == [f"runner.py: warning: --dataset: {warnings[0]}"]


def stored_spec(dataset, **changes) -> None:
    """Change the evaluation environment a dataset's metadata names."""
    spec = json.loads(dataset.storage.metadata["eval_env_spec"]) | changes
    edit_metadata(dataset, eval_env_spec=json.dumps(spec))


def test_a_dataset_cannot_choose_the_code_its_environment_runs(tiny_dataset, tmp_path, capsys):
    marker = tmp_path / "ran"
    stored_spec(tiny_dataset, entry_point="os:system", kwargs={"command": f"touch {marker}"})
    err = runner_error(capsys, tmp_path)
    assert (f"dataset '{DATASET_ID}' names Hopper-v5 with the entry point os:system, this machine registers "
            f"gymnasium.envs.mujoco.hopper_v5:HopperEnv; refused") in err
    assert not marker.exists()


@pytest.mark.parametrize("changes, message", [
    ({"id": "os:Hopper-v5"}, "names no environment this machine has registered (os:Hopper-v5)"),
    ({"additional_wrappers": [{"name": "Evil", "entry_point": "os:system", "kwargs": {}}]},
     "asks for wrappers around Hopper-v5 (Evil); refused"),
])
def test_an_unregistered_environment_or_a_wrapper_is_refused(tiny_dataset, tmp_path, capsys, changes, message):
    stored_spec(tiny_dataset, **changes)
    assert message in runner_error(capsys, tmp_path)


def test_a_damaged_copy_is_named_when_loading_from_the_folder(tiny_dataset, tmp_path):
    shutil.rmtree(tiny_dataset.spec.data_path)
    os.makedirs(tiny_dataset.spec.data_path)  # the folder is there, its files are not
    with pytest.raises(DatasetError, match=f"cannot read Minari dataset '{DATASET_ID}' in .*damaged or incomplete"):
        load_dataset(DATASET_ID)
