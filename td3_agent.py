"""Offline TD3 with optional behaviour-cloning (TD3+BC) and CQL terms.

The update step follows the equations in ReadMe.md, in their order:
target (no grad) -> critic TD loss -> CQL term -> critic step ->
(every `policy_delay` updates) actor: DDPG term, BC term -> actor step -> target networks.
Tensors carry a leading member axis (networks.py): obs is (M, B, obs_dim), each loss (M,), one
value per run; read them as one run's, with `.mean(-1)` the mean over the batch.
"""
import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from networks import Actor, Members, TwinCritic

if TYPE_CHECKING:  # behaviour_vae.py imports this file for its flags
    from behaviour_vae import BehaviourVAE


def hyper(default, help: str, **checks) -> field:
    """A hyper-parameter: a dataclass field whose help and bounds (low, high, above, below, also) its flag shows."""
    return field(default=default, metadata={"help": help, **checks})


TD3, CRITICS = ("td3",), ("td3", "iql")  # the agents a flag acts on (the others refuse it)


@dataclass
class TD3Config:
    """Hyper-parameters of learning: the update step, and the batch it is given.

    Each field is also a runner.py flag of the same name, in this order.
    """
    bc_weight: float | str = hyper(0.0, "alpha_reg on E||a - mu(s)||^2 in the actor loss; 0 = plain TD3, "
                                   "10 = Problem 1.3, 'auto' = TD3+BC's normalisation with --bc_alpha",
                                   low=0, also=("auto",), aliases=("alpha_reg",), agents=TD3)
    bc_alpha: float = hyper(2.5, "TD3+BC's alpha, used only with --bc_weight auto", above=0,
                            needs=("bc_weight", "auto"), agents=TD3)
    cql_alpha: float = hyper(0.0, "weight of the CQL penalty on each critic; 0 = off, 5 = Problem 2.1", low=0, agents=TD3)
    cql_n_actions: int = hyper(4, "uniform actions per state in the CQL logsumexp, besides mu(s) and mu(s'); "
                                  "the homework's value", low=1, needs=("cql_alpha", "> 0"), agents=TD3)
    cql_uniform_only: bool = hyper(False, "leave the policy's actions mu(s), mu(s') out of the CQL logsumexp: "
                                          "the handout's eq. 3, an ablation", needs=("cql_alpha", "> 0"), agents=TD3)
    cql_target_gap: float | None = hyper(None, "tune the CQL weight as a Lagrange multiplier alpha', starting at "
                                               "--cql_alpha, so that the penalty per critic settles at this gap",
                                         low=0, unset="off, a fixed --cql_alpha", needs=("cql_alpha", "> 0"), agents=TD3)
    cql_temp: float = hyper(1.0, "CQL temperature T", above=0, needs=("cql_alpha", "> 0"), agents=TD3)
    support_weight: float = hyper(0.0, "SPOT's lambda on the support term E[-log beta(mu(s) | s)] of the actor loss, "
                                       "beta the behaviour VAE's density (behaviour_vae.py), weighed against -Q1 / "
                                       "E|Q1| as SPOT does; 0 = off, 0.1 = SPOT's hopper-medium", low=0, agents=TD3)
    critic_layernorm: bool = hyper(False, "LayerNorm after each hidden layer of the critics (as ReBRAC and RLPD "
                                          "use it against over-estimation)", agents=TD3)
    batch_size: int = hyper(128, "transitions per update; the homework's value", low=1)
    hidden: tuple[int, ...] = hyper((128, 128), "hidden layer widths of actor and critics; 128 128 is the "
                                                "homework's, 256 256 the TD3+BC paper's", low=1)
    lr: float = hyper(3e-4, "Adam step size, actor and critic", above=0)
    gamma: float = hyper(0.99, "discount factor", low=0, below=1, agents=CRITICS)
    tau: float = hyper(0.005, "target-network Polyak rate", above=0, high=1, agents=CRITICS)
    policy_noise: float = hyper(0.2, "std of target-policy smoothing noise, in units of the action half-range",
                                low=0, agents=TD3)
    noise_clip: float = hyper(0.5, "clip of that noise, same units", low=0, agents=TD3)
    policy_delay: int = hyper(2, "critic updates per actor update", low=1, agents=TD3)


