"""Model-based offline RL with a reward penalty (mopo.py, dynamics.py): the model, its rollouts, the batches."""
import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import dynamics
import mopo
from model_data import BEHAVIOUR_ACTION, SMALL_DYNAMICS, fit_dynamics, narrow_buffer
from mopo import MOPOConfig, ModelRollouts
from td3_agent import TD3Agent, TD3Config

LOW, HIGH = -np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """The narrow dataset's buffer, a small ensemble fitted to it, and the fit's rows (fitted once per module)."""
    buffer = narrow_buffer(tmp_path_factory.mktemp("minari"))
    model, rows = fit_dynamics(buffer)
    return buffer, model, rows


def make_rollouts(narrow, seeds=(0,), penalty=1.0, kind="disagreement", terminal=None, **overrides) -> tuple:
    """A TD3 agent of len(seeds) members and its ModelRollouts on the narrow data (batch 32, 8 real rows)."""
    buffer, model, _ = narrow
    cfg = MOPOConfig(rollout_length=4, reward_penalty=penalty, penalty_kind=kind, real_ratio=0.25,
                     rollout_starts=64, **overrides)
    agent = TD3Agent(11, 3, LOW, HIGH, [TD3Config(hidden=(32, 32), batch_size=32)] * len(seeds), list(seeds),
                     torch.device("cpu"), real_rows=mopo.real_rows(cfg.real_ratio, 32))
    terminal = terminal or dynamics.termination_rule(gym.make("Hopper-v5"))
    return agent, ModelRollouts(model, terminal, cfg, buffer, agent.members, 32)


def stored(rollouts: ModelRollouts, k: int = 0) -> tuple[torch.Tensor, ...]:
    """Member k's model buffer as (obs, actions, rewards, next_obs, not_done)."""
    return rollouts.buffer.split(rollouts.data[k, :rollouts.size[k]])


def test_the_ensemble_fits_a_tiny_real_dataset_far_better_than_predicting_the_mean(narrow):
    buffer, model, rows = narrow
    assert rows[-1]["best_holdout_mse"] < 0.5 * dynamics.mean_predictor_mse(buffer)
    assert rows[-1]["holdout_nll"] < rows[0]["holdout_nll"]  # it learned its variances too
    assert sorted(model.elites.tolist()) == sorted(set(model.elites.tolist())) and len(model.elites) == 3


def held_out_errors(buffer, model) -> torch.Tensor:
    """Each member's held-out MSE, on the fit's own held-out part (its generator draws the weights, then the split)."""
    generator = torch.Generator().manual_seed(0)
    dynamics.DynamicsEnsemble(11, 3, SMALL_DYNAMICS, generator)
    x, y = dynamics.split_rows(buffer, generator)
    n = dynamics.holdout_size(len(x))
    return dynamics.holdout_errors(model, x[:n], y[:n], buffer.obs_dim)["mse"]


def test_the_elites_are_the_members_of_lowest_held_out_error(narrow):
    buffer, model, _ = narrow
    errors = held_out_errors(buffer, model)
    assert set(model.elites.tolist()) == set(torch.argsort(errors)[:3].tolist())


def test_each_member_keeps_the_weights_of_its_best_held_out_epoch(narrow):
    buffer, model, rows = narrow
    errors = held_out_errors(buffer, model)
    assert errors[model.elites].mean().item() == pytest.approx(rows[-1]["best_holdout_mse"], rel=1e-4)
    # a member's snapshot moves only on a gain of more than 1 % (MOPO's rule), so the kept error is within 1 % of the
    # lowest any epoch reached
    assert rows[-1]["best_holdout_mse"] <= 1.01 * min(row["holdout_mse"] for row in rows)


def test_a_noiseless_model_step_predicts_the_datas_next_state_and_reward(narrow):
    buffer, model, _ = narrow
    obs, actions, rewards, next_obs, _ = buffer.split(buffer.data)
    n = len(obs)
    next_pred, reward_pred, _ = mopo.model_step(model, obs, actions, torch.zeros(n), torch.zeros(n, 12), "aleatoric")
    assert ((reward_pred - rewards) ** 2).mean() < 0.4 * rewards.var()  # Hopper's reward drops by 1 as it falls
    assert ((next_pred - next_obs) ** 2).mean() < 0.2 * ((next_obs - obs) ** 2).mean()


