"""bench.py: its matmul count is the one torch counts in a real update of M members, its roofline
computes those products, it prints a row per method and M, BC's and IQL's ratios to TD3+BC and the
Results set's estimate, and --against reads its value as a git revision only and times each method
at M = 1 and 3."""
import importlib.util
import os
import re
import subprocess

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import bench
import estimate
import roofline
import timing
from utils import dataset_to_buffer

# The fixtures minari_root and tiny_dataset of tests/conftest.py, loaded by path under a name of
# their own: a benchmarks/conftest.py would take the module name `conftest`, which tests/ imports from.
_spec = importlib.util.spec_from_file_location("tests_conftest", os.path.join(bench.REPO, "tests", "conftest.py"))
_tests_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests_conftest)
minari_root, tiny_dataset = _tests_conftest.minari_root, _tests_conftest.tiny_dataset

in_git = subprocess.run(["git", "-C", bench.REPO, "rev-parse", "HEAD"], capture_output=True).returncode == 0
needs_git = pytest.mark.skipif(not in_git, reason="--against reads git history: not a git checkout")
TINY = ["--dataset", "test/hopper/tiny-v0", "--rounds", "1", "--batch_size", "16", "--hidden", "8", "8"]


def error_line(capsys, argv: list[str]) -> str:
    """The last stderr line of bench.py run with argv, which must exit with status 2."""
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_buffer_env(tmp_path_factory):
    """The tiny dataset's replay buffer and evaluation env, made once for the module's tests."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        dataset = _tests_conftest.write_dataset(root)
        return dataset_to_buffer(dataset, torch.device("cpu")), dataset.recover_environment(eval_env=True)


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("method", bench.METHODS)
def test_update_matmul_flops_are_the_ones_torch_counts_in_an_update(tiny_buffer_env, method, members):
    (buffer, env), batch, hidden = tiny_buffer_env, 32, (16, 8)
    agent, run = bench.build_agent((method, members), buffer, env, hidden), bench.method_run(method, hidden)
    update, period = timing.updater(agent, buffer, batch), roofline.actor_period(run)
    with FlopCounterMode(display=False) as counter:
        for _ in range(period):  # the last one steps the actor too
            update()
    every, actor_step = roofline.update_matmuls(run, batch, buffer.obs_dim, buffer.act_dim, members)
    assert counter.get_total_flops() == period * roofline.flops(every) + roofline.flops(actor_step)


def test_roofline_calls_compute_the_products_they_stand_for():
    shapes = [(2, 32, 14, 16), (6, 16, 32, 14), (2, 32, 16, 1), (2, 32, 14, 16)]
    calls = roofline.roofline_calls(shapes)
    with FlopCounterMode(display=False) as counter:
        products = [call() for call in calls]
    assert counter.get_total_flops() == roofline.flops(shapes)
    for call, product, (s, m, k, n) in zip(calls, products, shapes, strict=True):
        assert product.shape == (s, m, n)
        torch.testing.assert_close(product, call.args[0] @ call.args[1])


def test_evaluation_timing_counts_the_env_steps_the_episodes_took():
    env = gym.make("Hopper-v5")
    _, _, steps = estimate.evaluate_once(lambda obs: np.ones(obs.shape[:2] + (3,)), 2, env)
    expected = 0
    for seed in [m + i for m in range(2) for i in range(estimate.EVAL_EPISODES)]:  # evaluate's seeds
        copy, done = gym.make(env.spec), False
        copy.reset(seed=seed)
        while not done:
            _, _, terminated, truncated, _ = copy.step(np.ones(3))
            expected, done = expected + 1, terminated or truncated
    assert steps == expected


def test_benchmark_prints_a_row_per_method_and_members_the_target_ratios_and_the_estimate(tiny_dataset, capsys):
    assert bench.main([*TINY, "--threads", "1", "--members", "1", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [row for row in map(str.split, out) if len(row) > 1 and row[0] in bench.METHODS and row[1].isdigit()]
    assert [(row[0], int(row[1])) for row in rows] == [(m, n) for m in bench.METHODS for n in (1, 2)]
    assert {"bc", "iql", "td3_ln"} <= {row[0] for row in rows}
    rate = {(row[0], int(row[1])): int(row[2]) for row in rows}
    ratios = [re.fullmatch(r"(\w+) over td3_bc at M = (\d): ([\d.]+)x the updates/s \(quartiles .*\)(.*)", line)
              for line in out if " over td3_bc at M = " in line]
    assert [(r[1], int(r[2])) for r in ratios] == [(m, n) for m in ("bc", "iql") for n in (1, 2)]
    for r in ratios:
        assert float(r[3]) > 0 and rate[r[1], int(r[2])] > 0
        assert re.fullmatch(r"; issue 22's target >= [\d.]+x: (met|MISSED)" if r[2] == "1" else "", r[4])
    assert "issue 22's targets not checked at M = 3: not in --members" in out
    assert sum(line.startswith(group.label) for line in out for group in estimate.RESULTS) == len(estimate.RESULTS)
    assert sum(line.startswith("estimated wall-clock of the Results set: ") for line in out) == 1


@needs_git
def test_against_an_unknown_revision_is_a_one_line_error(capsys):
    line = error_line(capsys, ["--against", "no-such-rev"])
    assert line.startswith("bench.py: error: --against 'no-such-rev': not a commit of this repository")


@needs_git
def test_against_a_value_that_looks_like_a_git_option_is_refused_and_writes_nothing(tmp_path, capsys):
    target = tmp_path / "written"
    line = error_line(capsys, [f"--against=--output={target}"])
    assert "not a commit of this repository" in line
    assert list(tmp_path.iterdir()) == []


def test_without_the_dataset_the_benchmark_is_a_one_line_error(minari_root, capsys):
    line = error_line(capsys, ["--dataset", "test/hopper/absent-v0"])
    assert line.startswith("bench.py: error: ") and "test/hopper/absent-v0" in line


@needs_git
def test_without_the_dataset_against_is_a_one_line_error(minari_root, capsys):
    line = error_line(capsys, ["--against", "HEAD", "--dataset", "test/hopper/absent-v0"])
    assert line.startswith("bench.py: error: ") and "test/hopper/absent-v0" in line


@needs_git
def test_against_head_prints_one_ratio_per_td3_method_at_m_1_and_3(tiny_dataset, capsys):
    assert bench.main(["--against", "HEAD", *TINY]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("against HEAD: ")]
    found = [re.fullmatch(r"against HEAD: (\w+) at M = (\d): [\d.]+x as fast \(quartiles .*\)", line) for line in lines]
    assert all(found)
    assert [(f[1], int(f[2])) for f in found] == [(name, m) for name in bench.TD3_METHODS for m in (1, 3)]
