"""Offline TD3 with optional behaviour-cloning (TD3+BC) and CQL terms.

The update step follows the equations in ReadMe.md, in their order:
target (no grad) -> critic TD loss -> CQL term -> critic step ->
(every `policy_delay` updates) actor: DDPG term, BC term -> actor step -> target networks.
"""
import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from harness.flags import flag
from networks import Actor, TwinCritic


@dataclass
class TD3Config:
    """Hyper-parameters of learning: the update step, and the batch it is given.

    Each field is also a runner.py flag of the same name (see flags.flag), in this order.
    """
    bc_weight: float | str = flag(0.0, "alpha_reg on E||a - mu(s)||^2 in the actor loss; 0 = plain TD3, "
                                  "10 = Problem 1.3, 'auto' = TD3+BC's normalisation with --bc_alpha",
                                  low=0, also=("auto",))
    bc_alpha: float = flag(2.5, "TD3+BC's alpha, used only with --bc_weight auto", above=0)
    cql_alpha: float = flag(0.0, "weight of the CQL penalty on each critic; 0 = off, 5 = Problem 2.1", low=0)
    cql_n_actions: int = flag(4, "uniform actions per state in the CQL logsumexp, besides mu(s) and mu(s'); "
                                 "the homework's value", low=1)
    cql_uniform_only: bool = flag(False, "leave the policy's actions mu(s), mu(s') out of the CQL logsumexp: "
                                         "the handout's eq. 3, an ablation")
    cql_target_gap: float | None = flag(None, "tune the CQL weight as a Lagrange multiplier alpha', starting at "
                                              "--cql_alpha, so that the penalty per critic settles at this gap",
                                        low=0, unset="off, a fixed --cql_alpha")
    cql_temp: float = flag(1.0, "CQL temperature T", above=0)
    batch_size: int = flag(128, "transitions per update; the homework's value", low=1)
    hidden: tuple[int, ...] = flag((128, 128), "hidden layer widths of actor and critics; 128 128 is the "
                                               "homework's, 256 256 the TD3+BC paper's", low=1)
    lr: float = flag(3e-4, "Adam step size, actor and critic", above=0)
    gamma: float = flag(0.99, "discount factor", low=0, below=1)
    tau: float = flag(0.005, "target-network Polyak rate", above=0, high=1)
    policy_noise: float = flag(0.2, "std of target-policy smoothing noise, in units of the action half-range",
                               low=0)
    noise_clip: float = flag(0.5, "clip of that noise, same units", low=0)
    policy_delay: int = flag(2, "critic updates per actor update", low=1)


# TD3Config fields that may differ between the members of one agent (networks.py: the member axis):
# plain weights in the losses, one value per member. Every other field is shared by the members.
MEMBER_FIELDS = ("bc_weight", "cql_alpha")


def member_key(config: TD3Config) -> tuple:
    """What members of one agent must share: every field but MEMBER_FIELDS' values, and whether those are on."""
    shared = tuple(getattr(config, name) for name in TD3Config.__dataclass_fields__ if name not in MEMBER_FIELDS)
    return shared + (config.bc_weight == "auto", config.cql_alpha > 0)


