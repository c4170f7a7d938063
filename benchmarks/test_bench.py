"""bench.py's roofline rests on its FLOP count (checked against a count by hand) and on its
matmul calls computing the products they stand for; --against imports an older commit beside
this tree."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import networks
import td3_agent
from bench import bench_against, flops, load_revision, matmul_kernels, roofline_calls, update_matmuls
from td3_agent import TD3Config
from utils import dataset_to_buffer

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


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
in_git = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True).returncode == 0
needs_git = pytest.mark.skipif(not in_git, reason="--against reads git history: not a git checkout")


@needs_git
def test_load_revision_imports_that_commit_beside_this_tree():
    old = load_revision("HEAD")
    assert old is not td3_agent and old.Actor is not networks.Actor  # its own networks.py under it
    assert not old.__file__.startswith(REPO)
    assert sys.modules["td3_agent"] is td3_agent and sys.modules["networks"] is networks  # ours are back
    agent = old.TD3Agent(11, 3, -np.ones(3), np.ones(3), old.TD3Config(hidden=(8, 8)), torch.device("cpu"))
    metrics = agent.update(torch.randn(4, 11), torch.zeros(4, 3), torch.ones(4), torch.randn(4, 11), torch.ones(4))
    assert torch.isfinite(metrics["critic_loss"])


@needs_git
def test_bench_against_prints_a_speed_ratio_per_method(tiny_dataset, capsys):
    buffer = dataset_to_buffer(tiny_dataset, torch.device("cpu"))
    lines = bench_against(load_revision("HEAD"), "HEAD", buffer, -np.ones(3), np.ones(3), batch=16, rounds=2, steps=2)
    assert [line.split()[0] for line in lines] == ["td3", "td3_bc", "cql"]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and all(line.startswith("against HEAD: ") and "x as fast (quartiles" in line
                                     for line in printed)


@needs_git
def test_against_an_unknown_revision_is_a_one_line_error():
    run = subprocess.run([sys.executable, os.path.join(REPO, "bench.py"), "--against", "no-such-rev"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1].startswith("bench.py: error: --against 'no-such-rev': git cannot show")
    assert "Traceback" not in run.stderr
