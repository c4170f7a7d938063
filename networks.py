"""Actor and twin-critic MLPs of M members side by side. No training logic lives here.

The member axis: a group of M independent runs (seeds, or values of a sweep) trains in one process.
Every weight has a leading axis with one slice per network, inputs are (M, B, features) and outputs
(M, B, ...). A layer is then one batched matmul (torch.baddbmm) for all members where M processes
would each make a small one: at the homework's sizes an update costs mostly per-operation overhead,
not arithmetic, so M members cost much less than M runs. Slice m only ever meets member m's inputs,
so members share no gradients; with Adam, which is element-wise, each trains exactly as if alone.
A single run is M = 1.
"""
import math

import torch
from torch import nn


class StackedMLP(nn.Module):
    """K independent MLPs (Linear-ReLU layers, a plain linear output) applied side by side.

    (K, B, in) -> (K, B, out). Each layer is initialised as nn.Linear is, U(-1/sqrt(in), 1/sqrt(in)),
    MLP k drawing from generators[k % len(generators)]: member m's networks come from member m's
    generator alone, in the same order whatever the other members are.
    """

    def __init__(self, k: int, sizes: list[int], generators: list[torch.Generator]):
        super().__init__()
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(fan_in)
            gens = [generators[i % len(generators)] for i in range(k)]
            self.weights.append(nn.Parameter(uniform(gens, (fan_in, fan_out), bound)))  # (K, in, out)
            self.biases.append(nn.Parameter(uniform(gens, (1, fan_out), bound)))  # (K, 1, out)

    def forward(self, x: torch.Tensor, first: int | None = None) -> torch.Tensor:
        """(K, B, in) -> (K, B, out); with first=n, only MLPs 0..n-1, on x of shape (n, B, in)."""
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias[:first], x, weight[:first])  # bias + x @ weight, per MLP
            if i < last:
                x = torch.relu(x)
        return x


def uniform(generators: list[torch.Generator], shape: tuple[int, ...], bound: float) -> torch.Tensor:
    """U(-bound, bound) of `shape` from each generator in turn, stacked: (len(generators), *shape)."""
    return torch.stack([(2 * torch.rand(shape, generator=g, device=g.device) - 1) * bound for g in generators])


class Actor(nn.Module):
    """Deterministic policies mu(s) of M members: MLPs squashed by tanh and scaled to [low, high]."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: torch.Tensor, action_high: torch.Tensor,
                 hidden: tuple[int, ...], generators: list[torch.Generator]):
        super().__init__()
        self.net = StackedMLP(len(generators), [obs_dim, *hidden, act_dim], generators)
        # plain tensors, not buffers: the state_dict holds only per-member weights (td3_agent.member_slice)
        self.action_scale = (action_high - action_low) / 2
        self.action_mid = (action_high + action_low) / 2

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(M, B, obs_dim) -> (M, B, act_dim)."""
        return self.action_mid + self.action_scale * torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """Both TD3 critics Q1, Q2 of M members: 2M independent MLPs of (s, a), all Q1s first."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], generators: list[torch.Generator]):
        super().__init__()
        self.members = len(generators)
        self.net = StackedMLP(2 * self.members, [obs_dim + act_dim, *hidden, 1], generators)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 and Q2 of each member's pairs: (M, B, obs_dim), (M, B, act_dim) -> (2, M, B)."""
        x = torch.cat([obs, actions], dim=-1).repeat(2, 1, 1)  # (2M, B, in): every member's pairs, twice
        return self.net(x).view(2, self.members, -1)

    def q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 alone (used by the actor loss): (M, B, obs_dim), (M, B, act_dim) -> (M, B)."""
        return self.net(torch.cat([obs, actions], dim=-1), first=self.members).squeeze(-1)
