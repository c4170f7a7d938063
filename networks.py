"""Actor and twin-critic MLPs. No training logic lives here."""
import math

import torch
from torch import nn


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack ending in a plain linear layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Deterministic policy mu(s): an MLP squashed by tanh and scaled to [low, high]."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: torch.Tensor,
                 action_high: torch.Tensor, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.register_buffer("action_scale", (action_high - action_low) / 2)
        self.register_buffer("action_mid", (action_high + action_low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_mid + self.action_scale * torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """Both TD3 critics Q1, Q2 in one module.

    The two MLPs have the same shape, so their weights are stacked along a leading axis of
    size 2 and each hidden layer is one batched matmul (torch.baddbmm) instead of two small
    ones. Mathematically this is exactly two independent networks: head i only ever touches
    weights[i] and biases[i].
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            # Same initialisation as nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(2, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(2, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 and Q2 of a batch of pairs: (B, obs_dim), (B, act_dim) -> (2, B)."""
        *hidden, (w_out, b_out) = zip(self.weights, self.biases)  # w_out (2, hidden, 1), b_out (2, 1, 1)
        x = torch.cat([obs, actions], dim=-1).expand(2, -1, -1)  # (2, B, obs_dim + act_dim)
        for weight, bias in hidden:
            x = torch.relu_(torch.baddbmm(bias, x, weight))  # bias + x @ weight, per head: (2, B, hidden)
        # The output layer has one unit, so x @ w_out is each row's dot product with w_out.
        # Written that way because torch's CPU bmm is about 10x slower with one output column.
        return (x * w_out.transpose(1, 2)).sum(dim=-1) + b_out.squeeze(-1)  # (2, B)

    def q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 alone (used by the actor loss): (B, obs_dim), (B, act_dim) -> (B,)."""
        *hidden, (w_out, b_out) = zip(self.weights, self.biases)
        x = torch.cat([obs, actions], dim=-1)
        for weight, bias in hidden:
            x = torch.relu(torch.addmm(bias[0], x, weight[0]))  # head 0 only: plain matmuls
        return torch.addmm(b_out[0], x, w_out[0]).squeeze(-1)  # one head: mm is fast even with one column
