"""The update step: TD target, CQL penalty, BC term, delayed actor and target updates; and members."""
import copy
import math

import numpy as np
import pytest
import torch

from td3_agent import TD3Agent, TD3Config
from utils import dataset_to_buffer

LOW, HIGH = -np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32)


def make_agent(seeds: tuple[int, ...] = (0,), configs: list[dict] | None = None, **overrides) -> TD3Agent:
    """An agent of len(seeds) members, at small widths; configs: each member's own overrides."""
    configs = configs or [{}] * len(seeds)
    return TD3Agent(11, 3, LOW, HIGH, [TD3Config(hidden=(32, 32), **overrides, **c) for c in configs],
                    list(seeds), torch.device("cpu"))


def make_q_flat(agent: TD3Agent, value: float) -> None:
    """Make both critics output `value` everywhere: zero weights, last bias = value."""
    with torch.no_grad():
        for param in agent.critic.parameters():
            param.zero_()
        agent.critic.net.biases[-1].fill_(value)


def batch(n: int = 64, seed: int = 1, members: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(members, n, 11, generator=g), torch.rand(members, n, 3, generator=g) * 2 - 1,
            torch.randn(members, n, generator=g), torch.randn(members, n, 11, generator=g), torch.ones(members, n))


def test_actor_outputs_stay_inside_the_action_bounds():
    low, high = np.array([-2.0, 0.0, 1.0], np.float32), np.array([2.0, 0.5, 3.0], np.float32)
    agent = TD3Agent(11, 3, low, high, [TD3Config(hidden=(32, 32))], [0], torch.device("cpu"))
    actions = agent.actor.act(np.random.default_rng(0).normal(size=(1, 500, 11)) * 100)
    assert np.all(actions >= low) and np.all(actions <= high)


def test_twin_critic_heads_are_independent_networks():
    agent = make_agent()
    obs, actions, *_ = batch()
    q1, q2 = agent.critic(obs, actions)
    assert q1.shape == q2.shape == (1, 64)
    torch.testing.assert_close(q1, agent.critic.q1(obs, actions))
    assert not torch.allclose(q1, q2)  # different initial weights
    q2.sum().backward()  # Q2's loss reaches only Q2's weights (member m's Q1 is slice 2m, its Q2 2m + 1)
    for weight in agent.critic.net.weights:
        assert not weight.grad[0].any() and weight.grad[1].abs().sum() > 0


