"""The support constraint (SPOT): the behaviour VAE's density, and its term in the actor's loss."""
import copy

import numpy as np
import pytest
import torch

from model_data import BEHAVIOUR_ACTION, fit_vae, narrow_buffer
from td3_agent import TD3Agent, TD3Config

LOW, HIGH = -np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """The narrow dataset's buffer and a small VAE fitted to it (once per module)."""
    buffer = narrow_buffer(tmp_path_factory.mktemp("minari"))
    return buffer, fit_vae(buffer)


def spot_agent(vae, seeds=(0,), weights=(0.5,)) -> TD3Agent:
    """A TD3 agent with the support term, one member per seed, each with its own lambda."""
    return TD3Agent(11, 3, LOW, HIGH, [TD3Config(hidden=(32, 32), support_weight=w) for w in weights], list(seeds),
                    torch.device("cpu"), behaviour=vae)


def test_the_elbo_is_higher_on_the_datas_actions_than_on_uniform_ones(narrow):
    buffer, vae = narrow
    obs, actions, *_ = buffer.split(buffer.data)
    noise = torch.randn(len(obs), vae.latent, generator=torch.Generator().manual_seed(0))
    uniform = torch.rand(actions.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    on_data, off_data = vae.neg_log_density(obs, actions, noise), vae.neg_log_density(obs, uniform, noise)
    assert on_data.mean() * 5 < off_data.mean()
    away = torch.tensor([-1.0, 1.0, -1.0]) / 3 ** 0.5
    far = [vae.neg_log_density(obs, (torch.as_tensor(BEHAVIOUR_ACTION) + d * away).expand_as(actions), noise).mean()
           for d in (0.0, 0.6, 1.2)]
    assert far[0] < far[1] < far[2]  # -log beta grows with the distance from the data's actions


def neg_elbo_by_hand(vae, obs: torch.Tensor, actions: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """SPOT's -log beta(a | s), from the VAE's encoder and decoder, pair by pair: recon + 0.5 KL, each a mean over
    its dimensions. obs (B, 11), actions (B, 3), latent (B, 6) ~ N(0, 1)."""
    out = []
    for s, a, eps in zip((obs - vae.obs_mean) / vae.obs_std, actions, latent):
        m, log_std = vae.encoder(torch.cat([s, a])[None, None])[0, 0].chunk(2)
        log_std = log_std.clamp(-4, 15)
        z = m + log_std.exp() * eps
        decoded = torch.tanh(vae.decoder(torch.cat([s, z])[None, None])[0, 0])  # actions in [-1, 1] here
        recon = sum((decoded[i] - a[i]) ** 2 for i in range(3)) / 3
        kl = -0.5 * sum(1 + 2 * log_std[j] - m[j] ** 2 - (2 * log_std[j]).exp() for j in range(6)) / 6
        out.append(recon + 0.5 * kl)
    return torch.stack(out)


def test_the_support_term_is_lambda_e_abs_q_times_the_vaes_neg_log_density_at_mu(narrow):
    buffer, vae = narrow
    agent = spot_agent(vae)
    agent.updates = 1  # the next update is an actor step
    obs, actions, rewards, next_obs, not_done = buffer.sample(16, agent.members.generators)
    draws = torch.Generator().set_state(agent.members.generators[0].get_state())
    actor = copy.deepcopy(agent.actor)
    metrics = agent.update(obs, actions, rewards, next_obs, not_done)
    critic = agent.critic  # as the actor step saw it: after this update's critic step, which comes first
    torch.randn((16, 3), generator=draws)  # the target-policy noise comes first, then the VAE's latent draw
    latent = torch.randn((16, 6), generator=draws)
    pi = actor(obs[0])
    recon_kl = neg_elbo_by_hand(vae, obs[0], pi, latent)  # (16,)
    q = critic.q1(obs, pi[None])[0]
    expected_loss = -q.mean() + 0.5 * q.abs().mean().detach() * recon_kl.mean()
    assert metrics["support_loss"].item() == pytest.approx(recon_kl.mean().item(), rel=1e-5)
    assert metrics["support_weight"].item() == pytest.approx(0.5 * q.abs().mean().item(), rel=1e-5)
    assert metrics["actor_loss"].item() == pytest.approx(expected_loss.item(), rel=1e-5)
    reference = torch.optim.Adam(actor.parameters(), lr=agent.cfg.lr)  # the same Adam step, by hand
    expected_loss.backward()
    reference.step()
    for mine, theirs in zip(agent.actor.parameters(), actor.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


def test_the_support_term_sends_no_gradient_into_the_vae(narrow):
    _, vae = narrow
    before = copy.deepcopy(vae.state_dict())
    agent = spot_agent(vae)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(1, 32, 11, generator=gen), torch.rand(1, 32, 3, generator=gen) * 2 - 1,
             torch.randn(1, 32, generator=gen), torch.randn(1, 32, 11, generator=gen), torch.ones(1, 32))
    for _ in range(4):
        agent.update(*batch)
    assert all(p.grad is None and not p.requires_grad for p in vae.parameters())
    for key, value in vae.state_dict().items():
        assert torch.equal(value, before[key])


def test_the_support_term_pulls_the_actor_onto_the_datas_actions(narrow):
    buffer, vae = narrow
    agent = spot_agent(vae, weights=(5.0,))
    for _ in range(300):
        agent.update(*buffer.sample(64, agent.members.generators))
    obs, actions, *_ = buffer.split(buffer.data)
    with torch.no_grad():
        distance = (agent.actor(obs) - torch.as_tensor(BEHAVIOUR_ACTION)).norm(dim=-1).mean()
    assert distance < 0.4  # TD3 alone on a few hundred transitions runs to the box's corners


def test_member_k_with_its_own_lambda_learns_what_a_single_run_does(narrow):
    buffer, vae = narrow
    group, alone = spot_agent(vae, seeds=(3, 4, 5), weights=(0.1, 1.0, 3.0)), spot_agent(vae, seeds=(4,),
                                                                                       weights=(1.0,))
    for _ in range(6):
        together = group.update(*buffer.sample(32, group.members.generators))
        single = alone.update(*buffer.sample(32, alone.members.generators))
        for key, value in single.items():
            torch.testing.assert_close(together[key][1:2], value, rtol=1e-4, atol=1e-5)
