"""Actor and twin-critic MLPs. No training logic lives here.

Why the MLP has its own backward: on CPU, torch's float32 matmul calls MKL, and on the AMD
CPUs here MKL runs at about half the speed of oneDNN, the other matrix library inside torch
(measured by bench.py's roofline). oneDNN's matmul is only reachable through an op that
autograd cannot differentiate, so on CPU `MLP` runs forward and backward itself in
`MLPFunction`. It computes exactly what nn.Linear + ReLU layers would: a test checks its
gradients against plain autograd. Elsewhere (GPU) the MLP is plain nn.Linear + ReLU layers.
"""
from collections.abc import Sequence

import torch
from torch import nn

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  relu: bool = False) -> torch.Tensor:
    """x @ weight^T (+ bias), then ReLU if asked, as one oneDNN call."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


def mlp_forward(x: torch.Tensor, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The MLP's output y, and h_0 .. h_{L-1}, the input of each layer (see MLPFunction)."""
    weights, biases = params[0::2], params[1::2]
    h = [x.contiguous()]
    for weight, bias in zip(weights[:-1], biases[:-1]):
        h.append(onednn_linear(h[-1], weight, bias, relu=True))
    return torch.addmm(biases[-1], h[-1], weights[-1].t()), h


class MLPFunction(torch.autograd.Function):
    """Forward and backward of an MLP with ReLU hidden layers and a linear output layer.

    Layers i = 0 .. L-1 with weights W_i (out, in) and biases b_i; h_0 = x.
    Forward:    h_{i+1} = relu(h_i W_i^T + b_i) for the hidden layers,   y = h_{L-1} W_{L-1}^T + b_{L-1}
    Backward, from g = dLoss/dy (backpropagation):
        output layer:   dW_{L-1} = g^T h_{L-1},   db_{L-1} = sum over rows of g,   g <- g W_{L-1}
        hidden layers, i = L-2 .. 0:
            g <- g * [h_{i+1} > 0],   dW_i = g^T h_i,   db_i = sum over rows of g,   g <- g W_i
    The last g is dLoss/dx. The hidden layers' matmuls run on oneDNN; the output layer's on
    torch.mm: with one or three output units (Q, or the action) MKL is the faster one there.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        y, h = mlp_forward(x, params)
        ctx.save_for_backward(*h, *params[0::2])
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        h, weights = saved[:len(saved) // 2], saved[len(saved) // 2:]
        trained = ctx.needs_input_grad[1::2]  # per layer: do W_i, b_i need gradients? (no when frozen)
        grad_w, grad_b = [None] * len(weights), [None] * len(weights)
        g = g.contiguous()
        if trained[-1]:  # output layer
            grad_w[-1], grad_b[-1] = torch.mm(g.t(), h[-1]), g.sum(0)
        # g W; for one output unit an outer product, where a broadcast multiply skips BLAS's overhead
        g = g * weights[-1] if weights[-1].shape[0] == 1 else torch.mm(g, weights[-1])
        for i in reversed(range(len(weights) - 1)):  # hidden layers: h[i] -> h[i + 1]
            g = torch.ops.aten.threshold_backward(g, h[i + 1], 0)  # through the ReLU: g * [h > 0]
            if trained[i]:
                grad_w[i], grad_b[i] = weight_grad(g, h[i]), g.sum(0)
            g = onednn_linear(g, weights[i].t()) if i > 0 or ctx.needs_input_grad[0] else None  # g W
        return g, *(grad for pair in zip(grad_w, grad_b) for grad in pair)


def weight_grad(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """g^T h, the weight gradient of a layer with input h, on oneDNN.

    oneDNN's op needs its first operand contiguous, so one of g, h is copied transposed:
    the narrower one (for the first layer, whose input has 11 or 14 columns, that is h).
    """
    if h.shape[1] < g.shape[1]:
        return onednn_linear(h.t().contiguous(), g.t()).t().contiguous()  # (h^T g)^T
    return onednn_linear(g.t().contiguous(), h.t())


class MLP(nn.Module):
    """Linear-ReLU stack ending in a plain linear layer (nn.Linear layers, nn.Linear's init)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int):
        super().__init__()
        sizes = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(nn.Linear(fan_in, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
        # W_0, b_0, W_1, b_1, ...: the parameters themselves (updated in place), listed once
        self.flat_params = [p for layer in self.layers for p in (layer.weight, layer.bias)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if ONEDNN and x.is_cpu and x.dtype == torch.float32 and x.dim() == 2:
            if not torch.is_grad_enabled():  # target networks, evaluation: no graph to record
                return mlp_forward(x, self.flat_params)[0]
            return MLPFunction.apply(x, *self.flat_params)
        *hidden, output = self.layers
        for layer in hidden:
            x = torch.relu(layer(x))
        return output(x)


class Actor(nn.Module):
    """Deterministic policy mu(s): an MLP squashed by tanh and scaled to [low, high]."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: torch.Tensor,
                 action_high: torch.Tensor, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.net = MLP(obs_dim, hidden, act_dim)
        self.register_buffer("action_scale", (action_high - action_low) / 2)
        self.register_buffer("action_mid", (action_high + action_low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_mid + self.action_scale * torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """Both TD3 critics Q1, Q2: two independent MLPs of (s, a)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.q1_net = MLP(obs_dim + act_dim, hidden, 1)
        self.q2_net = MLP(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 and Q2 of a batch of pairs: (B, obs_dim), (B, act_dim) -> (2, B)."""
        x = torch.cat([obs, actions], dim=-1)
        return torch.stack([self.q1_net(x).squeeze(-1), self.q2_net(x).squeeze(-1)])

    def q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 alone (used by the actor loss): (B, obs_dim), (B, act_dim) -> (B,)."""
        return self.q1_net(torch.cat([obs, actions], dim=-1)).squeeze(-1)