@dataclass
class MemberWeights:
    """The TD3Config fields that may differ between the members of one agent: plain weights in the losses, each
    member's loss weighed by its own. Every other field is shared by the members (member_key)."""
    bc_weight: torch.Tensor | None  # (M,) alpha_reg; None with 'auto' (all members'): bc_weight() computes it
    cql_alpha: torch.Tensor  # (M,) the CQL penalty's weight (with --cql_target_gap, the multiplier's start)
    support_weight: torch.Tensor  # (M,) SPOT's lambda on the support term


MEMBER_FIELDS = tuple(f.name for f in dataclasses.fields(MemberWeights))


def member_key(config: TD3Config) -> tuple:
    """What members of one agent must share: every field but MEMBER_FIELDS' values, and whether those are on."""
    shared = tuple(getattr(config, name) for name in TD3Config.__dataclass_fields__ if name not in MEMBER_FIELDS)
    return shared + (config.bc_weight == "auto", config.cql_alpha > 0, config.support_weight > 0)


def mse(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the batch (the last axis): one value per member."""
    return ((x - target) ** 2).mean(-1)


class TD3Agent:
    """Actor, twin critics, their target copies and optimizers (of M members, networks.py), and the update step."""

    # what a checkpoint holds (networks.Members.state_dicts): networks, optimizers, the Lagrangian CQL weight
    MODULES = ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt", "cql_alpha_opt",
               "log_cql_alpha")

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 configs: list[TD3Config], seeds: list[int], device: torch.device,
                 behaviour: "BehaviourVAE | None" = None, real_rows: int | None = None):
        """behaviour: the frozen behaviour VAE of the support term (with --support_weight); real_rows: how many
        leading rows of each batch are the dataset's (with model rollouts, mopo.py), None for all."""
        if len({member_key(c) for c in configs}) != 1:
            raise ValueError(f"members may differ only in {', '.join(MEMBER_FIELDS)} (and whether they are on)")
        self.members, self.device = Members(seeds, device), device
        self.cfg = cfg = configs[0]  # the fields the members share; their own weights are self.weights
        self.weights = MemberWeights(
            bc_weight=None if cfg.bc_weight == "auto" else self.members.values([c.bc_weight for c in configs]),
            cql_alpha=self.members.values([c.cql_alpha for c in configs]),
            support_weight=self.members.values([c.support_weight for c in configs]))
        self.uses_cql = configs[0].cql_alpha > 0
        self.low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        gens = self.members.generators
        self.actor = Actor(obs_dim, act_dim, self.low, self.high, cfg.hidden, gens).to(device)
        self.critic = TwinCritic(obs_dim, act_dim, cfg.hidden, gens, cfg.critic_layernorm).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # fused: Adam's element-wise update as one kernel per step (1.02-1.25x faster updates here)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        # One optimizer for both critics: Adam is per-parameter, so this is the same as two.
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, fused=True)
        # Lagrangian CQL: alpha' = exp(log_alpha') stays >= 0 whatever the ascent does.
        start = [math.log(c.cql_alpha) if c.cql_alpha > 0 else 0.0 for c in configs]
        self.log_cql_alpha = torch.nn.Parameter(self.members.values(start))
        self.cql_alpha_opt = torch.optim.Adam([self.log_cql_alpha], lr=cfg.lr)
        self.behaviour, self.real_rows = behaviour, real_rows
        self.updates = 0

    def update(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
               next_obs: torch.Tensor, not_done: torch.Tensor) -> dict[str, torch.Tensor]:
        """One gradient step on a batch; returns this step's named terms (the actor's only on actor steps).

        obs, next_obs: (M, B, obs_dim); actions: (M, B, act_dim); rewards, not_done: (M, B).
        """
        cfg = self.cfg
        self.updates += 1

        # Target: r + gamma * (1 - done) * min_i Q'_i(s', mu'(s') + clipped noise).
        with torch.no_grad():
            batch_size, act_dim = actions.shape[1:]
            noise = self.members.randn(batch_size, act_dim) * cfg.policy_noise  # (M, B, A): N(0, sigma^2) per member
            noise = noise.clamp(-cfg.noise_clip, cfg.noise_clip)
            next_actions = (self.actor_target(next_obs) + noise * self.actor.action_scale).clamp(self.low, self.high)
            target_q = rewards + cfg.gamma * not_done * torch.min(*self.critic_target(next_obs, next_actions))

        # Critic: TD loss of each critic, summed over the two, as in TD3.
        q1, q2 = self.critic(obs, actions)
        td_loss = mse(q1, target_q) + mse(q2, target_q)
        critic_loss = td_loss
        metrics = {"q1": q1.mean(-1), "q2": q2.mean(-1), "target_q": target_q.mean(-1), "td_loss": td_loss}
        if self.uses_cql:
            cql_penalty, cql_parts = self.cql_penalty(obs, next_obs, q1, q2)
            cql_alpha = self.cql_weight(cql_penalty)
            critic_loss = critic_loss + cql_alpha * cql_penalty
            metrics |= {"cql_penalty": cql_penalty} | cql_parts | {"cql_alpha": cql_alpha}
        step(self.critic_opt, critic_loss)
        metrics["critic_loss"] = critic_loss

        if self.updates % cfg.policy_delay == 0:
            metrics |= self.update_actor(obs, actions)
            self.update_targets()
        return {name: value.detach() for name, value in metrics.items()}

    def cql_penalty(self, obs: torch.Tensor, next_obs: torch.Tensor, q1: torch.Tensor,
                    q2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CQL(H) penalty, summed over both critics, and its parts for the logs.

        penalty_i = E_s[ T * logsumexp_j(Q_i(s, a_j) / T) - Q_i(s, a) ], the a_j being N actions
        drawn uniformly in the action box and the policy's own mu(s) and mu(s'), all at state s.
        Uniform actions probe the whole box; the policy's actions are where the actor will look
        next, and the TD target bootstraps from (almost) them, so Q must be pushed down there
        above all. They carry no gradient into the actor: the penalty trains the critics only.
        """
        cfg = self.cfg
        members, batch_size = obs.shape[:2]
        n, act_dim = cfg.cql_n_actions, self.low.shape[0]
        # the actions a_j at each state s of the batch, j = 1..J: N uniform in the box, then mu(s) and mu(s')
        sampled = [self.low + (self.high - self.low) * self.members.rand(n, batch_size, act_dim)]  # (M, N, B, A)
        if not cfg.cql_uniform_only:
            with torch.no_grad():  # one actor pass for s and s'
                mu_s, mu_next_s = self.actor(torch.cat([obs, next_obs], dim=1)).split(batch_size, dim=1)  # (M, B, A)
            sampled += [mu_s[:, None], mu_next_s[:, None]]  # (M, 1, B, A) each
        sampled = torch.cat(sampled, dim=1)  # (M, J, B, A)
        j = sampled.shape[1]
        # Q_i(s, a_j) for all j in one critic pass over J * B pairs: the batch's states once per a_j
        pairs_obs = obs.repeat(1, j, 1)  # (M, J * B, obs_dim): the batch's states, J times over
        pairs_actions = sampled.view(members, j * batch_size, act_dim)  # (M, J * B, A): block j is a_j for the batch
        q1_sampled, q2_sampled = (q.view(members, j, batch_size)  # (M, J, B) each
                                  for q in self.critic(pairs_obs, pairs_actions))
        logsumexp1 = cfg.cql_temp * torch.logsumexp(q1_sampled / cfg.cql_temp, dim=1)  # (M, B): over the a_j
        logsumexp2 = cfg.cql_temp * torch.logsumexp(q2_sampled / cfg.cql_temp, dim=1)
        penalty = (logsumexp1 - q1).mean(-1) + (logsumexp2 - q2).mean(-1)
        parts = {"cql_logsumexp": logsumexp1.mean(-1) + logsumexp2.mean(-1),
                 "cql_q_random": (q1_sampled[:, :n].mean((1, 2)) + q2_sampled[:, :n].mean((1, 2))) / 2}
        if not cfg.cql_uniform_only:  # a_{N+1} = mu(s)
            parts["cql_q_policy"] = (q1_sampled[:, n].mean(-1) + q2_sampled[:, n].mean(-1)) / 2
        parts["cql_q_data"] = (q1.mean(-1) + q2.mean(-1)) / 2
        return penalty, parts

    def cql_weight(self, cql_penalty: torch.Tensor) -> torch.Tensor:
        """The penalty's weight: --cql_alpha, or with --cql_target_gap the Lagrange multiplier alpha'.

        alpha' takes one gradient-ascent step on alpha' * (penalty per critic - gap): it grows
        while the penalty exceeds the gap and shrinks once it is below, so the penalty settles
        at the gap. Returns the weight before that step, with no gradient.
        """
        if self.cfg.cql_target_gap is None:
            return self.weights.cql_alpha
        alpha = self.log_cql_alpha.exp().clamp(max=1e6)
        step(self.cql_alpha_opt, -alpha * (cql_penalty.detach() / 2 - self.cfg.cql_target_gap))
        return alpha.detach()

    def update_actor(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actor step: maximise Q1(s, mu(s)) while staying near the data's actions."""
        pi = self.actor(obs)
        self.critic.requires_grad_(False)  # not trained here: its backward only passes dQ/da on
        q_pi = self.critic.q1(obs, pi)
        self.critic.requires_grad_(True)
        ddpg_loss = -q_pi.mean(-1)
        real = slice(self.real_rows)  # with model rollouts the batch's leading rows are the dataset's: BC imitates them
        bc_loss = ((pi[:, real] - actions[:, real]) ** 2).sum(-1).mean(-1)  # E ||a - mu(s)||^2
        bc_weight = self.bc_weight(q_pi)
        actor_loss = ddpg_loss + bc_weight * bc_loss
        metrics = {"ddpg_loss": ddpg_loss, "bc_loss": bc_loss, "bc_weight": bc_weight}
        if self.behaviour is not None:
            # SPOT: -log beta(mu(s) | s) by the frozen VAE's ELBO; its weight lambda * E|Q1| puts lambda on the
            # scale of SPOT's -Q1 / E|Q1|. Gradient reaches the actor through the VAE, never the VAE itself.
            support_loss = self.behaviour.neg_log_density(obs, pi, self.members.randn(*pi.shape[1:-1],
                                                                                      self.behaviour.latent)).mean(-1)
            support_weight = self.weights.support_weight * q_pi.abs().mean(-1).detach()
            actor_loss = actor_loss + support_weight * support_loss
            metrics |= {"support_loss": support_loss, "support_weight": support_weight}
        step(self.actor_opt, actor_loss)
        return metrics | {"actor_loss": actor_loss}

    def bc_weight(self, q_pi: torch.Tensor) -> torch.Tensor:
        """alpha_reg, fixed, or with "auto" TD3+BC's normalisation.

        TD3+BC minimises -lambda * Q + mean_dims (mu - a)^2 with lambda = alpha / mean|Q|.
        Dividing by lambda gives this repo's form -Q + w * ||mu - a||^2 with
        w = mean|Q| / (alpha * act_dim): the same minimiser, the loss scaled per batch.
        """
        if self.weights.bc_weight is not None:  # (M,) fixed weights
            return self.weights.bc_weight
        return q_pi.abs().mean(-1).detach() / (self.cfg.bc_alpha * self.low.shape[0])

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak averaging: target <- target + tau * (online - target)."""
        polyak(self.actor_target, self.actor, self.cfg.tau)
        polyak(self.critic_target, self.critic, self.cfg.tau)

    def diagnostics(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, list[float]]:
        """Per member: Q1 on dataset pairs and on the policy's actions, and the BC distance, on a fixed sample."""
        return critic_diagnostics(self.actor, self.critic, obs, actions)

    def metric_names(self) -> tuple[str, ...]:
        """Every name update() may return, in its order: train.csv's columns (the actor's come on actor steps only)."""
        cql = ("cql_penalty", "cql_logsumexp", "cql_q_random", *(() if self.cfg.cql_uniform_only else ("cql_q_policy",)),
               "cql_q_data", "cql_alpha") if self.uses_cql else ()
        support = ("support_loss", "support_weight") if self.behaviour is not None else ()
        return ("q1", "q2", "target_q", "td_loss", *cql, "critic_loss", "ddpg_loss", "bc_loss", "bc_weight", *support,
                "actor_loss")


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on the members' summed loss: member m's weights get member m's own gradient."""
    optimizer.zero_grad()
    loss.sum().backward()
    optimizer.step()


def polyak(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """target <- target + tau * (online - target), parameter by parameter."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)


@torch.no_grad()
def critic_diagnostics(actor: Actor, critic: TwinCritic, obs: torch.Tensor,
                       actions: torch.Tensor) -> dict[str, list[float]]:
    """Per member: Q1 on dataset pairs and on the policy's actions, and the BC distance, on a fixed sample."""
    pi = actor(obs)
    return {"dataset_q": critic.q1(obs, actions).mean(-1).tolist(), "policy_q": critic.q1(obs, pi).mean(-1).tolist(),
            "bc_distance": ((pi - actions) ** 2).sum(-1).mean(-1).tolist()}
