"""bench.py's roofline rests on its FLOP count (checked against a count by hand) and on its
matmul calls computing the products they stand for."""
import pytest
import torch

import networks
from bench import flops, matmul_kernels, roofline_calls, update_matmuls
from td3_agent import TD3Config

B = 256


def dense(rows: int, sizes: list[int]) -> int:
    """FLOPs of one pass of matmuls through an MLP: 2 * rows * sum(fan_in * fan_out)."""
    return 2 * rows * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


@pytest.mark.parametrize("cql_alpha, rows", [(0.0, B), (5.0, B * 11)])
def test_update_flops_match_a_hand_count(cql_alpha, rows):
    actor, critic = [11, 256, 256, 3], [14, 256, 256, 1]
    # Every update: mu'(s') and both Q' forward; both Q on `rows` pairs (the batch, plus 10
    # uniform actions per state with CQL): forward, weight gradients of every layer, input
    # gradients of layers 2 and 3 (the first layer's input is data).
    critic_step = (dense(B, actor) + 2 * dense(B, critic)
                   + 2 * (2 * dense(rows, critic) + dense(rows, critic[1:])))
    # Actor step: mu(s) forward, weight gradients, input gradients of layers 2-3; Q1(s, mu(s))
    # forward and input gradients of every layer (dQ/da reaches the actor through layer 1).
    actor_step = 2 * dense(B, actor) + dense(B, actor[1:]) + 2 * dense(B, critic)
    every, delayed = update_matmuls(TD3Config(cql_alpha=cql_alpha), B, obs_dim=11, act_dim=3)
    assert flops(every) == critic_step
    assert flops(delayed) == actor_step
    if cql_alpha == 0:
        assert flops(every) + flops(delayed) / 2 == 403_767_296  # the 0.404 GFLOP bench.py prints


def test_roofline_calls_compute_the_products_they_stand_for():
    shapes = [(32, 14, 16), (32, 16, 16), (16, 32, 1), (32, 16, 16)]
    for (m, k, n), kernels in ((shape, matmul_kernels(*shape)) for shape in shapes):
        assert set(kernels) == ({"torch.matmul", "oneDNN"} if networks.ONEDNN else {"torch.matmul"})
        products = [call() for call in kernels.values()]
        for product in products:
            assert product.shape == (m, n)
            torch.testing.assert_close(product, products[0])
    calls = roofline_calls(shapes)
    for kind in ("fastest", "torch.matmul"):
        assert [tuple(call().shape) for call in calls[kind]] == [(m, n) for m, _, n in shapes]
