"""Does the reward penalty's uncertainty u(s, a) grow off the data? Both kinds, on a fitted dynamics model.

    MINARI_DATASETS_PATH=../shared/minari python docs/penalty_check.py models/<dataset>-dynamics-<key>.pt

For 2,000 dataset states it prints the mean u of each kind at the data's own actions, at those
actions moved a distance d (in a random direction per pair, then clipped into the action box), and
at uniform actions: a penalty that is to keep a policy near the data must grow with d.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dynamics import DynamicsConfig, DynamicsEnsemble  # noqa: E402
from mopo import uncertainty  # noqa: E402
from utils import dataset_to_buffer, load_dataset  # noqa: E402

PAIRS, DISTANCES = 2000, (0.0, 0.25, 0.5, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a fitted dynamics model file (models/...-dynamics-....pt)")
    args = parser.parse_args()
    saved = torch.load(args.model, map_location="cpu", weights_only=True)
    record = saved["record"]
    buffer = dataset_to_buffer(load_dataset(record["dataset"]), torch.device("cpu"))
    model = DynamicsEnsemble(buffer.obs_dim, buffer.act_dim, DynamicsConfig(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items()}), torch.Generator())
    model.load_state_dict(saved["state"])
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(len(buffer), (PAIRS,), generator=gen)
    obs, actions, *_ = buffer.split(buffer.data[rows])
    direction = torch.randn(actions.shape, generator=gen)
    direction /= direction.norm(dim=-1, keepdim=True)
    tried = {f"data + {d:g}": (actions + d * direction).clamp(-1, 1) for d in DISTANCES}
    tried["uniform"] = torch.rand(actions.shape, generator=gen) * 2 - 1
    print(f"{record['dataset']}, {PAIRS:,} dataset states; mean u(s, a) over them")
    print(f"{'actions':>14} {'aleatoric':>10} {'disagreement':>12}")
    with torch.no_grad():
        for name, tried_actions in tried.items():
            mean, logvar = model(obs[None], tried_actions[None])
            std = (logvar / 2).exp()
            print(f"{name:>14} {uncertainty(mean, std, 'aleatoric').mean():>10.4f} "
                  f"{uncertainty(mean, std, 'disagreement').mean():>12.4f}")


if __name__ == "__main__":
    main()
