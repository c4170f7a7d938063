"""Actor and twin-critic MLPs: plain nn.Linear + ReLU layers. No training logic lives here."""
import torch
from torch import nn


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear-ReLU layers of the given widths, ending in a plain linear layer."""
    sizes = [in_dim, *hidden]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out_dim))


class Actor(nn.Module):
    """Deterministic policy mu(s): an MLP squashed by tanh and scaled to [low, high]."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: torch.Tensor,
                 action_high: torch.Tensor, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.register_buffer("action_scale", (action_high - action_low) / 2)
        self.register_buffer("action_mid", (action_high + action_low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_mid + self.action_scale * torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """Both TD3 critics Q1, Q2: two independent MLPs of (s, a)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.q1_net = mlp(obs_dim + act_dim, hidden, 1)
        self.q2_net = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 and Q2 of a batch of pairs: (B, obs_dim), (B, act_dim) -> (2, B)."""
        x = torch.cat([obs, actions], dim=-1)
        return torch.stack([self.q1_net(x).squeeze(-1), self.q2_net(x).squeeze(-1)])

    def q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 alone (used by the actor loss): (B, obs_dim), (B, act_dim) -> (B,)."""
        return self.q1_net(torch.cat([obs, actions], dim=-1)).squeeze(-1)
