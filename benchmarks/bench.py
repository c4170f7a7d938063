"""Speed benchmark: update rate against the matmul roofline, dataset loading, evaluation.

    MINARI_DATASETS_PATH=../shared/minari python bench.py

The roofline of an update is the time of the plain matmul calls that the update's layers
imply (forward, and the backward products that autograd needs), on the same shapes, measured
here in the same run. Each shape is run on the faster of torch's two CPU matmul kernels,
torch.matmul (MKL) and oneDNN (the one networks.MLP uses). "fraction of the roofline" =
roofline time / real update time. The torch.matmul-only roofline is printed beside it.

    MINARI_DATASETS_PATH=../shared/minari python bench.py --against HEAD~1

times this tree's update step against the one of an earlier commit instead, in one process.
"""
import argparse
import copy
import gc
import importlib
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch
from torch import nn

import td3_agent
from networks import ONEDNN, Actor, onednn_linear
from td3_agent import TD3Agent, TD3Config
from utils import DatasetError, ReplayBuffer, dataset_to_buffer, evaluate, load_dataset, transition_rows

METHODS = {"td3": {}, "td3_bc": {"bc_weight": 10.0}, "cql": {"cql_alpha": 5.0}}


def layer_matmuls(rows: int, sizes: list[int], heads: int, weight_grads: bool,
                  input_grad_first: bool, backward: bool) -> list[tuple[int, int, int]]:
    """(M, K, N) of each matmul in a forward (and backward) pass through an MLP.

    Forward: x (rows, in) @ W (in, out). Backward: dW = x^T (in, rows) @ g (rows, out) when
    the weights train, dx = g (rows, out) @ W^T (out, in) for every layer whose input needs a
    gradient (all but the first, unless the first input itself needs one, e.g. the action
    fed from the actor into Q1).
    """
    shapes = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append((rows, fan_in, fan_out))
        if backward and weight_grads:
            shapes.append((fan_in, rows, fan_out))
        if backward and (i > 0 or input_grad_first):
            shapes.append((rows, fan_out, fan_in))
    return shapes * heads


