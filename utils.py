"""Minari dataset -> replay buffer, evaluation, seeding. No networks, no losses."""
import os
import socket
import urllib.parse
from dataclasses import dataclass

import gymnasium as gym
import minari
import numpy as np
import torch


def reason(err: BaseException, limit: int = 160) -> str:
    """An exception as a short phrase: its type and first line, cut between words if long."""
    text = " ".join((str(err).splitlines() or [""])[0].split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# Evaluation episodes (and their videos) use env seeds seed + EVAL_SEED_OFFSET, seed + EVAL_SEED_OFFSET + 1, ...
EVAL_SEED_OFFSET = 10_000


class DatasetError(Exception):
    """The dataset cannot be had; the message says why and what would work."""


@dataclass
class ReplayBuffer:
    """Every transition of a dataset, loaded once, as tensors on the training device.

    Row t of `data` is one transition laid out as [obs | action | reward | next_obs | not_done],
    so a batch is a single gather (one index into one tensor) rather than five.
    `episode_ends[k]` is the row after the last transition of episode k.
    """
    data: torch.Tensor  # (N, 2 * obs_dim + act_dim + 2), float32
    obs_dim: int
    act_dim: int
    episode_ends: np.ndarray  # (episodes,), int64

    def __len__(self) -> int:
        return self.data.shape[0]

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows (..., B, row) -> (obs, actions, rewards, next_obs, not_done); rewards and not_done are (..., B)."""
        obs, actions, rewards, next_obs, not_done = rows.split(
            [self.obs_dim, self.act_dim, 1, self.obs_dim, 1], dim=-1)
        return obs, actions, rewards.squeeze(-1), next_obs, not_done.squeeze(-1)

    def sample(self, batch_size: int, generators: list[torch.Generator]) -> tuple[torch.Tensor, ...]:
        """One uniform batch per member, with replacement, drawn from its generator: (M, B, ...) tensors."""
        idx = torch.stack([torch.randint(len(self), (batch_size,), generator=g, device=self.data.device)
                           for g in generators])
        return self.split(self.data[idx])


def remote_reachable() -> bool:
    """Whether the host of Minari's remote (MINARI_REMOTE, default Hugging Face) resolves.

    Checked before a download because, offline, the download retries for about 25 s with
    a warning per retry before it fails.
    """
    remote = os.getenv("MINARI_REMOTE", "hf://farama-minari")
    if remote.startswith("hf://"):
        from huggingface_hub import constants
        host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    else:
        host = "storage.googleapis.com"
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def load_dataset(dataset_id: str) -> minari.MinariDataset:
    """minari.load_dataset with download=True; a failed download or unusable spaces is one clear error."""
    local = os.path.join(minari.storage.get_dataset_path(dataset_id), "data")
    hint = (f"Set MINARI_DATASETS_PATH to the folder that holds {dataset_id}/ (e.g. "
            f"MINARI_DATASETS_PATH=~/datasets/minari) or connect to the internet.")
    if not os.path.isdir(local) and not remote_reachable():
        raise DatasetError(f"Minari dataset '{dataset_id}' is not under {local} and Minari's remote "
                           f"cannot be reached (offline). {hint}")
    try:
        dataset = minari.load_dataset(dataset_id, download=True)
    except Exception as err:  # Minari raises many kinds (network, unknown id, missing extras)
        raise DatasetError(f"cannot load Minari dataset '{dataset_id}': not under {local} and the "
                           f"download failed ({type(err).__name__}: {err}). {hint}") from None
    check_spaces(dataset, dataset_id)
    return dataset


def transition_rows(episode: minari.EpisodeData) -> np.ndarray:
    """One episode as buffer rows [obs | action | reward | next_obs | not_done], float32.

    A Minari episode holds T+1 observations and T actions: transition t is
    (obs[t], act[t], rew[t], obs[t+1]). `not_done` comes from terminations only: an episode cut
    by the time limit (truncation) did not reach a terminal state, so its last step still
    bootstraps from obs[T].
    """
    obs = episode.observations
    return np.concatenate([obs[:-1], episode.actions, episode.rewards[:, None], obs[1:],
                           1.0 - episode.terminations[:, None]], axis=1, dtype=np.float32)


def check_spaces(dataset: minari.MinariDataset, dataset_id: str) -> None:
    """The dataset's observations and actions must be flat Box vectors: what the networks take."""
    for name, space in (("observation", dataset.observation_space), ("action", dataset.action_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise DatasetError(f"dataset '{dataset_id}' has a {type(space).__name__}{getattr(space, 'shape', '')} "
                               f"{name} space; this code trains on flat Box observations and actions only")


def first_non_finite(data: np.ndarray, obs_dim: int, act_dim: int, episode_ends: np.ndarray,
                     episode_ids: list[int]) -> str | None:
    """Where the buffer holds its first NaN or infinity ('observations of episode 3, step 7'), or None."""
    bad_rows = np.flatnonzero(~np.isfinite(data).all(axis=1))
    if len(bad_rows) == 0:
        return None
    row = bad_rows[0]
    column = np.flatnonzero(~np.isfinite(data[row]))[0]
    k = np.searchsorted(episode_ends, row, side="right")
    step = row - (episode_ends[k - 1] if k > 0 else 0)
    if column >= obs_dim + act_dim + 1:  # next_obs: the observation after this step
        field, step = "observations", step + 1
    else:
        field = "observations" if column < obs_dim else "actions" if column < obs_dim + act_dim else "rewards"
    return f"{field} of episode {episode_ids[k]}, step {step}"


def dataset_to_buffer(dataset: minari.MinariDataset, device: torch.device) -> ReplayBuffer:
    """Copy every transition of a Minari dataset into a ReplayBuffer of exactly total_steps rows.

    Episodes are written one after another into one preallocated array (no list of pieces to
    concatenate, so the peak memory is the buffer and one episode). A NaN or infinity anywhere
    is a DatasetError naming the field, episode and step: training on it would silently ruin
    every network.
    """
    obs_dim, act_dim = dataset.observation_space.shape[0], dataset.action_space.shape[0]
    data = np.empty((dataset.total_steps, 2 * obs_dim + act_dim + 2), dtype=np.float32)
    lengths, row = [], 0
    for episode in dataset.iterate_episodes():
        rows = transition_rows(episode)
        data[row:row + len(rows)] = rows
        row += len(rows)
        lengths.append(len(rows))
    episode_ends = np.cumsum(lengths)
    if row != dataset.total_steps:
        raise DatasetError(f"dataset '{dataset.spec.dataset_id}' says it holds {dataset.total_steps} steps, "
                           f"its episodes hold {row}; the dataset files are damaged")
    where = first_non_finite(data, obs_dim, act_dim, episode_ends, list(dataset.episode_indices))
    if where:
        raise DatasetError(f"dataset '{dataset.spec.dataset_id}' holds a NaN or infinity in {where}; "
                           f"clean the dataset before training on it")
    return ReplayBuffer(torch.from_numpy(data).to(device), obs_dim, act_dim, episode_ends)


def evaluation_env(dataset: minari.MinariDataset) -> gym.Env:
    """The dataset's evaluation environment, checked against the dataset's spaces."""
    dataset_id = dataset.spec.dataset_id
    try:
        env = dataset.recover_environment(eval_env=True)
    except Exception as err:  # no env spec stored, an env id gymnasium does not know, missing extras
        raise DatasetError(f"dataset '{dataset_id}' names no environment this machine can make "
                           f"({reason(err)}); it cannot be evaluated") from None
    for name in ("observation_space", "action_space"):
        ours, theirs = getattr(env, name), getattr(dataset, name)
        if not isinstance(ours, gym.spaces.Box) or ours.shape != theirs.shape or (
                name == "action_space" and not (np.allclose(ours.low, theirs.low) and np.allclose(ours.high, theirs.high))):
            raise DatasetError(f"dataset '{dataset_id}': its evaluation environment {env.spec.id} has "
                               f"{name} {ours}, the data has {theirs}")
    return env


def get_buffer_and_environments_for_task(dataset_id: str, device: torch.device
                                         ) -> tuple[ReplayBuffer, gym.Env]:
    """The dataset's replay buffer and its evaluation environment (Problem 1.1)."""
    dataset = load_dataset(dataset_id)
    return dataset_to_buffer(dataset, device), evaluation_env(dataset)


def episode_returns(buffer: ReplayBuffer) -> np.ndarray:
    """The undiscounted return of each episode of the buffer, in its order: (episodes,)."""
    rewards = buffer.split(buffer.data)[2].cpu().numpy().astype(np.float64)
    return np.add.reduceat(rewards, np.concatenate([[0], buffer.episode_ends[:-1]]))


def top_episodes(buffer: ReplayBuffer, percent: float) -> ReplayBuffer:
    """A buffer of the top `percent` % of the buffer's episodes by return (at least none: the caller checks).

    floor(percent / 100 * episodes) episodes are kept, the best first, ties broken by position.
    """
    returns = episode_returns(buffer)
    keep = np.sort(np.argsort(-returns, kind="stable")[:int(percent / 100 * len(returns))])
    starts = np.concatenate([[0], buffer.episode_ends[:-1]])
    rows = np.concatenate([np.arange(starts[k], buffer.episode_ends[k]) for k in keep]) if len(keep) else []
    lengths = buffer.episode_ends[keep] - starts[keep]
    data = buffer.data[torch.as_tensor(rows, dtype=torch.long, device=buffer.data.device)]
    return ReplayBuffer(data, buffer.obs_dim, buffer.act_dim, np.cumsum(lengths))


def reference_scores(dataset: minari.MinariDataset) -> tuple[float | None, float | None]:
    """The dataset's (random, expert) reference returns for normalised scores, None where absent."""
    metadata = dataset.storage.metadata
    return metadata.get("ref_min_score"), metadata.get("ref_max_score")


def discounted_returns(buffer: ReplayBuffer, rows: np.ndarray, gamma: float) -> np.ndarray:
    """Monte-Carlo return sum_k gamma^k r_{t+k} from each row t to the end of its episode.

    For an episode cut by the time limit this sums only the rewards up to the cut, so it is
    a lower bound on the true value there (8 of 1,932 episodes in hopper-medium).
    """
    rewards = buffer.split(buffer.data)[2].cpu().numpy().astype(np.float64)
    ends = buffer.episode_ends[np.searchsorted(buffer.episode_ends, rows, side="right")]
    return np.array([rewards[t:end] @ gamma ** np.arange(end - t) for t, end in zip(rows, ends)])


def behaviour_return(buffer: ReplayBuffer) -> dict[str, float | int]:
    """The dataset's undiscounted episode returns, as config.json records them: their mean, std and number.

    The behaviour policy's score, the reference a learned policy is compared with; episodes
    cut by the time limit count as they are.
    """
    returns = episode_returns(buffer)
    return {"behaviour_return_mean": float(returns.mean()), "behaviour_return_std": float(returns.std()),
            "dataset_episodes": len(returns)}


def evaluate(policy, env: gym.Env, episodes: int, seeds: list[int]) -> np.ndarray:
    """Undiscounted returns, (M, episodes), of M members' deterministic policies.

    Member m's episodes run in copies of `env` seeded seeds[m], seeds[m] + 1, ...; all M x episodes
    run side by side, so `policy` maps (M, n, obs_dim) to (M, n, act_dim) once per time step.
    """
    members = len(seeds)
    envs = [[env if m == i == 0 else gym.make(env.spec) for i in range(episodes)] for m in range(members)]
    obs = np.stack([[e.reset(seed=seed + i)[0] for i, e in enumerate(row)] for seed, row in zip(seeds, envs)])
    returns = np.zeros((members, episodes))
    running = np.ones((members, episodes), dtype=bool)
    while running.any():
        actions = policy(obs)  # finished episodes' rows are computed too, and ignored: one batch per step
        for m, i in zip(*np.nonzero(running)):
            obs[m, i], reward, terminated, truncated, _ = envs[m][i].step(actions[m, i])
            returns[m, i] += reward
            running[m, i] = not (terminated or truncated)
    for row in envs:
        for e in row:
            if e is not env:
                e.close()
    return returns


def make_render_env(env: gym.Env) -> gym.Env:
    """A copy of env that renders RGB frames, through the camera that follows the agent if it has one.

    MuJoCo's locomotion models (Hopper, Walker2d, HalfCheetah) define a camera named 'track'
    that follows the body; the default free camera stays put while the hopper moves out of view.
    Shadows and 4x multisampling are turned off: without a GPU they cost most of a frame
    (0.11 s a frame with them, 0.017 s without, here), and the picture barely changes.
    """
    try:
        render_env = gym.make(env.spec, render_mode="rgb_array", camera_name="track")
    except Exception:  # no such camera, or an env that takes no camera_name
        render_env = gym.make(env.spec, render_mode="rgb_array")
    quality = getattr(getattr(getattr(render_env.unwrapped, "model", None), "vis", None), "quality", None)
    if quality is not None:  # a MuJoCo env, before its first frame creates the rendering context
        quality.shadowsize, quality.offsamples = 0, 0
    return render_env


def record_video(policy, env: gym.Env, path: str, seed: int, fps: int = 30) -> int:
    """Write an MP4 of one deterministic episode in a rendering copy of `env`; returns its frames.

    Rendering costs about 0.02 s a frame here (MuJoCo on EGL without a GPU), so only every k-th
    state is drawn, k chosen to play at about `fps` in real time (k = 4 for Hopper's 125 Hz):
    an episode of T steps gives ceil((T + 1) / k) frames, the state after reset the first.
    """
    import imageio  # only runs that record videos need the writer
    render_env = make_render_env(env)
    render_fps = render_env.metadata.get("render_fps", fps)
    every = max(1, round(render_fps / fps))
    try:
        obs, _ = render_env.reset(seed=seed)
        frames, steps, done = [render_env.render()], 0, False
        while not done:
            obs, _, terminated, truncated, _ = render_env.step(policy(obs[None])[0])
            steps, done = steps + 1, terminated or truncated
            if steps % every == 0:
                frames.append(render_env.render())
    finally:
        render_env.close()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    imageio.mimwrite(path, frames, fps=render_fps / every, macro_block_size=1)
    return len(frames)
