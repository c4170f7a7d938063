"""A strip of frames of each run's final policy, one row per run, for the README.

    MINARI_DATASETS_PATH=../shared/minari python docs/video_frames.py RUN_DIR [RUN_DIR ...] --out docs/hopper_frames.png

For each run it loads actor.pt (the final policy), records the deterministic episode that
runner.py's end-of-run video shows (same environment seed) into RUN_DIR/videos/final.mp4, with
the camera that follows the hopper, and draws that video every --every_s seconds (run label on
the left). Once the episode has ended (the hopper fell), the row is blank from there on.
"""
import argparse
import json
import os
import sys

if "DISPLAY" not in os.environ:  # headless: MuJoCo renders through EGL
    os.environ.setdefault("MUJOCO_GL", "egl")

import imageio.v3 as iio
import matplotlib
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo's modules
from networks import Actor  # noqa: E402
from utils import EVAL_SEED_OFFSET, evaluation_env, load_dataset, record_video  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def record_final(run_dir: str, meta: dict) -> str:
    """Record the run's final policy (actor.pt) into RUN_DIR/videos/final.mp4; returns the path."""
    flags = meta["flags"]
    env = evaluation_env(load_dataset(flags["dataset"]))
    state = torch.load(os.path.join(run_dir, "actor.pt"), map_location="cpu", weights_only=True)
    low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (env.action_space.low, env.action_space.high))
    actor = Actor(env.observation_space.shape[0], env.action_space.shape[0], low, high, tuple(flags["hidden"]))
    actor.load_state_dict(state)

    @torch.no_grad()
    def policy(obs):
        return actor(torch.as_tensor(obs, dtype=torch.float32)).numpy()
    path = os.path.join(run_dir, "videos", "final.mp4")
    record_video(policy, env, path, seed=flags["seed"] + EVAL_SEED_OFFSET)  # as runner.py's videos
    return path


def run_label(meta: dict) -> str:
    """The run's label from its config.json, with its seed."""
    return f"{meta['config']}\nseed {meta['flags']['seed']}"


def main(argv: list[str] | None = None) -> int:
    """Read each run's last video and draw the strip."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="run folders written by runner.py")
    p.add_argument("--out", default="docs/hopper_frames.png", help="PNG to write (default: docs/hopper_frames.png)")
    p.add_argument("--every_s", type=float, default=1.0, help="seconds of episode between frames (default: 1)")
    p.add_argument("--frames", type=int, default=8, help="frames per row (default: 8)")
    args = p.parse_args(argv)
    fig, axes = plt.subplots(len(args.run_dirs), args.frames, squeeze=False,
                             figsize=(1.6 * args.frames, 1.7 * len(args.run_dirs)))
    for row, run_dir in enumerate(args.run_dirs):
        with open(os.path.join(run_dir, "config.json")) as f:
            meta = json.load(f)
        path = record_final(run_dir, meta)
        fps = iio.immeta(path, plugin="FFMPEG")["fps"]
        frames = list(iio.imiter(path, plugin="FFMPEG"))
        for col, ax in enumerate(axes[row]):
            index = round(col * args.every_s * fps)
            if index < len(frames):
                ax.imshow(frames[index])
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t = {col * args.every_s:g} s", fontsize=9)
        axes[row][0].set_ylabel(run_label(meta), fontsize=8, rotation=0, ha="right", va="center")
        print(f"{path}: {len(frames)} frames, {len(frames) / fps:.1f} s")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
