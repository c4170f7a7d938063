"""A learned model of the dataset's dynamics, MOPO's: K probabilistic MLPs and Hopper's termination rule.

Each member k maps a standardised (obs, action) to a Gaussian over y = (next_obs - obs, reward):
a mean mu_k and a log-variance lv_k per output, the reward last. Fitted by Gaussian NLL,

    loss_k = mean over batch and outputs of (mu_k - y)^2 exp(-lv_k) + lv_k,

with lv held between learned soft bounds (max_logvar, min_logvar; 0.01 x their gap is added to the
loss so that they close in on the data). Each member trains on its own bootstrap of the training
part; a held-out part picks when to stop and which members (the elites) the rollouts step through.
The K members are one StackedMLP: one batched matmul per layer, no loop over members.
A fitted model is data, not part of an agent: it is fitted once per dataset and settings, saved
and reloaded by harness/fitted.py, and shared by every run and seed on that data. Stepping it
(one elite per row) and its uncertainty penalty are MOPO's, in mopo.py.
"""
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from networks import StackedMLP
from td3_agent import TD3, hyper
from utils import ReplayBuffer

ROLLOUTS = ("rollout_length", "> 0")  # the dynamics flags act only with model rollouts on
# MOPO's weight decay of each layer's weights (4 hidden layers, then the output); deeper nets repeat the 4th
WEIGHT_DECAY = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)
OUTPUT_DECAY = 1e-4
IMPROVEMENT = 0.01  # a member improves when its held-out MSE falls by more than 1 % (MOPO's rule)
PATIENCE = 5  # epochs in which no member improved before the fit stops
HOLDOUT = 1000  # held-out transitions (or 20 % of a smaller dataset)


@dataclass
class DynamicsConfig:
    """The dynamics ensemble (dynamics.py) and its fit: fitted once per dataset and these values, then reused."""
    model_ensemble: int = hyper(7, "probabilistic MLPs in the dynamics ensemble; MOPO's value", low=2, needs=ROLLOUTS,
                                agents=TD3)
    model_elites: int = hyper(5, "members with the lowest held-out error, through which rollouts step; MOPO's value",
                              low=1, needs=ROLLOUTS, agents=TD3)
    model_hidden: tuple[int, ...] = hyper((200, 200, 200, 200), "hidden widths of each member (SiLU); MOPO's 4 x 200",
                                          low=1, needs=ROLLOUTS, agents=TD3)
    model_batch_size: int = hyper(256, "transitions per member per fitting step; MOPO's value", low=1,
                                  needs=ROLLOUTS, agents=TD3)
    model_epoch_steps: int = hyper(1000, "fitting steps per epoch, after each of which the held-out error is "
                                         "measured (MOPO's epoch is a pass over the data: 3,900 steps on 1M)",
                                   low=1, needs=ROLLOUTS, agents=TD3)
    model_max_epochs: int = hyper(25, "cap on the fit's epochs, besides MOPO's stop after 5 epochs without a "
                                      "1 %% gain (25 x 1,000 steps: about 15 minutes on one CPU core)", low=1,
                                  needs=ROLLOUTS, agents=TD3)


class DynamicsEnsemble(nn.Module):
    """K Gaussian MLPs of (obs, action) -> (next_obs - obs, reward); inputs standardised inside."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DynamicsConfig, generator: torch.Generator):
        super().__init__()
        self.obs_dim, self.k = obs_dim, cfg.model_ensemble
        outputs = obs_dim + 1  # next_obs - obs, then the reward
        self.net = StackedMLP(self.k, [obs_dim + act_dim, *cfg.model_hidden, 2 * outputs], [generator],
                              activation=F.silu)
        self.max_logvar = nn.Parameter(torch.full((1, 1, outputs), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, outputs), -10.0))
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(cfg.model_elites))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K or 1, N, obs_dim), (K or 1, N, act_dim) -> mean and log-variance, (K, N, obs_dim + 1) each."""
        x = (torch.cat([obs, actions], dim=-1) - self.input_mean) / self.input_std
        mean, logvar = self.net(x.expand(self.k, -1, -1)).chunk(2, dim=-1)
        # soft bounds: lv stays below max_logvar and above min_logvar, smoothly, so its gradient never dies
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar


