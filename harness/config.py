"""A command's flags: RunConfig (what a run is) and LaunchConfig (how this command launches runs).

One rule: a RunConfig is recorded whole in the run's config.json; its label and the group of
runs it is a seed of are every RunConfig field but `seed`. A LaunchConfig is not recorded and
changes nothing a run writes. Each flag is one dataclass field (harness/flags.py): the command
line, its checks, the agent's config and config.json's "flags" all come from these declarations.
To add a flag, add a field here, to TD3Config (td3_agent.py) or to IQLConfig (iql_agent.py).
"""
import argparse
import json
import dataclasses
import os
from dataclasses import dataclass, field

from behaviour_vae import VAEConfig
from dynamics import DynamicsConfig
from harness import flags
from harness.flags import flag
from iql_agent import IQLConfig
from mopo import MOPOConfig, real_rows
from td3_agent import MEMBER_FIELDS, TD3Config
from td3_agent import member_key as member_key_td3

DESCRIPTION = """Train offline TD3 / TD3+BC / CQL, BC or IQL on a Minari dataset: each run written to
<results_dir>/<label>-seed<k>-<time>/ (config.json, progress.csv, train.csv, checkpoint.pt).
Each flag is a field of RunConfig or LaunchConfig (harness/config.py), TD3Config (td3_agent.py)
or IQLConfig (iql_agent.py)."""
EXAMPLES = """examples:
  python runner.py --agent td3 --total_steps 100000                 # TD3 (Problem 1.2)
  python runner.py --agent td3 --total_steps 100000 --bc_weight 10  # TD3+BC (Problem 1.3)
  python runner.py --agent td3 --total_steps 100000 --cql_alpha 5   # TD3+CQL (Problem 2.1)
  python runner.py --agent bc --bc_top_percent 10                   # filtered behaviour cloning
  python runner.py --agent iql                                      # implicit Q-learning
  python runner.py --rollout_length 5 --reward_penalty 1            # model rollouts, reward penalty (MOPO)
  python runner.py --support_weight 0.1                             # support constraint (SPOT)
  python runner.py --cql_alpha 5 --seeds 0 1 2                      # three seeds side by side, one process
  python runner.py --resume results/<run>/                          # continue a run from its checkpoint"""

RAY_HELP = ("train on Ray (pip install -r requirements-ray.txt): 'local' starts a cluster of this machine's "
            "cores, 'auto' joins the one `ray start --head` made, an ADDRESS (host:6379) that one; each group of "
            "runs trained side by side is one Ray task of --threads CPUs (1 if not given), retried from its "
            "checkpoints if its worker dies. --results_dir must be on storage every node sees")


# Seeds seed torch's generators and NumPy's; the largest a torch.Generator takes is 2^64 - 1, and evaluation
# adds utils.EVAL_SEED_OFFSET and the episode's index: 2^32 - 1 leaves room and is every library's 32-bit seed.
SEED_MAX = 2 ** 32 - 1
# Evaluation episodes run side by side, one environment each (about 1.1 MB of memory per episode and member)
EVAL_EPISODES_MAX = 100


