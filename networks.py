"""The networks (actor, twin critics, state value), and the member plumbing. No losses live here.

The member axis: a group of M independent runs (seeds, or values of a sweep) trains in one process.
Every tensor is laid out member-first: inputs (M, B, features), outputs (M, B, ...), weights
(M, in, out). A layer is then one batched matmul (torch.baddbmm) for all members where M processes
would each make a small one: at the homework's sizes an update costs mostly per-operation overhead,
not arithmetic, so M members cost much less than M runs. Losses reduce over the trailing (batch)
axis and so stay one value per member, (M,); a step minimises their sum, whose gradient for member
m's weights is member m's own loss's gradient. Slice m only ever meets member m's inputs, so
members share no gradients; with Adam, which is element-wise, each trains exactly as if alone.
A single run is M = 1. `Members` (below) holds the rest of what M runs need: a random generator
per member, per-member values (td3_agent.MemberWeights), and checkpoints cut into one file per member.
"""
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class StackedMLP(nn.Module):
    """K independent MLPs (Linear[-LayerNorm]-ReLU layers, a plain linear output), side by side.

    `activation` replaces ReLU (the dynamics ensemble uses SiLU, as MOPO does).
    (K, B, in) -> (K, B, out). Each layer is initialised as nn.Linear is, U(-1/sqrt(in), 1/sqrt(in)),
    MLP k drawing from generators[k // (K / len(generators))]: a member's MLPs (its two critics)
    are consecutive and come from its generator alone, in the same order whatever the other members.
    """

    def __init__(self, k: int, sizes: list[int], generators: list[torch.Generator], layernorm: bool = False,
                 activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu):
        super().__init__()
        self.activation = activation
        per_member = k // len(generators)
        gens = [generators[i // per_member] for i in range(k)]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(uniform(gens, (fan_in, fan_out), bound)))  # (K, in, out)
            self.biases.append(nn.Parameter(uniform(gens, (1, fan_out), bound)))  # (K, 1, out)
        # LayerNorm's gain and shift of each hidden layer, per MLP: (K, 1, width)
        self.norm_gains = nn.ParameterList(nn.Parameter(torch.ones(k, 1, w)) for w in sizes[1:-1]) if layernorm else []
        self.norm_shifts = nn.ParameterList(nn.Parameter(torch.zeros(k, 1, w)) for w in sizes[1:-1]) if layernorm else []

    def forward(self, x: torch.Tensor, every: int = 1) -> torch.Tensor:
        """(K, B, in) -> (K, B, out); with every=n only MLPs 0, n, 2n, ..., on x of shape (K / n, B, in)."""
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias[::every], x, weight[::every])  # bias + x @ weight, per MLP
            if i < last:
                if self.norm_gains:
                    x = F.layer_norm(x, x.shape[-1:]) * self.norm_gains[i][::every] + self.norm_shifts[i][::every]
                x = self.activation(x)
        return x


def uniform(generators: list[torch.Generator], shape: tuple[int, ...], bound: float) -> torch.Tensor:
    """U(-bound, bound) of `shape` from each generator in turn, stacked: (len(generators), *shape)."""
    return torch.stack([(2 * torch.rand(shape, generator=g, device=g.device) - 1) * bound for g in generators])


class Actor(nn.Module):
    """Deterministic policies mu(s) of M members: MLPs squashed by tanh and scaled to [low, high].

    With no generators it is one policy (M = 1), e.g. to load a run's actor.pt (ReadMe.md).
    """

    def __init__(self, obs_dim: int, act_dim: int, action_low: torch.Tensor, action_high: torch.Tensor,
                 hidden: tuple[int, ...], generators: list[torch.Generator] | None = None):
        super().__init__()
        generators = generators or [torch.Generator()]
        self.net = StackedMLP(len(generators), [obs_dim, *hidden, act_dim], generators)
        # plain tensors, not buffers: the state_dict holds only per-member weights (Members.state_dicts)
        self.action_scale = (torch.as_tensor(action_high) - torch.as_tensor(action_low)) / 2
        self.action_mid = (torch.as_tensor(action_high) + torch.as_tensor(action_low)) / 2

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(M, B, obs_dim) -> (M, B, act_dim); a one-member actor also takes (B, obs_dim) or one (obs_dim,)."""
        if obs.dim() < 3:
            return self(obs.reshape(1, -1, obs.shape[-1]))[0].reshape(*obs.shape[:-1], -1)
        return self.action_mid + self.action_scale * torch.tanh(self.net(obs))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """forward() on NumPy observations, without gradient: what evaluation calls."""
        weight = self.net.weights[0]
        return self(torch.as_tensor(obs, dtype=weight.dtype, device=weight.device)).cpu().numpy()


class TwinCritic(nn.Module):
    """Both TD3 critics Q1, Q2 of M members: 2M independent MLPs of (s, a), member m's at 2m and 2m + 1."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], generators: list[torch.Generator],
                 layernorm: bool = False):
        super().__init__()
        self.net = StackedMLP(2 * len(generators), [obs_dim + act_dim, *hidden, 1], generators, layernorm)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q1 and Q2 of each member's pairs: (M, B, obs_dim), (M, B, act_dim) -> two (M, B)."""
        x = torch.cat([obs, actions], dim=-1)
        x = x.repeat_interleave(2, dim=0)  # (2M, B, in): each member's pairs for its Q1, then its Q2
        q = self.net(x).view(-1, 2, x.shape[1])  # (M, 2, B)
        return q[:, 0], q[:, 1]

    def q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 alone (the actor's loss): (M, B, obs_dim), (M, B, act_dim) -> (M, B)."""
        return self.net(torch.cat([obs, actions], dim=-1), every=2).squeeze(-1)


class ValueNet(nn.Module):
    """State values V(s) of M members (IQL): (M, B, obs_dim) -> (M, B)."""

    def __init__(self, obs_dim: int, hidden: tuple[int, ...], generators: list[torch.Generator]):
        super().__init__()
        self.net = StackedMLP(len(generators), [obs_dim, *hidden, 1], generators)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class Members:
    """The member plumbing: each member's random generator, its own values of the config, its checkpoint.

    Member m is one run: its seed drives its initial weights, batches and noise alone, so it learns
    what it would learn trained alone.
    """

    def __init__(self, seeds: list[int], device: torch.device):
        self.count, self.device = len(seeds), device
        self.generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]

    def values(self, values: list[float]) -> torch.Tensor:
        """One value per member as an (M,) tensor on the device."""
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """(M, *shape) draws of U(0, 1): member m's slice from member m's generator."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])

    def randn(self, *shape: int) -> torch.Tensor:
        """(M, *shape) draws of N(0, 1): member m's slice from member m's generator."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.generators])

    def state_dicts(self, agent) -> list[dict]:
        """Each member's state, to continue its training exactly: its slice of every tensor in agent.MODULES
        (networks, optimizers, lone tensors), its generator, and the agent's update count."""
        full = {name: self.full_state(getattr(agent, name)) for name in agent.MODULES}
        return [{"agent": map_tensors(full, fn=lambda t: self.slice(t, m)), "updates": agent.updates,
                 "generator": g.get_state()} for m, g in enumerate(self.generators)]

    def load_state_dicts(self, agent, states: list[dict]) -> None:
        """Inverse of state_dicts(): member m of the agent from states[m]."""
        if len({int(s["updates"]) for s in states}) != 1:
            raise ValueError("the members' checkpoints are at different updates; resume them apart")
        full = map_tensors(*[s["agent"] for s in states], fn=join_members)
        for name in agent.MODULES:
            part = getattr(agent, name)
            if isinstance(part, torch.Tensor):
                with torch.no_grad():
                    part.copy_(full[name])
            else:
                part.load_state_dict(full[name])
        for g, state in zip(self.generators, states):
            g.set_state(state["generator"])
        agent.updates = int(states[0]["updates"])

    def member_state(self, module: nn.Module, m: int) -> dict:
        """Member m's weights of a stacked module: actor.pt, which loads into a one-member Actor (ReadMe.md)."""
        return map_tensors(module.state_dict(), fn=lambda t: self.slice(t, m))

    @staticmethod
    def full_state(part) -> dict | torch.Tensor:
        """A module's or optimizer's state_dict(), or a lone tensor itself."""
        return part.detach() if isinstance(part, torch.Tensor) else part.state_dict()

    def slice(self, t: torch.Tensor, m: int) -> torch.Tensor:
        """Member m's part of a stacked tensor, leading axis (M * c) member-first; a 0-d tensor is shared."""
        return t.clone() if t.dim() == 0 else t.unflatten(0, (self.count, -1))[m].clone()


def join_members(*slices: torch.Tensor) -> torch.Tensor:
    """Inverse of Members.slice over all members: M slices (c, ...) -> (M * c, ...)."""
    return slices[0] if slices[0].dim() == 0 else torch.cat(slices)


def map_tensors(*trees, fn):
    """fn applied leaf-wise to the tensors of nested dicts/lists of the same structure; other leaves from trees[0]."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: map_tensors(*(t[key] for t in trees), fn=fn) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(map_tensors(*items, fn=fn) for items in zip(*trees))
    return fn(*trees) if isinstance(first, torch.Tensor) else first
