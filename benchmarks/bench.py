"""Speed of the update step of M members, of loading the dataset and of evaluation, on CPU; and the
estimated wall-clock of the Results set.

    MINARI_DATASETS_PATH=../shared/minari python benchmarks/bench.py --threads 1 --members 1 3 4 6
    MINARI_DATASETS_PATH=../shared/minari python benchmarks/bench.py --against HEAD~1
    MINARI_DATASETS_PATH=../shared/minari python benchmarks/bench.py --new_methods --threads 1

The first times loading the dataset into the replay buffer, then the update step of TD3, TD3+BC
(bc_weight 10), CQL (cql_alpha 5; uniform and policy actions), CQL with uniform actions only, TD3
with --critic_layernorm, BC and IQL, each for M = 1 and several members trained side by side in one
agent (networks.py: one batched matmul per layer for all members): updates/s, and member-updates/s
= updates/s x M. Beside each it prints the matmul roofline: the update's matrix products alone, as
plain torch.bmm calls on the same shapes (no bias, ReLU, loss, optimizer or Python around them).
Then BC's and IQL's updates/s over TD3+BC's, against issue 22's targets. Last, from 1-thread
timings of the update and of an evaluation, the estimated wall-clock of the Results set (estimate.py).
The second times this tree's update step of the TD3 methods against the one of git revision REV,
in one process, at M = 1 and 3 (--members). The third times the model-based and SPOT updates
against TD3+BC's, and the dynamics fit (new_methods.py).
"""
import argparse
import dataclasses
import gc
import os
import statistics
import sys
import threading
import time

import torch

# `python benchmarks/bench.py` puts benchmarks/ on sys.path; the modules it times live one level up.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.config import RunConfig  # noqa: E402
from harness.runs import Agent, make_agent  # noqa: E402
from td3_agent import TD3Config  # noqa: E402
from utils import DatasetError, ReplayBuffer, dataset_to_buffer, load_dataset  # noqa: E402

import estimate  # noqa: E402  (benchmarks/estimate.py, and so on)
import new_methods  # noqa: E402
from against import bench_against, load_against  # noqa: E402
from roofline import actor_period, roofline_calls, update_gflop, update_matmuls  # noqa: E402
from timing import seconds_per_call, updater, window_steps  # noqa: E402

# the TD3 methods by the TD3Config fields that make them (--against needs a revision that has them all)
TD3_METHODS = {"td3": {}, "td3_bc": {"bc_weight": 10.0}, "cql": {"cql_alpha": 5.0, "cql_uniform_only": False},
               "cql_uniform": {"cql_alpha": 5.0, "cql_uniform_only": True}, "td3_ln": {"critic_layernorm": True}}
METHODS = {name: RunConfig(td3=TD3Config(**fields)) for name, fields in TD3_METHODS.items()} | {
    "bc": RunConfig(agent="bc"), "iql": RunConfig(agent="iql")}
# issue 22: BC's updates/s at least 3x TD3+BC's, IQL's at least 0.7x, at M = 1 and 3
TARGETS, TARGET_BASELINE, TARGET_MEMBERS = {"bc": 3.0, "iql": 0.7}, "td3_bc", (1, 3)
Key = tuple[str, int]  # (method, members)


def method_run(method: str, hidden: tuple[int, ...]) -> RunConfig:
    """The RunConfig of `method` at these hidden widths (seed 0)."""
    run = METHODS[method]
    return dataclasses.replace(run, td3=dataclasses.replace(run.td3, hidden=hidden))


def build_agent(key: Key, buffer: ReplayBuffer, env, hidden: tuple[int, ...]) -> Agent:
    """An agent of `members` members of `method` (seeds 0 .. members - 1) at init, as runner.py builds it."""
    method, members = key
    runs = [dataclasses.replace(method_run(method, hidden), seed=seed) for seed in range(members)]
    return make_agent(runs, buffer, env, torch.device("cpu"))


