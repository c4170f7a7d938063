"""BC, filtered BC and IQL updates against the equations of docs/methods.md, recomputed by hand one sample at a time.

As in test_reference_td3.py: beside the agent, a plain single-run reference of each member
(reference.py) with its own copies of the weights and an identical torch.optim.Adam; after every
update the returned terms, the gradients applied to each network and every weight must agree.
"""
from collections import Counter

import numpy as np
import pytest
import torch

from bc_agent import BCAgent
from conftest import DATASET_ID, rollout_episodes, write_dataset
from harness.config import LaunchConfig, RunConfig
from harness.runs import build
from iql_agent import IQLAgent, IQLConfig
from reference import (ACT_DIM, HIGH, HIGH_T, LOW, LOW_T, OBS_DIM, Actor, RefMLP, adam_step, assert_grads,
                       assert_terms, assert_weights, mean, perturb, polyak, q_value, rows_by_hand, tiny_batch)
from td3_agent import TD3Config

CPU = torch.device("cpu")
SMALL = dict(hidden=(7, 5), lr=1e-2, gamma=0.9, tau=0.3)


class BCMember:
    """Member m of a BCAgent as one plain run: L = E ||a - mu(s)||^2, one Adam step per update."""

    def __init__(self, agent: BCAgent, m: int, cfg: TD3Config, low: torch.Tensor, high: torch.Tensor):
        self.actor = Actor(RefMLP(agent.actor.net, m), low, high)
        self.opt = torch.optim.Adam(self.actor.net.params(), lr=cfg.lr)

    def update(self, obs, actions, *_) -> dict[str, torch.Tensor]:
        bc_loss = mean([((self.actor(s) - a) ** 2).sum() for s, a in zip(obs, actions)])
        adam_step(self.opt, self.actor.net.params(), bc_loss)
        return {"bc_loss": bc_loss.detach()}


def check_bc(agent: BCAgent, refs: list[BCMember], data: tuple[torch.Tensor, ...]) -> None:
    """One update of the agent and of each member's reference: the same loss, gradient and weights."""
    returned = agent.update(*data)
    for m, ref in enumerate(refs):
        assert_terms(returned, m, ref.update(*(t[m] for t in data)))
        assert_grads(agent.actor.net, m, ref.actor.net, f"member {m}: the actor's gradient")
        assert_weights(agent.actor.net, m, ref.actor.net, f"member {m}: actor")


@pytest.mark.parametrize("members", [1, 3])
def test_bc_update_is_the_readme_equation(members):
    cfg = TD3Config(**SMALL)
    agent = BCAgent(OBS_DIM, ACT_DIM, LOW, HIGH, [cfg] * members, [5 + m for m in range(members)], CPU)
    refs = [BCMember(agent, m, cfg, LOW_T, HIGH_T) for m in range(members)]
    for step in range(3):
        check_bc(agent, refs, tiny_batch(step, members))


def test_filtered_bc_trains_on_the_top_episodes_alone_with_the_readme_equation(minari_root):
    episodes = rollout_episodes((12,) * 8)
    for episode, total in zip(episodes, [5.0, 50.0, 1.0, 40.0, 30.0, 2.0, 60.0, 3.0]):
        episode.rewards[:] = np.linspace(0.0, 2.0, len(episode.rewards)) * total / len(episode.rewards)
    write_dataset(minari_root, episodes=episodes)
    returns = [sum(float(r) for r in e.rewards) for e in episodes]
    best = sorted(range(8), key=lambda k: -returns[k])[:2]  # 30 % of 8 episodes: floor(2.4) = 2
    assert sorted(best) == [1, 6]
    run = RunConfig(agent="bc", dataset=DATASET_ID, bc_top_percent=30.0, td3=TD3Config(**SMALL, batch_size=6))
    group = build([run], LaunchConfig(device="cpu"))
    expected = torch.tensor([row for k in sorted(best) for row in rows_by_hand(episodes[k])], dtype=torch.float32)
    torch.testing.assert_close(group.buffer.data, expected)
    low, high = torch.as_tensor(group.env.action_space.low), torch.as_tensor(group.env.action_space.high)
    refs = [BCMember(group.agent, 0, run.td3, low, high)]
    for _ in range(3):
        check_bc(group.agent, refs, group.buffer.sample(6, group.agent.members.generators))