def update_matmuls(cfg: TD3Config, batch: int, obs_dim: int, act_dim: int
                   ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The matmuls of every update, and those of the actor step (run every policy_delay updates)."""
    hidden = list(cfg.hidden)
    actor, critic = [obs_dim, *hidden, act_dim], [obs_dim + act_dim, *hidden, 1]
    critic_rows = batch * (1 + (cfg.cql_n_actions if cfg.cql_alpha > 0 else 0))
    every_update = (layer_matmuls(batch, actor, 1, False, False, False)            # mu'(s')
                    + layer_matmuls(batch, critic, 2, False, False, False)        # Q'_1,2(s', a')
                    + layer_matmuls(critic_rows, critic, 2, True, False, True))   # Q_1,2 (+ CQL), grads
    actor_step = (layer_matmuls(batch, actor, 1, True, False, True)               # mu(s), grads
                  + layer_matmuls(batch, critic, 1, False, True, True))           # Q1(s, mu(s)), dQ/da
    return every_update, actor_step


def flops(shapes: list[tuple[int, int, int]]) -> int:
    """2 * M * K * N per matmul (one multiply and one add per term)."""
    return sum(2 * m * k * n for m, k, n in shapes)


def update_gflop(every: list[tuple[int, int, int]], actor_step: list[tuple[int, int, int]],
                 policy_delay: int) -> float:
    """GFLOP of matmuls per update (update_matmuls' two lists; the actor step every policy_delay)."""
    return (flops(every) + flops(actor_step) / policy_delay) / 1e9


def matmul_kernels(m: int, k: int, n: int) -> dict[str, Callable[[], torch.Tensor]]:
    """Each plain CPU matmul kernel of torch, as a call computing one (M, K) @ (K, N) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    kernels = {"torch.matmul": lambda: torch.matmul(a, b)}
    if ONEDNN:
        b_t = b.t().contiguous()  # oneDNN's linear takes the (N, K) weight, as nn.Linear stores it
        kernels["oneDNN"] = lambda: onednn_linear(a, b_t)
    return kernels


def seconds_per_call(call: Callable[[], object], repeats: int) -> float:
    """Mean seconds of `call()`, after a few warm-up calls."""
    for _ in range(3):
        call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def roofline_calls(shapes: list[tuple[int, int, int]]) -> dict[str, list]:
    """The matmuls of `shapes` as calls: all on torch.matmul, and each on its shape's faster kernel."""
    kernels = {shape: matmul_kernels(*shape) for shape in set(shapes)}
    fastest = {shape: min(calls.values(), key=lambda call: seconds_per_call(call, 20))
               for shape, calls in kernels.items()}
    return {"fastest": [fastest[shape] for shape in shapes],
            "torch.matmul": [kernels[shape]["torch.matmul"] for shape in shapes]}


def time_calls(calls: list[Callable[[], torch.Tensor]], repeats: int) -> float:
    """Seconds per pass over the calls."""
    return seconds_per_call(lambda: [call() for call in calls], repeats)


def time_updates(agent: TD3Agent, buffer: ReplayBuffer, batch: int, steps: int) -> float:
    """Seconds per real agent update (sampling included), averaged over `steps` updates."""
    start = time.perf_counter()
    for _ in range(steps):
        metrics = agent.update(*buffer.sample(batch))
    metrics["critic_loss"].item()  # wait for the device before reading the clock
    return (time.perf_counter() - start) / steps


def bench_update(agent: TD3Agent, buffer: ReplayBuffer, batch: int, rounds: int = 7) -> dict:
    """Update rate and its fraction of the matmul roofline, as medians over rounds.

    Each round times a window of real updates and then the roofline matmuls, back to back, so
    a slow spell of the machine hits both sides of the ratio alike. One warm-up round is dropped.
    """
    every, actor_step = update_matmuls(agent.cfg, batch, buffer.obs_dim, buffer.act_dim)
    calls = [roofline_calls(every), roofline_calls(actor_step)]
    gflop = update_gflop(every, actor_step, agent.cfg.policy_delay)
    steps = max(20, int(40 / gflop))  # about 0.2 s of updates per window
    update_s, roofline_s = [], {"fastest": [], "torch.matmul": []}
    for round_ in range(rounds + 1):
        update = time_updates(agent, buffer, batch, steps)
        roofs = {kind: time_calls(calls[0][kind], steps // 2)
                 + time_calls(calls[1][kind], steps // 2) / agent.cfg.policy_delay for kind in roofline_s}
        if round_ > 0:
            update_s.append(update)
            for kind, roof in roofs.items():
                roofline_s[kind].append(roof)
    fraction = {kind: statistics.median(roof / update for roof, update in zip(kind_s, update_s))
                for kind, kind_s in roofline_s.items()}
    return {"rate": 1 / statistics.median(update_s), "roofline": 1 / statistics.median(roofline_s["fastest"]),
            "fraction": fraction["fastest"], "roofline_torch_matmul": 1 / statistics.median(roofline_s["torch.matmul"]),
            "fraction_torch_matmul": fraction["torch.matmul"], "gflop": gflop}


def load_revision(rev: str) -> ModuleType:
    """td3_agent.py as of git revision `rev`, with the networks.py of that revision under it.

    Both files are written to a temporary folder and imported from there (the folder is gone
    afterwards); this tree's modules are then back in sys.modules, so both versions live side by side.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory(prefix="bench-against-") as folder:
        for name in ("networks.py", "td3_agent.py"):
            try:
                shown = subprocess.run(["git", "-C", here, "show", f"{rev}:{name}"], capture_output=True, text=True)
            except FileNotFoundError:
                raise ValueError("git is not installed") from None
            if shown.returncode != 0:
                why = (shown.stderr.strip().splitlines() or [f"exit status {shown.returncode}"])[-1]
                raise ValueError(f"git cannot show {name} at that revision ({why})")
            with open(os.path.join(folder, name), "w") as f:
                f.write(shown.stdout)
        ours = {name: sys.modules.pop(name) for name in ("networks", "td3_agent") if name in sys.modules}
        sys.path.insert(0, folder)
        try:
            return importlib.import_module("td3_agent")
        finally:
            sys.path.remove(folder)
            for name in ("networks", "td3_agent"):
                sys.modules.pop(name, None)
            sys.modules.update(ours)


def bench_against(old: ModuleType, label: str, buffer: ReplayBuffer, low: np.ndarray, high: np.ndarray,
                  batch: int, rounds: int, steps: int | None = None) -> list[str]:
    """Speed-up of this tree's update over `old`'s (a td3_agent module), per method.

    Both agents draw their batches from the same buffer and run in this process, in alternating
    windows of about 0.1 s (which goes first alternates too), so a change of the machine's speed
    hits both alike. The figure is the median over the window pairs of old time / new time.
    """
    lines = []
    for name, overrides in METHODS.items():
        agents = []
        for module in (old, td3_agent):
            torch.manual_seed(0)
            agents.append(module.TD3Agent(buffer.obs_dim, buffer.act_dim, low, high,
                                          module.TD3Config(**overrides), torch.device("cpu")))
        cfg = agents[1].cfg
        gflop = update_gflop(*update_matmuls(cfg, batch, buffer.obs_dim, buffer.act_dim), cfg.policy_delay)
        window = steps or max(10, int(20 / gflop))  # about 0.1 s of updates per window
        seconds = {0: [], 1: []}
        for agent in agents:
            time_updates(agent, buffer, batch, window)  # warm-up
        for round_ in range(rounds):
            for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                seconds[which].append(time_updates(agents[which], buffer, batch, window))
        ratios = [old_s / new_s for old_s, new_s in zip(seconds[0], seconds[1])]
        q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        lines.append(f"{name} {median:.2f}x")
        print(f"against {label}: {name} {median:.3f}x as fast (quartiles {q1:.3f}-{q3:.3f} over {rounds} window "
              f"pairs; {1 / statistics.median(seconds[1]):.0f} against {1 / statistics.median(seconds[0]):.0f} "
              f"updates/s, medians)")
    return lines


def anonymous_bytes() -> int:
    """AnonPages + Shmem from /proc/meminfo: all processes' heaps and shared memory, system-wide.

    Unlike MemAvailable this leaves out the page cache, so reading the dataset file does not count.
    """
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024
    return fields["AnonPages"] + fields["Shmem"]


def bench_loading(dataset, loads: int = 3) -> tuple[ReplayBuffer, object, dict]:
    """Time and peak extra memory of reading the dataset into the buffer, `loads` times.

    The first load finds the dataset file's page cache as the machine left it (possibly cold:
    read from disk); the later ones find it cached. The loader forks a helper process, so the
    memory figure is system-wide (both processes, shared pages once): the largest rise of
    anonymous_bytes(), sampled every 2 ms, during the load. Run the benchmark alone for this figure
    to mean anything.
    """
    seconds, peaks = [], []
    for _ in range(loads):
        buffer = None
        gc.collect()
        baseline, highest, done = anonymous_bytes(), [anonymous_bytes()], threading.Event()

        def sample() -> None:
            while not done.is_set():
                highest[0] = max(highest[0], anonymous_bytes())
                time.sleep(0.002)
        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        buffer = dataset_to_buffer(dataset, torch.device("cpu"))
        seconds.append(time.perf_counter() - start)
        done.set()
        sampler.join()
        peaks.append((highest[0] - baseline) / 2**20)
    buffer_bytes = buffer.data.numel() * buffer.data.element_size()
    return buffer, dataset.recover_environment(eval_env=True), {
        "first_seconds": seconds[0], "seconds": statistics.median(seconds[1:] or seconds),
        "transitions": len(buffer), "buffer_mb": buffer_bytes / 2**20,
        "peak_extra_mb": statistics.median(peaks), "loads": loads}


def plain_mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """nn.Linear-ReLU layers ending in a linear layer, differentiated by autograd."""
    sizes = [in_dim, *hidden]
    layers = [module for fan_in, fan_out in zip(sizes[:-1], sizes[1:]) for module in (nn.Linear(fan_in, fan_out), nn.ReLU())]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out_dim))


class PlainTD3BC:
    """Reference for --compare: TD3+BC written the plain way (nn.Linear layers and autograd,
    two separate critic MLPs, two critic optimizers, default Adam, full backward through the
    critic in the actor step). Its actor is tanh(MLP), for action bounds [-1, 1] as Hopper's."""

    def __init__(self, obs_dim: int, act_dim: int):
        cfg = self.cfg = TD3Config(bc_weight=10.0)
        self.actor = nn.Sequential(plain_mlp(obs_dim, cfg.hidden, act_dim), nn.Tanh())
        self.critics = [plain_mlp(obs_dim + act_dim, cfg.hidden, 1) for _ in range(2)]
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_targets = copy.deepcopy(self.critics)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opts = [torch.optim.Adam(c.parameters(), lr=cfg.lr) for c in self.critics]
        self.updates = 0

    def update(self, obs, actions, rewards, next_obs, not_done) -> dict[str, torch.Tensor]:
        cfg, self.updates = self.cfg, self.updates + 1
        with torch.no_grad():
            noise = (torch.randn_like(actions) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_actions = (self.actor_target(next_obs) + noise).clamp(-1, 1)
            next_sa = torch.cat([next_obs, next_actions], 1)
            next_q = torch.min(*[c(next_sa) for c in self.critic_targets]).squeeze(1)
            target_q = rewards + cfg.gamma * not_done * next_q
        sa = torch.cat([obs, actions], 1)
        critic_loss = sum(torch.nn.functional.mse_loss(c(sa).squeeze(1), target_q) for c in self.critics)
        for opt in self.critic_opts:
            opt.zero_grad()
        critic_loss.backward()
        for opt in self.critic_opts:
            opt.step()
        if self.updates % cfg.policy_delay == 0:
            pi = self.actor(obs)
            q = self.critics[0](torch.cat([obs, pi], 1))
            actor_loss = -q.mean() + cfg.bc_weight * ((pi - actions) ** 2).sum(1).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            with torch.no_grad():
                pairs = [(self.actor, self.actor_target)] + list(zip(self.critics, self.critic_targets))
                for online, target in pairs:
                    for p, tp in zip(online.parameters(), target.parameters()):
                        tp.mul_(1 - cfg.tau).add_(cfg.tau * p)
        return {"critic_loss": critic_loss}


def plain_loading(dataset) -> float:
    """Reference for --compare: seconds of a plain loop over iterate_episodes() and a concatenate."""
    start = time.perf_counter()
    parts = [transition_rows(episode) for episode in dataset.iterate_episodes()]
    torch.from_numpy(np.concatenate(parts))
    return time.perf_counter() - start


def evaluation_seconds(policy, env, episodes: int, side_by_side: bool) -> tuple[float, int]:
    """Seconds and env steps of an evaluation, side by side (as utils.evaluate) or one episode at a time."""
    steps = [0]

    def counting(obs: np.ndarray) -> np.ndarray:
        steps[0] += len(obs)
        return policy(obs)
    start = time.perf_counter()
    if side_by_side:
        evaluate(counting, env, episodes, seed=0)
    else:
        for i in range(episodes):
            evaluate(counting, env, 1, seed=i)
    return time.perf_counter() - start, steps[0]


def compare(buffer: ReplayBuffer, env, dataset_id: str, policy, batch: int) -> None:
    """The plain versions of what bench.py measures, in this same run, for before/after figures."""
    plain = bench_update(PlainTD3BC(buffer.obs_dim, buffer.act_dim), buffer, batch)
    print(f"compare: plain TD3+BC {plain['rate']:.0f} updates/s -> {plain['fraction']:.0%} of the roofline "
          f"({plain['fraction_torch_matmul']:.0%} of torch.matmul's)")
    print(f"compare: plain loop over iterate_episodes(): {plain_loading(load_dataset(dataset_id)):.2f} s")
    for side_by_side in (False, True):
        seconds, steps = evaluation_seconds(policy, env, 10, side_by_side)
        how = "side by side (utils.evaluate)" if side_by_side else "one episode at a time"
        print(f"compare: evaluation, 10 episodes {how}: {seconds:.2f} s for {steps} env steps")


def load_against(parser: argparse.ArgumentParser, rev: str) -> ModuleType:
    """load_revision(rev), or a one-line error naming --against."""
    try:
        old = load_revision(rev)
    except ValueError as error:
        parser.error(f"--against {rev!r}: {error}; give a commit of this repository, e.g. HEAD~1")
    try:
        old.TD3Agent(2, 1, np.zeros(1), np.ones(1), old.TD3Config(), torch.device("cpu"))
    except (TypeError, AttributeError) as error:
        parser.error(f"--against {rev!r}: its TD3Agent cannot be built as TD3Agent(obs_dim, act_dim, low, high, "
                     f"TD3Config(), device) ({type(error).__name__}); give a later commit")
    return old


def build_parser() -> argparse.ArgumentParser:
    """bench.py's flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mujoco/hopper/medium-v0", help="Minari dataset id (default: hopper medium)")
    parser.add_argument("--batch_size", type=int, default=256, help="transitions per update (default: 256)")
    parser.add_argument("--actor", default=None,
                        help="actor.pt of a trained run to time evaluation with (default: the benchmark's CQL actor, "
                             "which falls early, so its episodes are short)")
    parser.add_argument("--compare", action="store_true",
                        help="also time the plain versions (two-critic TD3+BC, a plain loading loop, "
                             "one-at-a-time evaluation) in the same run")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="instead: this tree's update step against the one of git revision REV "
                             "(e.g. HEAD~1), paired in alternating windows in one process")
    parser.add_argument("--rounds", type=int, default=40, help="window pairs per method for --against (default: 40)")
    return parser


def run_against(args: argparse.Namespace, dataset, old: ModuleType) -> None:
    """--against: this tree's update step against `old`'s, per method, and a summary line."""
    buffer = dataset_to_buffer(dataset, torch.device("cpu"))
    env = dataset.recover_environment(eval_env=True)
    print(f"device: cpu, torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch_size}")
    lines = bench_against(old, args.against, buffer, env.action_space.low, env.action_space.high,
                          args.batch_size, args.rounds)
    print(f"summary: this tree against {args.against}: {'; '.join(lines)}")


def run_benchmark(args: argparse.Namespace, parser: argparse.ArgumentParser, dataset) -> None:
    """The benchmark: loading, updates against their rooflines, evaluation (and --compare)."""
    torch.manual_seed(0)
    buffer, env, load = bench_loading(dataset)
    print(f"load: {load['transitions']:,} transitions in {load['seconds']:.2f} s with the file in the page cache "
          f"({load['transitions'] / load['seconds'] / 1e6:.2f} M/s; median of loads 2-{load['loads']}), "
          f"{load['first_seconds']:.2f} s for the first load (page cache as found); buffer {load['buffer_mb']:.0f} MB, "
          f"peak extra memory {load['peak_extra_mb']:.0f} MB ({load['peak_extra_mb'] / load['buffer_mb']:.2f}x the "
          f"buffer, median of {load['loads']} loads)")
    if args.actor:  # checked before the long part, so a wrong file fails fast
        try:
            trained_actor = torch.load(args.actor, map_location="cpu")
            Actor(buffer.obs_dim, buffer.act_dim, torch.zeros(buffer.act_dim), torch.ones(buffer.act_dim)
                  ).load_state_dict(trained_actor)
        except (OSError, RuntimeError, KeyError, pickle.UnpicklingError) as error:
            parser.error(f"--actor {args.actor!r} cannot be loaded ({type(error).__name__}); give the actor.pt "
                         "of a run made with this version of networks.py")
    print(f"device: cpu, torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch_size}")
    summary = []
    for name, overrides in METHODS.items():
        cfg = TD3Config(**overrides)
        agent = TD3Agent(buffer.obs_dim, buffer.act_dim, env.action_space.low, env.action_space.high,
                         cfg, torch.device("cpu"))
        result = bench_update(agent, buffer, args.batch_size)
        summary.append(f"{name} {result['rate']:.0f}/s ({result['fraction']:.0%}; torch.matmul's {result['fraction_torch_matmul']:.0%})")
        print(f"{name}: {result['rate']:.0f} updates/s; matmul roofline {result['roofline']:.0f} updates/s "
              f"({result['gflop']:.3f} GFLOP/update, {result['gflop'] * result['roofline']:.0f} GFLOP/s "
              f"in plain matmuls, each shape on its faster kernel) -> {result['fraction']:.0%} of the roofline; "
              f"torch.matmul alone: {result['roofline_torch_matmul']:.0f} updates/s -> "
              f"{result['fraction_torch_matmul']:.0%}")
    if args.actor:
        agent.actor.load_state_dict(trained_actor)
    eval_s, steps = evaluation_seconds(agent.act, env, 10, side_by_side=True)
    print(f"evaluation: 10 episodes ({args.actor or 'benchmark CQL actor'}), {steps} env steps in {eval_s:.2f} s")
    if args.compare:
        compare(buffer, env, args.dataset, agent.act, args.batch_size)
    print(f"summary: {'; '.join(summary)}; load {load['seconds']:.2f} s (first {load['first_seconds']:.2f} s) at "
          f"{load['peak_extra_mb'] / load['buffer_mb']:.1f}x buffer memory; eval {eval_s:.2f} s")


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more")
    old = load_against(parser, args.against) if args.against else None
    try:
        dataset = load_dataset(args.dataset)  # here, so a missing dataset fails fast, in one line
    except DatasetError as error:
        parser.error(str(error))
    if old:
        run_against(args, dataset, old)
    else:
        run_benchmark(args, parser, dataset)


if __name__ == "__main__":
    main()
