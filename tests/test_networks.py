"""networks.MLP's own forward and backward (oneDNN, on CPU) against plain nn.Linear + autograd."""
import pytest
import torch

import networks
from networks import MLP


@pytest.mark.skipif(not networks.ONEDNN, reason="this torch build has no oneDNN linear: MLP is plain autograd")
@pytest.mark.parametrize("hidden", [(32,), (32, 16), (24, 40, 8)])
@pytest.mark.parametrize("input_grad", [False, True])  # critic step (data in) / actor step (dQ/da)
@pytest.mark.parametrize("out_dim", [1, 3])  # Q, or the action
def test_mlp_function_matches_plain_autograd(hidden, input_grad, out_dim, monkeypatch):
    torch.manual_seed(0)
    net = MLP(14, hidden, out_dim)
    with torch.no_grad():  # nn.Linear's init; biases drawn wider so some ReLUs are off
        for layer in net.layers:
            layer.bias.uniform_(-1, 1)
    x = torch.randn(50, 14)
    weight_out = torch.randn(50, out_dim)  # loss = sum(y * weight_out): an arbitrary dLoss/dy

    def run(onednn: bool) -> tuple[torch.Tensor, ...]:
        monkeypatch.setattr(networks, "ONEDNN", onednn)
        inputs = x.clone().requires_grad_(input_grad)
        y = net(inputs)
        params = list(net.parameters())
        grads = torch.autograd.grad((y * weight_out).sum(), [inputs, *params] if input_grad else params)
        assert (y.grad_fn.name() == "MLPFunctionBackward") == onednn  # the path this run means to test
        return y.detach(), *grads

    for ours, plain in zip(run(onednn=True), run(onednn=False)):
        torch.testing.assert_close(ours, plain)


def test_mlp_takes_plain_autograd_for_a_single_observation():
    torch.manual_seed(0)
    net = MLP(11, (16, 16), 3)
    obs = torch.randn(11)
    torch.testing.assert_close(net(obs), net(obs[None])[0])


@pytest.mark.skipif(not networks.ONEDNN, reason="this torch build has no oneDNN linear: MLP is plain autograd")
def test_frozen_mlp_passes_the_input_gradient_and_leaves_its_weights_alone(monkeypatch):
    """The actor step's Q1(s, mu(s)): the critic is frozen, only dQ/da flows back."""
    torch.manual_seed(0)
    net = MLP(14, (32, 16), 1).requires_grad_(False)
    x = torch.randn(50, 14)

    def input_grad(onednn: bool) -> torch.Tensor:
        monkeypatch.setattr(networks, "ONEDNN", onednn)
        inputs = x.clone().requires_grad_(True)
        net(inputs).sum().backward()
        return inputs.grad

    torch.testing.assert_close(input_grad(onednn=True), input_grad(onednn=False))
    assert all(p.grad is None for p in net.parameters())


def test_mlp_without_grad_mode_computes_the_same_output():
    torch.manual_seed(0)
    net = MLP(11, (16, 16), 3)
    obs = torch.randn(8, 11)
    with torch.no_grad():
        no_graph = net(obs)
    assert no_graph.grad_fn is None
    torch.testing.assert_close(no_graph, net(obs).detach())
