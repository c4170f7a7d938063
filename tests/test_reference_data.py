"""The data side against hand computations: buffer rows and the termination mask, Monte-Carlo and
behaviour returns, and the top episodes of filtered BC, on tiny episode sets."""
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import rollout, write_dataset
from reference import rows_by_hand
from utils import (ReplayBuffer, behaviour_return, dataset_to_buffer, discounted_returns, episode_returns,
                   top_episodes, transition_rows)

CPU = torch.device("cpu")
# a hand-made buffer of obs_dim = act_dim = 1: episodes of these lengths and rewards, one after another
LENGTHS = [3, 1, 4, 2, 2, 3]
REWARDS = [[1.0, -2.0, 4.0], [5.0], [0.5, 0.5, 3.0, -1.0], [2.0, 5.0], [6.0, 1.0], [0.0, 3.0, 4.0]]


def hand_buffer(rewards: list[list[float]] = REWARDS) -> ReplayBuffer:
    """Rows [obs | action | reward | next_obs | not_done]; obs counts the row, action is minus it."""
    rows = []
    for episode in rewards:
        for t, r in enumerate(episode):
            n = len(rows)
            rows.append([n, -n, r, n + 1, 0.0 if t == len(episode) - 1 else 1.0])
    return ReplayBuffer(torch.tensor(rows, dtype=torch.float32), 1, 1, np.cumsum([len(e) for e in rewards]))


def test_monte_carlo_return_of_each_row_is_its_discounted_reward_sum_to_its_episodes_end():
    buffer, gamma = hand_buffer(), 0.8
    expected = []
    for episode in REWARDS:
        for t in range(len(episode)):
            total = 0.0
            for k in range(t, len(episode)):  # r_t + gamma r_t+1 + ... up to the episode's last reward
                total += gamma ** (k - t) * episode[k]
            expected.append(total)
    assert expected[0] == pytest.approx(1.0 - 0.8 * 2.0 + 0.64 * 4.0)  # the first by hand, written out
    np.testing.assert_allclose(discounted_returns(buffer, np.arange(len(buffer)), gamma), expected, rtol=1e-12)
    rows = np.array([12, 3, 0, 4, 14, 2])  # any rows, in any order: episode starts and ends among them
    np.testing.assert_allclose(discounted_returns(buffer, rows, gamma), np.array(expected)[rows], rtol=1e-12)


def test_behaviour_return_is_the_mean_std_and_count_of_the_undiscounted_episode_returns():
    buffer = hand_buffer()
    returns = [sum(episode) for episode in REWARDS]  # 3, 5, 3, 7, 7, 7
    np.testing.assert_allclose(episode_returns(buffer), returns, rtol=1e-12)
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))  # the spread of these episodes themselves
    got = behaviour_return(buffer)
    assert got == {"behaviour_return_mean": pytest.approx(mean), "behaviour_return_std": pytest.approx(std),
                   "dataset_episodes": 6}


@pytest.mark.parametrize("percent, kept", [(100, [0, 1, 2, 3, 4, 5]), (50, [3, 4, 5]), (34, [3, 4]), (20, [3]),
                                           (67, [1, 3, 4, 5]), (16, [])])
def test_top_episodes_keeps_the_floor_of_percent_of_episodes_best_first_ties_by_position(percent, kept):
    # returns 3, 5, 3, 7, 7, 7: the three 7s tie, the earlier episode first; then 5; then the two 3s
    buffer = hand_buffer()
    top = top_episodes(buffer, percent)
    assert len(kept) == math.floor(percent / 100 * len(REWARDS))
    starts = [sum(LENGTHS[:k]) for k in range(len(LENGTHS))]
    rows = [starts[k] + t for k in kept for t in range(LENGTHS[k])]  # in the dataset's order
    assert torch.equal(top.data, buffer.data[rows])
    np.testing.assert_array_equal(top.episode_ends, np.cumsum([LENGTHS[k] for k in kept]))
    assert (top.obs_dim, top.act_dim) == (1, 1)


def cut_episodes() -> list:
    """Hopper episodes ending each way: cut by the time limit, terminated, and terminated on the limit's step."""
    env = gym.make("Hopper-v5")
    truncated, terminated, both = rollout(env, 0, seed=0, max_steps=5), rollout(env, 1, seed=1, max_steps=300), \
        rollout(env, 2, seed=2, max_steps=300)
    assert truncated.truncations[-1] and not truncated.terminations.any() and terminated.terminations[-1]
    both.truncations[-1] = True  # a fall on the very step the time limit would cut: it still ends the episode
    return [truncated, terminated, both]


def test_buffer_rows_are_the_transitions_and_only_terminations_stop_bootstrapping(minari_root):
    episodes = cut_episodes()
    dataset = write_dataset(minari_root, episodes=episodes)
    buffer = dataset_to_buffer(dataset, CPU)
    expected = [row for episode in episodes for row in rows_by_hand(episode)]
    torch.testing.assert_close(buffer.data, torch.tensor(expected, dtype=torch.float32))
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum([len(e.actions) for e in episodes]))
    not_done = buffer.data[:, -1]
    ends = buffer.episode_ends - 1
    assert not_done[ends].tolist() == [1.0, 0.0, 0.0]  # the truncated episode's last step bootstraps
    assert not_done.sum().item() == len(buffer) - 2
    for episode, stored in zip(episodes, dataset.iterate_episodes()):
        np.testing.assert_allclose(transition_rows(stored), np.array(rows_by_hand(episode), dtype=np.float32),
                                   rtol=1e-6)
