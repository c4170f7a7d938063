"""Offline TD3 with optional behaviour-cloning (TD3+BC) and CQL terms.

The update step follows the equations in ReadMe.md, in their order:
target (no grad) -> critic TD loss -> CQL term -> critic step ->
(every `policy_delay` updates) actor: DDPG term, BC term -> actor step -> target networks.
"""
import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from networks import Actor, TwinCritic


@dataclass
class TD3Config:
    """Hyper-parameters of the update step; runner.py documents each as a flag."""
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    bc_weight: float | str = 0.0  # a number, or "auto" for TD3+BC's normalised weight
    bc_alpha: float = 2.5
    cql_alpha: float = 0.0
    cql_n_actions: int = 10
    cql_temp: float = 1.0
    hidden: tuple[int, ...] = (256, 256)


class Adam:
    """Adam with PyTorch's defaults, as one call of PyTorch's fused Adam kernel.

    For each parameter p with gradient g, at step t (m, v start at 0):
        m <- b1 * m + (1 - b1) * g        v <- b2 * v + (1 - b2) * g^2
        p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    torch.optim.Adam(fused=True) runs the same kernel but spends about 30 us of Python per
    step gathering its state, ~3 % of an update here; this keeps the state in fixed lists.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]  # m
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]  # v
        self.t = torch.zeros((), device=self.params[0].device)  # the kernel reads t from a tensor

    def zero_grad(self) -> None:
        """Drop the gradients (the next backward writes fresh ones)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One Adam step on every parameter, using p.grad."""
        self.t += 1
        torch._fused_adam_(self.params, [p.grad for p in self.params], self.exp_avg, self.exp_avg_sq,
                           [], [self.t] * len(self.params), amsgrad=False, lr=self.lr,
                           beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
                           maximize=False)

    def state_dict(self) -> dict:
        """m, v and t, for checkpoints."""
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict()."""
        torch._foreach_copy_(self.exp_avg, state["exp_avg"])
        torch._foreach_copy_(self.exp_avg_sq, state["exp_avg_sq"])
        self.t.copy_(state["t"])


