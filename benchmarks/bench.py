"""Speed of the update step, of loading the dataset and of evaluation, on CPU.

    MINARI_DATASETS_PATH=../shared/minari python benchmarks/bench.py
    MINARI_DATASETS_PATH=../shared/minari python benchmarks/bench.py --against HEAD~1

The first times loading the dataset into the replay buffer; the update step of TD3, TD3+BC
(bc_weight 10), CQL (cql_alpha 5; uniform and policy actions) and CQL with uniform actions only;
and an evaluation of 10 episodes. Beside each update rate it prints the matmul roofline: the
update's matrix products alone, as plain torch.matmul calls on the same shapes (no bias, ReLU,
loss, optimizer or Python around them). The second times this tree's update step against the
one of git revision REV, in one process.
"""
import argparse
import dataclasses
import gc
import importlib
import os
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

# `python benchmarks/bench.py` puts benchmarks/ on sys.path; the modules it times live one level up.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import td3_agent  # noqa: E402
from td3_agent import TD3Agent, TD3Config  # noqa: E402
from utils import DatasetError, ReplayBuffer, dataset_to_buffer, evaluate, load_dataset  # noqa: E402

from roofline import roofline_calls, update_gflop, update_matmuls  # noqa: E402  (benchmarks/roofline.py)

METHODS = {"td3": {}, "td3_bc": {"bc_weight": 10.0}, "cql": {"cql_alpha": 5.0, "cql_uniform_only": False},
           "cql_uniform": {"cql_alpha": 5.0, "cql_uniform_only": True}}
