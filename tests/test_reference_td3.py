"""TD3, TD3+BC and CQL updates against the ReadMe's equations (and the two variants in docs/methods.md),
recomputed by hand one sample at a time.

Each test runs a few updates of a TD3Agent on tiny fixed batches and, beside it, a plain
single-run reference of every member (reference.py): its own copies of the weights, its own
copy of the member's random generator, the equations of "The update step" written as explicit
sums, and an identical torch.optim.Adam. After every update the returned terms, the gradients
the agent applied to each network and every weight (online, target, the Lagrange multiplier)
must equal the reference's.
"""
import math
from collections import Counter

import pytest
import torch

from reference import (ACT_DIM, HIGH, HIGH_T, LOW, LOW_T, OBS_DIM, Actor, RefMLP, adam_step, assert_grads,
                       assert_terms, assert_weights, logsumexp_t, mean, perturb, polyak, q_value,
                       tiny_batch)
from td3_agent import TD3Agent, TD3Config

SMALL = dict(hidden=(7, 5), lr=1e-2, gamma=0.9, tau=0.3, policy_noise=0.6, noise_clip=0.5)


def separate_targets(agent: TD3Agent) -> None:
    """Move the target networks away from the online ones, and saturate mu'(s') so that a' hits the bounds."""
    perturb(agent.actor_target, seed=7)
    perturb(agent.critic_target, seed=8)
    with torch.no_grad():
        agent.actor_target.net.weights[-1].mul_(4.0)


