"""The matrix products of one update step, counted and as plain torch.bmm calls: bench.py's roofline.

Counting them says what the update's arithmetic is; timing them alone (roofline_calls) says how
much of the update's time the matrix products themselves would take.

The networks stack their members (networks.StackedMLP): a layer is one batched product
(S, rows, in) x (S, in, out), S = M for the actors and IQL's value networks and 2M for the twin
critics (Q1 alone in TD3's actor step is every other one, M). So the FLOPs of an update grow as M.
LayerNorm (--critic_layernorm) adds no matrix product.
"""
from collections.abc import Callable
from functools import partial

import torch

from harness.config import RunConfig

Shape = tuple[int, int, int, int]  # (S, M, K, N): S products (M, K) @ (K, N) side by side, one torch.bmm


def mlp_matmuls(stack: int, rows: int, sizes: list[int], weight_grads: bool = False,
                input_grads: bool = False) -> list[Shape]:
    """The matmuls of `stack` stacked MLPs' forward pass on `rows` rows each, and of the backward autograd runs.

    Forward: h (rows, in) @ W (in, out). Backward: dW = h^T (in, rows) @ g (rows, out) for each
    trained layer; dh = g (rows, out) @ W^T (out, in) for every layer but the first, and for the
    first too when its input needs a gradient (the action mu(s) fed into Q1 in the actor step).
    """
    shapes = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append((stack, rows, fan_in, fan_out))
        if weight_grads:
            shapes.append((stack, fan_in, rows, fan_out))
        if (weight_grads or input_grads) and (i > 0 or input_grads):
            shapes.append((stack, rows, fan_out, fan_in))
    return shapes


def update_matmuls(run: RunConfig, batch: int, obs_dim: int, act_dim: int,
                   members: int = 1) -> tuple[list[Shape], list[Shape]]:
    """The matmuls of every update of `members` members, and those of an actor step (every actor_period updates)."""
    cfg = run.td3
    actor, value = [obs_dim, *cfg.hidden, act_dim], [obs_dim, *cfg.hidden, 1]
    critic = [obs_dim + act_dim, *cfg.hidden, 1]
    m, twins = members, 2 * members
    actor_fit = mlp_matmuls(m, batch, actor, weight_grads=True)                  # mu(s), trained
    if run.agent == "bc":
        return [], actor_fit
    if run.agent == "iql":
        every = (mlp_matmuls(twins, batch, critic) + mlp_matmuls(m, batch, value)  # target: Q'_1,2(s, a), V(s')
                 + mlp_matmuls(m, batch, value, weight_grads=True)                 # V(s)
                 + mlp_matmuls(twins, batch, critic, weight_grads=True))           # Q_1,2(s, a)
        return every, actor_fit
    every = (mlp_matmuls(m, batch, actor) + mlp_matmuls(twins, batch, critic)  # target: mu'(s'), Q'_1,2(s', a')
             + mlp_matmuls(twins, batch, critic, weight_grads=True))           # Q_1,2(s, a)
    if cfg.cql_alpha > 0:
        sampled = cfg.cql_n_actions
        if not cfg.cql_uniform_only:
            sampled += 2
            every += mlp_matmuls(m, 2 * batch, actor)                             # mu(s), mu(s'), no grad
        every += mlp_matmuls(twins, sampled * batch, critic, weight_grads=True)  # Q_1,2 at the sampled actions
    return every, actor_fit + mlp_matmuls(m, batch, critic, input_grads=True)   # Q1(s, mu(s)): dQ/da only


def actor_period(run: RunConfig) -> int:
    """Updates per actor step: TD3's policy_delay; BC and IQL step the actor at every update."""
    return run.td3.policy_delay if run.agent == "td3" else 1


def flops(shapes: list[Shape]) -> int:
    """2 * S * M * K * N per product (a multiply and an add per term)."""
    return sum(2 * s * m * k * n for s, m, k, n in shapes)


def update_gflop(run: RunConfig, batch: int, obs_dim: int, act_dim: int, members: int = 1) -> float:
    """GFLOP of matmuls per update of `members` members, the actor step counted 1/actor_period."""
    every, actor_step = update_matmuls(run, batch, obs_dim, act_dim, members)
    return (flops(every) + flops(actor_step) / actor_period(run)) / 1e9


def roofline_calls(shapes: list[Shape]) -> list[Callable[[], torch.Tensor]]:
    """Each shape as a torch.bmm call on random operands (one pair per distinct shape)."""
    operands = {shape: (torch.randn(shape[0], shape[1], shape[2]), torch.randn(shape[0], shape[2], shape[3]))
                for shape in set(shapes)}
    return [partial(torch.bmm, *operands[shape]) for shape in shapes]
