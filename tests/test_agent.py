"""The update step: TD target, CQL penalty, BC term, delayed actor and target updates."""
import copy
import math

import numpy as np
import pytest
import torch

from td3_agent import Adam, TD3Agent, TD3Config
from utils import dataset_to_buffer

LOW, HIGH = -np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32)


def make_agent(**overrides) -> TD3Agent:
    torch.manual_seed(0)
    return TD3Agent(11, 3, LOW, HIGH, TD3Config(hidden=(32, 32), **overrides), torch.device("cpu"))


def make_q_flat(agent: TD3Agent, value: float) -> None:
    """Make both critics output `value` everywhere: zero weights, last bias = value."""
    with torch.no_grad():
        for param in agent.critic.parameters():
            param.zero_()
        for net in (agent.critic.q1_net, agent.critic.q2_net):
            net.layers[-1].bias.fill_(value)


def batch(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 11, generator=g), torch.rand(n, 3, generator=g) * 2 - 1,
            torch.randn(n, generator=g), torch.randn(n, 11, generator=g), torch.ones(n))


def test_actor_outputs_stay_inside_the_action_bounds():
    low, high = np.array([-2.0, 0.0, 1.0], np.float32), np.array([2.0, 0.5, 3.0], np.float32)
    agent = TD3Agent(11, 3, low, high, TD3Config(hidden=(32, 32)), torch.device("cpu"))
    actions = agent.act(np.random.default_rng(0).normal(size=(500, 11)) * 100)
    assert np.all(actions >= low) and np.all(actions <= high)


def test_twin_critic_heads_are_independent_networks():
    agent = make_agent()
    obs, actions, *_ = batch()
    q = agent.critic(obs, actions)
    assert q.shape == (2, 64)
    torch.testing.assert_close(q[0], agent.critic.q1(obs, actions))
    assert not torch.allclose(q[0], q[1])  # different initial weights
    q[1].sum().backward()  # head 2's loss reaches only head 2's weights
    assert all(p.grad is None or not p.grad.any() for p in agent.critic.q1_net.parameters())
    assert all(p.grad.abs().sum() > 0 for p in agent.critic.q2_net.parameters())


