"""The baselines: behaviour cloning, filtered BC, IQL, and TD3's critics with LayerNorm."""
import dataclasses
import json
import os

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer
import torch

import runner
from bc_agent import BCAgent
from conftest import DATASET_ID, rollout_episodes, write_dataset
from helpers import FAST, only_run, read_csv
from iql_agent import MAX_AWR_WEIGHT, IQLAgent, IQLConfig, expectile_loss
from td3_agent import TD3Config
from test_agent import HIGH, LOW, batch, make_agent, make_q_sum_of_actions
from utils import dataset_to_buffer, episode_returns, top_episodes

CPU = torch.device("cpu")


def make_bc(seeds=(0,)) -> BCAgent:
    return BCAgent(11, 3, LOW, HIGH, [TD3Config(hidden=(32, 32))] * len(seeds), list(seeds), CPU)


def make_iql(seeds=(0,), **overrides) -> IQLAgent:
    configs = [TD3Config(hidden=(32, 32))] * len(seeds)
    return IQLAgent(11, 3, LOW, HIGH, configs, [IQLConfig(**overrides)] * len(seeds), list(seeds), CPU)


def expert_episodes(count: int = 6, steps: int = 60) -> list[EpisodeBuffer]:
    """Hopper-v5 episodes of a fixed deterministic policy, a = tanh(W s): actions a network can imitate."""
    env, weights = gym.make("Hopper-v5"), np.random.default_rng(0).normal(scale=0.5, size=(3, 11))
    episodes = []
    for k in range(count):
        obs, _ = env.reset(seed=k)
        observations, actions, rewards, terminations = [obs], [], [], []
        for _ in range(steps):
            action = np.tanh(weights @ obs).astype(np.float32)
            obs, reward, terminated, _, _ = env.step(action)
            observations.append(obs), actions.append(action), rewards.append(reward), terminations.append(terminated)
            if terminated:
                break
        truncations = [False] * (len(actions) - 1) + [not terminations[-1]]
        episodes.append(EpisodeBuffer(id=k, seed=k, observations=np.array(observations), actions=np.array(actions),
                                      rewards=np.array(rewards), terminations=np.array(terminations),
                                      truncations=np.array(truncations)))
    return episodes


def test_bc_loss_drops_on_a_real_dataset_and_the_actor_moves_towards_its_actions(minari_root):
    buffer = dataset_to_buffer(write_dataset(minari_root, episodes=expert_episodes()), CPU)
    agent = make_bc()
    obs, actions, *_ = buffer.split(buffer.data[None])  # every transition, (1, N, ...)
    before = ((agent.actor(obs) - actions) ** 2).sum(-1).mean().item()
    losses = [agent.update(*buffer.sample(64, agent.members.generators))["bc_loss"].item() for _ in range(300)]
    after = ((agent.actor(obs) - actions) ** 2).sum(-1).mean().item()
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20])
    assert after < 0.3 * before


def test_bc_trains_the_actor_alone_and_reports_no_q():
    agent = make_bc()
    metrics = agent.update(*batch())
    assert set(metrics) == {"bc_loss"}
    assert set(agent.diagnostics(*batch()[:2])) == {"bc_distance"}
    assert not hasattr(agent, "critic")


def episodes_with_returns(returns: list[float]):
    """Tiny Hopper episodes whose rewards are replaced so that episode k's return is returns[k]."""
    episodes = rollout_episodes((20,) * len(returns))
    for episode, total in zip(episodes, returns):
        episode.rewards[:] = total / len(episode.rewards)
    return episodes


def test_filtered_bc_keeps_exactly_the_top_episodes_by_return(minari_root):
    returns = [5.0, 50.0, 1.0, 40.0, 30.0, 2.0, 60.0, 3.0]
    buffer = dataset_to_buffer(write_dataset(minari_root, episodes=episodes_with_returns(returns)), CPU)
    np.testing.assert_allclose(episode_returns(buffer), returns, rtol=1e-5)
    kept = top_episodes(buffer, 25)  # 2 of 8: the episodes of return 60 and 50, in dataset order
    starts = np.concatenate([[0], buffer.episode_ends[:-1]])
    rows = np.concatenate([np.arange(starts[k], buffer.episode_ends[k]) for k in (1, 6)])
    assert torch.equal(kept.data, buffer.data[torch.as_tensor(rows)])
    np.testing.assert_allclose(episode_returns(kept), [50.0, 60.0], rtol=1e-5)
    assert len(top_episodes(buffer, 10)) == 0  # 10 % of 8 episodes is none