@dataclass
class RunConfig:
    """What a run is: its learner, data, length, seed and measurements (recorded in its config.json)."""
    agent: str = flag("td3", "learner: td3 (with --bc_weight, TD3+BC; with --cql_alpha, CQL), bc (behaviour "
                             "cloning, no critic) or iql (implicit Q-learning)", choices=("td3", "bc", "iql"))
    dataset: str = flag("mujoco/hopper/medium-v0", "Minari dataset id", metavar="ID")
    episodes_percent: float = flag(100.0, "train on P %% of the dataset's episodes, drawn at random once (the same "
                                          "episodes for every seed and method): less data, fewer samples per state",
                                   above=0, high=100)
    bc_top_percent: float = flag(100.0, "filtered BC: train on the top P %% of the dataset's episodes by return "
                                        "alone (--agent bc only)", above=0, high=100, agents=("bc",))
    total_steps: int = flag(100_000, "gradient updates", low=1)
    td3: TD3Config = field(default_factory=TD3Config)  # its fields are flags too, in this place
    mopo: MOPOConfig = field(default_factory=MOPOConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    iql: IQLConfig = field(default_factory=IQLConfig)
    seed: int = flag(0, "seed of the run's random generator (initial weights, batches, noise) and of its "
                        "evaluation episodes", low=0, high=SEED_MAX)
    eval_every: int = flag(10_000, "steps between evaluations", low=1)
    eval_episodes: int = flag(10, "episodes per evaluation, run side by side (about 1.1 MB of memory each)", low=1,
                              high=EVAL_EPISODES_MAX)
    log_every: int = flag(1000, "updates per train.csv row, each metric averaged over them", low=1)
    max_abs_q: float | None = flag(None, "stop the run when |mean dataset Q1| exceeds this", above=0,
                                   agents=("td3", "iql"))


@dataclass
class LaunchConfig:
    """How this command launches its runs: where, on what, side by side or on Ray (not recorded)."""
    seeds: tuple[int, ...] | None = flag(None, "train one run per seed side by side in this process (members, "
                                               "networks.py), e.g. --seeds 0 1 2", low=0, high=SEED_MAX,
                                         unset="off, --seed alone")
    results_dir: str = flag("results", "folder that receives one sub-folder per run", metavar="DIR")
    model_dir: str = flag("models", "folder of fitted models (dynamics ensemble, behaviour VAE), each fitted once per "
                                    "dataset and settings and reused by every later run", metavar="DIR")
    device: str = flag("auto", "'auto' (cuda when present), 'cpu', 'cuda' or 'cuda:N'")
    threads: int = flag(0, "torch CPU threads; 0 = OMP_NUM_THREADS if set, else 1 (benchmarks/speed.md: more threads "
                           "gain little at these sizes and lose much on a busy machine)", low=0)
    video_every: int | None = flag(None, "steps between evaluation videos (videos/step<N>.mp4); 0 = none", low=0,
                                   unset="one, at the end of the run")
    ray: str | None = flag(None, RAY_HELP, unset="off, in this process", metavar="local|auto|ADDRESS")
    resume: tuple[str, ...] | None = flag(None, "continue the runs in these folders from their checkpoints, with the "
                                                "flags of their config.json, side by side; beside it only a larger "
                                                "--total_steps and these launch flags may be given",
                                          metavar="RUN_DIR")


def build_parser(given_only: bool = False, where: str = "") -> flags.Parser:
    """runner.py's command line; given_only: without defaults, so only the flags given come out."""
    parser = flags.Parser(prog="runner.py", description=DESCRIPTION, epilog=EXAMPLES,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.where = where
    flags.add_flags(parser, RunConfig, given_only)
    flags.add_flags(parser, LaunchConfig, given_only)
    return parser


def parse(argv: list[str] | None, where: str = "") -> tuple[RunConfig, LaunchConfig, dict]:
    """The RunConfig and LaunchConfig of a command line, and the flags it gave; bad input exits 2 with one line.

    `where` names the values' origin in that line when they are not the command line's.
    """
    parser = build_parser(where=where)
    values = vars(parser.parse_args(argv))
    given = vars(build_parser(given_only=True, where=where).parse_args(argv))
    run, launch = flags.build(RunConfig, values), flags.build(LaunchConfig, values)
    if "seed" in given and "seeds" in given:
        parser.error("argument --seed: --seeds gives the runs' seeds; give --seed or --seeds, not both")
    # beside --resume the run's flags are its config.json's: resumed_config judges what else is given
    problem = None if launch.resume else pointless_flag(run)
    if problem:
        parser.error(problem)
    return run, launch, given


def pointless_flag(run: RunConfig) -> str | None:
    """Why a flag off its default would have no effect with the others given, or None."""
    values, defaults = flags.flat(run), flags.flat(RunConfig())
    for f in flags.leaf_fields(RunConfig):
        info = flags.meta(f)
        if values[f.name] == defaults[f.name]:
            continue
        if info["agents"] and run.agent not in info["agents"]:
            return (f"argument --{f.name}: has no effect with --agent {run.agent}; it acts on "
                    f"--agent {' or '.join(info['agents'])}")
        if info["needs"]:
            name, condition = info["needs"]
            met = values[name] == condition if condition == "auto" else values[name] > 0
            if not met:
                return f"argument --{f.name}: has no effect without --{name} {condition}; give --{name} too"
    return combination_problem(run)


def combination_problem(run: RunConfig) -> str | None:
    """Why the new methods' flags do not go together as given, or None."""
    td3, mopo = run.td3, run.mopo
    if td3.support_weight > 0 and td3.bc_weight != 0:
        return ("argument --support_weight: SPOT's support term takes the place of TD3+BC's distribution term "
                "(--bc_weight); give one of the two")
    if mopo.rollout_length > 0:
        real = real_rows(mopo.real_ratio, td3.batch_size)
        if real >= td3.batch_size:
            return (f"argument --real_ratio: {mopo.real_ratio:g} of --batch_size {td3.batch_size} leaves no row for "
                    f"model transitions; give a smaller --real_ratio")
        if real == 0 and td3.bc_weight != 0:
            return (f"argument --real_ratio: {mopo.real_ratio:g} of --batch_size {td3.batch_size} is no dataset row, "
                    f"and the BC term imitates the batch's dataset rows; give at least {0.5 / td3.batch_size:.3g}")
        if run.dynamics.model_elites > run.dynamics.model_ensemble:
            return (f"argument --model_elites: {run.dynamics.model_elites} is more than --model_ensemble "
                    f"{run.dynamics.model_ensemble}; give at most {run.dynamics.model_ensemble}")
    return None


def from_flags(values: dict, where: str = "") -> tuple[RunConfig, LaunchConfig]:
    """The configs of flag values read from a file (config.json's "flags", a sweep's runs): each value checked
    as its flag's (type, bounds, choices), as a value, never turned into command-line words; then as the
    command line's. A bad one is one line, exit 2, `where` naming the file."""
    parser = build_parser(where=where)
    fields = {f.name: f for cls in (RunConfig, LaunchConfig) for f in flags.leaf_fields(cls)}
    checked = {}
    for name, value in values.items():
        if name not in fields:
            parser.error(f"unrecognized flag '{name}'; the flags are runner.py's (python runner.py --help)")
        try:
            checked[name] = flags.check_value(fields[name], value)
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument --{name}: {err}")
    run, launch = flags.build(RunConfig, checked), flags.build(LaunchConfig, checked)
    problem = pointless_flag(run)
    if problem:
        parser.error(problem)
    return run, launch


def recorded_flags(run: RunConfig) -> dict:
    """The flags config.json records: the whole RunConfig, as JSON values (a tuple becomes a list)."""
    return json.loads(json.dumps(flags.flat(run)))


# Flags that say how long a run is and how it is watched, not what it learns: config.json has them, labels do not.
NOT_IN_LABEL = ("seed", "total_steps", "eval_every", "eval_episodes", "log_every", "max_abs_q")


def config_name(run: RunConfig) -> str:
    """The run's label: the agent, then every flag that changes what it learns and is off its default,
    e.g. td3_bc_weight=10 (NOT_IN_LABEL's flags are left out: config.json holds every flag)."""
    values, defaults = flags.flat(run), flags.flat(RunConfig())
    parts = [run.agent]
    for name, value in values.items():
        if name == "agent" or name in NOT_IN_LABEL or value == defaults[name]:
            continue
        if isinstance(value, tuple):
            value = "-".join(map(str, value))
        parts.append(name if value is True else f"{name}={value:g}" if isinstance(value, float)
                     else f"{name}={value}")
    return "_".join(parts).replace("/", "-")


def group_label(runs: list[RunConfig]) -> str:
    """Runs trained side by side, in one short line: their shared label, then each member flag that differs as
    its values in run order (the order of the numbers the bar shows), e.g. `td3 bc_weight=0.1,1,10,100`."""
    differing = [name for name in MEMBER_FLAGS if len({json.dumps(flags.flat(r)[name]) for r in runs}) > 1]
    defaults = TD3Config()
    first = dataclasses.replace(runs[0], td3=dataclasses.replace(
        runs[0].td3, **{name: getattr(defaults, name) for name in differing if name in MEMBER_FIELDS}))
    values = [f"{name}={','.join(flags.show_value(flags.flat(r)[name]) for r in runs)}" for name in differing]
    return " ".join([config_name(first), *values])


# Flags that may differ between runs trained side by side in one process (members, networks.py):
# the seed, and the plain loss weights of td3_agent.MEMBER_FIELDS.
MEMBER_FLAGS = ("seed", *MEMBER_FIELDS)


def member_key(run: RunConfig) -> tuple:
    """What runs trained side by side must share: every flag but MEMBER_FLAGS (td3_agent.member_key)."""
    values = flags.flat(run)
    return tuple(v for k, v in values.items() if k not in MEMBER_FLAGS) + member_key_td3(run.td3)


def check_results_dir(path: str) -> None:
    """--results_dir must be a folder or not exist yet; else one line and exit 2."""
    if os.path.exists(path) and not os.path.isdir(path):
        build_parser().error(f"argument --results_dir: '{path}' is a file; give a folder path")