class TD3Agent:
    """Actors, twin critics, their target copies and optimizers of M members, and the update step.

    Member m is one run: its own seed (initial weights, batches, noise), bc_weight and cql_alpha,
    drawn from its own generator, so it learns exactly what it would learn alone (networks.py).
    """

    MODULES = ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt", "cql_alpha_opt")

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 configs: list[TD3Config], seeds: list[int], device: torch.device):
        if len({member_key(c) for c in configs}) != 1:
            raise ValueError(f"members may differ only in {', '.join(MEMBER_FIELDS)} (and whether they are on)")
        self.cfg = config = configs[0]
        self.members, self.device = len(configs), device
        self.generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
        self.low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        self.actor = Actor(obs_dim, act_dim, self.low, self.high, config.hidden, self.generators).to(device)
        self.critic = TwinCritic(obs_dim, act_dim, config.hidden, self.generators).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # fused: Adam's element-wise update as one kernel per step (1.02-1.25x faster updates here)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr, fused=True)
        # One optimizer for both critics: Adam is per-parameter, so this is the same as two.
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr, fused=True)
        self.fixed_bc_weight = self.per_member([0.0 if c.bc_weight == "auto" else c.bc_weight for c in configs])
        self.cql_alpha = self.per_member([c.cql_alpha for c in configs])
        # Lagrangian CQL: alpha' = exp(log_alpha') stays >= 0 whatever the ascent does.
        start = [math.log(c.cql_alpha) if c.cql_alpha > 0 else 0.0 for c in configs]
        self.log_cql_alpha = self.per_member(start).requires_grad_(True)
        self.cql_alpha_opt = torch.optim.Adam([self.log_cql_alpha], lr=config.lr)
        self.target_pairs = [(list(target.parameters()), list(online.parameters())) for target, online
                             in ((self.actor_target, self.actor), (self.critic_target, self.critic))]
        self.updates = 0

    def per_member(self, values: list[float]) -> torch.Tensor:
        """One value per member as an (M,) tensor on the device."""
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    def rand(self, *shape: int, normal: bool = False) -> torch.Tensor:
        """(M, *shape) draws, U(0, 1) or N(0, 1): member m's slice from member m's generator."""
        draw = torch.randn if normal else torch.rand
        return torch.stack([draw(shape, generator=g, device=self.device) for g in self.generators])

    # Every name update() may return, in train.csv's column order. A new logged term goes here
    # beside its line in update(): a name missing here stops train.csv's first write, loudly.
    METRICS = ("q1", "q2", "target_q", "td_loss", "cql_penalty", "cql_logsumexp", "cql_q_random", "cql_q_policy",
               "cql_q_data", "cql_alpha", "critic_loss", "ddpg_loss", "bc_loss", "bc_weight", "actor_loss")

    def update(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
               next_obs: torch.Tensor, not_done: torch.Tensor) -> dict[str, torch.Tensor]:
        """One gradient step of every member on its own batch; returns this step's named terms, each (M,).

        obs, next_obs: (M, B, obs_dim); actions: (M, B, act_dim); rewards, not_done: (M, B).
        Each loss is one value per member, (M,). A step minimises their sum: its gradient with
        respect to member m's weights is member m's own loss's gradient. The actor's terms are in
        the dict only on the steps that update the actor.
        """
        cfg = self.cfg
        self.updates += 1

        # Target: r + gamma * (1 - done) * min_i Q'_i(s', mu'(s') + clipped noise).
        with torch.no_grad():
            noise = (self.rand(*actions.shape[1:], normal=True) * cfg.policy_noise).clamp(-cfg.noise_clip,
                                                                                         cfg.noise_clip)
            next_actions = (self.actor_target(next_obs) + noise * self.actor.action_scale).clamp(self.low, self.high)
            target_q = rewards + cfg.gamma * not_done * self.critic_target(next_obs, next_actions).amin(dim=0)

        # Critic: TD loss of each critic, summed over the two, as in TD3.
        q = self.critic(obs, actions)  # (2, M, B)
        td_loss = ((q - target_q) ** 2).mean(dim=2).sum(dim=0)  # (M,)
        critic_loss = td_loss
        metrics = {"q1": q[0].mean(dim=1), "q2": q[1].mean(dim=1), "target_q": target_q.mean(dim=1),
                   "td_loss": td_loss}
        if cfg.cql_alpha > 0:
            cql_penalty, cql_parts = self.cql_penalty(obs, next_obs, q)
            cql_alpha = self.cql_weight(cql_penalty)
            critic_loss = critic_loss + cql_alpha * cql_penalty
            metrics |= cql_parts | {"cql_penalty": cql_penalty, "cql_alpha": cql_alpha}
        self.critic_opt.zero_grad()
        critic_loss.sum().backward()
        self.critic_opt.step()
        metrics["critic_loss"] = critic_loss

        if self.updates % cfg.policy_delay == 0:
            metrics |= self.update_actor(obs, actions)
            self.update_targets()
        return {name: value.detach() for name, value in metrics.items()}

    def cql_penalty(self, obs: torch.Tensor, next_obs: torch.Tensor,
                    q_data: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CQL(H) penalty of each member, (M,), summed over both critics, and its parts for the logs.

        penalty_i = E_s[ T * logsumexp_j(Q_i(s, a_j) / T) - Q_i(s, a) ], the a_j being N actions
        drawn uniformly in the action box and the policy's own mu(s) and mu(s'), all at state s.
        Uniform actions probe the whole box; the policy's actions are where the actor will look
        next, and the TD target bootstraps from (almost) them, so Q must be pushed down there
        above all. They carry no gradient into the actor: the penalty trains the critics only.
        """
        cfg = self.cfg
        members, batch, n = obs.shape[0], obs.shape[1], cfg.cql_n_actions
        actions = [self.low + (self.high - self.low) * self.rand(n, batch, self.low.shape[0])]  # (M, N, B, A)
        if not cfg.cql_uniform_only:
            with torch.no_grad():
                actions.append(self.actor(torch.cat([obs, next_obs], dim=1)).view(members, 2, batch, -1))
        actions = torch.cat(actions, dim=1)  # (M, J, B, A): J = N uniform, then mu(s), mu(s')
        j = actions.shape[1]
        q_sampled = self.critic(obs.repeat(1, j, 1), actions.view(members, j * batch, -1))
        q_sampled = q_sampled.view(2, members, j, batch)  # (2, M, J, B)
        logsumexp = cfg.cql_temp * torch.logsumexp(q_sampled / cfg.cql_temp, dim=2)  # (2, M, B)
        penalty = (logsumexp - q_data).mean(dim=2).sum(dim=0)
        parts = {"cql_logsumexp": logsumexp.mean(dim=2).sum(dim=0),
                 "cql_q_random": q_sampled[:, :, :n].mean(dim=(0, 2, 3)), "cql_q_data": q_data.mean(dim=(0, 2))}
        if not cfg.cql_uniform_only:
            parts["cql_q_policy"] = q_sampled[:, :, n].mean(dim=(0, 2))
        return penalty, parts

    def cql_weight(self, cql_penalty: torch.Tensor) -> torch.Tensor:
        """Each member's penalty weight: --cql_alpha, or with --cql_target_gap the Lagrange multiplier alpha'.

        alpha' takes one gradient-ascent step on alpha' * (penalty per critic - gap): it grows
        while the penalty exceeds the gap and shrinks once it is below, so the penalty settles
        at the gap. Returns the weight before that step, with no gradient.
        """
        if self.cfg.cql_target_gap is None:
            return self.cql_alpha
        alpha = self.log_cql_alpha.exp().clamp(max=1e6)
        alpha_loss = -alpha * (cql_penalty.detach() / 2 - self.cfg.cql_target_gap)
        self.cql_alpha_opt.zero_grad()
        alpha_loss.sum().backward()
        self.cql_alpha_opt.step()
        return alpha.detach()

    def update_actor(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actor step: maximise Q1(s, mu(s)) while staying near the data's actions."""
        pi = self.actor(obs)
        self.critic.requires_grad_(False)  # not trained here: its backward only passes dQ/da on
        q_pi = self.critic.q1(obs, pi)  # (M, B)
        self.critic.requires_grad_(True)
        ddpg_loss = -q_pi.mean(dim=1)
        bc_loss = ((pi - actions) ** 2).sum(dim=2).mean(dim=1)  # E ||a - mu(s)||^2
        bc_weight = self.bc_weight(q_pi)
        actor_loss = ddpg_loss + bc_weight * bc_loss
        self.actor_opt.zero_grad()
        actor_loss.sum().backward()
        self.actor_opt.step()
        return {"ddpg_loss": ddpg_loss, "bc_loss": bc_loss, "bc_weight": bc_weight, "actor_loss": actor_loss}

    def bc_weight(self, q_pi: torch.Tensor) -> torch.Tensor:
        """Each member's alpha_reg, fixed, or with "auto" TD3+BC's normalisation.

        TD3+BC minimises -lambda * Q + mean_dims (mu - a)^2 with lambda = alpha / mean|Q|.
        Dividing by lambda gives this repo's form -Q + w * ||mu - a||^2 with
        w = mean|Q| / (alpha * act_dim): the same minimiser, the loss scaled per batch.
        """
        if self.cfg.bc_weight != "auto":
            return self.fixed_bc_weight
        return q_pi.abs().mean(dim=1).detach() / (self.cfg.bc_alpha * self.low.shape[0])

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak averaging: target <- target + tau * (online - target)."""
        for targets, onlines in self.target_pairs:
            for target, online in zip(targets, onlines):
                target.lerp_(online, self.cfg.tau)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions of each member for its observations: (M, n, obs_dim) -> (M, n, act_dim)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.actor(obs_t).cpu().numpy()

    @torch.no_grad()
    def diagnostics(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, list[float]]:
        """Per member: Q1 on dataset pairs and on the policy's actions, and the BC distance, on a fixed sample."""
        pi = self.actor(obs)
        return {"dataset_q": self.critic.q1(obs, actions).mean(dim=1).tolist(),
                "policy_q": self.critic.q1(obs, pi).mean(dim=1).tolist(),
                "bc_distance": ((pi - actions) ** 2).sum(dim=2).mean(dim=1).tolist()}

    def state_dicts(self) -> list[dict]:
        """Each member's state, to continue its training exactly: its slice of every tensor, and its generator."""
        full = {name: getattr(self, name).state_dict() for name in self.MODULES}
        full["log_cql_alpha"] = self.log_cql_alpha.detach()
        return [{"agent": map_tensors(full, fn=lambda t: member_slice(t, self.members, m)), "updates": self.updates,
                 "generator": g.get_state()} for m, g in enumerate(self.generators)]

    def actor_state_dict(self, m: int) -> dict:
        """Member m's actor weights alone (actor.pt): the policy of one run, as networks.Actor with M = 1."""
        return map_tensors(self.actor.state_dict(), fn=lambda t: member_slice(t, self.members, m))

    def load_state_dicts(self, states: list[dict]) -> None:
        """Inverse of state_dicts(): member m from states[m]."""
        if len({int(s["updates"]) for s in states}) != 1:
            raise ValueError("the members' checkpoints are at different updates; resume them apart")
        full = map_tensors(*[s["agent"] for s in states], fn=join_members)
        for name in self.MODULES:
            getattr(self, name).load_state_dict(full[name])
        with torch.no_grad():
            self.log_cql_alpha.copy_(full["log_cql_alpha"])
        for g, state in zip(self.generators, states):
            g.set_state(state["generator"])
        self.updates = int(states[0]["updates"])


def member_slice(t: torch.Tensor, members: int, m: int) -> torch.Tensor:
    """Member m's part of a stacked tensor: leading axis (c * M) laid out as (c, M); a 0-d tensor is shared."""
    return t.clone() if t.dim() == 0 else t.unflatten(0, (-1, members))[:, m].clone()


def join_members(*slices: torch.Tensor) -> torch.Tensor:
    """Inverse of member_slice over all members: M slices (c, ...) -> (c * M, ...)."""
    return slices[0] if slices[0].dim() == 0 else torch.stack(slices, dim=1).flatten(0, 1)


def map_tensors(*trees, fn):
    """fn applied leaf-wise to the tensors of nested dicts/lists of the same structure; other leaves from trees[0]."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: map_tensors(*(t[key] for t in trees), fn=fn) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(map_tensors(*items, fn=fn) for items in zip(*trees))
    return fn(*trees) if isinstance(first, torch.Tensor) else first
