"""The Minari -> replay buffer path, the Monte-Carlo returns and evaluation."""
import dataclasses
import os
import signal

import numpy as np
import pytest
import torch

import gymnasium as gym
import imageio_ffmpeg
import minari

from harness.video import record_video
from utils import (EVAL_MAX_STEPS, DatasetError, EvaluationStopped, dataset_to_buffer, discounted_returns, evaluate,
                   evaluation_env, get_buffer_and_environments_for_task, load_dataset, reason)
from conftest import DATASET_ID, rollout_episodes, write_dataset

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


def test_sample_draws_rows_of_the_buffer_one_batch_per_member_generator(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, CPU)
    generators = [torch.Generator().manual_seed(seed) for seed in (0, 1, 0)]
    obs, actions, rewards, next_obs, not_done = buffer.sample(64, generators)
    assert obs.shape == (3, 64, 11) and actions.shape == (3, 64, 3) and rewards.shape == (3, 64)
    rows = torch.cat([obs, actions, rewards[..., None], next_obs, not_done[..., None]], dim=-1).flatten(0, 1)
    # every sampled row is some row of the buffer
    assert ((rows[:, None, :] == buffer.data[None]).all(-1).any(-1)).all()
    assert torch.equal(obs[0], obs[2]) and not torch.equal(obs[0], obs[1])  # a member's batches follow its seed


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


def still_policy(obs: np.ndarray) -> np.ndarray:
    """Zero torque: Hopper falls over within a few dozen steps. (..., obs_dim) -> (..., 3)."""
    return np.zeros((*obs.shape[:-1], 3), dtype=np.float32)


def still_episode_length(env: gym.Env, seed: int) -> int:
    """Steps of one zero-torque episode, stepped by hand until termination or the time limit."""
    return episode_by_hand(env, seed, 0.0)[0]


def episode_by_hand(env: gym.Env, seed: int, torque: float) -> tuple[int, float]:
    """(steps, return) of one episode of constant torque, stepped by hand until it ends."""
    env.reset(seed=seed)
    total = 0.0
    for t in range(1, 10_000):
        _, reward, terminated, truncated, _ = env.step(np.full(3, torque, dtype=np.float32))
        total += reward
        if terminated or truncated:
            return t, total
    raise AssertionError("the episode never ended")


