"""What a Minari dataset must be before it is trained on or evaluated: checks, each a one-line DatasetError.

utils.py loads a dataset and calls these: the dataset's id, the datasets' folder, its spaces, each
episode's arrays, its counts, its actions and terminations, and the environment it names, which
is made only from this machine's registry (a dataset is data: it never chooses the code that runs).
"""
import hashlib
import json
import os
import re

import gymnasium as gym
import numpy as np

# A Minari id: names of letters, digits, '.', '_' and '-' (each starting with a letter or digit) between '/'
DATASET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
ID_HINT = ("ids are names like mujoco/hopper/medium-v0 (letters, digits, '.', '_' and '-' between '/'), "
           "with no '..' and no leading '/'")


class DatasetError(Exception):
    """The dataset cannot be had; the message says why and what would work."""


def check_dataset_id(dataset_id: str) -> None:
    """A Minari id names a folder under MINARI_DATASETS_PATH: no '..', no absolute path, nothing but names."""
    if not DATASET_ID.fullmatch(dataset_id) or ".." in dataset_id.split("/"):
        raise DatasetError(f"'{dataset_id}' is not a Minari dataset id: {ID_HINT}")


def check_datasets_path() -> None:
    """MINARI_DATASETS_PATH, when set, must be a folder (or not exist yet: Minari makes it)."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    if root and os.path.exists(root) and not os.path.isdir(root):
        raise DatasetError(f"MINARI_DATASETS_PATH '{root}' is a file, not a folder; set it to the folder that "
                           f"holds the datasets (the one with mujoco/hopper/medium-v0/ inside)")


def check_spaces(dataset, dataset_id: str) -> None:
    """The dataset's observations and actions must be flat Box vectors: what the networks take."""
    for name, space in (("observation", dataset.observation_space), ("action", dataset.action_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise DatasetError(f"dataset '{dataset_id}' has a {type(space).__name__}{getattr(space, 'shape', '')} "
                               f"{name} space; this code trains on flat Box observations and actions only")


def check_episode(episode, k: int, obs_dim: int, act_dim: int, dataset_id: str) -> None:
    """Episode k's arrays must agree: T+1 observations, T actions, rewards and terminations, of the spaces' widths;
    terminations 0 or 1."""
    steps = len(episode.actions)
    if steps == 0:  # no transition to train on, and a return of 0 that would weigh in the behaviour return
        raise DatasetError(f"dataset '{dataset_id}', episode {k} has no steps (one observation, no action); remove "
                           f"that episode from the dataset, or write it again")
    expected = {"observations": (steps + 1, obs_dim), "actions": (steps, act_dim), "rewards": (steps,),
                "terminations": (steps,)}
    for field, shape in expected.items():
        found = np.shape(getattr(episode, field))
        if found != shape:
            raise DatasetError(f"dataset '{dataset_id}', episode {k}: {field} has shape {found}, not {shape} "
                               f"({steps} steps, observations of {obs_dim}, actions of {act_dim}); the dataset's "
                               f"files are damaged: download or write it again")
    bad = np.flatnonzero(~np.isin(episode.terminations, (0, 1)))
    if len(bad):
        raise DatasetError(f"dataset '{dataset_id}', episode {k}: terminations hold {episode.terminations[bad[0]]} "
                           f"at step {bad[0]}; they must be 0 or 1 (True or False)")


def check_counts(dataset, steps: int, episodes: int) -> None:
    """The metadata's total_steps and total_episodes must be what the episodes hold."""
    said = (dataset.total_steps, dataset.total_episodes)
    if said != (steps, episodes):
        raise DatasetError(f"dataset '{dataset.spec.dataset_id}': its metadata says {said[0]} steps in {said[1]} "
                           f"episodes, its episodes hold {steps} steps in {episodes}; the dataset's files are "
                           f"damaged: download or write it again")
    if steps == 0:
        raise DatasetError(f"dataset '{dataset.spec.dataset_id}' holds no transitions ({episodes} episodes); "
                           f"give a dataset with data")


def clip_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray, dataset_id: str) -> str | None:
    """Clip actions outside the action space's bounds into them, in place; a warning saying so, or None.

    The actor's tanh output cannot leave the bounds, so such actions could never be imitated.
    """
    beyond = np.maximum(low - actions, actions - high)  # > 0 outside
    outside = int((beyond > 0).sum())
    if not outside:
        return None
    np.clip(actions, low, high, out=actions)
    return (f"dataset '{dataset_id}' holds {outside} of {actions.size} action values outside the action space's "
            f"bounds (up to {beyond.max():.3g} beyond them); they were clipped to the bounds, which the actor "
            f"cannot leave")


def stored_env_spec(metadata: dict) -> dict | None:
    """The environment the dataset names for evaluation (its eval_env_spec, else its env_spec), as a dict."""
    spec = metadata.get("eval_env_spec") or metadata.get("env_spec")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            return None
    return spec if isinstance(spec, dict) else None


def entry_point_name(entry_point) -> str:
    """A registered entry point as 'module:name', whether registered as text or as a callable."""
    if isinstance(entry_point, str):
        return entry_point
    return f"{entry_point.__module__}:{entry_point.__qualname__}"


def registered_env(metadata: dict, dataset_id: str) -> tuple[str, dict, int | None]:
    """(env id, kwargs, max_episode_steps) of the dataset's environment, if this machine registers its id with
    the entry point the dataset names; else a DatasetError naming both."""
    spec = stored_env_spec(metadata)
    env_id = spec.get("id") if spec else None
    if not isinstance(env_id, str) or env_id not in gym.registry:
        raise DatasetError(f"dataset '{dataset_id}' names no environment this machine has registered "
                           f"({env_id or 'none stored'}); it cannot be evaluated: install the package that "
                           f"registers it")
    ours, theirs = entry_point_name(gym.registry[env_id].entry_point), spec.get("entry_point")
    if theirs != ours:
        raise DatasetError(f"dataset '{dataset_id}' names {env_id} with the entry point {theirs}, this machine "
                           f"registers {ours}; refused: a dataset may not choose the code that runs")
    kwargs, limit, wrappers = spec.get("kwargs") or {}, spec.get("max_episode_steps"), spec.get("additional_wrappers")
    if wrappers:
        names = ", ".join(str(w.get("name")) if isinstance(w, dict) else str(w) for w in wrappers)
        raise DatasetError(f"dataset '{dataset_id}' asks for wrappers around {env_id} ({names}); refused: this "
                           f"code evaluates in the registered environment alone")
    if not isinstance(kwargs, dict) or not (limit is None or type(limit) is int and limit >= 1):
        raise DatasetError(f"dataset '{dataset_id}': the kwargs or max_episode_steps it stores for {env_id} are "
                           f"not a dict and a positive integer; the dataset's metadata is damaged")
    # The task is the registered one: its arguments (no termination switched off, no on-screen rendering) and its
    # own step limit, which bounds every evaluation episode
    registered = gym.registry[env_id]
    changed = {k: v for k, v in kwargs.items() if registered.kwargs.get(k, object()) != v}
    if changed or limit not in (None, registered.max_episode_steps):
        what = (f"arguments {json.dumps(changed, default=str)[:120]}" if changed else
                f"max_episode_steps {limit} (registered: {registered.max_episode_steps})")
        raise DatasetError(f"dataset '{dataset_id}' asks for {env_id} with the {what}; refused: that changes the "
                           f"task, and this code evaluates in the registered environment alone")
    return env_id, dict(registered.kwargs), registered.max_episode_steps


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


def fingerprint(data: np.ndarray, episode_ends: np.ndarray) -> str:
    """A digest of every transition and of where episodes end: resume compares it to notice a changed dataset."""
    digest = hashlib.blake2b(np.ascontiguousarray(data).data, digest_size=16)
    digest.update(episode_ends.astype(np.int64).tobytes())
    return digest.hexdigest()
