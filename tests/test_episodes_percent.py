"""--episodes_percent: training on a random part of the dataset's episodes, the same part for every run."""
import json
import os

import numpy as np
import pytest
import torch

import runner
from conftest import DATASET_ID, write_dataset
from helpers import FAST
from test_baselines import episodes_with_returns
from test_fitted import SPOT, model_files, train
from utils import dataset_to_buffer, random_episodes
import minari

CPU = torch.device("cpu")


def episode_rows(buffer) -> list[torch.Tensor]:
    """Each episode's rows of a buffer, in order."""
    starts = np.concatenate([[0], buffer.episode_ends[:-1]])
    return [buffer.data[s:e] for s, e in zip(starts, buffer.episode_ends)]


def test_it_keeps_the_floor_of_percent_of_whole_episodes_and_the_same_ones_every_time(minari_root):
    returns = [5.0, 50.0, 1.0, 40.0, 30.0, 2.0, 60.0, 3.0]
    buffer = dataset_to_buffer(write_dataset(minari_root, episodes=episodes_with_returns(returns)), CPU)
    whole = episode_rows(buffer)
    kept = random_episodes(buffer, 40)  # floor(3.2) = 3 of 8
    found = [next(k for k, rows in enumerate(whole) if rows.shape == part.shape and torch.equal(rows, part))
             for part in episode_rows(kept)]
    assert len(found) == 3 and found == sorted(set(found))  # whole episodes, each once, in dataset order
    again = random_episodes(buffer, 40)
    assert torch.equal(again.data, kept.data) and again.fingerprint == kept.fingerprint
    assert len({buffer.fingerprint, kept.fingerprint, random_episodes(buffer, 60).fingerprint}) == 3
    drawn = [tuple(next(k for k, rows in enumerate(whole) if rows.shape == part.shape and torch.equal(rows, part))
                   for part in episode_rows(random_episodes(buffer, p))) for p in (25, 50, 75)]
    assert drawn != [(0, 1), (0, 1, 2, 3), (0, 1, 2, 3, 4, 5)]  # drawn at random, not the dataset's first episodes
    assert len(random_episodes(buffer, 10)) == 0  # 10 % of 8 episodes is none


def test_every_seed_trains_on_the_recorded_episodes_and_a_fitted_model_on_them_alone(tiny_dataset, tmp_path, capsys):
    buffer = dataset_to_buffer(minari.load_dataset(DATASET_ID), CPU)
    kept = random_episodes(buffer, 50)
    assert train(tmp_path, *SPOT, "--episodes_percent", "50", "--seeds", "0", "1") == 0
    out = capsys.readouterr().out
    assert (f"--episodes_percent 50: training on the {len(kept.episode_ends)} randomly drawn episodes of "
            f"{len(buffer.episode_ends)} ({len(kept):,} of {len(buffer):,} transitions)") in out
    results = tmp_path / "results"
    for run in os.listdir(results):
        meta = json.loads((results / run / "config.json").read_text())
        assert (meta["episodes_percent_episodes"], meta["episodes_percent_transitions"]) == (8, len(kept))
        assert meta["dataset_transitions"] == len(buffer) and meta["flags"]["episodes_percent"] == 50.0
    (path,) = model_files(tmp_path, "behaviour")
    record = torch.load(tmp_path / "models" / path, weights_only=True)["record"]
    assert (record["transitions"], record["fingerprint"]) == (len(kept), kept.fingerprint)
    assert train(tmp_path, *SPOT, results="whole") == 0  # the whole dataset: a model of its own, not the part's
    assert len(model_files(tmp_path, "behaviour")) == 2


def test_a_percent_that_keeps_no_episode_is_refused_before_anything_is_written(minari_root, tmp_path, capsys):
    write_dataset(minari_root, episodes=episodes_with_returns([5.0, 50.0, 1.0, 40.0]))
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*FAST, "--total_steps", "4", "--results_dir", str(results), "--episodes_percent", "20"])
    assert exit_info.value.code == 2 and not results.exists()
    assert "--episodes_percent 20 keeps none of the dataset's 4 episodes; give at least 25" in capsys.readouterr().err
