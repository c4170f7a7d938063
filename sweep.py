"""Many runs at once: an alpha_reg sweep (Problem 1.4), trained as groups of members, locally or on Ray.

    python sweep.py --bc_weight 0.1 1 10 100
    python sweep.py --bc_weight 1 10 auto --seeds 0 1 --total_steps 50000 --workers 2
    python sweep.py --bc_weight 0.1 1 10 100 --seeds 0 1 2 --members 3 --ray auto
    python sweep.py --resume sweeps/sweep-<time>/        # continue a stopped sweep

Each (value, seed) is one runner.py run, all in sweeps/sweep-<time>/ (--results_dir; apart from results/,
so that `python plot.py results/` draws the homework's runs alone). Runs that may train side by
side (config.member_key: every numeric value with every seed) do, as the members of one agent in
one process (networks.py): --members runs per process, --workers processes at a time; or with --ray
each group is a task on a Ray cluster, as many at a time as its CPUs hold. Then sweep.csv there
holds, per value, how many seeds finished, diverged or stopped early and, over the finished ones,
the final evaluation return, the final BC distance E||a - mu(s)||^2 and the Q over-estimation
(final dataset Q minus the Monte-Carlo return of the same pairs); the same table is printed.
Ctrl-C or SIGTERM stops every run at a checkpoint and writes no table; --resume goes on.
`python plot.py sweeps/sweep-<time>/` draws the runs.
"""
import argparse
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass

from harness import config
from harness import flags
from harness import sweep_table
from harness.files import RunFolderError, hold, make_folder, read_text, write_text
from harness.flags import flag

RECORD = "sweep.json"  # in the sweep folder: its values, seeds and groups of runs, what --resume continues


@dataclass
class SweepConfig:
    """The sweep's own flags; every other runner.py flag is passed to each run unchanged."""
    bc_weight: tuple[float | str, ...] | None = flag(None, "alpha_reg values to try, each once, e.g. 0.1 1 10 100",
                                                     low=0, also=("auto",), aliases=("alpha_reg",), unset="none: required unless --resume")
    seeds: tuple[int, ...] = flag((0,), "seeds per value, each once", low=0, high=config.SEED_MAX)
    total_steps: int = flag(30_000, "gradient updates per run; smaller than a full run to keep the sweep short",
                            low=1)
    eval_every: int = flag(5_000, "steps between evaluations", low=1)
    workers: int = flag(1, "processes at a time, each on runner.py's --threads (1 unless given, or OMP_NUM_THREADS); "
                           "with --ray, the tasks each set of compatible runs is split into", low=1)
    members: int = flag(0, "runs trained side by side per process; 0 = as many as fill --workers processes",
                        low=0)
    results_dir: str = flag("sweeps", "parent of the sweep folder; apart from runner.py's results/ so that plot.py "
                                      "results/ never mixes sweep runs into the homework's figures", metavar="DIR")
    ray: str | None = flag(None, config.RAY_HELP, unset="off, local processes", metavar="local|auto|ADDRESS")
    resume: str | None = flag(None, "continue the stopped sweep in this folder (its sweep.json): finished runs "
                                    "stay, stopped ones go on from their checkpoints, unstarted ones start; only "
                                    "--workers may be given beside it", metavar="SWEEP_DIR")


def fail(message: str) -> SystemExit:
    """sweep.py's one-line error with exit status 2 (raise the result)."""
    return flags.fail("sweep.py", message)


def plan(runs: list[dict], members: int, workers: int) -> list[list[dict]]:
    """The runs (dicts of given flags) in groups that train side by side: compatible runs, at most
    `members` a group (0: each compatible set split evenly over `workers` processes)."""
    compatible: dict[tuple, list[dict]] = {}
    for run in runs:
        compatible.setdefault(config.member_key(config.from_flags(run)[0]), []).append(run)
    groups = []
    for same in compatible.values():
        size = members or math.ceil(len(same) / workers)
        groups += [same[i:i + size] for i in range(0, len(same), size)]
    return groups


def train_group():
    """runner.run_group, imported here so that the launcher loads torch and MuJoCo only when it trains."""
    import runner
    return runner.run_group


def group_process(runs: list[dict], slot: int) -> None:
    """A child process's work: one group, its progress bar on line `slot`; exits with the group's status."""
    os.environ["TQDM_POSITION"] = str(slot)
    import runner  # its line on Ctrl-C points at the one command that resumes the whole sweep, printed here
    os.environ[runner.RESUME_ENV] = f"python sweep.py --resume {runs[0]['results_dir']}"
    sys.exit(train_group()(runs))


