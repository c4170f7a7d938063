"""Behaviour cloning: the actor alone, regressed onto the dataset's actions. No critic, no Q.

    bc_loss = E_(s, a) ~ D ||a - mu(s)||^2

With --bc_top_percent P (filtered BC) the dataset holds only the top P % of its episodes by
return (utils.top_episodes), so mu imitates the best behaviour alone. Tensors carry a leading
member axis as in td3_agent.py (networks.py): obs is (M, B, obs_dim), the loss (M,).
"""
import numpy as np
import torch

from networks import Actor, Members
from td3_agent import TD3Config, step


class BCAgent:
    """The actor and its optimizer (of M members), and the regression step."""

    MODULES = ("actor", "actor_opt")

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 configs: list[TD3Config], seeds: list[int], device: torch.device):
        self.members, self.device = Members(seeds, device), device
        self.cfg = cfg = configs[0]  # BC takes only batch_size, hidden and lr, which members share
        low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        self.actor = Actor(obs_dim, act_dim, low, high, cfg.hidden, self.members.generators).to(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.updates = 0

    def update(self, obs: torch.Tensor, actions: torch.Tensor, *_) -> dict[str, torch.Tensor]:
        """One regression step on a batch (rewards, next_obs and not_done are not used)."""
        self.updates += 1
        bc_loss = ((self.actor(obs) - actions) ** 2).sum(-1).mean(-1)  # E ||a - mu(s)||^2
        step(self.actor_opt, bc_loss)
        return {"bc_loss": bc_loss.detach()}

    @torch.no_grad()
    def diagnostics(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, list[float]]:
        """Per member: the BC distance on a fixed sample (there is no Q to report)."""
        return {"bc_distance": ((self.actor(obs) - actions) ** 2).sum(-1).mean(-1).tolist()}

    def metric_names(self) -> tuple[str, ...]:
        """Every name update() returns: train.csv's columns."""
        return ("bc_loss",)
