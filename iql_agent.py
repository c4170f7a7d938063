"""Implicit Q-Learning (Kostrikov et al., 2021) with this repo's deterministic actor.

IQL never evaluates an action outside the data: V is fitted to the critics' values of the data's
own actions, the critics bootstrap from V(s'), and the actor imitates the data's actions, each
weighted by how much better than V it is. The update step, in its order:
    v_loss      = E[ |tau - 1(u < 0)| u^2 ],  u = min_i Q'_i(s, a) - V(s)     (expectile tau)
    td_loss     = sum_i E[ (Q_i(s, a) - (r + gamma (1 - d) V(s')))^2 ]
    awr_weight  = min(exp(beta * scale * (Q'(s, a) - V(s))), 100)
    actor_loss  = E[ awr_weight * ||a - mu(s)||^2 ]
then the target critics' Polyak step. `scale` is 1000 / (max - min episode return) of the
dataset: the paper normalises rewards so for locomotion; scaling the advantage instead keeps Q in
the return's own units, comparable with TD3's Q and the Monte-Carlo return. Tensors carry a
leading member axis as in td3_agent.py (networks.py).
"""
import copy
from dataclasses import dataclass

import numpy as np
import torch

from networks import Actor, Members, TwinCritic, ValueNet
from td3_agent import TD3Config, critic_diagnostics, hyper, mse, polyak, step

IQL = ("iql",)
MAX_AWR_WEIGHT = 100.0  # the paper's clip of exp(beta * advantage), against a few huge weights


@dataclass
class IQLConfig:
    """IQL's own hyper-parameters (batch_size, hidden, lr, gamma and tau are TD3Config's)."""
    iql_expectile: float = hyper(0.7, "expectile tau of V's regression onto Q; 0.5 = the mean, -> 1 the max; "
                                      "the paper's locomotion value", above=0, below=1, agents=IQL)
    iql_beta: float = hyper(3.0, "inverse temperature of the advantage weights exp(beta * advantage); the "
                                 "paper's locomotion value, on rewards scaled to 1000 per return range",
                            low=0, agents=IQL)


def advantage_scale(episode_returns: np.ndarray) -> float:
    """The paper's reward scaling for locomotion, 1000 / (max - min episode return), applied to the advantage;
    1 (unscaled) where every episode returns the same, and the scale is undefined."""
    spread = float(episode_returns.max() - episode_returns.min())
    return 1000 / spread if spread > 1e-6 else 1.0


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """E[ |tau - 1(diff < 0)| diff^2 ] over the batch: positive errors weigh tau, negative 1 - tau."""
    weight = torch.where(diff < 0, 1 - expectile, expectile)
    return (weight * diff ** 2).mean(-1)


class IQLAgent:
    """Actor, twin critics and their target copy, the value network, their optimizers, and the update step."""

    MODULES = ("actor", "critic", "critic_target", "value", "actor_opt", "critic_opt", "value_opt")

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 configs: list[TD3Config], iql_configs: list[IQLConfig], seeds: list[int], device: torch.device,
                 advantage_scale: float = 1.0):
        self.members, self.device = Members(seeds, device), device
        self.cfg = cfg = configs[0]
        self.iql = iql_configs[0]  # members share every IQL setting
        self.advantage_scale = advantage_scale
        low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        gens = self.members.generators
        self.actor = Actor(obs_dim, act_dim, low, high, cfg.hidden, gens).to(device)
        self.critic = TwinCritic(obs_dim, act_dim, cfg.hidden, gens).to(device)
        self.value = ValueNet(obs_dim, cfg.hidden, gens).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, fused=True)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=cfg.lr, fused=True)
        self.updates = 0

    def update(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
               next_obs: torch.Tensor, not_done: torch.Tensor) -> dict[str, torch.Tensor]:
        """One gradient step of V, the critics and the actor on a batch; returns the named terms."""
        cfg, iql = self.cfg, self.iql
        self.updates += 1

        # Targets, before any step: the target critics' value of the data's own actions, and V(s').
        with torch.no_grad():
            q_data = torch.min(*self.critic_target(obs, actions))
            target_q = rewards + cfg.gamma * not_done * self.value(next_obs)

        # V: expectile regression onto q_data.
        v = self.value(obs)
        advantage = q_data - v
        v_loss = expectile_loss(advantage, iql.iql_expectile)
        step(self.value_opt, v_loss)

        # Critics: TD loss towards r + gamma * (1 - done) * V(s').
        q1, q2 = self.critic(obs, actions)
        td_loss = mse(q1, target_q) + mse(q2, target_q)
        step(self.critic_opt, td_loss)

        # Actor: advantage-weighted regression onto the data's actions; no gradient into V or Q.
        awr_weight = torch.exp(iql.iql_beta * self.advantage_scale * advantage.detach()).clamp(max=MAX_AWR_WEIGHT)
        bc_error = ((self.actor(obs) - actions) ** 2).sum(-1)  # ||a - mu(s)||^2, (M, B)
        actor_loss = (awr_weight * bc_error).mean(-1)
        step(self.actor_opt, actor_loss)

        polyak(self.critic_target, self.critic, cfg.tau)
        return {name: value.detach() for name, value in {
            "v": v.mean(-1), "v_loss": v_loss, "advantage": advantage.mean(-1), "q1": q1.mean(-1),
            "q2": q2.mean(-1), "target_q": target_q.mean(-1), "td_loss": td_loss, "awr_weight": awr_weight.mean(-1),
            "awr_weight_clipped": (awr_weight >= MAX_AWR_WEIGHT).float().mean(-1), "bc_loss": bc_error.mean(-1),
            "actor_loss": actor_loss}.items()}

    def diagnostics(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, list[float]]:
        """Per member: Q1 on dataset pairs and on the policy's actions, and the BC distance, on a fixed sample."""
        return critic_diagnostics(self.actor, self.critic, obs, actions)

    def metric_names(self) -> tuple[str, ...]:
        """Every name update() returns, in its order: train.csv's columns."""
        return ("v", "v_loss", "advantage", "q1", "q2", "target_q", "td_loss", "awr_weight", "awr_weight_clipped",
                "bc_loss", "actor_loss")
