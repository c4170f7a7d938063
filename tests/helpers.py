"""What the runner tests share: the flags of a fast tiny run, and readers of what a run writes."""
import csv
import os

import runner
from conftest import DATASET_ID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--dataset", DATASET_ID, "--batch_size", "32", "--hidden", "32", "32", "--eval_episodes", "2",
        "--device", "cpu", "--video_every", "0"]


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def only_run(results) -> str:
    runs = os.listdir(results)
    assert len(runs) == 1, runs
    return os.path.join(results, runs[0])


def short_run(results, *flags: str) -> str:
    """A finished 20-step run, evaluated and checkpointed at steps 10 and 20; returns its folder."""
    assert runner.main([*FAST, "--total_steps", "20", "--eval_every", "10", "--results_dir", str(results),
                        *flags]) == 0
    return only_run(results)