@pytest.mark.parametrize("temp", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("n_actions", [1, 4])
@pytest.mark.parametrize("uniform_only", [False, True])
def test_cql_penalty_is_temp_log_m_per_critic_when_q_is_flat(temp, n_actions, uniform_only):
    # M actions in the logsumexp: N uniform, plus mu(s) and mu(s') unless uniform_only
    agent = make_agent(cql_alpha=1.0, cql_temp=temp, cql_n_actions=n_actions, cql_uniform_only=uniform_only)
    make_q_flat(agent, 7.0)
    obs, actions, _, next_obs, _ = batch()
    penalty, parts = agent.cql_penalty(obs, next_obs, *agent.critic(obs, actions))
    m = n_actions + (0 if uniform_only else 2)
    assert penalty.item() == pytest.approx(2 * temp * math.log(m), abs=1e-5)
    assert parts["cql_logsumexp"].item() == pytest.approx(2 * (7.0 + temp * math.log(m)), abs=1e-5)


def make_q_sum_of_actions(agent: TD3Agent, shift: float = 0.0) -> None:
    """Q_i(s, a) = relu(sum(a)) + i + shift: the action inputs pass straight through to the output."""
    make_q_flat(agent, shift)
    weights = agent.critic.net.weights
    with torch.no_grad():
        weights[0][:, 11:, 0] = 1.0  # hidden unit 0 of layer 1 = relu(sum(a)) ...
        weights[1][:, 0, 0] = 1.0  # ... carried by unit 0 of layer 2 ...
        weights[2][:, 0, 0] = 1.0  # ... to the output
        agent.critic.net.biases[-1][1::2] += 1.0  # Q2 = Q1 + 1 (member m's Q2 is MLP 2m + 1)


def penalty_by_hand(sampled: torch.Tensor, q_data: torch.Tensor, temp: float) -> float:
    """sum_i E_s[T logsumexp_j(Q_i(s, a_j) / T) - Q_i(s, a)] for Q_i = relu(sum(a)) + i; sampled (J, B, A)."""
    total = 0.0
    for i in range(2):
        q_sampled = sampled.sum(-1).relu() + i  # (J, B)
        total += (temp * torch.logsumexp(q_sampled / temp, dim=0) - q_data[i][0]).mean().item()
    return total


@pytest.mark.parametrize("uniform_only", [False, True])
def test_cql_penalty_on_a_known_q_table_holds_exactly_the_uniform_and_policy_actions(uniform_only):
    agent = make_agent(cql_alpha=1.0, cql_temp=0.7, cql_n_actions=5, cql_uniform_only=uniform_only)
    make_q_sum_of_actions(agent)
    obs, actions, _, next_obs, _ = batch(n=8)
    q_data = agent.critic(obs, actions)
    torch.testing.assert_close(q_data[1], actions.sum(-1).relu() + 1)
    draws = torch.Generator().set_state(agent.members.generators[0].get_state())  # the member's next uniform draws
    penalty, parts = agent.cql_penalty(obs, next_obs, *q_data)
    uniform = torch.rand((5, 8, 3), generator=draws) * 2 - 1  # the same draws, by hand
    with torch.no_grad():
        policy = torch.cat([agent.actor(obs), agent.actor(next_obs)])  # mu(s), mu(s'), both at state s
    expected = penalty_by_hand(uniform if uniform_only else torch.cat([uniform, policy]), q_data, 0.7)
    assert penalty.item() == pytest.approx(expected, rel=1e-5)
    assert parts["cql_q_random"].item() == pytest.approx((uniform.sum(-1).relu() + 0.5).mean().item(), rel=1e-5)
    assert ("cql_q_policy" in parts) == (not uniform_only)
    if not uniform_only:  # and leaving either policy action out gives another number
        for without in (policy[:1], policy[1:]):
            assert penalty.item() != pytest.approx(penalty_by_hand(torch.cat([uniform, without]), q_data, 0.7))


def test_cql_penalty_sends_no_gradient_to_the_actor():
    agent = make_agent(cql_alpha=1.0)
    obs, actions, _, next_obs, _ = batch()
    penalty, _ = agent.cql_penalty(obs, next_obs, *agent.critic(obs, actions))
    penalty.sum().backward()
    assert all(p.grad is None for p in agent.actor.parameters())
    # (the output bias gets exactly 0: a shift of Q moves logsumexp and Q(s, a) alike)
    assert agent.critic.net.weights[0].grad[0].abs().sum() > 0 and agent.critic.net.weights[0].grad[1].abs().sum() > 0


@pytest.mark.parametrize("temp", [0.1, 1.0])
def test_cql_penalty_is_non_negative_when_data_actions_have_the_lowest_q_even_if_q_is_negative(temp):
    # temp * logsumexp(Q / temp) >= max_j Q(s, a_j) >= min_a Q(s, a) = Q(s, a_data), whatever Q's sign;
    # Q near -10 here, so a penalty without its - Q(s, a) term would be negative
    agent = make_agent(cql_alpha=1.0, cql_temp=temp, cql_n_actions=10)
    make_q_sum_of_actions(agent, shift=-10.0)
    obs, _, _, next_obs, _ = batch()
    lowest = torch.full((1, 64, 3), -1.0)  # sum(a) is smallest at the corner (-1, -1, -1)
    penalty, _ = agent.cql_penalty(obs, next_obs, *agent.critic(obs, lowest))
    assert 0 <= penalty.item() < 2 * (3 + temp * math.log(12))  # at most the largest Q gap, plus T log J


def test_cql_step_lowers_q_off_the_data_relative_to_q_on_it():
    agent = make_agent(cql_alpha=5.0, gamma=0.0, lr=1e-3)
    data = batch()
    metrics = [agent.update(*data) for _ in range(300)]
    gap = [(m["cql_q_random"] - m["cql_q_data"]).item() for m in metrics]  # Q off the data minus Q on it
    assert gap[-1] < gap[0] - 1.0
    assert metrics[-1]["cql_penalty"] < metrics[0]["cql_penalty"] - 0.3


def test_lagrangian_cql_weight_rises_while_the_gap_is_exceeded_and_falls_back_below_it():
    agent = make_agent(cql_alpha=1.0, cql_target_gap=0.0)  # a fresh critic's penalty is about log(6) > 0
    data = batch()
    weights = [agent.update(*data)["cql_alpha"].item() for _ in range(50)]
    assert weights[0] == pytest.approx(1.0)  # it starts at --cql_alpha
    assert all(later > earlier for earlier, later in zip(weights, weights[1:]))
    agent.cfg.cql_target_gap = 1e3  # now the penalty is far below the gap
    falling = [agent.update(*data)["cql_alpha"].item() for _ in range(50)]
    assert falling[-1] < falling[0] < weights[-1] + 1e-3
    assert min(falling) > 0  # alpha' = exp(log alpha') never goes negative


def test_td_loss_drops_when_regressing_onto_rewards():
    agent = make_agent(gamma=0.0)  # target is the reward alone, a fixed regression problem
    data = batch()
    losses = [agent.update(*data)["td_loss"].item() for _ in range(300)]
    assert losses[-1] < 0.5 * losses[0]


def test_truncated_episode_still_bootstraps(tiny_dataset):
    # episode 0 of the tiny dataset is cut by the time limit after 8 steps; episode 1 ends in a fall
    buffer = dataset_to_buffer(tiny_dataset, torch.device("cpu"))
    truncated_last, terminated_last = buffer.episode_ends[0] - 1, buffer.episode_ends[1] - 1
    episodes = list(tiny_dataset.iterate_episodes([0, 1]))
    assert episodes[0].truncations[-1] and not episodes[0].terminations[-1] and episodes[1].terminations[-1]
    for row, bootstraps in ((truncated_last, True), (terminated_last, False)):
        obs, actions, rewards, next_obs, not_done = buffer.split(buffer.data[torch.tensor([[row]])])  # (1, 1, ...)
        agent = make_agent(gamma=0.9, policy_noise=0.0)
        with torch.no_grad():
            next_q = torch.min(*agent.critic_target(next_obs, agent.actor_target(next_obs)))
        target = agent.update(obs, actions, rewards, next_obs, not_done)["target_q"]
        expected = rewards + 0.9 * next_q if bootstraps else rewards
        assert target.item() == pytest.approx(expected.item(), rel=1e-5)
        assert next_q.abs().item() > 1e-3  # so bootstrapping or not makes a visible difference


def test_bc_weight_zero_is_plain_td3_actor_step():
    agent = make_agent(bc_weight=0.0)
    reference_actor = copy.deepcopy(agent.actor)
    reference_opt = torch.optim.Adam(reference_actor.parameters(), lr=agent.cfg.lr)
    obs, actions, *_ = batch()
    # TD3's actor loss: -E[Q1(s, mu(s))], nothing else
    loss = -agent.critic.q1(obs, reference_actor(obs)).mean()
    reference_opt.zero_grad()
    loss.backward()
    reference_opt.step()
    agent.critic.zero_grad(set_to_none=True)
    metrics = agent.update_actor(obs, actions)
    assert metrics["actor_loss"].item() == pytest.approx(metrics["ddpg_loss"].item())
    for mine, ref in zip(agent.actor.parameters(), reference_actor.parameters()):
        torch.testing.assert_close(mine, ref)
    assert all(p.grad is None for p in agent.critic.parameters())  # the actor step leaves the critic alone


def test_bc_term_changes_the_actor_step_and_pulls_mu_towards_the_data():
    obs, actions, *_ = batch()
    plain, cloned = make_agent(bc_weight=0.0), make_agent(bc_weight=100.0)
    plain.update_actor(obs, actions)
    first = cloned.update_actor(obs, actions)["bc_loss"].item()
    assert not torch.equal(plain.actor.net.weights[0], cloned.actor.net.weights[0])
    for _ in range(300):
        last = cloned.update_actor(obs, actions)["bc_loss"].item()
    assert last < 0.6 * first


def actor_gradient(agent: TD3Agent, loss: torch.Tensor) -> torch.Tensor:
    """The gradient of a loss with respect to every actor weight, flattened into one vector."""
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(agent.actor.parameters()))])


