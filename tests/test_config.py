"""Flags as dataclass fields: one declaration gives the flag, its check, its label and its config.json entry."""
import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from harness import config
from harness import flags
from harness.flags import flag

# config.json's "flags" of a default run as commit 07d3f14 wrote them: each flag there keeps its name and
# default, whether it is still a flag of the run (recorded) or now one of how a command launches runs
FLAGS_OF_07D3F14 = {
    "agent": "td3", "total_steps": 100000, "bc_weight": 0.0, "bc_alpha": 2.5, "cql_alpha": 0.0, "cql_n_actions": 4,
    "cql_uniform_only": False, "cql_target_gap": None, "cql_temp": 1.0, "seed": 0,
    "threads": 0, "batch_size": 128, "hidden": [128, 128], "lr": 0.0003, "gamma": 0.99, "tau": 0.005,
    "policy_noise": 0.2, "noise_clip": 0.5, "policy_delay": 2, "eval_every": 10000, "eval_episodes": 10,
    "log_every": 1000, "video_every": None, "max_abs_q": None, "dataset": "mujoco/hopper/medium-v0",
    "device": "auto", "results_dir": "results"}
LAUNCH = {f.name for f in flags.leaf_fields(config.LaunchConfig)}


def test_every_flag_of_07d3f14_keeps_its_name_and_default():
    run_config, launch, _ = config.parse([])
    now = config.recorded_flags(run_config) | json.loads(json.dumps(flags.flat(launch)))
    assert {name: now[name] for name in FLAGS_OF_07D3F14} == FLAGS_OF_07D3F14


def test_config_json_records_what_a_run_is_and_nothing_of_how_it_was_launched():
    run_config, launch, _ = config.parse(["--threads", "2", "--device", "cpu", "--results_dir", "elsewhere",
                                          "--video_every", "0", "--seeds", "3", "4"])
    assert not LAUNCH & set(config.recorded_flags(run_config))
    assert config.config_name(run_config) == config.config_name(config.parse([])[0]) == "td3"
    assert (launch.threads, launch.device, launch.seeds) == (2, "cpu", (3, 4))


def test_the_agent_receives_the_td3_flags_as_its_config():
    run_config, _, _ = config.parse(["--lr", "1e-3", "--hidden", "64", "64", "--cql_alpha", "1", "--cql_uniform_only",
                                     "--total_steps", "5"])
    assert (run_config.td3.lr, run_config.td3.hidden, run_config.td3.cql_uniform_only) == (1e-3, (64, 64), True)
    assert run_config.total_steps == 5


def test_config_json_flags_give_back_the_same_config():
    run_config, _, _ = config.parse(["--bc_weight", "auto", "--cql_alpha", "5", "--cql_target_gap", "0.5",
                                  "--cql_uniform_only", "--hidden", "256", "256", "--lr", "1e-05", "--seed", "3",
                                  "--dataset", "mujoco/hopper/expert-v0", "--max_abs_q", "1e4"])
    as_json = json.loads(json.dumps(flags.flat(run_config)))
    assert config.from_flags(as_json)[0] == run_config


def test_only_the_flags_given_are_reported_as_given_even_at_their_default():
    _, _, given = config.parse(["--lr", "3e-4", "--seed", "1", "--cql_alpha", "5", "--cql_uniform_only"])
    assert given == {"lr": 3e-4, "seed": 1, "cql_alpha": 5.0, "cql_uniform_only": True}


NO_EFFECT = [
    (["--cql_temp", "3", "--cql_target_gap", "0.5"], "argument --cql_target_gap: has no effect without --cql_alpha > 0"),
    (["--cql_n_actions", "10"], "argument --cql_n_actions: has no effect without --cql_alpha > 0"),
    (["--cql_uniform_only"], "argument --cql_uniform_only: has no effect without --cql_alpha > 0"),
    (["--bc_alpha", "1", "--bc_weight", "10"], "argument --bc_alpha: has no effect without --bc_weight auto"),
    (["--agent", "bc", "--policy_noise", "0.1"], "argument --policy_noise: has no effect with --agent bc; it acts "
                                                 "on --agent td3"),
    (["--agent", "iql", "--cql_alpha", "5"], "argument --cql_alpha: has no effect with --agent iql"),
    (["--iql_beta", "1"], "argument --iql_beta: has no effect with --agent td3; it acts on --agent iql"),
    (["--bc_top_percent", "10"], "argument --bc_top_percent: has no effect with --agent td3; it acts on --agent bc"),
    (["--agent", "bc", "--max_abs_q", "100"], "argument --max_abs_q: has no effect with --agent bc"),
]