@pytest.mark.parametrize("temp", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("n_actions", [1, 10])
def test_cql_penalty_is_temp_log_n_per_critic_when_q_is_flat(temp, n_actions):
    agent = make_agent(cql_alpha=1.0, cql_temp=temp, cql_n_actions=n_actions)
    make_q_flat(agent, 7.0)
    obs, actions, *_ = batch()
    penalty, logsumexp = agent.cql_penalty(obs, agent.critic(obs, actions))
    assert penalty.item() == pytest.approx(2 * temp * math.log(n_actions), abs=1e-5)
    assert logsumexp.item() == pytest.approx(2 * (7.0 + temp * math.log(n_actions)), abs=1e-5)


def make_q_sum_of_actions(agent: TD3Agent) -> None:
    """Q_i(s, a) = relu(sum(a)) + i for states with obs[0] = 0: the action inputs pass straight through."""
    make_q_flat(agent, 0.0)
    with torch.no_grad():
        for net in (agent.critic.q1_net, agent.critic.q2_net):
            net.layers[0].weight[0, 11:] = 1.0  # hidden unit 0 of layer 1 = relu(sum(a)) ...
            net.layers[1].weight[0, 0] = 1.0  # ... carried by unit 0 of layer 2 ...
            net.layers[2].weight[0, 0] = 1.0  # ... to the output
        agent.critic.q2_net.layers[2].bias.fill_(1.0)


def test_cql_penalty_matches_its_formula_on_a_known_q_table():
    agent = make_agent(cql_alpha=1.0, cql_temp=0.7, cql_n_actions=5)
    make_q_sum_of_actions(agent)
    obs, actions, *_ = batch(n=8)
    q_data = agent.critic(obs, actions)
    torch.testing.assert_close(q_data[1], actions.sum(-1).relu() + 1)
    torch.manual_seed(123)
    penalty, _ = agent.cql_penalty(obs, q_data)
    torch.manual_seed(123)  # the same uniform draws, by hand
    random_actions = (torch.rand(5 * 8, 3) * 2 - 1).view(5, 8, 3)
    expected = 0.0
    for i in range(2):
        q_random = random_actions.sum(-1).relu() + i  # (N, B)
        expected += (0.7 * torch.logsumexp(q_random / 0.7, dim=0) - q_data[i]).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("temp", [0.1, 1.0])
def test_cql_penalty_is_non_negative_when_data_actions_have_the_lowest_q(temp):
    # temp * logsumexp(Q / temp) >= max_j Q(s, a_j) >= min_a Q(s, a) = Q(s, a_data)
    agent = make_agent(cql_alpha=1.0, cql_temp=temp, cql_n_actions=10)
    make_q_sum_of_actions(agent)
    obs, *_ = batch()
    lowest = torch.full((64, 3), -1.0)  # sum(a) is smallest at the corner (-1, -1, -1)
    penalty, _ = agent.cql_penalty(obs, agent.critic(obs, lowest))
    assert penalty.item() >= 0


def test_cql_step_lowers_q_off_the_data_relative_to_q_on_it():
    agent = make_agent(cql_alpha=5.0, gamma=0.0)
    obs, actions, rewards, next_obs, not_done = batch()
    gaps = []
    for _ in range(200):
        metrics = agent.update(obs, actions, rewards, next_obs, not_done)
        gaps.append((metrics["cql_logsumexp"] - metrics["cql_data_q"]).item())
    assert metrics["cql_penalty"].item() == pytest.approx(gaps[-1], rel=1e-4, abs=1e-4)
    assert gaps[-1] < gaps[0]


def test_td_loss_drops_when_regressing_onto_rewards():
    agent = make_agent(gamma=0.0)  # target is the reward alone, a fixed regression problem
    data = batch()
    losses = [agent.update(*data)["td_loss"].item() for _ in range(300)]
    assert losses[-1] < 0.5 * losses[0]


def test_truncated_episode_still_bootstraps():
    agent = make_agent(gamma=0.9, policy_noise=0.0)
    obs, actions, rewards, next_obs, _ = batch(n=4)
    with torch.no_grad():
        next_q = agent.critic_target(next_obs, agent.actor_target(next_obs)).min(0).values
    for not_done, expected in ((torch.ones(4), rewards + 0.9 * next_q), (torch.zeros(4), rewards)):
        metrics = make_agent(gamma=0.9, policy_noise=0.0).update(obs, actions, rewards, next_obs, not_done)
        assert metrics["target_q"].item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_adam_takes_the_same_steps_as_torch_optim_adam():
    torch.manual_seed(0)
    mine = [torch.randn(5, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in mine]
    start = [p.detach().clone() for p in mine]
    mine_opt, their_opt = Adam(mine, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    for step in range(20):  # bias correction matters most in the first steps; later ones check m, v
        grads = [torch.randn_like(p) * (step + 1) for p in mine]
        for params, opt in ((mine, mine_opt), (theirs, their_opt)):
            opt.zero_grad()
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(mine, theirs):
        torch.testing.assert_close(p, q)
    assert all((p != p0).all() for p, p0 in zip(mine, start))  # every entry moved


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
    assert not torch.equal(plain.actor.net.layers[0].weight, cloned.actor.net.layers[0].weight)
    for _ in range(300):
        last = cloned.update_actor(obs, actions)["bc_loss"].item()
    assert last < 0.6 * first


def test_auto_bc_weight_is_mean_abs_q_over_alpha_and_action_dims():
    agent = make_agent(bc_weight="auto", bc_alpha=2.5)
    make_q_flat(agent, -30.0)
    obs, actions, *_ = batch()
    assert agent.update_actor(obs, actions)["bc_weight"].item() == pytest.approx(30.0 / (2.5 * 3))


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
    assert not torch.equal(actor_before["net.layers.0.weight"], agent.actor.state_dict()["net.layers.0.weight"])
    # Polyak: target moved by tau of the gap to the online critic
    online, before = agent.critic.q2_net.layers[0].weight, target_before["q2_net.layers.0.weight"]
    after = agent.critic_target.q2_net.layers[0].weight
    torch.testing.assert_close(after, before + agent.cfg.tau * (online - before))


def test_update_learns_on_a_real_dataset(tiny_dataset):
    buffer = dataset_to_buffer(tiny_dataset, torch.device("cpu"))
    agent = make_agent(bc_weight=10.0, cql_alpha=1.0)
    names = {"td_loss", "cql_penalty", "cql_logsumexp", "cql_data_q", "critic_loss",
             "ddpg_loss", "bc_loss", "bc_weight", "actor_loss", "q_data", "target_q"}
    torch.manual_seed(0)
    agent.update(*buffer.sample(64))
    first = agent.update(*buffer.sample(64))  # the second update is the first actor update
    for _ in range(200):
        last = agent.update(*buffer.sample(64))
    assert set(first) == set(last) == names
    assert all(torch.isfinite(v) for v in last.values())
    assert last["bc_loss"] < first["bc_loss"]