def run_processes(groups: list[list[dict]], workers: int) -> tuple[int, list[int]]:
    """Each group in its own process, `workers` at a time; returns the worst exit status and the signals that
    stopped the sweep.

    Ctrl-C or SIGTERM to this process sends SIGTERM to every child: each checkpoints its runs and stops,
    and no further group starts.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state shared with the launcher
    pending, running, stopped, worst = list(groups), {}, [], 0

    def stop(signum, frame):
        stopped.append(signum)
        for child in running.values():
            child.terminate()  # SIGTERM: the child's runs checkpoint and stop (a second signal kills them)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending and not stopped or running:
            for slot in range(workers):
                if slot not in running and pending and not stopped:
                    running[slot] = context.Process(target=group_process, args=(pending.pop(0), slot))
                    running[slot].start()
            time.sleep(0.2)
            for slot, child in list(running.items()):
                if child.exitcode is not None:
                    del running[slot]
                    worst = max(worst, child.exitcode if child.exitcode >= 0 else 128 - child.exitcode)  # -N: signal N
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return worst, stopped


def check_once(name: str, values: tuple) -> None:
    """A value given twice would train the same runs twice, counted as two seeds: refused."""
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise fail(f"--{name} gives {twice} twice; give each value once (runs with the same flags and seed are one "
                   f"run, not two seeds)")


def check_new(sweep: SweepConfig) -> None:
    """A new sweep's own flags: values to sweep, each value and seed once, a results folder that can be one."""
    if sweep.bc_weight is None:
        raise fail("--bc_weight is required (the values to sweep), unless --resume continues a sweep")
    check_once("bc_weight", sweep.bc_weight)
    check_once("seeds", sweep.seeds)
    config.check_results_dir(sweep.results_dir)


