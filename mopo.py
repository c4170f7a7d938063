"""Model-based offline RL with an uncertainty reward penalty (MOPO, Yu et al., 2020), feeding the TD3 learner.

MOPO changes where a batch comes from, not the update step. Every `rollout_every` updates, each
member rolls its current actor out in the fitted dynamics model (dynamics.py) for h steps from
dataset states, and stores every model transition with its reward penalised by the model's own
uncertainty:

    r~(s, a) = r^(s, a) - lambda * u(s, a),   u = max_k ||sigma_k(s, a)||_2   (over all K members)

(MOPO's 'aleatoric' u; --penalty_kind disagreement takes u = max_k ||mu_k(s, a) - mean_j mu_j(s, a)||.)

A rollout stops where a real episode would: at a state the env's own termination rule calls
terminal (stored with not_done = 0, never stepped past). Each batch then holds `real_ratio` of
dataset transitions (its leading rows) and model transitions for the rest. MOPO's learner is
SAC; here it is this repo's TD3, whose update step is unchanged.
"""
from dataclasses import dataclass

import torch

from dynamics import ROLLOUTS, DynamicsEnsemble
from networks import Actor, Members
from td3_agent import TD3, hyper
from utils import ReplayBuffer, draw_rows

# The actor is deterministic; rollouts add TD3's exploration noise (std 0.1 of the action half-range)
# so that the critic also learns the value of actions near mu(s) in model states, as online TD3 does.
ROLLOUT_NOISE = 0.1


@dataclass
class MOPOConfig:
    """Model rollouts with a reward penalty (mopo.py): where the batches come from."""
    rollout_length: int = hyper(0, "h, steps of each model rollout; 0 = off (dataset batches only), 5 = MOPO's "
                                   "hopper value", low=0, agents=TD3)
    reward_penalty: float = hyper(1.0, "lambda in r~ = r - lambda * u(s, a), u = max_k ||sigma_k(s, a)||; MOPO: "
                                       "5 (hopper-medium), 1 (its medium-replay)", low=0, needs=ROLLOUTS, agents=TD3)
    penalty_kind: str = hyper("aleatoric", "u(s, a): 'aleatoric' = max_k ||sigma_k||, MOPO's; 'disagreement' = "
                                           "max_k ||mu_k - mean_j mu_j||, the ensemble's spread (ReadMe.md: why both)",
                              choices=("aleatoric", "disagreement"), needs=ROLLOUTS, agents=TD3)
    real_ratio: float = hyper(0.05, "share of each batch drawn from the dataset, the rest from the model buffer; "
                                    "MOPO's value", above=0, below=1, needs=ROLLOUTS, agents=TD3)
    rollout_every: int = hyper(1000, "updates between rollout rounds; MOPO's value", low=1, needs=ROLLOUTS,
                               agents=TD3)
    rollout_starts: int = hyper(5000, "dataset states each round starts a rollout from, per run (MOPO: 50,000; "
                                      "scaled to a CPU: benchmarks/speed.md)", low=1, needs=ROLLOUTS, agents=TD3)
    model_rounds_kept: int = hyper(5, "rounds of rollouts the model buffer keeps, oldest dropped first; MOPO's "
                                      "value", low=1, needs=ROLLOUTS, agents=TD3)


def uncertainty(mean: torch.Tensor, std: torch.Tensor, kind: str) -> torch.Tensor:
    """u(s, a) from all K members' Gaussians, (K, N, obs_dim + 1) each -> (N,): 'aleatoric', the largest norm of a
    member's predicted std (MOPO's), or 'disagreement', the largest distance of a member's mean from their mean."""
    if kind == "aleatoric":
        return std.norm(dim=-1).amax(dim=0)
    return (mean - mean.mean(dim=0)).norm(dim=-1).amax(dim=0)


