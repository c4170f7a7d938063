"""The behaviour model of SPOT's support constraint (Wu et al., 2022): a conditional VAE of the data's actions.

Encoder q(z | s, a) = N(m, sigma^2), decoder a^ = dec(s, z), latent size 2 x act_dim (SPOT's). For
one action a at state s, with one reparameterised z = m + sigma * eps,

    -log beta(a | s)  ~  recon + beta_kl * KL,   recon = mean_dims (dec(s, z) - a)^2,
                                                 KL = -0.5 mean_dims (1 + log sigma^2 - m^2 - sigma^2),

the negative ELBO up to an affine map: small where the data has actions like a at s, large off its
support. The VAE is fitted once per dataset and settings (harness/fitted.py) and frozen while the
actor trains: TD3Agent.update_actor adds support_weight * E[-log beta(mu(s) | s)] to its loss.
"""
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from dynamics import holdout_size, spread
from networks import StackedMLP
from td3_agent import TD3, hyper
from utils import ReplayBuffer

SUPPORT = ("support_weight", "> 0")  # the VAE's flags act only with the support term on
LOG_STD_RANGE = (-4.0, 15.0)  # SPOT's clamp of the encoder's log sigma


@dataclass
class VAEConfig:
    """The behaviour VAE (behaviour_vae.py) and its fit: fitted once per dataset and these values, then reused."""
    vae_hidden: tuple[int, ...] = hyper((256, 256), "hidden widths of the VAE's encoder and decoder (SPOT: 750 750; "
                                                    "scaled to a CPU: benchmarks/speed.md)", low=1, needs=SUPPORT,
                                        agents=TD3)
    vae_steps: int = hyper(20_000, "fitting steps of batch 256 (SPOT: 100,000; scaled to a CPU, the held-out loss "
                                   "is flat by then: the fit's CSV)", low=1, needs=SUPPORT, agents=TD3)
    vae_kl_weight: float = hyper(0.5, "beta_kl, the KL term's weight in -log beta; SPOT's value", above=0,
                                 needs=SUPPORT, agents=TD3)


class BehaviourVAE(nn.Module):
    """q(z | s, a) and dec(s, z) of one VAE; states standardised inside, actions squashed into [low, high]."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: torch.Tensor, action_high: torch.Tensor,
                 cfg: VAEConfig, generator: torch.Generator):
        super().__init__()
        self.latent, self.kl_weight = 2 * act_dim, cfg.vae_kl_weight
        self.encoder = StackedMLP(1, [obs_dim + act_dim, *cfg.vae_hidden, 2 * self.latent], [generator])
        self.decoder = StackedMLP(1, [obs_dim + self.latent, *cfg.vae_hidden, act_dim], [generator])
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("action_mid", (torch.as_tensor(action_high) + torch.as_tensor(action_low)) / 2)
        self.register_buffer("action_scale", (torch.as_tensor(action_high) - torch.as_tensor(action_low)) / 2)

    def neg_log_density(self, obs: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """recon + beta_kl * KL per pair (the module docstring): (..., B, obs_dim), (..., B, act_dim) -> (..., B).

        noise: (..., B, latent) ~ N(0, 1), the reparameterised draw of z.
        """
        return sum(self.terms(obs, actions, noise))

    def terms(self, obs: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon, beta_kl * KL) per pair, each (..., B)."""
        lead = obs.shape[:-1]  # any leading axes (members, batch) are one batch of the VAE's one MLP
        obs = ((obs - self.obs_mean) / self.obs_std).reshape(1, -1, obs.shape[-1])
        mean, log_std = self.encoder(torch.cat([obs, actions.reshape(1, -1, actions.shape[-1])], -1)).chunk(2, -1)
        log_std = log_std.clamp(*LOG_STD_RANGE)
        z = mean + log_std.exp() * noise.reshape(1, -1, self.latent)
        decoded = self.action_mid + self.action_scale * torch.tanh(self.decoder(torch.cat([obs, z], -1)))
        recon = ((decoded - actions.reshape(decoded.shape)) ** 2).mean(-1)
        kl = -0.5 * (1 + 2 * log_std - mean ** 2 - (2 * log_std).exp()).mean(-1)
        return recon.reshape(lead), (self.kl_weight * kl).reshape(lead)


def fit(buffer: ReplayBuffer, action_low: torch.Tensor, action_high: torch.Tensor, cfg: VAEConfig, seed: int,
        every: int = 1000) -> Iterator[tuple[BehaviourVAE, dict]]:
    """Fit the VAE to the buffer's (s, a) pairs by Adam (lr 1e-3, batch 256); yields (model, CSV row) every `every`
    steps and at the last, the row holding the train and held-out -ELBO and its parts."""
    generator = torch.Generator().manual_seed(seed)
    obs, actions = (t.cpu() for t in buffer.split(buffer.data)[:2])
    order = torch.randperm(len(obs), generator=generator)
    n_held = holdout_size(len(obs))  # as the dynamics fit's
    held, train = order[:n_held], order[n_held:]
    model = BehaviourVAE(obs.shape[1], actions.shape[1], action_low, action_high, cfg, generator)
    model.obs_mean.copy_(obs[train].mean(0))
    model.obs_std.copy_(spread(obs[train]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    held_noise = torch.randn(n_held, model.latent, generator=generator)  # one fixed draw: a smooth held-out curve
    total, count = 0.0, 0
    for step in range(1, cfg.vae_steps + 1):
        idx = train[torch.randint(len(train), (256,), generator=generator)]
        loss = model.neg_log_density(obs[idx], actions[idx], torch.randn(256, model.latent, generator=generator)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, count = total + loss.item(), count + 1
        if step % every == 0 or step == cfg.vae_steps:
            with torch.no_grad():
                recon, kl = model.terms(obs[held], actions[held], held_noise)
            yield model, {"step": step, "train_loss": total / count,
                          "holdout_loss": (recon + kl).mean().item(), "holdout_recon": recon.mean().item(),
                          "holdout_kl": kl.mean().item()}
            total, count = 0.0, 0


# What decides a fit's weights: its code version (harness/fitted.py) is a hash of their source
FIT_CODE = (StackedMLP, BehaviourVAE, holdout_size, spread, fit)
