"""The Minari -> replay buffer path, the Monte-Carlo returns and evaluation."""
import numpy as np
import pytest
import torch

from utils import (DatasetError, dataset_to_buffer, discounted_returns, evaluate,
                   get_buffer_and_environments_for_task)
from conftest import DATASET_ID

CPU = torch.device("cpu")


def test_buffer_holds_exactly_total_steps_transitions(tiny_dataset):
    buffer, env = get_buffer_and_environments_for_task(DATASET_ID, CPU)
    assert len(buffer) == tiny_dataset.total_steps
    assert buffer.episode_ends[-1] == tiny_dataset.total_steps
    assert env.spec.id == "Hopper-v5"


def test_transitions_line_up_with_episode_observations(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, CPU)
    obs, actions, rewards, next_obs, not_done = buffer.split(buffer.data)
    start = 0
    for episode, end in zip(tiny_dataset.iterate_episodes(), buffer.episode_ends):
        steps = len(episode.actions)
        assert end - start == steps
        np.testing.assert_allclose(obs[start:end], episode.observations[:-1], rtol=1e-6)
        np.testing.assert_allclose(next_obs[start:end], episode.observations[1:], rtol=1e-6)
        np.testing.assert_allclose(actions[start:end], episode.actions, rtol=1e-6)
        np.testing.assert_allclose(rewards[start:end], episode.rewards, rtol=1e-6)
        # consecutive transitions chain: next_obs of t is obs of t+1 inside an episode
        torch.testing.assert_close(next_obs[start:end - 1], obs[start + 1:end])
        start = end


def test_done_is_zero_on_truncation_and_one_on_termination(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, CPU)
    not_done = buffer.split(buffer.data)[4]
    episodes = list(tiny_dataset.iterate_episodes())
    assert episodes[0].truncations[-1] and not episodes[0].terminations[-1]
    assert not_done[buffer.episode_ends[0] - 1] == 1.0  # truncated: still bootstraps
    for episode, end in zip(episodes[1:], buffer.episode_ends[1:]):
        assert episode.terminations[-1]
        assert not_done[end - 1] == 0.0
    assert not_done.sum() == len(buffer) - (len(episodes) - 1)


def test_sample_draws_rows_of_the_buffer(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, CPU)
    obs, actions, rewards, next_obs, not_done = buffer.sample(64)
    assert obs.shape == (64, 11) and actions.shape == (64, 3) and rewards.shape == (64,)
    rows = torch.cat([obs, actions, rewards[:, None], next_obs, not_done[:, None]], dim=1)
    # every sampled row is some row of the buffer
    assert ((rows[:, None, :] == buffer.data[None]).all(-1).any(-1)).all()


def test_discounted_return_sums_to_the_episode_end(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, CPU)
    rewards = buffer.split(buffer.data)[2].double().numpy()
    start, end = buffer.episode_ends[0], buffer.episode_ends[1]
    gamma = 0.9
    expected = sum(gamma ** k * rewards[start + 1 + k] for k in range(end - start - 1))
    got = discounted_returns(buffer, np.array([start + 1, end - 1]), gamma)
    assert got[0] == pytest.approx(expected)
    assert got[1] == pytest.approx(rewards[end - 1])  # last step: its own reward only


def test_unknown_dataset_offline_is_one_clear_error(minari_root):
    with pytest.raises(DatasetError, match="MINARI_DATASETS_PATH") as err:
        get_buffer_and_environments_for_task("test/hopper/no-such-dataset-v0", CPU)
    assert "test/hopper/no-such-dataset-v0" in str(err.value)


def test_evaluate_runs_each_episode_to_its_end(tiny_dataset):
    env = tiny_dataset.recover_environment(eval_env=True)
    steps = []

    def still_policy(obs: np.ndarray) -> np.ndarray:
        steps.append(len(obs))
        return np.zeros((len(obs), 3), dtype=np.float32)
    returns = evaluate(still_policy, env, episodes=3, seed=0)
    assert returns.shape == (3,)
    # Hopper with zero torque falls and terminates; each step it earns about +1 while healthy
    assert np.all(returns > 0)
    assert steps[0] == 3 and min(steps) >= 1
    again = evaluate(still_policy, env, episodes=3, seed=0)
    np.testing.assert_array_equal(returns, again)  # same seeds, same episodes