def targets(obs: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """What the model predicts, (..., obs_dim + 1): next_obs - obs, then the reward (the last column)."""
    return torch.cat([next_obs - obs, rewards[..., None]], dim=-1)


def nll(mean: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL (up to constants) per member: mean over batch and outputs of (mu - y)^2 e^-lv + lv, (K,)."""
    return (((mean - y) ** 2) * torch.exp(-logvar) + logvar).mean(dim=(-2, -1))


def optimizer(model: DynamicsEnsemble, lr: float = 1e-3) -> torch.optim.Adam:
    """Adam with MOPO's per-layer weight decay on the weights (none on biases and log-variance bounds)."""
    weights = list(model.net.weights)
    decays = [WEIGHT_DECAY[min(i, len(WEIGHT_DECAY) - 1)] for i in range(len(weights) - 1)] + [OUTPUT_DECAY]
    groups = [{"params": [w], "weight_decay": d} for w, d in zip(weights, decays)]
    groups.append({"params": [*model.net.biases, model.max_logvar, model.min_logvar], "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=lr)


def split_rows(buffer: ReplayBuffer, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of every transition, shuffled: the first min(20 %, 1,000) rows are the held-out part."""
    obs, actions, rewards, next_obs, _ = buffer.split(buffer.data.cpu())
    order = torch.randperm(len(buffer), generator=generator)
    return torch.cat([obs, actions], -1)[order], targets(obs, next_obs, rewards)[order]


def holdout_size(n: int) -> int:
    """MOPO's held-out part: 20 % of the data, at most 1,000 transitions, at least one (the VAE's too)."""
    return max(1, min(int(0.2 * n), HOLDOUT))


def spread(x: torch.Tensor) -> torch.Tensor:
    """Each column's std, for standardising inputs; 1 where a column is constant (below 1e-12), as MOPO's scaler."""
    std = x.std(0)
    return torch.where(std < 1e-12, 1.0, std)


@torch.no_grad()
def holdout_errors(model: DynamicsEnsemble, x: torch.Tensor, y: torch.Tensor, obs_dim: int) -> dict[str, torch.Tensor]:
    """Per member on the held-out part: NLL, MSE of the mean (the stop rule's), and its next-state and reward parts."""
    mean, logvar = model(x[None, :, :obs_dim], x[None, :, obs_dim:])
    squared = (mean - y) ** 2  # (K, N, obs_dim + 1)
    return {"nll": nll(mean, logvar, y), "mse": squared.mean(dim=(-2, -1)),
            "mse_next_obs": squared[..., :obs_dim].mean(dim=(-2, -1)), "mse_reward": squared[..., obs_dim].mean(-1)}


def fit(buffer: ReplayBuffer, cfg: DynamicsConfig, seed: int) -> Iterator[tuple[DynamicsEnsemble, dict]]:
    """Fit an ensemble to the buffer; yields (model, the epoch's CSV row) after each epoch.

    The model the last yield gives holds, for each member, its weights of its best held-out epoch
    (MOPO's snapshots), and its elites: the model_elites members of lowest held-out MSE.
    """
    generator = torch.Generator().manual_seed(seed)
    obs_dim = buffer.obs_dim
    model = DynamicsEnsemble(obs_dim, buffer.act_dim, cfg, generator)
    x, y = split_rows(buffer, generator)
    n_held = holdout_size(len(x))
    (x_held, y_held), (x_train, y_train) = (x[:n_held], y[:n_held]), (x[n_held:], y[n_held:])
    model.input_mean.copy_(x_train.mean(0))
    model.input_std.copy_(spread(x_train))
    opt = optimizer(model)
    best = torch.full((cfg.model_ensemble,), math.inf)
    best_state = {name: t.detach().clone() for name, t in model.net.state_dict().items()}
    stale = 0
    for epoch in range(1, cfg.model_max_epochs + 1):
        train_nll = fit_epoch(model, opt, x_train, y_train, cfg, generator)
        errors = holdout_errors(model, x_held, y_held, obs_dim)
        improved = (best - errors["mse"]) / best > IMPROVEMENT  # inf - x over inf is nan: False, so
        improved |= torch.isinf(best)  # the first epoch always improves
        for name, t in model.net.state_dict().items():  # each improved member's slice is its new snapshot
            best_state[name][improved] = t[improved]
        best = torch.where(improved, errors["mse"], best)
        stale = 0 if improved.any() else stale + 1
        done = stale >= PATIENCE or epoch == cfg.model_max_epochs
        if done:
            model.net.load_state_dict(best_state)
            model.elites.copy_(torch.argsort(best)[:cfg.model_elites])
        yield model, epoch_row(epoch, train_nll, errors, best, improved, cfg.model_elites)
        if done:
            return


def fit_epoch(model: DynamicsEnsemble, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              cfg: DynamicsConfig, generator: torch.Generator) -> float:
    """model_epoch_steps steps, each member on its own bootstrap draw (with replacement); the mean train NLL."""
    obs_dim, total = model.obs_dim, 0.0
    for _ in range(cfg.model_epoch_steps):
        idx = torch.randint(len(x), (cfg.model_ensemble, cfg.model_batch_size), generator=generator)  # (K, B)
        batch_x, batch_y = x[idx], y[idx]
        mean, logvar = model(batch_x[..., :obs_dim], batch_x[..., obs_dim:])
        loss = nll(mean, logvar, batch_y)
        bounds = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
        opt.zero_grad()
        (loss.sum() + bounds).backward()
        opt.step()
        total += loss.mean().item()
    return total / cfg.model_epoch_steps


def epoch_row(epoch: int, train_nll: float, errors: dict[str, torch.Tensor], best: torch.Tensor,
              improved: torch.Tensor, elites: int) -> dict[str, float]:
    """The fit CSV's row: train and held-out NLL (members' mean), held-out MSEs of the best `elites` members now."""
    top = torch.argsort(errors["mse"])[:elites]
    return {"epoch": epoch, "train_nll": train_nll, "holdout_nll": errors["nll"].mean().item(),
            "holdout_mse": errors["mse"][top].mean().item(),
            "holdout_mse_next_obs": errors["mse_next_obs"][top].mean().item(),
            "holdout_mse_reward": errors["mse_reward"][top].mean().item(),
            "best_holdout_mse": best.sort().values[:elites].mean().item(), "members_improved": int(improved.sum())}


def termination_rule(env: gym.Env) -> Callable[[torch.Tensor], torch.Tensor]:
    """The env's own terminal test on (..., obs_dim) observations: Hopper's health rule, its ranges read from the env.

    Hopper (v5) is healthy while z = obs[0] and the angle obs[1] lie in their ranges and every
    obs[1:] (with exclude_current_positions_from_observation) lies in healthy_state_range, all open
    intervals, and non-finite values are unhealthy. Raises ValueError for an env with no rule here.
    """
    name = env.spec.id if env.spec else type(env.unwrapped).__name__
    settings = constructor_values(env)
    needed = ("healthy_z_range", "healthy_angle_range", "healthy_state_range", "terminate_when_unhealthy")
    if not name.startswith("Hopper") or any(k not in settings for k in needed) or \
            not settings.get("exclude_current_positions_from_observation", False):
        raise ValueError(f"model rollouts need the env's termination rule on observations; this code has Hopper's "
                         f"(Hopper-v5, x excluded from the observation), not {name}'s")
    z_low, z_high = settings["healthy_z_range"]
    angle_low, angle_high = settings["healthy_angle_range"]
    state_low, state_high = settings["healthy_state_range"]
    terminates = settings["terminate_when_unhealthy"]

    def terminal(obs: torch.Tensor) -> torch.Tensor:
        z, angle, state = obs[..., 0], obs[..., 1], obs[..., 1:]
        healthy = (torch.isfinite(obs).all(-1) & (z > z_low) & (z < z_high) & (angle > angle_low)
                   & (angle < angle_high) & ((state > state_low) & (state < state_high)).all(-1))
        return ~healthy if terminates else torch.zeros_like(healthy)
    return terminal


def constructor_values(env: gym.Env) -> dict:
    """The env's constructor arguments as made: its documented defaults, overridden by the spec's kwargs."""
    params = inspect.signature(type(env.unwrapped).__init__).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return defaults | dict(env.spec.kwargs if env.spec else {})


def mean_predictor_mse(buffer: ReplayBuffer) -> float:
    """The MSE of predicting every target by its mean: the error a model that learned nothing makes."""
    obs, _, rewards, next_obs, _ = buffer.split(buffer.data.cpu())
    y = targets(obs, next_obs, rewards).double()
    return float(((y - y.mean(0)) ** 2).mean())



# What decides a fit's weights: its code version (harness/fitted.py) is a hash of their source
FIT_CODE = (StackedMLP, DynamicsEnsemble, targets, nll, optimizer, split_rows, holdout_size, spread, holdout_errors,
            fit, fit_epoch)