def test_bc_top_percent_records_what_it_kept_and_refuses_to_keep_nothing(minari_root, tmp_path, capsys):
    write_dataset(minari_root, episodes=episodes_with_returns([5.0, 50.0, 1.0, 40.0]))
    results = tmp_path / "results"
    argv = [*FAST, "--agent", "bc", "--total_steps", "4", "--eval_every", "4", "--log_every", "2",
            "--results_dir", str(results)]
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*argv, "--bc_top_percent", "20"])
    assert exit_info.value.code == 2 and not results.exists()
    assert "--bc_top_percent 20 keeps none of the dataset's 4 episodes; give at least 25" in capsys.readouterr().err
    assert runner.main([*argv, "--bc_top_percent", "50", "--batch_size", "4"]) == 0
    meta = json.loads((next(results.iterdir()) / "config.json").read_text())
    buffer = dataset_to_buffer(minari.load_dataset(DATASET_ID), CPU)  # the episodes of return 50 and 40
    lengths = np.diff(np.concatenate([[0], buffer.episode_ends]))
    assert (meta["bc_top_percent_episodes"], meta["bc_top_percent_transitions"]) == (2, lengths[1] + lengths[3])
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--bc_top_percent")]
    assert said == [f"--bc_top_percent 50: training on the 2 best episodes of 4 by return ({lengths[1] + lengths[3]:,} "
                    f"of {len(buffer):,} transitions)"]
    assert meta["dataset_transitions"] == len(buffer)


def test_a_bc_run_writes_no_q_columns_and_fills_every_other(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--agent", "bc", "--total_steps", "20", "--eval_every", "10", "--log_every", "10",
                        "--results_dir", str(results)]) == 0
    progress = read_csv(os.path.join(only_run(results), "progress.csv"))
    assert list(progress[0]) == ["step", "eval_return_mean", "eval_return_std", "mc_return", "bc_distance", "time_s"]
    assert all(value != "" for row in progress for value in row.values())
    assert list(read_csv(os.path.join(only_run(results), "train.csv"))[0]) == ["step", "bc_loss"]


def test_expectile_loss_at_one_half_is_half_the_squared_error_and_at_0_9_weighs_positive_errors_nine_times():
    diff = torch.tensor([[-2.0, -0.5, 0.0, 1.0, 3.0]])
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * (diff ** 2).mean(-1))
    positive, negative = torch.tensor([[1.5]]), torch.tensor([[-1.5]])
    assert expectile_loss(positive, 0.9).item() == pytest.approx(9 * expectile_loss(negative, 0.9).item())


def expectile(values: np.ndarray, tau: float) -> float:
    """The tau-expectile of values: the v where tau E[(x - v)+] = (1 - tau) E[(v - x)+], by bisection."""
    low, high = values.min(), values.max()
    for _ in range(60):
        v = (low + high) / 2
        excess = tau * np.clip(values - v, 0, None).mean() - (1 - tau) * np.clip(v - values, 0, None).mean()
        low, high = (v, high) if excess > 0 else (low, v)
    return (low + high) / 2


@pytest.mark.parametrize("tau", [0.5, 0.9])
def test_iql_value_settles_at_the_expectile_of_the_target_critics_values_of_the_data_actions(tau):
    agent = make_iql(iql_expectile=tau)
    make_q_sum_of_actions(agent)  # Q'(s, a) = relu(sum a), + 1 for Q2: min = relu(sum a)
    agent.critic_target.load_state_dict(agent.critic.state_dict())
    agent.critic_opt.param_groups[0]["lr"] = 0.0  # the critics, and so Q', stay as they are
    agent.value_opt.param_groups[0]["lr"] = 1e-2
    obs, actions, rewards, next_obs, not_done = batch(n=256)
    obs = obs[:, :1].expand_as(obs)  # one state, 256 actions: V(s) must be one number for all of them
    for _ in range(1500):
        agent.update(obs, actions, rewards, next_obs, not_done)
    q = actions[0].sum(-1).relu().numpy()
    assert agent.value(obs[:, :1]).item() == pytest.approx(expectile(q, tau), abs=0.05)
    assert expectile(q, 0.9) > q.mean() + 0.3  # so the two expectiles are far apart