class TD3Agent:
    """Actor, twin critic, their target copies and optimizers, and the update step."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray,
                 action_high: np.ndarray, config: TD3Config, device: torch.device):
        self.cfg = config
        self.device = device
        self.low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        self.actor = Actor(obs_dim, act_dim, self.low, self.high, config.hidden).to(device)
        self.critic = TwinCritic(obs_dim, act_dim, config.hidden).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = Adam(self.actor.parameters(), lr=config.lr)
        # One optimizer for both critics: Adam is per-parameter, so this is the same as two.
        self.critic_opt = Adam(self.critic.parameters(), lr=config.lr)
        # (target, online) parameter lists, collected once: .parameters() walks the modules
        self.target_pairs = [(list(target.parameters()), list(online.parameters())) for target, online
                             in ((self.actor_target, self.actor), (self.critic_target, self.critic))]
        self.updates = 0
        self.actor_metrics: dict[str, torch.Tensor] = {}

    def update(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
               next_obs: torch.Tensor, not_done: torch.Tensor) -> dict[str, torch.Tensor]:
        """One gradient step on a batch; returns the named loss terms as 0-d tensors."""
        cfg = self.cfg
        self.updates += 1

        # Target: r + gamma * (1 - done) * min_i Q'_i(s', mu'(s') + clipped noise).
        with torch.no_grad():
            noise = (torch.randn_like(actions) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_actions = (self.actor_target(next_obs) + noise * self.actor.action_scale)
            next_actions = next_actions.clamp(self.low, self.high)
            next_q = self.critic_target(next_obs, next_actions).amin(dim=0)  # (B,)
            target_q = rewards + cfg.gamma * not_done * next_q

        # Critic: TD loss of each critic, summed over the two, as in TD3.
        q = self.critic(obs, actions)  # (2, B)
        td_loss = ((q - target_q) ** 2).mean(dim=1).sum()
        critic_loss = td_loss
        metrics = {"td_loss": td_loss, "q_data": q[0].mean(), "target_q": target_q.mean()}
        if cfg.cql_alpha > 0:
            cql_penalty, cql_logsumexp = self.cql_penalty(obs, q)
            critic_loss = critic_loss + cfg.cql_alpha * cql_penalty
            metrics |= {"cql_penalty": cql_penalty, "cql_logsumexp": cql_logsumexp,
                        "cql_data_q": q.mean(dim=1).sum()}
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        metrics["critic_loss"] = critic_loss

        if self.updates % cfg.policy_delay == 0:
            self.actor_metrics = self.update_actor(obs, actions)
            self.update_targets()
        return metrics | self.actor_metrics

    def cql_penalty(self, obs: torch.Tensor, q_data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CQL(H) penalty, summed over both critics, and its logsumexp part.

        penalty_i = E_s[ temp * logsumexp_j(Q_i(s, a_j) / temp) - Q_i(s, a) ], a_j ~ U(low, high).
        Uniform actions probe the whole action box, so Q is pushed down wherever the data
        does not hold it up; the uniform density is a constant and is left out.
        """
        cfg = self.cfg
        batch, n = obs.shape[0], cfg.cql_n_actions
        random_actions = self.low + (self.high - self.low) * torch.rand(
            n * batch, self.low.shape[0], device=obs.device)  # (N*B, A)
        q_random = self.critic(obs.repeat(n, 1), random_actions).view(2, n, batch)
        logsumexp = cfg.cql_temp * torch.logsumexp(q_random / cfg.cql_temp, dim=1)  # (2, B)
        logsumexp = logsumexp.mean(dim=1).sum()
        return logsumexp - q_data.mean(dim=1).sum(), logsumexp

    def update_actor(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actor step: maximise Q1(s, mu(s)) while staying near the data's actions."""
        pi = self.actor(obs)
        for p in self.critic_opt.params:  # not trained here: its backward only passes dQ/da on
            p.requires_grad_(False)
        q_pi = self.critic.q1(obs, pi)
        for p in self.critic_opt.params:
            p.requires_grad_(True)
        ddpg_loss = -q_pi.mean()
        bc_loss = ((pi - actions) ** 2).sum(dim=-1).mean()  # E ||a - mu(s)||^2
        bc_weight = self.bc_weight(q_pi)
        actor_loss = ddpg_loss + bc_weight * bc_loss
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        return {"ddpg_loss": ddpg_loss, "bc_loss": bc_loss, "actor_loss": actor_loss,
                "bc_weight": torch.as_tensor(bc_weight)}

    def bc_weight(self, q_pi: torch.Tensor) -> torch.Tensor | float:
        """alpha_reg, fixed, or with "auto" TD3+BC's normalisation.

        TD3+BC minimises -lambda * Q + mean_dims (mu - a)^2 with lambda = alpha / mean|Q|.
        Dividing by lambda gives this repo's form -Q + w * ||mu - a||^2 with
        w = mean|Q| / (alpha * act_dim): the same minimiser, the loss scaled per batch.
        """
        if self.cfg.bc_weight != "auto":
            return float(self.cfg.bc_weight)
        return q_pi.abs().mean().detach() / (self.cfg.bc_alpha * q_pi.new_tensor(self.low.shape[0]))

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak averaging: target <- target + tau * (online - target)."""
        for target, online in self.target_pairs:
            torch._foreach_lerp_(target, online, self.cfg.tau)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch of observations (evaluation)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.actor(obs_t).cpu().numpy()

    @torch.no_grad()
    def diagnostics(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
        """Q1 on dataset pairs and on the policy's actions, and the BC distance, on a fixed sample."""
        pi = self.actor(obs)
        return {"dataset_q": self.critic.q1(obs, actions).mean().item(),
                "policy_q": self.critic.q1(obs, pi).mean().item(),
                "bc_distance": ((pi - actions) ** 2).sum(dim=-1).mean().item()}

    def state_dict(self) -> dict:
        """Everything needed to continue training exactly."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_target": self.actor_target.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "updates": self.updates, "actor_metrics": self.actor_metrics}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict()."""
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = state["updates"]
        self.actor_metrics = state["actor_metrics"]