def test_the_termination_rule_read_from_the_env_matches_hoppers_own_terminations(narrow):
    buffer = narrow[0]
    _, _, _, next_obs, not_done = buffer.split(buffer.data)
    terminal = dynamics.termination_rule(gym.make("Hopper-v5"))
    assert torch.equal(terminal(next_obs), not_done == 0)
    assert (not_done == 0).sum() > 5  # the narrow policy falls often: both outcomes are checked
    stricter = dynamics.termination_rule(gym.make("Hopper-v5", healthy_z_range=(1.2, float("inf"))))
    assert stricter(next_obs).sum() > terminal(next_obs).sum()  # the ranges come from the env as made
    with pytest.raises(ValueError, match="Hopper"):
        dynamics.termination_rule(gym.make("InvertedPendulum-v5"))


@pytest.mark.parametrize("kind", ["aleatoric", "disagreement"])
def test_model_rewards_carry_the_penalty_lambda_u_with_u_over_all_members(narrow, kind):
    (_, free), (_, penalised) = make_rollouts(narrow, penalty=0.0, kind=kind), make_rollouts(narrow, kind=kind,
                                                                                           penalty=2.5)
    free.rollout(make_rollouts(narrow)[0].actor), penalised.rollout(make_rollouts(narrow)[0].actor)
    obs, actions, r_free, next_obs, not_done = stored(free)
    obs2, _, r_penalised, next_obs2, _ = stored(penalised)
    assert torch.equal(obs, obs2) and torch.equal(next_obs, next_obs2)  # the penalty changes rewards only
    with torch.no_grad():
        mean, logvar = free.model(obs[None], actions[None])  # (K, N, 12): every member, elites or not
    std = (logvar / 2).exp()
    u = (std.norm(dim=-1) if kind == "aleatoric" else (mean - mean.mean(0)).norm(dim=-1)).max(dim=0).values
    torch.testing.assert_close(r_free - r_penalised, 2.5 * u, rtol=1e-5, atol=1e-6)
    assert penalised.last["model_reward_penalised"].item() == pytest.approx(
        (penalised.last["model_reward"] - 2.5 * penalised.last["model_penalty"]).item(), rel=1e-5)


def test_disagreement_grows_for_actions_far_from_the_datas(narrow):
    buffer, model, _ = narrow
    obs, actions, *_ = buffer.split(buffer.data)
    away = torch.tensor([-1.0, 1.0, -1.0]) / 3 ** 0.5  # a direction out of the data's action cloud
    u = []
    for distance in (0.0, 1.0, 1.5):  # the data: BEHAVIOUR_ACTION + N(0, 0.2^2) per dimension
        far = (torch.as_tensor(BEHAVIOUR_ACTION) + distance * away).clamp(-1, 1).expand_as(actions)
        with torch.no_grad():
            mean, logvar = model(obs[None], far[None])
        u.append(mopo.uncertainty(mean, (logvar / 2).exp(), "disagreement").mean().item())
    assert u[0] * 1.5 < u[1] and u[1] * 1.5 < u[2], u


def test_a_rollout_stops_at_a_terminal_state_and_never_steps_past_it(narrow):
    strict = dynamics.termination_rule(gym.make("Hopper-v5", healthy_z_range=(1.22, float("inf"))))
    agent, rollouts = make_rollouts(narrow, terminal=strict)
    rollouts.rollout(agent.actor)
    obs, _, _, next_obs, not_done = stored(rollouts)
    assert 0.2 < rollouts.last["rollout_terminated"].item() < 1  # some rollouts end early, some run h steps
    assert torch.equal(not_done == 0, strict(next_obs))  # every transition into a terminal state is stored as done
    ended = next_obs[not_done == 0]
    assert len(ended) > 0 and not (obs[:, None, :] == ended[None]).all(-1).any()  # and none steps on from there
    assert len(obs) == pytest.approx(rollouts.last["rollout_length"].item() * 64, abs=1e-3)
    assert len(obs) < 4 * 64


def test_a_batch_holds_the_stated_share_of_dataset_rows_first_and_model_rows_after(narrow):
    agent, rollouts = make_rollouts(narrow)
    rollouts.rollout(agent.actor)
    obs, actions, *_ = rollouts.sample(agent.members.generators)
    pairs = torch.cat([obs, actions], -1)[0]  # (32, obs_dim + act_dim)
    dataset_pairs = torch.cat(rollouts.buffer.split(rollouts.buffer.data)[:2], -1)
    in_dataset = (pairs[:, None, :] == dataset_pairs[None]).all(-1).any(-1)  # (32,): the row is a dataset row
    assert in_dataset.tolist() == [True] * 8 + [False] * 24  # real_ratio 0.25 of 32, leading
    model_pairs = torch.cat(stored(rollouts)[:2], -1)
    assert (pairs[8:, None, :] == model_pairs[None]).all(-1).any(-1).all()