class IQLMember:
    """Member m of an IQLAgent as one plain run: V, then the critics, then the actor, then the targets."""

    def __init__(self, agent: IQLAgent, m: int, cfg: TD3Config, iql: IQLConfig, scale: float,
                 low: torch.Tensor = LOW_T, high: torch.Tensor = HIGH_T):
        self.cfg, self.iql, self.scale, self.seen = cfg, iql, scale, Counter()
        self.actor = Actor(RefMLP(agent.actor.net, m), low, high)
        self.q = [RefMLP(agent.critic.net, 2 * m + i) for i in range(2)]
        self.q_target = [RefMLP(agent.critic_target.net, 2 * m + i, trainable=False) for i in range(2)]
        self.value = RefMLP(agent.value.net, m)
        self.actor_opt = torch.optim.Adam(self.actor.net.params(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.q[0].params() + self.q[1].params(), lr=cfg.lr)
        self.value_opt = torch.optim.Adam(self.value.params(), lr=cfg.lr)

    def update(self, obs, actions, rewards, next_obs, not_done) -> dict[str, torch.Tensor]:
        """Steps 1-4 of IQL in docs/methods.md on one member's batch (B, ...)."""
        cfg, tau, pairs = self.cfg, self.iql.iql_expectile, list(zip(obs, actions))
        with torch.no_grad():  # both before any step: Q'(s, a) and V(s')
            q_data = [torch.min(q_value(self.q_target[0], s, a), q_value(self.q_target[1], s, a)) for s, a in pairs]
            target_q = [r + cfg.gamma * d * self.value(s2)[0] for r, d, s2 in zip(rewards, not_done, next_obs)]
        v = [self.value(s)[0] for s in obs]
        u = [q - value for q, value in zip(q_data, v)]
        v_loss = mean([abs(tau - (1.0 if x < 0 else 0.0)) * x ** 2 for x in u])
        adam_step(self.value_opt, self.value.params(), v_loss)
        q1, q2 = ([q_value(net, s, a) for s, a in pairs] for net in self.q)
        td_loss = mean([(q - y) ** 2 for q, y in zip(q1, target_q)]) + mean([(q - y) ** 2 for q, y in zip(q2, target_q)])
        adam_step(self.critic_opt, self.q[0].params() + self.q[1].params(), td_loss)
        weights = [torch.clamp(torch.exp(self.iql.iql_beta * self.scale * x.detach()), max=100.0) for x in u]
        bc_error = [((self.actor(s) - a) ** 2).sum() for s, a in pairs]
        actor_loss = mean([w * e for w, e in zip(weights, bc_error)])
        adam_step(self.actor_opt, self.actor.net.params(), actor_loss)
        for target, online in zip(self.q_target, self.q):
            polyak(target, online, cfg.tau)
        self.seen.update({"u < 0": sum(x < 0 for x in u), "u > 0": sum(x > 0 for x in u),
                          "clipped": sum(w == 100 for w in weights), "unclipped": sum(w < 100 for w in weights),
                          "terminal": sum(d == 0 for d in not_done)})
        terms = {"v": mean(v), "v_loss": v_loss, "advantage": mean(u), "q1": mean(q1), "q2": mean(q2),
                 "target_q": mean(target_q), "td_loss": td_loss, "awr_weight": mean(weights),
                 "awr_weight_clipped": mean([(w >= 100).float() for w in weights]), "bc_loss": mean(bc_error),
                 "actor_loss": actor_loss}
        return {name: value.detach() for name, value in terms.items()}


def check_iql(agent: IQLAgent, refs: list[IQLMember], data: tuple[torch.Tensor, ...]) -> None:
    """One update of the agent and of each member's reference: the same terms, gradients and weights."""
    returned = agent.update(*data)
    for m, ref in enumerate(refs):
        assert_terms(returned, m, ref.update(*(t[m] for t in data)), rtol=1e-4)
        assert_grads(agent.value.net, m, ref.value, f"member {m}: V's gradient")
        assert_weights(agent.value.net, m, ref.value, f"member {m}: V")
        for i in range(2):
            assert_grads(agent.critic.net, 2 * m + i, ref.q[i], f"member {m}: Q{i + 1}'s gradient")
            assert_weights(agent.critic.net, 2 * m + i, ref.q[i], f"member {m}: Q{i + 1}")
            assert_weights(agent.critic_target.net, 2 * m + i, ref.q_target[i], f"member {m}: target Q{i + 1}")
        assert_grads(agent.actor.net, m, ref.actor.net, f"member {m}: the actor's gradient")
        assert_weights(agent.actor.net, m, ref.actor.net, f"member {m}: actor")


@pytest.mark.parametrize("members", [1, 3])
def test_iql_update_is_the_readme_equations(members):
    cfg, iql, scale = TD3Config(**SMALL), IQLConfig(iql_expectile=0.8, iql_beta=40.0), 0.9
    seeds = [21 + m for m in range(members)]
    agent = IQLAgent(OBS_DIM, ACT_DIM, LOW, HIGH, [cfg] * members, [iql] * members, seeds, CPU, advantage_scale=scale)
    perturb(agent.critic_target, seed=9, size=0.5)  # so that Q' differs from Q, and some weights reach the cap
    with torch.no_grad():  # and V(s) in the middle of Q'(s, a) on the first batch: u of both signs
        obs, actions = tiny_batch(0, members)[:2]
        u = torch.min(*agent.critic_target(obs, actions)) - agent.value(obs)
        agent.value.net.biases[-1][:, 0, 0] += u.median(-1).values
    refs = [IQLMember(agent, m, cfg, iql, scale) for m in range(members)]
    for step in range(4):
        check_iql(agent, refs, tiny_batch(step, members))
    for ref in refs:  # the batches exercised both sides of the expectile and of the cap, and terminal rows
        assert all(ref.seen[case] for case in ("u < 0", "u > 0", "clipped", "unclipped", "terminal")), ref.seen


def test_iql_run_scales_the_advantage_by_1000_over_the_range_of_episode_returns(minari_root):
    episodes = rollout_episodes((10,) * 4)
    for episode, total in zip(episodes, [100.0, 2100.0, 700.0, 1200.0]):
        episode.rewards[:] = total / len(episode.rewards)
    write_dataset(minari_root, episodes=episodes)
    returns = [sum(float(r) for r in e.rewards) for e in episodes]
    scale = 1000 / (max(returns) - min(returns))  # 0.5
    run = RunConfig(agent="iql", dataset=DATASET_ID, td3=TD3Config(**SMALL, batch_size=6), iql=IQLConfig(iql_beta=5.0))
    group = build([run], LaunchConfig(device="cpu"))
    agent = group.agent
    perturb(agent.critic_target, seed=3)
    low, high = torch.as_tensor(group.env.action_space.low), torch.as_tensor(group.env.action_space.high)
    refs = [IQLMember(agent, 0, run.td3, run.iql, scale, low, high)]
    for _ in range(2):
        check_iql(agent, refs, group.buffer.sample(6, agent.members.generators))