def test_awr_weight_is_capped():
    agent = make_iql(iql_beta=1e4)  # exp(beta * advantage) overflows for any positive advantage
    metrics = agent.update(*batch())
    assert 0 < metrics["awr_weight"].item() <= MAX_AWR_WEIGHT and torch.isfinite(metrics["actor_loss"])
    assert metrics["awr_weight_clipped"].item() > 0


def test_the_actor_loss_sends_no_gradient_to_v_or_the_critics():
    # after an update, V's and the critics' gradients are those of their own losses alone
    agent, twin = make_iql(), make_iql()  # the same seed: the same initial weights
    obs, actions, rewards, next_obs, not_done = data = batch()
    with torch.no_grad():
        q_data = torch.min(*twin.critic_target(obs, actions))
        target_q = rewards + 0.99 * not_done * twin.value(next_obs)
    v_loss = expectile_loss(q_data - twin.value(obs), 0.7).sum()
    q1, q2 = twin.critic(obs, actions)
    td_loss = (((q1 - target_q) ** 2).mean(-1) + ((q2 - target_q) ** 2).mean(-1)).sum()
    agent.update(*data)
    for module, loss in ((agent.value, v_loss), (agent.critic, td_loss)):
        own = torch.autograd.grad(loss, list(getattr(twin, "value" if module is agent.value else "critic").parameters()))
        for param, grad in zip(module.parameters(), own):
            torch.testing.assert_close(param.grad, grad)


def test_iql_member_k_learns_what_a_single_iql_run_with_its_seed_learns(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, CPU)
    group, alone = make_iql(seeds=(3, 4, 5)), make_iql(seeds=(4,))
    for _ in range(6):
        together = group.update(*buffer.sample(64, group.members.generators))
        single = alone.update(*buffer.sample(64, alone.members.generators))
        for key, value in single.items():
            torch.testing.assert_close(together[key][1:2], value, rtol=1e-4, atol=1e-5)


def test_layernorm_keeps_the_critics_output_bounded_where_plain_critics_grow_with_the_input():
    plain, normed = make_agent(), make_agent(critic_layernorm=True)
    obs, actions, *_ = batch()
    q_plain, q_normed = plain.critic.q1(obs * 1e3, actions), normed.critic.q1(obs * 1e3, actions)
    assert q_plain.abs().max() > 50 and q_normed.abs().max() < 5  # LN rescales each hidden layer to unit spread
    assert set(make_agent(critic_layernorm=True).update(*batch())) == set(plain.update(*batch()))


def test_an_iql_run_with_seeds_side_by_side_writes_its_terms(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    assert runner.main([*FAST, "--agent", "iql", "--total_steps", "20", "--eval_every", "10", "--log_every", "10",
                        "--seeds", "0", "1", "--results_dir", str(results)]) == 0
    for run_dir in results.iterdir():
        names = list(read_csv(str(run_dir / "train.csv"))[0])
        assert {"v_loss", "advantage", "awr_weight", "td_loss", "actor_loss"} <= set(names)
        assert "dataset_q" in read_csv(str(run_dir / "progress.csv"))[0]


def test_iql_and_layernorm_runs_resume_to_the_rows_of_an_uninterrupted_run(tiny_dataset, tmp_path):
    for flags in (["--agent", "iql"], ["--critic_layernorm"], ["--agent", "bc"]):
        whole, halves = tmp_path / f"whole{flags[-1]}", tmp_path / f"halves{flags[-1]}"
        common = [*FAST, *flags, "--eval_every", "10", "--log_every", "10"]
        assert runner.main([*common, "--total_steps", "20", "--results_dir", str(whole)]) == 0
        assert runner.main([*common, "--total_steps", "10", "--results_dir", str(halves)]) == 0
        assert runner.main(["--resume", only_run(halves), "--total_steps", "20"]) == 0
        for name in ("progress.csv", "train.csv"):
            rows = [{k: v for k, v in row.items() if k != "time_s"}
                    for row in read_csv(os.path.join(only_run(whole), name))]
            assert rows == [{k: v for k, v in row.items() if k != "time_s"}
                            for row in read_csv(os.path.join(only_run(halves), name))], (flags, name)


def test_the_dataclass_of_each_agent_is_what_its_flags_fill():
    assert {f.name for f in dataclasses.fields(IQLConfig)} == {"iql_expectile", "iql_beta"}