@torch.no_grad()
def model_step(model: DynamicsEnsemble, obs: torch.Tensor, actions: torch.Tensor, elite_draw: torch.Tensor,
               noise: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One model step of N rows: (next_obs, reward r^, uncertainty u), each (N, ...).

    obs (N, obs_dim), actions (N, act_dim); elite_draw (N,) in [0, 1) picks the row's elite, and
    noise (N, obs_dim + 1) ~ N(0, 1) samples that elite's Gaussian over (next_obs - obs, reward).
    """
    mean, logvar = model(obs[None], actions[None])  # (K, N, obs_dim + 1)
    std = (logvar / 2).exp()
    member = model.elites[(elite_draw * len(model.elites)).long()]  # (N,)
    rows = torch.arange(obs.shape[0], device=obs.device)
    y = mean[member, rows] + std[member, rows] * noise
    return obs + y[:, :model.obs_dim], y[:, model.obs_dim], uncertainty(mean, std, kind)


def real_rows(real_ratio: float, batch_size: int) -> int:
    """Dataset rows per batch: real_ratio of the batch, to the nearest row (halves up)."""
    return int(real_ratio * batch_size + 0.5)


class ModelRollouts:
    """Each member's model buffer (a ring of rows laid out as ReplayBuffer's), filled by rollouts; mixed batches.

    Member m's rollouts start from states its own generator draws, follow its own actor and step
    through elites its generator picks: it gets the data it would get trained alone.
    """

    # the latest round's figures, logged beside every update's metrics (train.csv)
    METRICS = ("model_penalty", "model_reward", "model_reward_penalised", "rollout_length", "rollout_terminated")

    def __init__(self, model: DynamicsEnsemble, terminal, cfg: MOPOConfig, buffer: ReplayBuffer,
                 members: Members, batch_size: int):
        self.model, self.terminal, self.cfg, self.buffer, self.members = model, terminal, cfg, buffer, members
        self.real_rows = real_rows(cfg.real_ratio, batch_size)  # the batch's leading rows; the rest are the model's
        self.model_rows = batch_size - self.real_rows
        capacity = cfg.model_rounds_kept * cfg.rollout_starts * cfg.rollout_length
        self.data = torch.zeros(members.count, capacity, buffer.data.shape[1], device=buffer.data.device)
        self.size = [0] * members.count  # rows held, per member
        self.next = [0] * members.count  # where the next row goes (the oldest row, once full)
        self.last = {}  # the latest round's figures, (M,) each: logged with every update until the next round

    @torch.no_grad()
    def rollout(self, actor: Actor) -> None:
        """One round: h steps from rollout_starts dataset states per member; store every transition taken."""
        cfg, members, model = self.cfg, self.members, self.model
        obs = self.buffer.sample(cfg.rollout_starts, members.generators)[0]  # (M, S, obs_dim)
        m, s, obs_dim = obs.shape
        alive = torch.ones(m, s, dtype=torch.bool, device=obs.device)  # not yet terminal
        steps = torch.zeros(m, s, device=obs.device)
        penalty, reward = torch.zeros(m, device=obs.device), torch.zeros(m, device=obs.device)
        for _ in range(cfg.rollout_length):
            noise = (members.randn(s, actor.action_scale.shape[0]) * ROLLOUT_NOISE * actor.action_scale)
            actions = (actor(obs) + noise).clamp(actor.action_mid - actor.action_scale,
                                                 actor.action_mid + actor.action_scale)
            draws, eps = members.rand(s), members.randn(s, obs_dim + 1)  # elite choice and sample, per row
            next_obs, r, u = (t.view(m, s, *t.shape[1:]) for t in model_step(
                model, obs.flatten(0, 1), actions.flatten(0, 1), draws.flatten(), eps.flatten(0, 1), cfg.penalty_kind))
            done = self.terminal(next_obs)
            rows = torch.cat([obs, actions, (r - cfg.reward_penalty * u)[..., None], next_obs,
                              (~done).float()[..., None]], dim=-1)  # the buffer's layout, the reward penalised
            for k in range(m):
                self.store(k, rows[k][alive[k]])
            penalty += (u * alive).sum(-1)
            reward += (r * alive).sum(-1)
            steps += alive
            alive &= ~done
            obs = next_obs
        taken = steps.sum(-1).clamp(min=1)
        penalised = (reward - cfg.reward_penalty * penalty) / taken
        self.last = dict(zip(self.METRICS, (penalty / taken, reward / taken, penalised, steps.mean(-1),
                                            (~alive).float().mean(-1))))

    def store(self, k: int, rows: torch.Tensor) -> None:
        """Append rows to member k's ring, the oldest overwritten once it is full."""
        capacity = self.data.shape[1]
        for row in rows.split(capacity):  # more rows than the ring holds: only the last capacity survive
            first = min(len(row), capacity - self.next[k])
            self.data[k, self.next[k]:self.next[k] + first] = row[:first]
            self.data[k, :len(row) - first] = row[first:]
            self.next[k] = (self.next[k] + len(row)) % capacity
            self.size[k] = min(self.size[k] + len(row), capacity)

    def sample(self, generators: list[torch.Generator]) -> tuple[torch.Tensor, ...]:
        """One batch per member: real_rows dataset transitions, then model_rows model ones; ReplayBuffer.split's
        tensors, (M, B, ...)."""
        real = draw_rows(len(self.buffer), self.real_rows, generators)  # (M, real_rows)
        fake = torch.cat([draw_rows(size, self.model_rows, [g]) for size, g in zip(self.size, generators)])
        rows = torch.cat([self.buffer.data[real], torch.gather(self.data, 1, fake[..., None].expand(
            -1, -1, self.data.shape[-1]))], dim=1)
        return self.buffer.split(rows)

    def state(self, k: int) -> dict:
        """Member k's model buffer and last round's figures, for its checkpoint (resume continues exactly)."""
        return {"rows": self.data[k, :self.size[k]].clone(), "next": self.next[k],
                "last": {name: value[k].clone() for name, value in self.last.items()}}

    def load(self, k: int, state: dict) -> None:
        """Inverse of state(): member k's buffer from its checkpoint."""
        rows = state["rows"]
        if rows.dim() != 2 or rows.shape[1] != self.data.shape[2] or len(rows) > self.data.shape[1] or \
                not 0 <= int(state["next"]) < max(self.data.shape[1], 1):
            raise ValueError("its model buffer does not fit this run's settings")
        self.data[k, :len(rows)] = rows.to(self.data.device)
        self.size[k], self.next[k] = len(rows), int(state["next"])
        for name, value in state["last"].items():
            self.last.setdefault(name, torch.zeros(self.members.count, device=self.data.device))[k] = value
