"""Tiny real Minari datasets, rolled out in the real Hopper-v5 and written with Minari's own API."""
import os

if "DISPLAY" not in os.environ:  # headless, as runner.py: MuJoCo renders the video tests through EGL
    os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from minari.data_collector import EpisodeBuffer

# The tests train on batches of 32-64: one thread is as fast, and it does not fight other
# processes for the cores.
torch.set_num_threads(1)

DATASET_ID = "test/hopper/tiny-v0"


def rollout(env: gym.Env, episode_id: int, seed: int, max_steps: int) -> EpisodeBuffer:
    """One episode of uniform random actions, cut (truncated) after max_steps like a TimeLimit."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    for t in range(max_steps):
        action = env.action_space.sample()
        obs, reward, terminated, _, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(t == max_steps - 1 and not terminated)
        if terminated:
            break
    return EpisodeBuffer(id=episode_id, seed=seed, observations=np.array(observations), actions=np.array(actions),
                         rewards=np.array(rewards), terminations=np.array(terminations),
                         truncations=np.array(truncations))


def write_dataset(root, dataset_id: str = DATASET_ID, max_steps=(8,) + (200,) * 15, episodes=None,
                  eval_env=None) -> minari.MinariDataset:
    """A dataset of len(max_steps) Hopper-v5 episodes under `root` (a MINARI_DATASETS_PATH).

    The first episode (8 steps) is cut by the time limit; random actions make Hopper fall
    long before 200 steps, so the others end in termination (about 200 transitions in all).
    `episodes` replaces the rollouts (e.g. damaged copies of them); `eval_env` the evaluation env.
    """
    env = gym.make("Hopper-v5")
    if episodes is None:
        episodes = rollout_episodes(max_steps)
    return minari.create_dataset_from_buffers(dataset_id, episodes, env=env, eval_env=eval_env or env.spec,
                                              algorithm_name="uniform random actions", author="tests",
                                              author_email="tests@localhost", code_permalink="tests/conftest.py",
                                              description="tiny test dataset")


def rollout_episodes(max_steps=(8,) + (200,) * 15) -> list[EpisodeBuffer]:
    """The tiny dataset's episodes, before they are written."""
    env = gym.make("Hopper-v5")
    return [rollout(env, k, seed=k, max_steps=steps) for k, steps in enumerate(max_steps)]


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """A fresh, empty MINARI_DATASETS_PATH for this test."""
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def tiny_dataset(minari_root) -> minari.MinariDataset:
    """The tiny Hopper dataset, written to the test's own MINARI_DATASETS_PATH."""
    return write_dataset(minari_root)