def test_auto_bc_weight_steps_the_actor_along_td3_bc_s_own_loss():
    # TD3+BC (Fujimoto & Gu): minimise -lambda * mean Q(s, mu(s)) + mean over batch and dims of (mu(s) - a)^2,
    # lambda = alpha / mean|Q|. The repo's -Q + w ||mu - a||^2 must point the same way: gradient = TD3+BC's / lambda.
    agent = make_agent(bc_weight="auto", bc_alpha=2.5)
    obs, actions, *_ = batch()
    pi = agent.actor(obs)
    q = agent.critic.q1(obs, pi)
    lam = 2.5 / q.abs().mean().detach()
    theirs = actor_gradient(agent, -lam * q.mean() + ((pi - actions) ** 2).mean())
    pi = agent.actor(obs)
    q = agent.critic.q1(obs, pi)
    ours = actor_gradient(agent, (-q.mean(-1) + agent.bc_weight(q) * ((pi - actions) ** 2).sum(-1).mean(-1)).sum())
    torch.testing.assert_close(ours * lam, theirs, rtol=1e-4, atol=1e-7)
    assert ours.norm() > 0


def test_actor_and_targets_move_only_every_policy_delay_updates():
    agent = make_agent(policy_delay=3)
    data = batch()
    actor_before = copy.deepcopy(agent.actor.state_dict())
    target_before = copy.deepcopy(agent.critic_target.state_dict())
    agent.update(*data)
    agent.update(*data)
    assert all(torch.equal(actor_before[k], v) for k, v in agent.actor.state_dict().items())
    assert all(torch.equal(target_before[k], v) for k, v in agent.critic_target.state_dict().items())
    agent.update(*data)
    assert not torch.equal(actor_before["net.weights.0"], agent.actor.state_dict()["net.weights.0"])
    # the target critic moved towards the online one, by a small step (tau = 0.005), not onto it
    online, before = agent.critic.net.weights[0], target_before["net.weights.0"]
    after = agent.critic_target.net.weights[0]
    assert 0 < (after - online).norm() < (before - online).norm() < 1.01 * (after - online).norm()