def test_evaluate_runs_each_members_episodes_to_their_ends_with_its_seeds(tiny_dataset):
    env = tiny_dataset.recover_environment(eval_env=True)
    torques = np.array([0.0, 0.3], dtype=np.float32)  # member 0 stands still, member 1 pushes

    def policy(obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (2, 3, 11)  # (members, episodes, obs_dim), all at once
        return np.broadcast_to(torques[:, None, None], (2, 3, 3)).copy()
    returns = evaluate(policy, env, episodes=3, seeds=[0, 50])
    by_hand = [[episode_by_hand(gym.make("Hopper-v5"), seed + i, torque)[1] for i in range(3)]
               for seed, torque in zip([0, 50], torques)]
    np.testing.assert_allclose(returns, by_hand, rtol=1e-9)  # each episode to its own end, no step more
    assert returns.shape == (2, 3) and np.all(returns > 0)  # about +1 per step while healthy
    np.testing.assert_array_equal(returns, evaluate(policy, env, episodes=3, seeds=[0, 50]))  # same seeds


def test_video_of_an_episode_has_one_frame_per_four_steps_and_the_first(tmp_path):
    env = gym.make("Hopper-v5")
    path = str(tmp_path / "videos" / "step0.mp4")
    frames = record_video(still_policy, env, path, seed=3)
    steps = still_episode_length(gym.make("Hopper-v5"), seed=3)
    assert frames == 1 + steps // 4  # Hopper runs at 125 Hz: every 4th state plays at ~31 fps
    assert imageio_ffmpeg.count_frames_and_secs(path)[0] == frames


def damaged_dataset(root, field: str, episode: int, step: int) -> minari.MinariDataset:
    """The tiny dataset with one NaN written into `field` at (episode, step)."""
    episodes = rollout_episodes()
    values = getattr(episodes[episode], field).astype(np.float64)
    values[(step, 0) if values.ndim == 2 else step] = np.nan
    episodes[episode] = episodes[episode]._replace(**{field: values}) if hasattr(episodes[episode], "_replace") \
        else type(episodes[episode])(**{**vars(episodes[episode]), field: values})
    return write_dataset(root, episodes=episodes)


@pytest.mark.parametrize("field, step", [("observations", 5), ("observations", 0), ("actions", 2), ("rewards", 4)])
def test_a_nan_in_the_data_is_found_at_load_naming_field_episode_and_step(minari_root, field, step):
    dataset = damaged_dataset(minari_root, field, episode=2, step=step)
    with pytest.raises(DatasetError, match=f"NaN or infinity in {field} of episode 2, step {step};"):
        dataset_to_buffer(dataset, CPU)


def test_a_nan_in_the_last_observation_is_found_too(minari_root):
    episodes = rollout_episodes()
    last = len(episodes[3].observations) - 1  # only ever a next_obs, never an obs
    dataset = damaged_dataset(minari_root, "observations", episode=3, step=last)
    with pytest.raises(DatasetError, match=f"observations of episode 3, step {last};"):
        dataset_to_buffer(dataset, CPU)


def test_a_discrete_action_space_is_refused_at_load(minari_root):
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    observations, actions = [obs], []
    for _ in range(5):
        actions.append(0)
        observations.append(env.step(0)[0])
    from minari.data_collector import EpisodeBuffer
    episode = EpisodeBuffer(id=0, seed=0, observations=np.array(observations), actions=np.array(actions),
                            rewards=np.ones(5), terminations=np.zeros(5, bool), truncations=np.eye(5, dtype=bool)[-1])
    minari.create_dataset_from_buffers("test/cartpole/tiny-v0", [episode], env=env, algorithm_name="zeros")
    with pytest.raises(DatasetError, match="Discrete.* action space; this code trains on flat Box"):
        load_dataset("test/cartpole/tiny-v0")


def test_an_evaluation_env_whose_spaces_differ_from_the_data_is_refused(minari_root):
    dataset = write_dataset(minari_root, max_steps=(8, 20), eval_env="Walker2d-v5")
    with pytest.raises(DatasetError, match="Walker2d-v5 has observation_space"):
        evaluation_env(dataset)


def test_a_dataset_without_an_environment_cannot_be_evaluated(minari_root):
    env = gym.make("Hopper-v5")
    minari.create_dataset_from_buffers("test/hopper/noenv-v0", rollout_episodes((8, 20)), env=None,
                                       observation_space=env.observation_space, action_space=env.action_space,
                                       algorithm_name="random")
    with pytest.raises(DatasetError, match="names no environment"):
        evaluation_env(minari.load_dataset("test/hopper/noenv-v0"))


def test_a_long_reason_is_cut_between_words():
    phrase = reason(ValueError("checkpoint " * 40))
    assert phrase.startswith("ValueError: checkpoint") and phrase.endswith(" ...") and len(phrase) < 200
    assert set(phrase.removeprefix("ValueError: ").removesuffix(" ...").split()) == {"checkpoint"}


def test_an_evaluation_episode_without_a_step_limit_ends_at_the_documented_bound():
    env = gym.make(dataclasses.replace(gym.spec("Pendulum-v1"), max_episode_steps=None))  # never terminates
    assert env.spec.max_episode_steps is None
    calls = []

    def policy(obs: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.zeros((*obs.shape[:-1], 1), dtype=np.float32)

    def hung(signum, frame):
        raise TimeoutError("the evaluation did not end")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        returns = evaluate(policy, env, episodes=2, seeds=[0])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(calls) == EVAL_MAX_STEPS == 1000 and returns.shape == (1, 2)


def test_a_stop_request_ends_an_evaluation_before_its_next_step(tiny_dataset):
    env = evaluation_env(tiny_dataset)
    calls = []

    def policy(obs: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.zeros((*obs.shape[:-1], 3), dtype=np.float32)
    with pytest.raises(EvaluationStopped):
        evaluate(policy, env, episodes=3, seeds=[0, 1], stop=lambda: len(calls) == 2)
    assert len(calls) == 2  # Hopper falls after dozens of steps: the episodes were cut, not finished


def test_a_video_is_never_written_through_a_link(tmp_path):
    (tmp_path / "videos").mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    (tmp_path / "videos" / "step0.mp4").symlink_to(target)
    frames = record_video(still_policy, gym.make("Hopper-v5"), str(tmp_path / "videos" / "step0.mp4"), seed=3)
    assert target.read_text() == "precious" and not (tmp_path / "videos" / "step0.mp4").is_symlink()
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "videos" / "step0.mp4"))[0] == frames
    os.rename(tmp_path / "videos", tmp_path / "moved")
    (tmp_path / "videos").symlink_to(tmp_path / "moved")  # the folder itself a link
    with pytest.raises(OSError, match="videos is a symbolic link; no video is written through it"):
        record_video(still_policy, gym.make("Hopper-v5"), str(tmp_path / "videos" / "step1.mp4"), seed=3)
    assert sorted(os.listdir(tmp_path / "moved")) == ["step0.mp4"]