class TD3Member:
    """Member m of a TD3Agent as one plain run: copies of its networks and generator, and its own Adams."""

    def __init__(self, agent: TD3Agent, m: int, cfg: TD3Config):
        self.cfg, self.updates, self.seen = cfg, 0, Counter()
        self.actor = Actor(RefMLP(agent.actor.net, m), LOW_T, HIGH_T)
        self.q = [RefMLP(agent.critic.net, 2 * m + i) for i in range(2)]  # member m's Q1 is MLP 2m, Q2 2m + 1
        self.actor_target = Actor(RefMLP(agent.actor_target.net, m, trainable=False), LOW_T, HIGH_T)
        self.q_target = [RefMLP(agent.critic_target.net, 2 * m + i, trainable=False) for i in range(2)]
        self.log_alpha = torch.tensor(math.log(cfg.cql_alpha) if cfg.cql_alpha > 0 else 0.0, requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.net.params(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.q[0].params() + self.q[1].params(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.generator = torch.Generator().set_state(agent.members.generators[m].get_state())

    def update(self, obs, actions, rewards, next_obs, not_done) -> dict[str, torch.Tensor]:
        """Steps 1-6 of the ReadMe's update step on one member's batch (B, ...)."""
        cfg = self.cfg
        self.updates += 1
        noise = torch.randn(actions.shape, generator=self.generator)  # the member's next N(0, 1) draws
        with torch.no_grad():
            target_q = [self.target(next_obs[i], rewards[i], not_done[i], noise[i]) for i in range(len(rewards))]
        q1 = [q_value(self.q[0], s, a) for s, a in zip(obs, actions)]
        q2 = [q_value(self.q[1], s, a) for s, a in zip(obs, actions)]
        td_loss = mean([(q - y) ** 2 for q, y in zip(q1, target_q)]) + mean([(q - y) ** 2 for q, y in zip(q2, target_q)])
        terms = {"q1": mean(q1), "q2": mean(q2), "target_q": mean(target_q), "td_loss": td_loss}
        critic_loss = td_loss
        if cfg.cql_alpha > 0:
            penalty, cql_terms = self.cql(obs, next_obs, q1, q2)
            weight = self.cql_weight(penalty)
            critic_loss = td_loss + weight * penalty
            terms |= cql_terms | {"cql_penalty": penalty, "cql_alpha": weight}
        adam_step(self.critic_opt, self.q[0].params() + self.q[1].params(), critic_loss)
        terms["critic_loss"] = critic_loss
        if self.updates % cfg.policy_delay == 0:
            terms |= self.actor_step(obs, actions)
            polyak(self.actor_target.net, self.actor.net, cfg.tau)
            for target, online in zip(self.q_target, self.q):
                polyak(target, online, cfg.tau)
        return {name: value.detach() for name, value in terms.items()}

    def target(self, next_obs, reward, not_done, noise) -> torch.Tensor:
        """y = r + gamma (1 - d) min_i Q'_i(s', clip(mu'(s') + clip(sigma eps, -c, c) (h - l) / 2, l, h))."""
        cfg = self.cfg
        smoothing = torch.clamp(noise * cfg.policy_noise, -cfg.noise_clip, cfg.noise_clip)
        raw = self.actor_target(next_obs) + smoothing * (HIGH_T - LOW_T) / 2
        next_action = torch.minimum(torch.maximum(raw, LOW_T), HIGH_T)
        self.seen["noise clipped"] += int((smoothing != noise * cfg.policy_noise).any())
        self.seen["target action clamped"] += int((raw != next_action).any())
        self.seen["terminal"] += int(not_done == 0)
        next_q = torch.min(q_value(self.q_target[0], next_obs, next_action), q_value(self.q_target[1], next_obs, next_action))
        return reward + cfg.gamma * not_done * next_q

    def cql(self, obs, next_obs, q1, q2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """sum_i E_s[T log sum_{a' in A(s)} exp(Q_i(s, a') / T) - Q_i(s, a)], A(s): N uniform, mu(s), mu(s')."""
        cfg, n = self.cfg, self.cfg.cql_n_actions
        uniform = LOW_T + (HIGH_T - LOW_T) * torch.rand((n, len(obs), ACT_DIM), generator=self.generator)
        lse, q_random, q_policy = ([], []), ([], []), ([], [])
        for b, s in enumerate(obs):
            candidates = [uniform[j, b] for j in range(n)]
            if not cfg.cql_uniform_only:
                with torch.no_grad():
                    candidates += [self.actor(s), self.actor(next_obs[b])]  # both evaluated at state s
            for i in range(2):
                q_all = [q_value(self.q[i], s, a) for a in candidates]
                lse[i].append(logsumexp_t(q_all, cfg.cql_temp))
                q_random[i].extend(q_all[:n])
                q_policy[i].extend(q_all[n:n + 1])
        penalty = sum(mean([l - q for l, q in zip(lse[i], q_data)]) for i, q_data in enumerate((q1, q2)))
        terms = {"cql_logsumexp": mean(lse[0]) + mean(lse[1]), "cql_q_random": (mean(q_random[0]) + mean(q_random[1])) / 2,
                 "cql_q_data": (mean(q1) + mean(q2)) / 2}
        if not cfg.cql_uniform_only:
            terms["cql_q_policy"] = (mean(q_policy[0]) + mean(q_policy[1])) / 2
        return penalty, terms

    def cql_weight(self, penalty: torch.Tensor) -> torch.Tensor:
        """alpha_cql, or the multiplier alpha' = exp(log alpha') before its ascent step on alpha' (L_CQL / 2 - g)."""
        if self.cfg.cql_target_gap is None:
            return torch.tensor(self.cfg.cql_alpha)
        alpha = torch.exp(self.log_alpha)
        adam_step(self.alpha_opt, [self.log_alpha], -alpha * (penalty.detach() / 2 - self.cfg.cql_target_gap))
        return alpha.detach()

    def actor_step(self, obs, actions) -> dict[str, torch.Tensor]:
        """L_mu = -E[Q1(s, mu(s))] + alpha_reg E||a - mu(s)||^2, the critic as the critic step left it."""
        pi = [self.actor(s) for s in obs]
        q_pi = [q_value(self.q[0], s, p) for s, p in zip(obs, pi)]
        ddpg_loss = -mean(q_pi)
        bc_loss = mean([((p - a) ** 2).sum() for p, a in zip(pi, actions)])
        if self.cfg.bc_weight == "auto":  # E|Q| / (alpha |A|), a constant of the step
            weight = mean([q.abs() for q in q_pi]).detach() / (self.cfg.bc_alpha * ACT_DIM)
        else:
            weight = torch.tensor(float(self.cfg.bc_weight))
        actor_loss = ddpg_loss + weight * bc_loss
        adam_step(self.actor_opt, self.actor.net.params(), actor_loss)
        return {"ddpg_loss": ddpg_loss, "bc_loss": bc_loss, "bc_weight": weight, "actor_loss": actor_loss}


def assert_member_matches(agent: TD3Agent, ref: TD3Member, m: int, actor_step: bool) -> None:
    """Member m's gradients, weights, target weights, multiplier and generator are the reference's."""
    for i in range(2):
        assert_grads(agent.critic.net, 2 * m + i, ref.q[i], f"member {m}: Q{i + 1}'s gradient")
        assert_weights(agent.critic.net, 2 * m + i, ref.q[i], f"member {m}: Q{i + 1}")
        assert_weights(agent.critic_target.net, 2 * m + i, ref.q_target[i], f"member {m}: target Q{i + 1}")
    if actor_step:
        assert_grads(agent.actor.net, m, ref.actor.net, f"member {m}: the actor's gradient")
    assert_weights(agent.actor.net, m, ref.actor.net, f"member {m}: actor")
    assert_weights(agent.actor_target.net, m, ref.actor_target.net, f"member {m}: target actor")
    if ref.cfg.cql_alpha > 0 and ref.cfg.cql_target_gap is not None:
        assert agent.log_cql_alpha.grad[m].item() == pytest.approx(ref.log_alpha.grad.item(), rel=1e-4, abs=1e-7)
        assert agent.log_cql_alpha[m].item() == pytest.approx(ref.log_alpha.item(), rel=1e-5, abs=1e-7)
    # the agent drew exactly the reference's noise and CQL actions from the member's generator, no more
    assert torch.equal(agent.members.generators[m].get_state(), ref.generator.get_state())


def run_against_reference(configs: list[TD3Config], updates: int = 4) -> list[TD3Member]:
    """`updates` updates of an agent of len(configs) members, each checked against its reference."""
    seeds = [11 + m for m in range(len(configs))]
    agent = TD3Agent(OBS_DIM, ACT_DIM, LOW, HIGH, configs, seeds, torch.device("cpu"))
    separate_targets(agent)
    refs = [TD3Member(agent, m, c) for m, c in enumerate(configs)]
    for step in range(1, updates + 1):
        data = tiny_batch(step, len(configs))
        returned = agent.update(*data)
        for m, ref in enumerate(refs):
            assert_terms(returned, m, ref.update(*(t[m] for t in data)), rtol=1e-4)
            assert_member_matches(agent, ref, m, actor_step=step % configs[0].policy_delay == 0)
    for ref in refs:  # the batches exercised every case the equations distinguish
        assert ref.seen["noise clipped"] and ref.seen["target action clamped"] and ref.seen["terminal"]
    return refs


@pytest.mark.parametrize("policy_delay", [1, 2, 3])
def test_td3_update_is_the_readme_equations(policy_delay):
    run_against_reference([TD3Config(**SMALL, policy_delay=policy_delay)], updates=4)


def test_td3_with_layernorm_critics_is_the_readme_equations():
    run_against_reference([TD3Config(**SMALL, critic_layernorm=True)])


def test_td3_bc_with_a_fixed_weight_is_the_readme_equations():
    run_against_reference([TD3Config(**SMALL, bc_weight=3.0)])


def test_td3_bc_with_the_auto_weight_is_the_readme_equations():
    refs = run_against_reference([TD3Config(**SMALL, bc_weight="auto", bc_alpha=1.7)])
    assert refs[0].updates == 4


@pytest.mark.parametrize("uniform_only", [False, True])
def test_cql_update_is_the_readme_equations(uniform_only):
    run_against_reference([TD3Config(**SMALL, cql_alpha=2.0, cql_n_actions=3, cql_temp=0.7,
                                     cql_uniform_only=uniform_only)])


def test_cql_with_the_lagrange_multiplier_is_the_readme_equations():
    # a gap between the penalties per critic of the first updates, so alpha' both rises and falls
    refs = run_against_reference([TD3Config(**SMALL, cql_alpha=2.0, cql_n_actions=3, cql_target_gap=1.2)], updates=6)
    assert refs[0].log_alpha.item() != pytest.approx(math.log(2.0))


def test_members_with_their_own_weights_are_each_the_readme_equations():
    weights = [(0.0, 1.0), (3.0, 5.0), (0.5, 0.2)]  # (bc_weight, cql_alpha) of each member
    run_against_reference([TD3Config(**SMALL, bc_weight=w, cql_alpha=a, cql_n_actions=2) for w, a in weights])


def test_members_with_the_auto_weight_and_their_own_lagrange_multipliers_are_each_the_readme_equations():
    alphas = [1.0, 5.0, 0.2]
    run_against_reference([TD3Config(**SMALL, bc_weight="auto", cql_alpha=a, cql_n_actions=2, cql_target_gap=1.0)
                           for a in alphas])
