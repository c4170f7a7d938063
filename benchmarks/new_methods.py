"""Speed of the model-based (MOPO) and support-constraint (SPOT) methods against TD3+BC, and of the dynamics fit.

    MINARI_DATASETS_PATH=../shared/minari python benchmarks/bench.py --new_methods --threads 1

Each (method, M) is timed in short windows, in turn, round after round in one process (timing.py),
so that a slow spell of the machine hits every method alike; the figure is the median over rounds
of its seconds per update over TD3+BC's at the same M. The model-based update counts its share of
the rollouts: a window of n updates also runs n / rollout_every of a rollout round (h = 5, the
default rollout_starts), timed in the same round. The models are at their default sizes but not
fitted: a fitted model costs the same arithmetic. The dynamics fit is timed for a few hundred
steps at its default size and batch; a whole fit is at most model_max_epochs x model_epoch_steps
of them (the fit's CSV says where it stopped).
"""
import dataclasses
import statistics
import time

import torch

from behaviour_vae import BehaviourVAE, VAEConfig
from dynamics import DynamicsConfig, DynamicsEnsemble, fit_epoch, optimizer, split_rows, termination_rule
from harness.config import RunConfig
from harness.runs import make_agent
from mopo import MOPOConfig, ModelRollouts
from td3_agent import TD3Config
from timing import seconds_per_call, window_steps
from utils import ReplayBuffer

TARGETS = {"mopo": 2.0, "spot": 1.5}  # issue 25: at most these times TD3+BC's seconds per update, at M = 1 and 3


def agents(buffer: ReplayBuffer, env, members: int) -> dict[str, tuple]:
    """TD3+BC, model-based TD3 (h = 5) and SPOT agents of `members` members; the model-based one with its rollouts."""
    low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (env.action_space.low, env.action_space.high))
    seeds = range(members)
    td3_bc = [RunConfig(td3=TD3Config(bc_weight=10.0), seed=s) for s in seeds]
    mopo = [RunConfig(mopo=MOPOConfig(rollout_length=5), seed=s) for s in seeds]
    spot = [RunConfig(td3=TD3Config(support_weight=0.1), seed=s) for s in seeds]
    vae = BehaviourVAE(buffer.obs_dim, buffer.act_dim, low, high, VAEConfig(), torch.Generator()).requires_grad_(False)
    model = DynamicsEnsemble(buffer.obs_dim, buffer.act_dim, DynamicsConfig(), torch.Generator()).requires_grad_(False)
    cpu = torch.device("cpu")
    mopo_agent = make_agent(mopo, buffer, env, cpu)
    rollouts = ModelRollouts(model, termination_rule(env), mopo[0].mopo, buffer, mopo_agent.members, 128)
    rollouts.rollout(mopo_agent.actor)  # a full round first, so that batches have model rows to draw
    return {"td3_bc": (make_agent(td3_bc, buffer, env, cpu), None), "mopo": (mopo_agent, rollouts),
            "spot": (make_agent(spot, buffer, env, cpu, behaviour=vae), None)}


def update_call(agent, rollouts: ModelRollouts | None, buffer: ReplayBuffer):
    """One update of all members on fresh batches (sampling included), as runner.py makes it."""
    if rollouts is None:
        return lambda: agent.update(*buffer.sample(128, agent.members.generators))
    return lambda: agent.update(*rollouts.sample(agent.members.generators))


def bench_updates(buffer: ReplayBuffer, env, members: list[int], rounds: int) -> dict[tuple[str, int], list[float]]:
    """Seconds per update of each method at each M, per round; the model-based one with its rollouts' share."""
    built = {}
    for m in members:
        for name, (agent, rollouts) in agents(buffer, env, m).items():
            update = update_call(agent, rollouts, buffer)
            built[name, m] = (update, rollouts, agent, window_steps(update, 2))
    seconds = {key: [] for key in built}
    for _ in range(rounds):
        for key, (update, rollouts, agent, steps) in built.items():
            per_update = seconds_per_call(update, steps)
            if rollouts is not None:  # this window's share of a rollout round, timed whole every round
                start = time.perf_counter()
                rollouts.rollout(agent.actor)
                per_update += (time.perf_counter() - start) / rollouts.cfg.rollout_every
            seconds[key].append(per_update)
    return seconds


def bench_fit(buffer: ReplayBuffer, steps: int = 200) -> float:
    """Seconds per step of the dynamics fit at its default size and batch: dynamics.fit_epoch itself, on the
    shuffled rows the fit draws from."""
    cfg = DynamicsConfig()
    gen = torch.Generator().manual_seed(0)
    model = DynamicsEnsemble(buffer.obs_dim, buffer.act_dim, cfg, gen)
    opt = optimizer(model)
    x, y = split_rows(buffer, gen)
    fit_epoch(model, opt, x, y, dataclasses.replace(cfg, model_epoch_steps=10), gen)  # warm-up
    timed = dataclasses.replace(cfg, model_epoch_steps=steps)
    return seconds_per_call(lambda: fit_epoch(model, opt, x, y, timed, gen), 1) / steps


def run(buffer: ReplayBuffer, env, members: list[int], rounds: int) -> None:
    """Print the update table, the ratios against the targets, and the fit's speed."""
    seconds = bench_updates(buffer, env, members, rounds)
    print(f"update step, {torch.get_num_threads()} thread(s), batch 128, 128-128 networks; median of {rounds} rounds; "
          f"the model-based update with its share of a rollout round (h 5, {MOPOConfig().rollout_starts:,} starts per "
          f"member every {MOPOConfig().rollout_every:,} updates, a {DynamicsConfig().model_ensemble} x "
          f"{'-'.join(map(str, DynamicsConfig().model_hidden))} ensemble); SPOT with a "
          f"{'-'.join(map(str, VAEConfig().vae_hidden))} VAE")
    for (name, m), s in seconds.items():
        print(f"{name:8} M={m}: {1 / statistics.median(s):7.0f} updates/s")
    for name, target in TARGETS.items():
        for m in members:
            ratios = [ours / base for ours, base in zip(seconds[name, m], seconds["td3_bc", m])]
            low, median, high = statistics.quantiles(ratios, n=4)
            verdict = "met" if median <= target else "MISSED"
            print(f"{name} at M = {m}: {median:.2f}x TD3+BC's seconds per update (quartiles {low:.2f}-{high:.2f}); "
                  f"issue 25's target <= {target:g}x: {verdict}")
    per_step = bench_fit(buffer)
    cfg = DynamicsConfig()
    most = cfg.model_max_epochs * cfg.model_epoch_steps
    print(f"dynamics fit ({cfg.model_ensemble} x {'-'.join(map(str, cfg.model_hidden))}, batch {cfg.model_batch_size} "
          f"per member): {per_step * 1e3:.1f} ms per step; at most {most:,} steps = {most * per_step / 60:.1f} min "
          f"(issue 25's target: 15 min)")