def bench_updates(agents: dict[Key, Agent], buffer: ReplayBuffer, batch: int,
                  rounds: int) -> dict[Key, tuple[list[float], list[float]]]:
    """Per agent, the seconds per update (of all its members) of each round: the update's, and its matmul roofline's.

    Each round runs a window of every agent in turn, each followed by its roofline for the same
    number of updates, so a slow spell of the machine hits agents and rooflines alike.
    """
    windows, seconds = {}, {key: ([], []) for key in agents}
    for (method, members), agent in agents.items():
        run = method_run(method, agent.cfg.hidden)
        delay = actor_period(run)
        every, actor_step = update_matmuls(run, batch, buffer.obs_dim, buffer.act_dim, members)
        calls = roofline_calls(every * delay + actor_step)  # the matmuls of `delay` updates
        update = updater(agent, buffer, batch)
        windows[method, members] = (update, lambda calls=calls: [call() for call in calls],
                                    window_steps(update, delay), delay)
    for _ in range(rounds):
        for key, (update, roofline, steps, delay) in windows.items():
            seconds[key][0].append(seconds_per_call(update, steps))
            seconds[key][1].append(seconds_per_call(roofline, steps // delay) / delay)
    return seconds


def anonymous_bytes() -> int:
    """AnonPages + Shmem of /proc/meminfo: all processes' heaps and shared memory, but not the
    page cache, so reading the dataset file does not count."""
    with open("/proc/meminfo") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return fields["AnonPages"] + fields["Shmem"]


def bench_loading(dataset, loads: int = 3) -> tuple[ReplayBuffer, list[float], list[float]]:
    """The buffer, and the seconds and peak extra MB of each of `loads` dataset_to_buffer calls.

    The first load finds the file's page cache as the machine left it. The memory figure is
    system-wide: the largest rise of anonymous_bytes(), sampled every 2 ms. It means something
    only on a quiet machine.
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


def print_updates(seconds: dict[Key, tuple[list[float], list[float]]], batch: int, obs_dim: int,
                  act_dim: int, hidden: tuple[int, ...]) -> None:
    """A row per (method, members): updates/s, member-updates/s, and the matmul roofline beside them."""
    print(f"{'method':12} {'M':>2} {'updates/s':>9} {'member-updates/s':>16} {'roofline updates/s':>18} "
          f"{'matmul share':>12} {'GFLOP/update':>12}")
    for (method, members), (update_s, roofline_s) in seconds.items():
        rate = 1 / statistics.median(update_s)
        gflop = update_gflop(method_run(method, hidden), batch, obs_dim, act_dim, members)
        share = statistics.median(r / u for r, u in zip(roofline_s, update_s))
        print(f"{method:12} {members:>2} {rate:>9.0f} {rate * members:>16.0f} "
              f"{1 / statistics.median(roofline_s):>18.0f} {share:>12.0%} {gflop:>12.4f}")


def print_targets(seconds: dict[Key, tuple[list[float], list[float]]]) -> None:
    """BC's and IQL's updates/s over TD3+BC's at each M, from the same rounds; met or missed at TARGET_MEMBERS."""
    timed = sorted({members for _, members in seconds})
    for method, target in TARGETS.items():
        for members in timed:
            ours, baseline = seconds[method, members][0], seconds[TARGET_BASELINE, members][0]
            ratios = [base_s / our_s for base_s, our_s in zip(baseline, ours)]  # round by round
            low_q, median, high_q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            verdict = ""
            if members in TARGET_MEMBERS:
                verdict = f"; issue 22's target >= {target:g}x: {'met' if median >= target else 'MISSED'}"
            print(f"{method} over {TARGET_BASELINE} at M = {members}: {median:.2f}x the updates/s (quartiles "
                  f"{low_q:.2f}-{high_q:.2f} over {len(ratios)} rounds){verdict}")
    unchecked = [str(m) for m in TARGET_MEMBERS if m not in timed]
    if unchecked:
        print(f"issue 22's targets not checked at M = {' and '.join(unchecked)}: not in --members")


def one_thread_rates(args: argparse.Namespace, buffer: ReplayBuffer, env,
                     measured: dict[Key, list[float]]) -> dict[Key, float]:
    """The 1-thread updates/s of each (method, members) the estimate needs: those in `measured`
    (seconds per update at 1 thread), the others timed now (torch.set_num_threads(1) must be in force)."""
    missing = {key: build_agent(key, buffer, env, tuple(args.hidden))
               for key in sorted(estimate.needed() - set(measured))}
    if missing:
        print(f"timing the update at 1 thread for the estimate: {', '.join(f'{m} M={n}' for m, n in missing)}")
        measured = measured | {key: s for key, (s, _) in bench_updates(missing, buffer, args.batch_size,
                                                                       args.rounds).items()}
    return {key: 1 / statistics.median(measured[key]) for key in estimate.needed()}


def run_estimate(args: argparse.Namespace, buffer: ReplayBuffer, env, measured: dict[Key, list[float]],
                 load_s: float) -> None:
    """The Results set's estimated wall-clock from 1-thread timings: updates, evaluations, a load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates = one_thread_rates(args, buffer, env, measured if threads == 1 else {})
    limit = env.spec.max_episode_steps
    evals = {}
    for members in sorted({group.members for group in estimate.RESULTS}):
        agent = build_agent(("td3_bc", members), buffer, env, tuple(args.hidden))
        evals[members] = timing = estimate.time_evaluation(agent, env)
        print(f"evaluation, M={members}, {estimate.EVAL_EPISODES} episodes per member side by side, TD3+BC's "
              f"actors at init, 1 thread: {timing.seconds:.2f} s ({timing.episode_steps:.0f} steps per episode; "
              f"setup {timing.setup:.2f} s, then {timing.per_step * 1e3:.3f} ms per env step) -> "
              f"{timing.full_length(members, limit):.1f} s were every episode {limit:,} steps")
    torch.set_num_threads(threads)
    print(f"estimate of the Results set (docs/reproduce.sh's runs as groups of members, one process each, "
          f"{estimate.LANES} at a time): updates/s as timed at 1 thread (torch.set_num_threads(1)) with one "
          f"process running; evaluations as timed above at full length; a dataset load ({load_s:.1f} s, as timed "
          f"above) per process")
    estimate.print_estimate(rates, evals, load_s, limit)


def build_parser() -> argparse.ArgumentParser:
    """bench.py's flags."""
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mujoco/hopper/medium-v0", help="Minari dataset id (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=128, help="transitions per update (default: 128)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128],
                        help="hidden layer widths of actor and critics (default: 128 128; TD3+BC's paper: 256 256)")
    parser.add_argument("--members", type=int, nargs="+", default=None,
                        help="numbers of members M trained side by side to time the update at "
                             "(default: 1 3 6; with --against 1 3)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="timed windows of about 0.1 s per method and M, or window pairs with --against "
                             "(default: 20)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads for the update table (default: torch's choice, "
                             f"{torch.get_num_threads()} here); the estimate always times at 1 thread")
    parser.add_argument("--new_methods", action="store_true",
                        help="instead: the model-based (MOPO) and SPOT updates against TD3+BC's, and the dynamics "
                             "fit's speed (new_methods.py), at each --members (default: 1 3)")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="instead: this tree's update step of TD3, TD3+BC, CQL, CQL uniform-only and TD3 "
                             "with LayerNorm against the one of git revision REV (e.g. HEAD~1), at each --members, "
                             "in alternating windows in one process")
    return parser


def run_benchmark(args: argparse.Namespace, dataset) -> None:
    """Loading, then the update step of each method and M, then the estimate: a line or table each."""
    buffer, seconds, peaks = bench_loading(dataset)
    load_s = statistics.median(seconds[1:])
    buffer_mb = buffer.data.numel() * buffer.data.element_size() / 2**20
    print(f"load: {len(buffer):,} transitions in {load_s:.2f} s with the file in the page "
          f"cache (median of loads 2-{len(seconds)}; first load {seconds[0]:.2f} s); buffer {buffer_mb:.0f} MB, "
          f"peak extra memory {statistics.median(peaks):.0f} MB system-wide (median of {len(peaks)} loads)")
    env = dataset.recover_environment(eval_env=True)
    hidden = tuple(args.hidden)
    agents = {(method, members): build_agent((method, members), buffer, env, hidden)
              for method in METHODS for members in sorted(set(args.members))}
    print(f"update step, {torch.get_num_threads()} thread(s): median of {args.rounds} rounds of a ~0.1 s window "
          f"each; M members per update, so member-updates/s = updates/s x M; roofline: the update's matmuls "
          f"alone as torch.bmm on the same shapes")
    timed = bench_updates(agents, buffer, args.batch_size, args.rounds)
    print_updates(timed, args.batch_size, buffer.obs_dim, buffer.act_dim, hidden)
    print_targets(timed)
    run_estimate(args, buffer, env, {key: update_s for key, (update_s, _) in timed.items()}, load_s)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, check the revision and the dataset, run; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.members is None:
        args.members = [1, 3] if args.against is not None or args.new_methods else [1, 3, 6]
    given = {"batch_size": [args.batch_size], "rounds": [args.rounds], "hidden": args.hidden,
             "members": args.members, "threads": [] if args.threads is None else [args.threads]}
    for flag, values in given.items():
        if values and min(values) < 1:
            parser.error(f"--{flag} {' '.join(map(str, values))}: give 1 or more")
    try:
        old = load_against(args.against) if args.against is not None else None
    except ValueError as error:
        parser.error(f"--against {args.against!r}: {error}")
    try:
        dataset = load_dataset(args.dataset)
    except DatasetError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device: cpu, torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {args.batch_size}, "
          f"hidden {'-'.join(map(str, args.hidden))}, policy delay {TD3Config().policy_delay}; {args.rounds} rounds")
    if args.new_methods:
        new_methods.run(dataset_to_buffer(dataset, torch.device("cpu")), dataset.recover_environment(eval_env=True),
                        sorted(set(args.members)), args.rounds)
        return 0
    if old is None:
        run_benchmark(args, dataset)
        return 0
    buffer = dataset_to_buffer(dataset, torch.device("cpu"))
    space = dataset.action_space
    methods = {name: fields | {"hidden": tuple(args.hidden)} for name, fields in TD3_METHODS.items()}
    summary = bench_against(old, args.against, methods, sorted(set(args.members)), buffer, space.low, space.high,
                            args.batch_size, args.rounds)
    print(f"summary: this tree against {args.against}: {'; '.join(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
