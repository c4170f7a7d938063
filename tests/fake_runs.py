"""Run folders as runner.py writes them (config.json, progress.csv, train.csv), made up for the plot tests."""
import csv
import json
from pathlib import Path

from harness import config

PROGRESS = ("step", "eval_return_mean", "eval_return_std", "dataset_q", "mc_return", "policy_q", "bc_distance",
            "time_s")
TRAIN = ("step", "q1", "q2", "target_q", "td_loss", "critic_loss", "ddpg_loss", "bc_loss", "bc_weight", "actor_loss")
CQL = ("cql_penalty", "cql_logsumexp", "cql_q_random", "cql_q_policy", "cql_q_data", "cql_alpha")
# config.json's "flags" as runner.py records them now
FLAGS = config.recorded_flags(config.parse(["--total_steps", "3000", "--eval_every", "1000", "--hidden", "256", "256"])[0])


def write_run(root: Path, name: str, seed: int = 0, returns=(300.0, 600.0, 900.0), mc_return: float = 280.0,
              train: bool = True, cql: bool = False, refs=(None, None), **flags) -> Path:
    """A run folder as runner.py writes it: config.json, progress.csv (one row per 1000 steps), train.csv."""
    run_dir = root / f"{name}-seed{seed}"
    run_dir.mkdir(parents=True)
    config = {"flags": FLAGS | {"seed": seed} | flags, "config": name, "device": "cpu", "dataset_transitions": 100,
              "ref_min_score": refs[0], "ref_max_score": refs[1]}
    (run_dir / "config.json").write_text(json.dumps(config))
    steps = [1000 * (i + 1) for i in range(len(returns))]
    with open(run_dir / "progress.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PROGRESS)
        writer.writerows([s, r, 20.0, 10.0 * s / 1000, mc_return, 12.0, 0.1, 3.0] for s, r in zip(steps, returns))
    if train:
        columns = TRAIN + CQL * cql
        with open(run_dir / "train.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows([s] + [0.5 + s / 1000] * (len(columns) - 1) for s in steps)
    return run_dir
