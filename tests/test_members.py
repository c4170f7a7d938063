"""Members: M runs side by side in one agent (networks.py), each learning what it would learn alone."""
import pytest
import torch

from test_agent import batch, make_agent
from networks import Actor
from utils import dataset_to_buffer


def actor_of(agent, m: int) -> dict:
    """Member m's actor weights, as its actor.pt holds them."""
    return agent.members.member_state(agent.actor, m)


@pytest.mark.parametrize("method", [{"bc_weight": [0.0, 10.0, 1.0]}, {"cql_alpha": [1.0, 5.0, 2.0]}])
def test_member_k_learns_what_a_single_run_with_its_seed_and_weights_learns(tiny_dataset, method):
    (name, values), = method.items()
    buffer = dataset_to_buffer(tiny_dataset, torch.device("cpu"))
    group = make_agent(seeds=(3, 4, 5), configs=[{name: v} for v in values])
    alone = make_agent(seeds=(4,), configs=[{name: values[1]}])
    for _ in range(6):  # each draws its batches, noise and CQL actions from its own seed's generator
        together = group.update(*buffer.sample(64, group.members.generators))
        single = alone.update(*buffer.sample(64, alone.members.generators))
        for key, value in single.items():
            torch.testing.assert_close(together[key][1:2], value, rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(actor_of(group, 1).values(), actor_of(alone, 0).values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_members_share_no_gradients():
    agent = make_agent(seeds=(0, 1, 2), cql_alpha=1.0)
    obs, actions, rewards, next_obs, not_done = batch(members=3)
    q1, q2 = agent.critic(obs, actions)  # (M, B) each
    (q1[1] + q2[1]).sum().backward()  # member 1's Qs alone
    for weight in agent.critic.net.weights:  # slices: Q1, Q2 of member 0, then of member 1, then of member 2
        touched = weight.grad.flatten(1).abs().sum(dim=1) > 0
        assert touched.tolist() == [False, False, True, True, False, False]


def test_a_member_fed_infinities_leaves_the_others_untouched():
    clean, spoiled = make_agent(seeds=(0, 1, 2)), make_agent(seeds=(0, 1, 2))
    data = batch(members=3)
    bad = [t.clone() for t in data]
    bad[2][0] = float("inf")  # member 0's rewards
    for _ in range(4):
        clean.update(*data)
        spoiled.update(*bad)
    assert not torch.isfinite(actor_of(spoiled, 0)["net.weights.0"]).all()
    for m in (1, 2):
        for mine, theirs in zip(actor_of(spoiled, m).values(), actor_of(clean, m).values()):
            assert torch.equal(mine, theirs)


def test_member_states_restore_each_member_in_any_order():
    agent = make_agent(seeds=(0, 1), configs=[{"bc_weight": 0.0}, {"bc_weight": 10.0}], cql_alpha=1.0)
    data = batch(members=2)
    for _ in range(3):
        agent.update(*data)
    states = agent.members.state_dicts(agent)
    swapped = make_agent(seeds=(7, 8), configs=[{"bc_weight": 10.0}, {"bc_weight": 0.0}], cql_alpha=1.0)
    swapped.members.load_state_dicts(swapped, [states[1], states[0]])
    after, after_swapped = agent.update(*data), swapped.update(*(t.flip(0) for t in data))
    for key, value in after.items():
        assert torch.equal(after_swapped[key], value.flip(0))


def test_members_must_share_everything_but_their_weights():
    with pytest.raises(ValueError, match="bc_weight, cql_alpha"):
        make_agent(seeds=(0, 1), configs=[{"lr": 1e-3}, {"lr": 3e-4}])
    with pytest.raises(ValueError):
        make_agent(seeds=(0, 1), configs=[{"cql_alpha": 0.0}, {"cql_alpha": 5.0}])  # CQL on in one only


def test_a_members_actor_pt_loads_into_a_plain_one_run_actor_and_acts_as_the_member():
    agent = make_agent(seeds=(0, 1, 2))
    obs = batch(members=3)[0]
    actor = Actor(11, 3, torch.ones(3) * -1, torch.ones(3), hidden=(32, 32))  # the README's two lines
    actor.load_state_dict(actor_of(agent, 2))
    torch.testing.assert_close(actor(obs[2]), agent.actor(obs)[2])