def test_target_actions_stay_within_the_noise_clip_of_the_target_policy():
    # Q'(s', a') = relu(sum(a')) - so the TD target sees where the smoothed target action a' lands
    agent = make_agent(policy_noise=100.0, noise_clip=0.1, gamma=1.0)
    make_q_sum_of_actions(agent)
    agent.critic_target.load_state_dict(agent.critic.state_dict())
    obs, actions, rewards, next_obs, not_done = batch()
    with torch.no_grad():
        mu = agent.actor_target(next_obs)
        low = (mu - 0.1).clamp(-1, 1).sum(-1).relu()
        high = (mu + 0.1).clamp(-1, 1).sum(-1).relu()
    for _ in range(3):
        target_q = agent.update(obs, actions, torch.zeros_like(rewards), next_obs, not_done)["target_q"]
    # the batch mean of min(Q1', Q2') = relu(sum(a')) lies between the clipped extremes
    assert low.mean().item() - 1e-3 <= target_q.item() <= high.mean().item() + 1e-3
    assert high.mean() - low.mean() < 0.7  # and unclipped noise of std 100 would send a' to the corners


def test_update_learns_on_a_real_dataset(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, torch.device("cpu"))
    agent = make_agent(bc_weight=10.0, cql_alpha=1.0)
    critic_names = {"q1", "q2", "target_q", "td_loss", "cql_penalty", "cql_logsumexp", "cql_q_random",
                    "cql_q_policy", "cql_q_data", "cql_alpha", "critic_loss"}
    actor_names = {"ddpg_loss", "bc_loss", "bc_weight", "actor_loss"}
    generators = agent.members.generators
    odd = set(agent.update(*buffer.sample(64, generators)))
    assert critic_names <= odd and not actor_names & odd  # no actor step on odd updates
    first = agent.update(*buffer.sample(64, generators))  # the second update is the first actor update
    for _ in range(200):
        last = agent.update(*buffer.sample(64, generators))
    assert set(first) == set(last) == odd | actor_names
    assert all(torch.isfinite(v).all() for v in last.values())
    assert last["bc_loss"] < first["bc_loss"]