@pytest.mark.parametrize("argv, message", NO_EFFECT, ids=[" ".join(argv) for argv, _ in NO_EFFECT])
def test_a_flag_that_would_have_no_effect_is_one_line_naming_what_would_make_it_count(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        config.parse(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"runner.py: error: {message}") and err.count("\n") == 1


def test_the_same_flags_with_what_makes_them_count_are_taken():
    for argv in (["--cql_alpha", "5", "--cql_temp", "3", "--cql_target_gap", "0.5", "--cql_uniform_only"],
                 ["--bc_weight", "auto", "--bc_alpha", "1"], ["--agent", "bc", "--bc_top_percent", "10"],
                 ["--agent", "iql", "--iql_beta", "1", "--max_abs_q", "100"], ["--log_every", "2"]):
        config.parse(argv)


@pytest.mark.parametrize("argv, label", [
    ([], "td3"),
    (["--cql_alpha", "5", "--bc_weight", "10", "--seed", "3", "--threads", "2", "--device", "cpu"],
     "td3_bc_weight=10_cql_alpha=5"),
    (["--agent", "bc", "--bc_top_percent", "10"], "bc_bc_top_percent=10"),
    (["--hidden", "256", "256", "--batch_size", "256"], "td3_batch_size=256_hidden=256-256"),
    (["--eval_every", "5000", "--gamma", "0.9", "--total_steps", "5000", "--eval_episodes", "3", "--log_every", "10",
      "--max_abs_q", "1e6"], "td3_gamma=0.9"),  # the run's length and measurements: in config.json alone
    (["--cql_alpha", "1", "--cql_uniform_only", "--dataset", "mujoco/hopper/expert-v0"],
     "td3_dataset=mujoco-hopper-expert-v0_cql_alpha=1_cql_uniform_only"),
])
def test_a_runs_label_names_the_learning_flags_off_their_default_in_flag_order(argv, label):
    assert config.config_name(config.parse(argv)[0]) == label


BAD = [
    (["--gamma", "1"], "argument --gamma: must be a finite number >= 0 and < 1, got 1"),
    (["--tau", "0"], "argument --tau: must be a finite number > 0 and <= 1, got 0"),
    (["--hidden", "64", "0"], "argument --hidden: must be an integer >= 1, got 0"),
    (["--bc_weight", "fast"], "argument --bc_weight: expected a finite number or 'auto', got 'fast'"),
    (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
    (["--agent", "sac"], "argument --agent: invalid choice: 'sac' (choose from 'td3', 'bc', 'iql')"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(argv) for argv, _ in BAD])
def test_a_value_outside_its_declared_bounds_is_one_line_naming_them(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        config.parse(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"runner.py: error: {message}\n"


def test_the_bounds_themselves_are_accepted():
    run_config, _, _ = config.parse(["--gamma", "0", "--tau", "1", "--cql_alpha", "0", "--threads", "0"])
    assert (run_config.td3.gamma, run_config.td3.tau) == (0.0, 1.0)


def test_help_shows_each_flag_with_its_bounds_and_default():
    text = " ".join(config.build_parser().format_help().split())
    for f in flags.leaf_fields(config.RunConfig) + flags.leaf_fields(config.LaunchConfig):
        assert f"--{f.name}" in text
    assert "--lr X Adam step size, actor and critic (> 0; default: 0.0003)" in text
    assert "--gamma X discount factor (>= 0 and < 1; default: 0.99)" in text
    assert "--video_every N" in text and "(>= 0; default: one, at the end of the run)" in text


@dataclass
class Inner:
    """Inner flags."""
    width: int = flag(3, "a width", low=1)


@dataclass
class Outer:
    """Outer flags."""
    rate: float = flag(0.5, "a rate", above=0, high=1)
    inner: Inner = field(default_factory=Inner)
    mode: str | None = flag(None, "a mode", choices=("a", "b"))


def test_a_new_field_is_a_flag_with_its_check_and_a_nested_dataclass_brings_its_own(capsys):
    parser = flags.Parser(prog="test")
    flags.add_flags(parser, Outer)
    outer = flags.build(Outer, vars(parser.parse_args(["--width", "5", "--rate", "1", "--mode", "b"])))
    assert outer == Outer(rate=1.0, inner=Inner(width=5), mode="b")
    assert flags.flat(outer) == {"rate": 1.0, "width": 5, "mode": "b"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate", "1.5"])
    assert capsys.readouterr().err == "test: error: argument --rate: must be a finite number > 0 and <= 1, got 1.5\n"


def test_a_groups_label_is_the_shared_label_then_each_differing_member_flag_in_run_order():
    base = config.parse(["--cql_alpha", "5", "--total_steps", "5000"])[0]
    runs = [dataclasses.replace(base, seed=seed, td3=dataclasses.replace(base.td3, bc_weight=weight))
            for weight in (0.1, 10.0) for seed in (0, 1)]
    assert config.group_label(runs) == "td3_cql_alpha=5 seed=0,1,0,1 bc_weight=0.1,0.1,10,10"
    assert config.group_label(runs[:1]) == "td3_bc_weight=0.1_cql_alpha=5"
    auto = config.parse(["--bc_weight", "auto"])[0]
    assert config.group_label([auto, dataclasses.replace(auto, seed=1)]) == "td3_bc_weight=auto seed=0,1"
