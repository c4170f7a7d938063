"""The tables of docs/problem3.md, from the run folders docs/problem3.sh wrote.

    python docs/problem3_tables.py results/problem3/medium-v0 mujoco/hopper/medium-v0
    python docs/problem3_tables.py results/problem3/expert-v0 mujoco/hopper/expert-v0

Reads the run folders as plot.py does (harness/summary.py: seeds grouped by configuration, only
finished seeds counted) and loads the dataset once for its behaviour return (the mean undiscounted
return of its episodes). Prints one Markdown table.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from harness import summary  # noqa: E402
from utils import dataset_to_buffer, episode_returns, load_dataset  # noqa: E402

# the configurations in the table's order: (label in the table, flags that pick its runs)
ROWS = (("BC", {"agent": "bc", "bc_top_percent": 100.0}), ("filtered BC (top 10 %)", {"agent": "bc", "bc_top_percent": 10.0}),
        ("TD3", {"agent": "td3", "bc_weight": 0.0, "cql_alpha": 0.0, "critic_layernorm": False}),
        ("TD3+BC (alpha_reg 10)", {"agent": "td3", "bc_weight": 10.0, "critic_layernorm": False}),
        ("CQL (alpha 5)", {"agent": "td3", "cql_alpha": 5.0}), ("IQL", {"agent": "iql"}),
        ("TD3, LayerNorm critics", {"agent": "td3", "bc_weight": 0.0, "critic_layernorm": True}),
        ("TD3+BC, LayerNorm critics", {"agent": "td3", "bc_weight": 10.0, "critic_layernorm": True}))


def cell(value: float | None, digits: str = ",.0f") -> str:
    """A number for the table, '-' where there is none."""
    return "-" if value is None or value != value else f"{value:{digits}}"


def line(name: str, row: dict) -> str:
    """One table row: returns (mean ± std, per seed), best, Q against the MC return, BC distance."""
    seeds = ", ".join(f"{float(v):,.0f}" for v in row["final_returns_per_seed"].split())
    q, mc = row["final_dataset_q"], row["mc_return"]
    return (f"| {name} | {cell(row['final_return_mean'])} ± {cell(row['final_return_std'])} ({seeds}) | "
            f"{cell(row['best_return_mean'])} | {cell(q, ',.4g')} / {cell(mc, ',.0f')} | "
            f"{cell(row['final_bc_distance'], '.3f')} | {row['seeds_reached_final']} of {row['seeds']} |")


def main(folder: str, dataset_id: str) -> None:
    buffer = dataset_to_buffer(load_dataset(dataset_id), torch.device("cpu"))
    returns = episode_returns(buffer)
    groups = summary.group_runs(summary.load_runs(folder))
    rows = dict(zip(groups, summary.summary_rows(groups)))
    print(f"`{dataset_id}`: behaviour policy {returns.mean():,.0f} ± {returns.std():,.0f} over {len(returns)} "
          f"episodes\n")
    print("| method | final return, mean ± std (per seed) | best (mean of seeds' best) | final dataset Q / its MC "
          "return | BC distance | seeds finished |")
    print("|---|---|---|---|---|---|")
    for name, flags in ROWS:
        found = [label for label, runs in groups.items()
                 if all(runs[0].flags.get(k, v if k == "bc_top_percent" else None) == v for k, v in flags.items())]
        for label in found:
            print(line(name, rows[label]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