def test_the_bc_term_imitates_only_the_batchs_dataset_rows(narrow):
    agent, rollouts = make_rollouts(narrow)
    agent.cfg.bc_weight = torch.tensor([1.0])
    rollouts.rollout(agent.actor)
    obs, actions, rewards, next_obs, not_done = rollouts.sample(agent.members.generators)
    spoiled = actions.clone()
    spoiled[:, 8:] = -actions[:, 8:]  # model rows' actions changed: the BC term must not see them
    agent.updates = 1  # the next update is an actor step
    before = copy.deepcopy(agent.actor.state_dict())
    metrics = agent.update(obs, spoiled, rewards, next_obs, not_done)
    with torch.no_grad():
        agent.actor.load_state_dict(before)
        pi = agent.actor(obs)
    expected = ((pi[0, :8] - actions[0, :8]) ** 2).sum(-1).mean()
    assert metrics["bc_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_ring_keeps_the_newest_rows_and_drops_the_oldest(narrow):
    _, rollouts = make_rollouts(narrow, model_rounds_kept=1)  # capacity 1 x 64 x 4 = 256 rows
    rows = torch.arange(300, dtype=torch.float32)[:, None].expand(-1, rollouts.data.shape[-1])
    rollouts.store(0, rows[:200]), rollouts.store(0, rows[200:])
    assert rollouts.size[0] == 256
    assert sorted(rollouts.data[0, :, 0].tolist()) == list(range(44, 300))


def test_member_k_rolls_out_and_learns_what_a_single_run_with_its_seed_does(narrow):
    group, group_rollouts = make_rollouts(narrow, seeds=(3, 4, 5))
    alone, alone_rollouts = make_rollouts(narrow, seeds=(4,))
    for step in range(6):
        if step % 3 == 0:
            group_rollouts.rollout(group.actor), alone_rollouts.rollout(alone.actor)
        together = group.update(*group_rollouts.sample(group.members.generators))
        single = alone.update(*alone_rollouts.sample(alone.members.generators))
        for key, value in single.items():
            torch.testing.assert_close(together[key][1:2], value, rtol=1e-4, atol=1e-5)
    assert group_rollouts.size[1] == alone_rollouts.size[0]
    torch.testing.assert_close(group_rollouts.data[1], alone_rollouts.data[0], rtol=1e-5, atol=1e-5)
    for key, value in alone_rollouts.last.items():
        torch.testing.assert_close(group_rollouts.last[key][1:2], value, rtol=1e-5, atol=1e-6)


def test_a_member_state_round_trips_the_model_buffer_exactly(narrow):
    agent, rollouts = make_rollouts(narrow, seeds=(0, 1))
    rollouts.rollout(agent.actor)
    _, copy_of = make_rollouts(narrow, seeds=(0, 1))
    for k in (0, 1):
        copy_of.load(k, rollouts.state(k))
    assert copy_of.size == rollouts.size and copy_of.next == rollouts.next
    assert torch.equal(copy_of.data, rollouts.data)
    with pytest.raises(ValueError, match="model buffer"):
        copy_of.load(0, rollouts.state(0) | {"rows": torch.zeros(3, 5)})


def test_members_share_one_model_which_the_rollouts_never_train(narrow):
    agent, rollouts = make_rollouts(narrow, seeds=(0, 1))
    before = {k: v.clone() for k, v in rollouts.model.state_dict().items()}
    rollouts.rollout(agent.actor)
    agent.update(*rollouts.sample(agent.members.generators))
    for key, value in rollouts.model.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in rollouts.model.parameters())


def test_rollout_actions_are_the_actors_plus_td3s_exploration_noise(narrow):
    agent, rollouts = make_rollouts(narrow)
    rollouts.rollout(agent.actor)
    obs, actions, *_ = stored(rollouts)
    with torch.no_grad():
        noise = actions - agent.actor(obs[None])[0]
    inside = (actions.abs() < 0.999).all(-1)  # away from the box's edges, where clipping would bias the noise
    assert noise[inside].std().item() == pytest.approx(mopo.ROLLOUT_NOISE, rel=0.15)
