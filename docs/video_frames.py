"""A strip of frames of each run's final policy, one row per run, for the README.

    python docs/video_frames.py RUN_DIR [RUN_DIR ...] --out docs/hopper_frames.png

For each run it reads the run's own last evaluation video (RUN_DIR/videos/step<N>.mp4, the largest N:
runner.py records one at the end of every run) and draws it every --every_s seconds, the run's label
on the left. Once the episode has ended (the hopper fell), the row is blank from there on.
"""
import argparse
import json
import os
import sys

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def last_video(run_dir: str) -> str:
    """The run's video of the largest step, or exit with one line if it has none."""
    folder = os.path.join(run_dir, "videos")
    steps = sorted(int(name[4:-4]) for name in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if name.startswith("step") and name.endswith(".mp4") and name[4:-4].isdigit())
    if not steps:
        sys.exit(f"video_frames.py: error: {run_dir} has no videos/step<N>.mp4; runner.py records one at the end "
                 f"of a run unless --video_every 0 was given")
    return os.path.join(folder, f"step{steps[-1]}.mp4")


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
        path = last_video(run_dir)
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
