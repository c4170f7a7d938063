"""Minari dataset -> replay buffer (checked: data_checks.py), Monte-Carlo returns, evaluation. No networks."""
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gymnasium as gym
import minari
import numpy as np
import torch

from data_checks import (DatasetError, check_counts, check_dataset_id, check_datasets_path, check_episode, check_spaces,
                         clip_actions, fingerprint, first_non_finite, registered_env)


def reason(err: BaseException, limit: int = 160) -> str:
    """An exception as a short phrase: its type and first line, cut between words if long."""
    text = " ".join((str(err).splitlines() or [""])[0].split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# Evaluation episodes (and their videos) use env seeds seed + EVAL_SEED_OFFSET, seed + EVAL_SEED_OFFSET + 1, ...
EVAL_SEED_OFFSET = 10_000
# The bound of an evaluation episode whose environment sets no step limit of its own (Hopper's limit)
EVAL_MAX_STEPS = 1000
HINT = ("Set MINARI_DATASETS_PATH to the folder that holds it (the one with mujoco/hopper/medium-v0/ inside, e.g. "
        "MINARI_DATASETS_PATH=~/datasets/minari)")


def draw_rows(rows: int, batch_size: int, generators: list[torch.Generator]) -> torch.Tensor:
    """batch_size row indices in [0, rows) per generator, uniform with replacement: (M, B)."""
    return torch.stack([torch.randint(rows, (batch_size,), generator=g, device=g.device) for g in generators])


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
    fingerprint: str = ""  # of the rows and episode ends (fingerprint()), recorded in config.json
    references: tuple[float | None, float | None] = (None, None)  # the dataset's (random, expert) returns

    def __len__(self) -> int:
        return self.data.shape[0]

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows (..., B, row) -> (obs, actions, rewards, next_obs, not_done); rewards and not_done are (..., B)."""
        obs, actions, rewards, next_obs, not_done = rows.split(
            [self.obs_dim, self.act_dim, 1, self.obs_dim, 1], dim=-1)
        return obs, actions, rewards.squeeze(-1), next_obs, not_done.squeeze(-1)

    def sample(self, batch_size: int, generators: list[torch.Generator]) -> tuple[torch.Tensor, ...]:
        """One uniform batch per member, with replacement, drawn from its generator: (M, B, ...) tensors."""
        return self.split(self.data[draw_rows(len(self), batch_size, generators)])


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
    """minari.load_dataset with download=True; a bad id or folder, a failed download or unusable spaces is one
    clear error."""
    check_dataset_id(dataset_id)
    check_datasets_path()
    try:
        local = os.path.join(minari.storage.get_dataset_path(dataset_id), "data")
    except OSError as err:  # MINARI_DATASETS_PATH below a file, or one that cannot be made
        raise DatasetError(f"MINARI_DATASETS_PATH cannot hold datasets ({reason(err)}); {HINT}") from None
    if not os.path.isdir(local) and not remote_reachable():
        raise DatasetError(f"Minari dataset '{dataset_id}' is not under {local} and Minari's remote "
                           f"cannot be reached (offline). {HINT} or connect to the internet.")
    try:
        dataset = minari.load_dataset(dataset_id, download=True)
    except Exception as err:  # Minari raises many kinds (network, unknown id, missing extras, damaged files)
        if os.path.isdir(local):
            raise DatasetError(f"cannot read Minari dataset '{dataset_id}' in {local} ({reason(err)}); its "
                               f"files are damaged or incomplete: delete that folder and download or write it "
                               f"again") from None
        raise DatasetError(f"cannot load Minari dataset '{dataset_id}': not under {local} and the "
                           f"download failed ({type(err).__name__}: {err}). {HINT} or connect to the "
                           f"internet.") from None
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


def read_episodes(dataset: minari.MinariDataset) -> Iterator[minari.EpisodeData]:
    """The dataset's episodes, one at a time; a file that cannot be read (cut short, a field missing) is a
    DatasetError."""
    episodes = dataset.iterate_episodes()
    while True:
        try:
            episode = next(episodes)
        except StopIteration:
            return
        except Exception as err:  # h5py and Minari raise OSError, KeyError, ValueError... on a damaged file
            raise DatasetError(f"dataset '{dataset.spec.dataset_id}': cannot read its episodes in "
                               f"{dataset.spec.data_path} ({reason(err)}); its files are damaged or incomplete "
                               f"(a download cut short?): delete that folder and download or write it again") from None
        yield episode


def read_transitions(dataset: minari.MinariDataset, obs_dim: int, act_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Every transition, checked, in one array preallocated from the metadata; and the episode ends.

    Episodes are written one after another (no list of pieces to concatenate, so the peak memory
    is the buffer and one episode).
    """
    data = np.empty((dataset.total_steps, 2 * obs_dim + act_dim + 2), dtype=np.float32)
    lengths, row = [], 0
    for episode in read_episodes(dataset):
        check_episode(episode, episode.id, obs_dim, act_dim, dataset.spec.dataset_id)
        steps = len(episode.actions)
        if row + steps <= len(data):  # past the end, the counts disagree: check_counts says so
            data[row:row + steps] = transition_rows(episode)
        row += steps
        lengths.append(steps)
    check_counts(dataset, row, len(lengths))
    return data, np.cumsum(lengths)


def print_warning(message: str) -> None:
    """A one-line warning on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def dataset_to_buffer(dataset: minari.MinariDataset, device: torch.device,
                      warn: Callable[[str], None] = print_warning) -> ReplayBuffer:
    """Copy every transition of a Minari dataset into a ReplayBuffer of exactly total_steps rows.

    Damaged files, arrays that disagree, counts that disagree with the metadata, terminations
    that are not 0 or 1, and a NaN or infinity anywhere are each a DatasetError naming where:
    training on them would silently ruin every network. Actions outside the action space are
    clipped into it, with a warning.
    """
    dataset_id = dataset.spec.dataset_id
    obs_dim, act_dim = dataset.observation_space.shape[0], dataset.action_space.shape[0]
    data, episode_ends = read_transitions(dataset, obs_dim, act_dim)
    where = first_non_finite(data, obs_dim, act_dim, episode_ends, list(dataset.episode_indices))
    if where:
        raise DatasetError(f"dataset '{dataset_id}' holds a NaN or infinity in {where}; "
                           f"clean the dataset before training on it")
    space = dataset.action_space
    clipped = clip_actions(data[:, obs_dim:obs_dim + act_dim], space.low, space.high, dataset_id)
    if clipped:
        warn(clipped)
    return ReplayBuffer(torch.from_numpy(data).to(device), obs_dim, act_dim, episode_ends,
                        fingerprint(data, episode_ends))


def evaluation_env(dataset: minari.MinariDataset) -> gym.Env:
    """The dataset's evaluation environment, made from this machine's registry, checked against the dataset's spaces."""
    dataset_id = dataset.spec.dataset_id
    env_id, kwargs, limit = registered_env(dataset.storage.metadata, dataset_id)
    try:
        env = gym.make(env_id, max_episode_steps=limit, **kwargs)
    except Exception as err:  # kwargs the env does not take, missing extras (mujoco)
        raise DatasetError(f"dataset '{dataset_id}' names an environment this machine cannot make ({env_id}: "
                           f"{reason(err)}); it cannot be evaluated") from None
    for name in ("observation_space", "action_space"):
        ours, theirs = getattr(env, name), getattr(dataset, name)
        if not isinstance(ours, gym.spaces.Box) or ours.shape != theirs.shape or (
                name == "action_space" and not (np.allclose(ours.low, theirs.low) and np.allclose(ours.high, theirs.high))):
            raise DatasetError(f"dataset '{dataset_id}': its evaluation environment {env.spec.id} has "
                               f"{name} {ours}, the data has {theirs}")
    return env


def get_buffer_and_environments_for_task(dataset_id: str, device: torch.device, warn: Callable[[str], None] = print_warning
                                         ) -> tuple[ReplayBuffer, gym.Env]:
    """The dataset's replay buffer and its evaluation environment (Problem 1.1): how every run loads its data.

    The buffer also carries the dataset's reference returns for normalised scores (reference_scores).
    """
    dataset = load_dataset(dataset_id)
    buffer, env = dataset_to_buffer(dataset, device, warn), evaluation_env(dataset)
    buffer.references = reference_scores(dataset)
    return buffer, env


def episode_returns(buffer: ReplayBuffer) -> np.ndarray:
    """The undiscounted return of each episode of the buffer, in its order: (episodes,); 0 for an episode of no step."""
    rewards = buffer.split(buffer.data)[2].cpu().numpy().astype(np.float64)
    starts = np.concatenate([[0], buffer.episode_ends[:-1]])
    returns, steps = np.zeros(len(starts)), buffer.episode_ends - starts
    if steps.any():  # reduceat sums from each index to the next: an empty episode's (repeated) index would take
        returns[steps > 0] = np.add.reduceat(rewards, starts[steps > 0])  # the next episode's first reward
    return returns


def episodes_of(buffer: ReplayBuffer, keep: np.ndarray) -> ReplayBuffer:
    """A buffer of the episodes numbered `keep` (ascending), in dataset order, with a fingerprint of its own (a
    model fitted on it is named apart from one fitted on the whole dataset)."""
    starts = np.concatenate([[0], buffer.episode_ends[:-1]])
    rows = np.concatenate([np.arange(starts[k], buffer.episode_ends[k]) for k in keep]) if len(keep) else []
    ends = np.cumsum(buffer.episode_ends[keep] - starts[keep])
    data = buffer.data[torch.as_tensor(rows, dtype=torch.long, device=buffer.data.device)]
    return ReplayBuffer(data, buffer.obs_dim, buffer.act_dim, ends, fingerprint(data.cpu().numpy(), ends),
                        buffer.references)


def top_episodes(buffer: ReplayBuffer, percent: float) -> ReplayBuffer:
    """A buffer of the top `percent` % of the buffer's episodes by return (at least none: the caller checks).

    floor(percent / 100 * episodes) episodes are kept, the best first, ties broken by position.
    """
    returns = episode_returns(buffer)
    return episodes_of(buffer, np.sort(np.argsort(-returns, kind="stable")[:int(percent / 100 * len(returns))]))


# Which episodes --episodes_percent keeps is drawn once, from this seed: every run seed and every method then
# trains on the same episodes, so that they differ in what they learn, not in what they were given.
EPISODES_SEED = 0


def random_episodes(buffer: ReplayBuffer, percent: float) -> ReplayBuffer:
    """A buffer of floor(percent / 100 * episodes) of the buffer's episodes, drawn at random (EPISODES_SEED)."""
    count = len(buffer.episode_ends)
    keep = np.random.default_rng(EPISODES_SEED).choice(count, int(percent / 100 * count), replace=False)
    return episodes_of(buffer, np.sort(keep))


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


class EvaluationStopped(Exception):
    """A signal asked the process to stop during an evaluation; its episodes were abandoned."""


def episode_limit(env: gym.Env) -> int:
    """The bound of every evaluation episode: the env's own step limit, else EVAL_MAX_STEPS."""
    return (env.spec.max_episode_steps if env.spec else None) or EVAL_MAX_STEPS


def evaluate(policy, env: gym.Env, episodes: int, seeds: list[int],
             stop: Callable[[], bool] = lambda: False) -> np.ndarray:
    """Undiscounted returns, (M, episodes), of M members' deterministic policies.

    Member m's episodes run in copies of `env` seeded seeds[m], seeds[m] + 1, ...; all M x episodes
    run side by side, so `policy` maps (M, n, obs_dim) to (M, n, act_dim) once per time step. Each
    episode ends by episode_limit(env) steps; EvaluationStopped as soon as `stop()` is true.
    """
    members = len(seeds)
    envs = [[env if m == i == 0 else gym.make(env.spec) for i in range(episodes)] for m in range(members)]
    try:
        obs = np.stack([[e.reset(seed=seed + i)[0] for i, e in enumerate(row)] for seed, row in zip(seeds, envs)])
        returns = np.zeros((members, episodes))
        running = np.ones((members, episodes), dtype=bool)
        for _ in range(episode_limit(env)):
            if not running.any():
                break
            if stop():
                raise EvaluationStopped
            actions = policy(obs)  # finished episodes' rows are computed too, and ignored: one batch per step
            for m, i in zip(*np.nonzero(running)):
                obs[m, i], reward, terminated, truncated, _ = envs[m][i].step(actions[m, i])
                returns[m, i] += reward
                running[m, i] = not (terminated or truncated)
    finally:
        for e in (e for row in envs for e in row if e is not env):
            e.close()
    return returns
