"""Videos of a policy: one deterministic evaluation episode as an MP4, written through no link."""
import contextlib
import os
import tempfile

import gymnasium as gym
import numpy as np

from utils import episode_limit


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


def write_video(path: str, frames: list[np.ndarray], fps: float) -> None:
    """Write an MP4 through a new temporary file beside it, then a rename: never through a link at path."""
    import imageio  # only runs that record videos need the writer
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if os.path.islink(folder):
        raise OSError(f"{folder} is a symbolic link; no video is written through it")
    handle, tmp = tempfile.mkstemp(suffix=".mp4", dir=folder)  # a name no one else has: O_EXCL
    os.close(handle)
    try:
        imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # replaces a link at path, never what it points to
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def record_video(policy, env: gym.Env, path: str, seed: int, fps: int = 30) -> int:
    """Write an MP4 of one deterministic episode in a rendering copy of `env`; returns its frames.

    Rendering costs about 0.02 s a frame here (MuJoCo on EGL without a GPU), so only every k-th
    state is drawn, k chosen to play at about `fps` in real time (k = 4 for Hopper's 125 Hz):
    an episode of T steps gives ceil((T + 1) / k) frames, the state after reset the first. The
    episode ends by episode_limit(env) steps, as an evaluation's.
    """
    render_env = make_render_env(env)
    render_fps = render_env.metadata.get("render_fps", fps)
    every = max(1, round(render_fps / fps))
    try:
        obs, _ = render_env.reset(seed=seed)
        frames = [render_env.render()]
        for step in range(1, episode_limit(env) + 1):
            obs, _, terminated, truncated, _ = render_env.step(policy(obs[None])[0])
            if step % every == 0:
                frames.append(render_env.render())
            if terminated or truncated:
                break
    finally:
        render_env.close()
    write_video(path, frames, render_fps / every)
    return len(frames)
