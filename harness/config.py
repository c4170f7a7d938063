"""A run's flags: RunConfig (how a run is made and measured) around TD3Config (what is learned).

Each flag is one dataclass field, declared once with its default, type, bounds and help
(flags.flag): the command line, its checks, the TD3Config the agent receives and config.json's
"flags" all come from these declarations. To add a flag, add a field here or to TD3Config.
"""
import argparse
import json
import os
from dataclasses import dataclass, field

from harness import flags
from harness.flags import flag
from td3_agent import MEMBER_FIELDS, TD3Config
from td3_agent import member_key as member_key_td3

DESCRIPTION = """Train offline TD3 / TD3+BC / CQL on a Minari dataset: each run written to
<results_dir>/<label>-seed<k>-<time>/ (config.json, progress.csv, train.csv, checkpoint.pt).
Each flag is a field of RunConfig (config.py) or TD3Config (td3_agent.py)."""
EXAMPLES = """examples:
  python runner.py --agent td3 --total_steps 100000                 # TD3 (Problem 1.2)
  python runner.py --agent td3 --total_steps 100000 --bc_weight 10  # TD3+BC (Problem 1.3)
  python runner.py --agent td3 --total_steps 100000 --cql_alpha 5   # TD3+CQL (Problem 2.1)
  python runner.py --cql_alpha 5 --seeds 0 1 2                      # three seeds side by side, one process
  python runner.py --cql_alpha 5 --seeds 0 1 2 --ray auto           # the same as one task on a Ray cluster
  python runner.py --resume results/<run>/                          # continue a run from its checkpoint"""


RAY_HELP = ("train on Ray (pip install -r requirements-ray.txt): 'local' starts a cluster of this machine's "
            "cores, 'auto' joins the one `ray start --head` made, an ADDRESS (host:6379) that one; each group of "
            "runs trained side by side is one Ray task of --threads CPUs (1 if not given), retried from its "
            "checkpoints if its worker dies. --results_dir must be on storage every node sees")


@dataclass
class RunConfig:
    """How a run is made and measured: its length, seeds, evaluations, logs, data and device."""
    agent: str = flag("td3", "learner; BC and CQL are flags of it", choices=("td3",), label=False)
    total_steps: int = flag(100_000, "gradient updates", low=1)
    td3: TD3Config = field(default_factory=TD3Config)  # its fields are flags too, in this place
    seed: int = flag(0, "seed of the run's random generator (initial weights, batches, noise) and of its "
                        "evaluation episodes", low=0, label=False)
    seeds: tuple[int, ...] | None = flag(None, "train one run per seed side by side in this process (members, "
                                               "networks.py), e.g. --seeds 0 1 2", low=0,
                                         unset="off, --seed alone", label=False)
    threads: int = flag(0, "torch CPU threads; 0 = torch's default, one per core", low=0, label=False)
    ray: str | None = flag(None, RAY_HELP, unset="off, in this process", label=False, metavar="local|auto|ADDRESS")
    eval_every: int = flag(10_000, "steps between evaluations", low=1)
    eval_episodes: int = flag(10, "episodes per evaluation", low=1)
    log_every: int = flag(1000, "updates per train.csv row, each metric averaged over them", low=1, label=False)
    video_every: int | None = flag(None, "steps between evaluation videos (videos/step<N>.mp4); 0 = none", low=0,
                                   unset="one, at the end of the run", label=False)
    max_abs_q: float | None = flag(None, "stop the run when |mean dataset Q1| exceeds this", above=0)
    dataset: str = flag("mujoco/hopper/medium-v0", "Minari dataset id", metavar="ID")
    device: str = flag("auto", "'auto' (cuda when present), 'cpu', 'cuda' or 'cuda:N'", label=False)
    results_dir: str = flag("results", "folder that receives one sub-folder per run", metavar="DIR", label=False)
    resume: tuple[str, ...] | None = flag(None, "continue the runs in these folders from their checkpoints, with the "
                                                "flags of their config.json, side by side; only a larger "
                                                "--total_steps may be given beside it",
                                          metavar="RUN_DIR", label=False)


def build_parser(given_only: bool = False, where: str = "") -> flags.Parser:
    """runner.py's command line; given_only: without defaults, so only the flags given come out."""
    parser = flags.Parser(prog="runner.py", description=DESCRIPTION, epilog=EXAMPLES,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.where = where
    flags.add_flags(parser, RunConfig, given_only)
    return parser


def parse(argv: list[str] | None, where: str = "") -> tuple[RunConfig, dict]:
    """The RunConfig of a command line and the flags it gave; bad input exits 2 with one line.

    `where` names the values' origin in that line when they are not the command line's.
    """
    values = vars(build_parser(where=where).parse_args(argv))
    given = vars(build_parser(given_only=True, where=where).parse_args(argv))
    return flags.build(RunConfig, values), given


def command_line(values: dict) -> list[str]:
    """runner.py's arguments that give these flag values (e.g. from config.json)."""
    return flags.to_argv(RunConfig, values)


def from_flags(values: dict) -> RunConfig:
    """The RunConfig of flag values (a run's dict, config.json's "flags"), checked as the command line's."""
    return parse(command_line(values))[0]


def recorded_flags(config: RunConfig) -> dict:
    """The flags config.json records: all but NOT_RECORDED, as JSON values (a tuple becomes a list)."""
    return json.loads(json.dumps({k: v for k, v in flags.flat(config).items() if k not in NOT_RECORDED}))


def config_name(config: RunConfig) -> str:
    """The run's label: the agent, then every flag that differs from its default, e.g. td3_bc_weight=10.

    Flags with label=False (seed, device, logging...) are left out: they change neither what is
    learned nor what is measured.
    """
    values, defaults = flags.flat(config), flags.flat(RunConfig())
    parts = [config.agent]
    for f in flags.leaf_fields(RunConfig):
        value = values[f.name]
        if f.metadata["label"] and value != defaults[f.name]:
            if isinstance(value, tuple):
                value = "-".join(map(str, value))
            parts.append(f.name if value is True else f"{f.name}={value:g}" if isinstance(value, float)
                         else f"{f.name}={value}")
    return "_".join(parts).replace("/", "-")


# Flags that say how this command runs, not what a run is: left out of config.json, and runs
# trained side by side may differ in them.
NOT_RECORDED = ("resume", "seeds", "ray")

# Flags that may differ between runs trained side by side in one process (members, networks.py):
# the seed, where the run is written, and the plain loss weights of td3_agent.MEMBER_FIELDS.
MEMBER_FLAGS = ("seed", "results_dir", *MEMBER_FIELDS)


def member_key(config: RunConfig) -> tuple:
    """What runs trained side by side must share: every flag but MEMBER_FLAGS (td3_agent.member_key)."""
    values = flags.flat(config)
    return (tuple(v for k, v in values.items() if k not in MEMBER_FLAGS + NOT_RECORDED)
            + member_key_td3(config.td3))


def check_results_dir(path: str) -> None:
    """--results_dir must be a folder or not exist yet; else one line and exit 2."""
    if os.path.exists(path) and not os.path.isdir(path):
        build_parser().error(f"argument --results_dir: '{path}' is a file; give a folder path")
