"""Plain single-run reference networks, and the checks that an agent's member m is one of them.

The reference tests (test_reference_*.py) copy each member's weights out of the agents' stacked
networks into separate leaf tensors, evaluate them one sample at a time, and write the update
step's equations (ReadMe.md) as explicit sums over the batch. Nothing here calls the agents'
helpers (mse, step, cql_penalty, polyak, ...): only the networks' weights are read from them.
"""
import numpy as np
import pytest
import torch

LAYERNORM_EPS = 1e-5  # torch.nn.functional.layer_norm's default, which the critics use
OBS_DIM, ACT_DIM, BATCH = 4, 2, 6
LOW, HIGH = np.array([-1.0, 0.0], np.float32), np.array([2.0, 0.5], np.float32)  # uneven: scale and mid matter
LOW_T, HIGH_T = torch.as_tensor(LOW), torch.as_tensor(HIGH)
NOT_DONE = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # two terminal transitions in every batch


def tiny_batch(seed: int, members: int) -> tuple[torch.Tensor, ...]:
    """(M, B, ...) tensors: obs, actions inside the bounds, rewards, next_obs, not_done with terminal rows."""
    g = torch.Generator().manual_seed(100 + seed)
    actions = LOW_T + (HIGH_T - LOW_T) * torch.rand(members, BATCH, ACT_DIM, generator=g)
    return (torch.randn(members, BATCH, OBS_DIM, generator=g), actions, torch.randn(members, BATCH, generator=g),
            torch.randn(members, BATCH, OBS_DIM, generator=g), NOT_DONE.expand(members, BATCH).clone())


def rows_by_hand(episode) -> list[list[float]]:
    """An episode's buffer rows, written out: [obs_t | a_t | r_t | obs_t+1 | 1 - terminated_t] for each t."""
    return [[*episode.observations[t], *episode.actions[t], episode.rewards[t], *episode.observations[t + 1],
             0.0 if episode.terminations[t] else 1.0] for t in range(len(episode.actions))]


def perturb(module: torch.nn.Module, seed: int, size: float = 0.3) -> None:
    """Move a (target) network's weights away from the online copy it started as: a fixed random offset."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))


class RefMLP:
    """MLP k of a networks.StackedMLP as its own tensors: x (in,) -> (out,), one sample at a time."""

    def __init__(self, stacked, k: int, trainable: bool = True):
        def own(t: torch.Tensor, index) -> torch.Tensor:
            return t.detach()[index].clone().requires_grad_(trainable)
        self.weights = [own(w, k) for w in stacked.weights]  # (in, out) each
        self.biases = [own(b, (k, 0)) for b in stacked.biases]  # (out,) each
        self.gains = [own(g, (k, 0)) for g in stacked.norm_gains]  # LayerNorm's gain and shift, if any
        self.shifts = [own(s, (k, 0)) for s in stacked.norm_shifts]

    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases, *self.gains, *self.shifts]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = x @ weight + bias
            if i < last:
                if self.gains:
                    n = x.shape[0]
                    mean = x.sum() / n
                    var = ((x - mean) ** 2).sum() / n  # LayerNorm's biased spread
                    x = (x - mean) / torch.sqrt(var + LAYERNORM_EPS) * self.gains[i] + self.shifts[i]
                x = torch.clamp(x, min=0.0)
        return x


def parts(stacked, k: int) -> list[torch.Tensor]:
    """MLP k's tensors of a StackedMLP, in RefMLP.params()' order."""
    return ([w[k] for w in stacked.weights] + [b[k, 0] for b in stacked.biases]
            + [g[k, 0] for g in stacked.norm_gains] + [s[k, 0] for s in stacked.norm_shifts])


def grad_parts(stacked, k: int) -> list[torch.Tensor | None]:
    """The .grad of MLP k's tensors of a StackedMLP (None where it has none), in RefMLP.params()' order."""
    def of(t: torch.Tensor, index) -> torch.Tensor | None:
        return None if t.grad is None else t.grad[index]
    return ([of(w, k) for w in stacked.weights] + [of(b, (k, 0)) for b in stacked.biases]
            + [of(g, (k, 0)) for g in stacked.norm_gains] + [of(s, (k, 0)) for s in stacked.norm_shifts])


def assert_weights(stacked, k: int, ref: RefMLP, what: str, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """MLP k of the agent's network holds the reference's weights."""
    for i, (mine, theirs) in enumerate(zip(parts(stacked, k), ref.params())):
        torch.testing.assert_close(mine.detach(), theirs.detach(), rtol=rtol, atol=atol,
                                   msg=lambda text: f"{what}, tensor {i}: {text}")


def assert_grads(stacked, k: int, ref: RefMLP, what: str, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """The gradient the agent applied to MLP k equals the reference loss's gradient."""
    for i, (mine, theirs) in enumerate(zip(grad_parts(stacked, k), ref.params())):
        assert mine is not None and theirs.grad is not None, f"{what}, tensor {i}: no gradient"
        torch.testing.assert_close(mine, theirs.grad, rtol=rtol, atol=atol,
                                   msg=lambda text: f"{what}, tensor {i}: {text}")


def assert_terms(returned: dict[str, torch.Tensor], m: int, expected: dict[str, torch.Tensor],
                 rtol: float = 1e-5, atol: float = 1e-5) -> None:
    """update()'s terms for member m are exactly the reference's: the same names, the same values."""
    assert set(returned) == set(expected), (sorted(returned), sorted(expected))
    for name, value in expected.items():
        assert returned[name][m].item() == pytest.approx(float(value), rel=rtol, abs=atol), name


class Actor:
    """mu(s) = mid + half_range * tanh(net(s)), one state at a time."""

    def __init__(self, net: RefMLP, low: torch.Tensor, high: torch.Tensor):
        self.net, self.mid, self.half_range = net, (high + low) / 2, (high - low) / 2

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mid + self.half_range * torch.tanh(self.net(obs))


def q_value(net: RefMLP, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Q(s, a) of one pair: a scalar."""
    return net(torch.cat([obs, action]))[0]


def mean(values: list[torch.Tensor]) -> torch.Tensor:
    """The plain average of a list of scalars, as an explicit sum."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total / len(values)


def adam_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], loss: torch.Tensor) -> None:
    """The gradient of `loss` for `params` alone (other leaves keep their .grad), then one optimizer step."""
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()


@torch.no_grad()
def polyak(target: RefMLP, online: RefMLP, tau: float) -> None:
    """theta' <- theta' + tau (theta - theta'), written out."""
    for t, o in zip(target.params(), online.params()):
        t.copy_(t + tau * (o - t))


def logsumexp_t(values: list[torch.Tensor], temp: float) -> torch.Tensor:
    """T log sum_j exp(v_j / T), as the README writes it (no max shift: the tiny networks' Q are small)."""
    total = torch.exp(values[0] / temp)
    for v in values[1:]:
        total = total + torch.exp(v / temp)
    return temp * torch.log(total)
