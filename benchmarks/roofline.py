"""The matrix products of one update step, counted and as plain torch.matmul calls: bench.py's roofline.

Counting them says what the update's arithmetic is; timing them alone (roofline_calls) says how
much of the update's time the matrix products themselves would take.
"""
from collections.abc import Callable
from functools import partial

import torch

from td3_agent import TD3Config

Shape = tuple[int, int, int]  # (M, K, N) of one (M, K) @ (K, N) product


def mlp_matmuls(rows: int, sizes: list[int], weight_grads: bool = False, input_grads: bool = False) -> list[Shape]:
    """The matmuls of an MLP's forward pass on `rows` rows, and of the backward pass autograd runs.

    Forward: h (rows, in) @ W^T (in, out). Backward: dW = g^T (out, rows) @ h (rows, in) for each
    trained layer; dh = g (rows, out) @ W (out, in) for every layer but the first, and for the
    first too when its input needs a gradient (the action mu(s) fed into Q1 in the actor step).
    """
    shapes = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append((rows, fan_in, fan_out))
        if weight_grads:
            shapes.append((fan_out, rows, fan_in))
        if (weight_grads or input_grads) and (i > 0 or input_grads):
            shapes.append((rows, fan_out, fan_in))
    return shapes


def update_matmuls(cfg: TD3Config, batch: int, obs_dim: int, act_dim: int) -> tuple[list[Shape], list[Shape]]:
    """The matmuls of every update, and those of the actor step (every policy_delay updates)."""
    actor, critic = [obs_dim, *cfg.hidden, act_dim], [obs_dim + act_dim, *cfg.hidden, 1]
    every = (mlp_matmuls(batch, actor) + 2 * mlp_matmuls(batch, critic)  # target: mu'(s'), Q'_1,2(s', a')
             + 2 * mlp_matmuls(batch, critic, weight_grads=True))        # Q_1,2(s, a)
    if cfg.cql_alpha > 0:
        sampled = cfg.cql_n_actions
        if not cfg.cql_uniform_only:
            sampled += 2
            every += mlp_matmuls(2 * batch, actor)                        # mu(s), mu(s'), no grad
        every += 2 * mlp_matmuls(sampled * batch, critic, weight_grads=True)  # Q_1,2 at the sampled actions
    actor_step = (mlp_matmuls(batch, actor, weight_grads=True)             # mu(s)
                  + mlp_matmuls(batch, critic, input_grads=True))         # Q1(s, mu(s)): dQ/da only
    return every, actor_step


def flops(shapes: list[Shape]) -> int:
    """2 * M * K * N per matmul (a multiply and an add per term)."""
    return sum(2 * m * k * n for m, k, n in shapes)


def update_gflop(cfg: TD3Config, batch: int, obs_dim: int, act_dim: int) -> float:
    """GFLOP of matmuls per update, the actor step counted 1/policy_delay."""
    every, actor_step = update_matmuls(cfg, batch, obs_dim, act_dim)
    return (flops(every) + flops(actor_step) / cfg.policy_delay) / 1e9


def roofline_calls(shapes: list[Shape]) -> list[Callable[[], torch.Tensor]]:
    """Each shape as a torch.matmul call on random operands (one pair per distinct shape)."""
    operands = {shape: (torch.randn(shape[0], shape[1]), torch.randn(shape[1], shape[2])) for shape in set(shapes)}
    return [partial(torch.matmul, *operands[shape]) for shape in shapes]