def new_sweep(sweep: SweepConfig, given: dict, held: contextlib.ExitStack) -> tuple[str, dict]:
    """Make the sweep folder (held by this process) and its sweep.json (the runs in their groups); its path and
    the record. Every run's flags are checked first: a refused sweep leaves no folder."""
    common = given | {"total_steps": sweep.total_steps, "eval_every": sweep.eval_every}
    runs = [common | {"bc_weight": w, "seed": s} for w in sweep.bc_weight for s in sweep.seeds]
    groups = plan(runs, sweep.members, sweep.workers)  # each run checked as runner.py would: exit 2 here
    try:
        sweep_dir = make_folder(os.path.join(sweep.results_dir, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"))
    except OSError as err:
        raise fail(f"--results_dir: cannot make {err.filename} ({err.strerror}); give a folder you can write") from None
    for run in runs:  # the same dicts as in groups
        run["results_dir"] = sweep_dir
    record = {"bc_weight": list(sweep.bc_weight), "seeds": list(sweep.seeds), "ray": sweep.ray, "groups": groups}
    try:
        held.enter_context(hold(sweep_dir))
        write_text(os.path.join(sweep_dir, RECORD), json.dumps(record, indent=2))
    except RunFolderError as err:
        shutil.rmtree(sweep_dir, ignore_errors=True)
        raise fail(f"--results_dir: {err}; nothing was trained") from None
    return sweep_dir, record


def read_record(sweep_dir: str) -> dict:
    """--resume: the sweep folder's sweep.json, each run's flags checked as on the command line, or one line."""
    path = os.path.join(sweep_dir, RECORD)
    try:
        record = json.loads(read_text(path))
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) else f"not JSON: {err}"
        raise fail(f"--resume: cannot read {path} ({why}); give a folder sweep.py made") from None
    if not is_record(record):
        raise fail(f"--resume: {path} is not a sweep's record (bc_weight, seeds, ray and groups of runs); give a "
                   f"folder sweep.py made")
    runs = [run for group in record["groups"] for run in group]
    for run in runs:
        config.from_flags(run, where=f"{path}: ")  # a bad value exits 2, naming the file
        if os.path.realpath(str(run.get("results_dir"))) != os.path.realpath(sweep_dir):
            raise fail(f"--resume: {path} has a run writing into {run.get('results_dir')}, not {sweep_dir}; resume "
                       f"from the folder the sweep was started in")
    pairs = [json.dumps([run.get("bc_weight"), run.get("seed")]) for run in runs]
    wanted = {json.dumps([w, s]) for w in record["bc_weight"] for s in record["seeds"]}
    if len(set(pairs)) != len(pairs) or set(pairs) != wanted:
        raise fail(f"--resume: the runs of {path} are not each bc_weight with each seed once; give a folder sweep.py "
                   f"made")
    return record


def is_record(record) -> bool:
    """Whether a loaded sweep.json has the shape new_sweep writes."""
    if not isinstance(record, dict):
        return False
    groups = record.get("groups")
    return (isinstance(record.get("bc_weight"), list) and isinstance(record.get("seeds"), list)
            and (record.get("ray") is None or isinstance(record.get("ray"), str)) and isinstance(groups, list)
            and all(isinstance(g, list) and g and all(isinstance(r, dict) for r in g) for g in groups))


def parse(argv: list[str] | None) -> tuple[SweepConfig, dict, list[str]]:
    """The sweep's flags, the names of those given, and the runner flags passed on (checked once, here)."""
    parser = flags.Parser(prog="sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_flags(parser, SweepConfig)
    values, passthrough = parser.parse_known_args(argv)
    given_parser = flags.Parser(prog="sweep.py")
    flags.add_flags(given_parser, SweepConfig, given_only=True)
    named = vars(given_parser.parse_known_args(argv)[0])
    return flags.build(SweepConfig, vars(values)), named, passthrough


def connect(address: str | None):
    """The ray module joined to the cluster at address (ray_launch.py), or None without --ray."""
    if not address:
        return None
    from harness import ray_launch  # Ray is imported only when asked for
    return ray_launch.connect_ray(address, "sweep.py")


def launch(record: dict, workers: int, ray) -> tuple[int, list[int]]:
    """Train the record's groups, locally or on Ray; the worst status and the signals that stopped it."""
    if ray:
        from harness import ray_launch
        return ray_launch.run_on_ray(ray, record["groups"], "sweep.py", train_group()), []
    return run_processes(record["groups"], workers)


def main(argv: list[str] | None = None) -> int:
    """Run (or --resume) the sweep, then write and print its table; returns the worst run's exit status."""
    with contextlib.ExitStack() as held:  # the sweep folder's lock, let go when the sweep ends
        return sweep_main(argv, held)


def sweep_main(argv: list[str] | None, held: contextlib.ExitStack) -> int:
    """main(), the sweep folder held (its .lock) from when it is made or resumed to the end."""
    sweep, named, passthrough = parse(argv)
    if sweep.resume:
        others = [f"--{n}" for n in named if n not in ("resume", "workers")] + passthrough
        if others:
            raise fail(f"--resume continues a sweep with the flags of its {RECORD}; only --workers may be given "
                       f"beside it, not {' '.join(others)}")
        sweep_dir, record = sweep.resume, read_record(sweep.resume)
        try:  # a sweep still running is refused, naming its process: it would train the same runs twice
            held.enter_context(hold(sweep_dir))
        except RunFolderError as err:
            raise fail(f"--resume: {err}") from None
        ray = connect(record["ray"])
    else:
        check_new(sweep)
        _, _, given = config.parse(passthrough)  # a bad runner flag fails here, once, not in every run
        if "seed" in given:
            raise fail("--seed: a sweep's runs take their seeds from --seeds; give --seeds instead")
        ray = connect(sweep.ray)  # before the sweep folder is made: a missing Ray leaves nothing behind
        sweep_dir, record = new_sweep(sweep, given, held)
    status, stopped = launch(record, sweep.workers, ray)
    if stopped:
        print(f"sweep.py: stopped by {signal.Signals(stopped[0]).name}; its runs stopped at their checkpoints and no "
              f"table was written. Resume with: python sweep.py --resume {sweep_dir}", file=sys.stderr)
        return 130
    table = sweep_table.summarise(sweep_table.sweep_runs(sweep_dir), record["bc_weight"], len(record["seeds"]))
    try:
        path = sweep_table.write_table(sweep_dir, table)
    except RunFolderError as err:
        raise fail(f"{err}; the runs are intact: free the disk, then python sweep.py --resume {sweep_dir}") from None
    print(sweep_table.table_text(table))
    print(f"wrote {path}; figures: python plot.py {sweep_dir}")
    return status


if __name__ == "__main__":
    sys.exit(main())