WINDOW_S = 0.1  # seconds of updates per timed window
REVISION_MODULES = ("networks", "flags", "td3_agent")  # what --against imports of a revision
def seconds_per_call(call: Callable[[], object], repeats: int) -> float:
    """Mean seconds of `call()` over `repeats` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def updater(agent: TD3Agent, buffer: ReplayBuffer, batch: int) -> Callable[[], object]:
    """One update of `agent` on a fresh batch (its sampling included), as a call."""
    return lambda: agent.update(*buffer.sample(batch))


def window_steps(update: Callable[[], object], policy_delay: int) -> int:
    """Updates in about WINDOW_S s, timed after a warm-up; a multiple of policy_delay, so actor
    steps count in proportion."""
    seconds_per_call(update, 4 * policy_delay)
    seconds = seconds_per_call(update, 4 * policy_delay)
    return policy_delay * max(1, round(WINDOW_S / seconds / policy_delay))


def bench_updates(agents: dict[str, TD3Agent], buffer: ReplayBuffer, batch: int,
                  rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per method, the seconds per update of each round: the update's, and its matmul roofline's.

    Each round runs a window of every method in turn, each followed by its roofline for the same
    number of updates, so a slow spell of the machine hits methods and rooflines alike.
    """
    windows, seconds = {}, {name: ([], []) for name in agents}
    for name, agent in agents.items():
        delay = agent.cfg.policy_delay
        every, actor_step = update_matmuls(agent.cfg, batch, buffer.obs_dim, buffer.act_dim)
        calls = roofline_calls(every * delay + actor_step)  # the matmuls of policy_delay updates
        update = updater(agent, buffer, batch)
        windows[name] = (update, lambda calls=calls: [call() for call in calls], window_steps(update, delay), delay)
    for _ in range(rounds):
        for name, (update, roofline, steps, delay) in windows.items():
            seconds[name][0].append(seconds_per_call(update, steps))
            seconds[name][1].append(seconds_per_call(roofline, steps // delay) / delay)
    return seconds


def anonymous_bytes() -> int:
    """AnonPages + Shmem of /proc/meminfo: all processes' heaps and shared memory, but not the
    page cache, so reading the dataset file does not count."""
    with open("/proc/meminfo") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return fields["AnonPages"] + fields["Shmem"]


def bench_loading(dataset, loads: int = 3) -> tuple[ReplayBuffer, list[float], list[float]]:
    """The buffer, and the seconds and peak extra MB of each of `loads` dataset_to_buffer calls.

    The first load finds the file's page cache as the machine left it. dataset_to_buffer forks a
    child that writes into shared memory, so the memory figure is system-wide: the largest rise
    of anonymous_bytes(), sampled every 2 ms. It means something only on a quiet machine.
    """
    seconds, peaks = [], []
    for _ in range(loads):
        buffer = None  # the previous load's buffer is freed before the baseline
        gc.collect()
        baseline, highest, done = anonymous_bytes(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                highest[0] = max(highest[0], anonymous_bytes() - baseline)
                time.sleep(0.002)
        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        buffer = dataset_to_buffer(dataset, torch.device("cpu"))
        seconds.append(time.perf_counter() - start)
        done.set()
        sampler.join()
        peaks.append(highest[0] / 2**20)
    return buffer, seconds, peaks


def bench_evaluation(agent: TD3Agent, env, episodes: int = 10) -> tuple[float, int]:
    """Seconds and env steps of utils.evaluate (the episodes side by side) with the agent's actor."""
    steps = 0

    def counting(obs: np.ndarray) -> np.ndarray:
        nonlocal steps
        steps += len(obs)
        return agent.act(obs)
    start = time.perf_counter()
    evaluate(counting, env, episodes, seed=0)
    return time.perf_counter() - start, steps


def resolve_revision(rev: str) -> str:
    """The hash of the commit `rev` names; ValueError if none.

    --end-of-options makes git read `rev` as a revision even when it starts with '-': a value
    such as --output=FILE would otherwise be one of git's options, and write that file.
    """
    try:
        found = subprocess.run(["git", "-C", REPO, "rev-parse", "--quiet", "--verify", "--end-of-options",
                                f"{rev}^{{commit}}"], capture_output=True, text=True)
    except FileNotFoundError:
        raise ValueError("git is not installed") from None
    if found.returncode != 0:
        why = found.stderr.strip().splitlines()
        raise ValueError("not a commit of this repository" + (f" ({why[-1]})" if why else "") + "; give e.g. HEAD~1")
    return found.stdout.strip()


def load_revision(commit: str) -> ModuleType:
    """td3_agent.py as of `commit` (a hash), with that commit's networks.py (and flags.py, where it
    has one: td3_agent.py imports it since the flags are declared on TD3Config) under it.

    They are imported from a temporary folder; afterwards this tree's modules are back in
    sys.modules, so both versions live side by side.
    """
    with tempfile.TemporaryDirectory(prefix="bench-against-") as folder:
        for name in REVISION_MODULES:
            shown = subprocess.run(["git", "-C", REPO, "show", f"{commit}:{name}.py"], capture_output=True, text=True)
            if shown.returncode != 0 and name != "flags":  # older commits have no flags.py
                raise ValueError(f"git cannot show its {name}.py")
            if shown.returncode == 0:
                with open(os.path.join(folder, f"{name}.py"), "w") as f:
                    f.write(shown.stdout)
        ours = {name: sys.modules.pop(name) for name in REVISION_MODULES if name in sys.modules}
        sys.path.insert(0, folder)
        try:
            return importlib.import_module("td3_agent")
        finally:
            sys.path.remove(folder)
            for name in REVISION_MODULES:
                sys.modules.pop(name, None)
            sys.modules.update(ours)


def config_for(module: ModuleType, overrides: dict) -> tuple[object | None, list[str]]:
    """module.TD3Config with this tree's value of each field it has, and the fields of `overrides`
    it lacks; the config is None when some are lacking (its update would not be the same)."""
    theirs = {field.name for field in dataclasses.fields(module.TD3Config)}
    lacking = sorted(set(overrides) - theirs)
    ours = dataclasses.asdict(TD3Config(**overrides))
    return None if lacking else module.TD3Config(**{k: v for k, v in ours.items() if k in theirs}), lacking


def bench_against(old: ModuleType, label: str, buffer: ReplayBuffer, low: np.ndarray, high: np.ndarray,
                  batch: int, hidden: tuple[int, ...], rounds: int) -> list[str]:
    """Speed of this tree's update over `old`'s (a td3_agent module), a line per method.

    Both agents sample from the same buffer in alternating windows (which goes first alternates
    too), so a change of the machine's speed hits both; the figure is the median of old / new
    seconds over the window pairs.
    """
    summary = []
    for name, overrides in METHODS.items():
        old_cfg, lacking = config_for(old, overrides | {"hidden": hidden})
        if old_cfg is None:
            print(f"against {label}: {name} skipped: its TD3Config has no {', '.join(lacking)}, so not the same update")
            summary.append(f"{name} skipped")
            continue
        updates = []
        for module, cfg in ((old, old_cfg), (td3_agent, TD3Config(**overrides, hidden=hidden))):
            torch.manual_seed(0)
            agent = module.TD3Agent(buffer.obs_dim, buffer.act_dim, low, high, cfg, torch.device("cpu"))
            updates.append(updater(agent, buffer, batch))
        window_steps(updates[0], old_cfg.policy_delay)  # warm-up
        steps, seconds = window_steps(updates[1], old_cfg.policy_delay), ([], [])
        for round_ in range(rounds):
            for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                seconds[which].append(seconds_per_call(updates[which], steps))
        ratios = [old_s / new_s for old_s, new_s in zip(*seconds)]
        low_q, median, high_q = statistics.quantiles(ratios, n=4) if rounds > 1 else ratios * 3
        summary.append(f"{name} {median:.2f}x")
        print(f"against {label}: {name} {median:.3f}x as fast (quartiles {low_q:.3f}-{high_q:.3f} over {rounds} "
              f"window pairs; {1 / statistics.median(seconds[1]):.0f} against "
              f"{1 / statistics.median(seconds[0]):.0f} updates/s)")
    return summary


def build_parser() -> argparse.ArgumentParser:
    """bench.py's flags."""
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mujoco/hopper/medium-v0", help="Minari dataset id (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=128, help="transitions per update (default: 128)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128],
                        help="hidden layer widths of actor and critics (default: 128 128; TD3+BC's paper: 256 256)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="timed windows of about 0.1 s per method, or window pairs with --against (default: 20)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (default: torch's choice, {torch.get_num_threads()} here)")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="instead: this tree's update step against the one of git revision REV "
                             "(e.g. HEAD~1), in alternating windows in one process")
    return parser


def load_against(parser: argparse.ArgumentParser, rev: str) -> ModuleType:
    """The td3_agent module of revision `rev`, or a one-line error naming --against."""
    try:
        old = load_revision(resolve_revision(rev))
        old.TD3Agent(2, 1, np.zeros(1), np.ones(1), old.TD3Config(), torch.device("cpu"))
    except ValueError as error:
        parser.error(f"--against {rev!r}: {error}")
    except (TypeError, AttributeError, ImportError) as error:
        parser.error(f"--against {rev!r}: its TD3Agent cannot be built as TD3Agent(obs_dim, act_dim, low, high, "
                     f"TD3Config(), device) ({type(error).__name__}); give a later commit")
    return old


def run_benchmark(args: argparse.Namespace, dataset) -> None:
    """Loading, then the update step of each method, then evaluation: a line each."""
    buffer, seconds, peaks = bench_loading(dataset)
    buffer_mb = buffer.data.numel() * buffer.data.element_size() / 2**20
    print(f"load: {len(buffer):,} transitions in {statistics.median(seconds[1:]):.2f} s with the file in the page "
          f"cache (median of loads 2-{len(seconds)}; first load {seconds[0]:.2f} s); buffer {buffer_mb:.0f} MB, "
          f"peak extra memory {statistics.median(peaks):.0f} MB system-wide (median of {len(peaks)} loads)")
    env = dataset.recover_environment(eval_env=True)
    agents = {name: TD3Agent(buffer.obs_dim, buffer.act_dim, env.action_space.low, env.action_space.high,
                             TD3Config(**overrides, hidden=tuple(args.hidden)), torch.device("cpu"))
              for name, overrides in METHODS.items()}
    for name, (update_s, roofline_s) in bench_updates(agents, buffer, args.batch_size, args.rounds).items():
        gflop = update_gflop(agents[name].cfg, args.batch_size, buffer.obs_dim, buffer.act_dim)
        print(f"{name}: {1 / statistics.median(update_s):.0f} updates/s; matmul roofline "
              f"{1 / statistics.median(roofline_s):.0f} updates/s ({gflop:.4f} GFLOP/update as torch.matmul on the "
              f"same shapes, alone): the matmuls would take "
              f"{statistics.median(r / u for r, u in zip(roofline_s, update_s)):.0%} of the update's time")
    eval_s, steps = bench_evaluation(agents["td3_bc"], env)
    print(f"evaluation: 10 episodes side by side, {steps} env steps in {eval_s:.2f} s ({steps / eval_s:.0f} "
          f"steps/s; actor: TD3+BC after its benchmark updates)")


def main(argv: list[str] | None = None) -> int:
    """Parse flags, check the revision and the dataset, run; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {"batch_size": [args.batch_size], "rounds": [args.rounds], "hidden": args.hidden,
             "threads": [] if args.threads is None else [args.threads]}
    for flag, values in given.items():
        if values and min(values) < 1:
            parser.error(f"--{flag} {' '.join(map(str, values))}: give 1 or more")
    old = load_against(parser, args.against) if args.against is not None else None
    try:
        dataset = load_dataset(args.dataset)
    except DatasetError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device: cpu, torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {args.batch_size}, "
          f"hidden {'-'.join(map(str, args.hidden))}, policy delay {TD3Config().policy_delay}; {args.rounds} rounds")
    if old is None:
        run_benchmark(args, dataset)
        return 0
    buffer = dataset_to_buffer(dataset, torch.device("cpu"))
    space = dataset.action_space
    summary = bench_against(old, args.against, buffer, space.low, space.high, args.batch_size,
                            tuple(args.hidden), args.rounds)
    print(f"summary: this tree against {args.against}: {'; '.join(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
