"""What the model-based and support-constraint tests share: a narrow tiny dataset and small fitted models.

The narrow dataset's behaviour is one fixed action plus small noise, rolled out in the real
Hopper-v5: actions far from it are off the data's support, which the dynamics ensemble's
uncertainty and the behaviour VAE's density must both see.
"""
import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from minari.data_collector import EpisodeBuffer

import behaviour_vae
import dynamics
from behaviour_vae import VAEConfig
from dynamics import DynamicsConfig
from utils import ReplayBuffer, dataset_to_buffer

NARROW_ID = "test/hopper/narrow-v0"
NOISE = 0.2
BEHAVIOUR_ACTION = np.array([0.3, -0.2, 0.1], dtype=np.float32)
SMALL_DYNAMICS = DynamicsConfig(model_ensemble=4, model_elites=3, model_hidden=(64, 64), model_batch_size=64,
                                model_epoch_steps=100, model_max_epochs=12)
SMALL_VAE = VAEConfig(vae_hidden=(64, 64), vae_steps=1500)


def narrow_episode(env: gym.Env, episode_id: int, seed: int, max_steps: int = 60) -> EpisodeBuffer:
    """One episode of BEHAVIOUR_ACTION + N(0, 0.05^2) noise, cut after max_steps (a truncation)."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    for t in range(max_steps):
        action = np.clip(BEHAVIOUR_ACTION + rng.normal(0, NOISE, 3), -1, 1).astype(np.float32)
        obs, reward, terminated, _, _ = env.step(action)
        observations.append(obs), actions.append(action), rewards.append(reward)
        terminations.append(terminated), truncations.append(t == max_steps - 1 and not terminated)
        if terminated:
            break
    return EpisodeBuffer(id=episode_id, seed=seed, observations=np.array(observations), actions=np.array(actions),
                         rewards=np.array(rewards), terminations=np.array(terminations),
                         truncations=np.array(truncations))


def write_narrow_dataset(episodes: int = 40) -> minari.MinariDataset:
    """The narrow dataset (about 1,000 transitions) under the current MINARI_DATASETS_PATH."""
    env = gym.make("Hopper-v5")
    buffers = [narrow_episode(env, k, seed=100 + k) for k in range(episodes)]
    return minari.create_dataset_from_buffers(NARROW_ID, buffers, env=env, eval_env=env.spec,
                                              algorithm_name="a fixed action plus noise", author="tests",
                                              author_email="tests@localhost", code_permalink="tests/model_data.py",
                                              description="narrow test dataset")


def narrow_buffer(folder) -> ReplayBuffer:
    """The narrow dataset, written under `folder` (a MINARI_DATASETS_PATH of its own), as a replay buffer."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(folder))
        return dataset_to_buffer(write_narrow_dataset(), torch.device("cpu"))


def fit_dynamics(buffer: ReplayBuffer, cfg: DynamicsConfig = SMALL_DYNAMICS) -> tuple[dynamics.DynamicsEnsemble,
                                                                                        list[dict]]:
    """A small ensemble fitted to the buffer, and its fit's rows."""
    rows = list(dynamics.fit(buffer, cfg, seed=0))
    model = rows[-1][0]
    model.zero_grad(set_to_none=True)  # as a model loaded from its file: no gradient left from the fit
    return model.eval().requires_grad_(False), [row for _, row in rows]


def fit_vae(buffer: ReplayBuffer) -> behaviour_vae.BehaviourVAE:
    """A small behaviour VAE fitted to the buffer, frozen."""
    *_, (model, _) = behaviour_vae.fit(buffer, -torch.ones(3), torch.ones(3), SMALL_VAE, seed=0)
    model.zero_grad(set_to_none=True)  # as a model loaded from its file: no gradient left from the fit
    return model.eval().requires_grad_(False)
