"""Issue 27 (reliability, round 4): each case that broke, as a specification of what holds now."""
import contextlib
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import networks
import plot
import runner
import sweep
from conftest import DATASET_ID, rollout_episodes, write_dataset
from fake_runs import write_run
from harness import config, run_folder, sweep_table
from helpers import FAST, ROOT, only_run, read_csv
from test_agent import batch, make_agent
from test_baselines import episodes_with_returns, make_bc, make_iql
from test_datasets import edit_metadata, stored_spec
from utils import ReplayBuffer, episode_returns


def one_line_error(capsys, main, argv: list[str], prog: str = "runner.py") -> str:
    """The one line a program prints when it refuses (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return err


@contextlib.contextmanager
def held_elsewhere(folder: str):
    """The folder's lock (harness/files.hold) held by another live process; yields its pid."""
    code = "import sys, time; from harness.files import hold; lock = hold(sys.argv[1]); print('held', flush=True); " \
           "time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", code, folder], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


# --- Data loss and security ---------------------------------------------------------------------------------------

def test_plot_writes_no_output_through_a_link(tmp_path):
    results = tmp_path / "results"
    write_run(results, "td3")
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me")
    (results / "summary.csv").symlink_to(elsewhere)
    (results / "returns.png").symlink_to(tmp_path / "created.png")  # a dangling link: its target must not appear
    assert plot.main([str(results)]) == 0
    assert elsewhere.read_text() == "keep me" and not (tmp_path / "created.png").exists()
    assert not (results / "summary.csv").is_symlink() and "group" in (results / "summary.csv").read_text()
    assert not (results / "returns.png").is_symlink() and (results / "returns.png").stat().st_size > 0


def test_sweep_table_is_written_through_no_link(tmp_path):
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me")
    (tmp_path / "sweep.csv").symlink_to(elsewhere)
    sweep_table.write_table(str(tmp_path), sweep_table.summarise([], [1.0], 1))
    assert elsewhere.read_text() == "keep me"
    assert not (tmp_path / "sweep.csv").is_symlink() and (tmp_path / "sweep.csv").read_text().startswith("bc_weight")


def test_a_label_that_starts_like_a_formula_is_text_in_summary_csv(tmp_path):
    results = tmp_path / "results"
    write_run(results, "=HYPERLINK(\"http://x\")", returns=(-5.0, -3.0, -1.0))
    assert plot.main([str(results)]) == 0
    (row,) = read_csv(str(results / "summary.csv"))
    assert row["group"] == row.get("config", row["group"]) == "'=HYPERLINK(\"http://x\")"  # config: where it differs
    assert row["final_returns_per_seed"] == "-1.0"  # a negative number stays a number


def test_resuming_a_sweep_that_runs_is_refused_naming_its_process(tmp_path, capsys):
    with contextlib.ExitStack() as held:
        sweep_dir, _ = sweep.new_sweep(sweep.SweepConfig(bc_weight=(1.0,), results_dir=str(tmp_path)),
                                       {"dataset": DATASET_ID}, held)
    before = sorted(os.listdir(sweep_dir))
    with held_elsewhere(sweep_dir) as pid:
        err = one_line_error(capsys, sweep.main, ["--resume", sweep_dir], "sweep.py")
    assert f"{sweep_dir} is in use by process {pid}" in err
    assert sorted(os.listdir(sweep_dir)) == before


def test_a_retried_group_never_removes_a_run_folder_another_process_holds(tmp_path, capsys):
    run = {"dataset": DATASET_ID, "total_steps": 20, "results_dir": str(tmp_path)}
    cfg = config.from_flags(run)[0]
    run_dir, lock = run_folder.create(str(tmp_path), cfg, {"flags": config.recorded_flags(cfg)})
    lock.close()  # a run that has not written its first checkpoint yet, in another process:
    with held_elsewhere(run_dir) as pid:
        err = one_line_error(capsys, runner.run_group, [run])
        assert f"{run_dir} is in use by process {pid}" in err
        assert os.path.isfile(os.path.join(run_dir, "config.json"))


def test_a_refused_sweep_leaves_no_folder(tmp_path, capsys):
    err = one_line_error(capsys, sweep.main, ["--bc_weight", "1", "--agent", "bc", "--results_dir", str(tmp_path)])
    assert "argument --bc_weight: has no effect with --agent bc" in err
    assert os.listdir(tmp_path) == []


# --- Silent wrong results: flags --------------------------------------------------------------------------------

def test_seed_beside_seeds_is_refused(capsys):
    err = one_line_error(capsys, runner.main, ["--seed", "5", "--seeds", "0", "1"])
    assert "--seed or --seeds, not both" in err


def test_a_sweep_refuses_seed_for_seeds(tmp_path, capsys):
    err = one_line_error(capsys, sweep.main, ["--bc_weight", "1", "--seed", "7", "--results_dir", str(tmp_path)],
                         "sweep.py")
    assert "--seed: a sweep's runs take their seeds from --seeds" in err and os.listdir(tmp_path) == []


@pytest.mark.parametrize("hidden", [[16, 16, "--help"], [16, 16, "--agent", "bc"], "16 16", [16, True]])
def test_config_json_values_are_values_never_command_line_words(tiny_dataset, tmp_path, capsys, hidden):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"flags": {"dataset": DATASET_ID, "hidden": hidden}}))
    (run_dir / "checkpoint.pt").write_bytes(b"never reached")
    err = one_line_error(capsys, runner.main, ["--resume", str(run_dir)])
    assert f"{run_dir}/config.json: argument --hidden: expected " in err


def test_a_sweep_record_s_values_are_values_too(tmp_path, capsys):
    with contextlib.ExitStack() as held:
        sweep_dir, record = sweep.new_sweep(sweep.SweepConfig(bc_weight=(1.0,), results_dir=str(tmp_path)),
                                            {"dataset": DATASET_ID}, held)
    record["groups"][0][0]["hidden"] = [16, "--agent", "bc"]
    Path(sweep_dir, "sweep.json").write_text(json.dumps(record))
    assert "sweep.json: argument --hidden: expected an integer, got '--agent'" in one_line_error(
        capsys, sweep.main, ["--resume", sweep_dir])


@pytest.mark.parametrize("beside, named", [(["--bc_top_percent", "40"], "--bc_top_percent"),
                                           (["--cql_n_actions", "3"], "--cql_n_actions")])
def test_a_flag_beside_resume_is_refused_as_beside_resume(tmp_path, capsys, beside, named):
    (tmp_path / "config.json").write_text(json.dumps({"flags": {"agent": "bc", "dataset": DATASET_ID}}))
    err = one_line_error(capsys, runner.main, ["--resume", str(tmp_path), *beside])
    assert "has no effect" not in err
    assert "--resume continues a run with the flags of its config.json" in err and f"not {named}" in err


# --- Runs that can never finish: train.csv's columns ------------------------------------------------------------

AGENTS = {"td3": lambda: make_agent(), "td3_delay_3": lambda: make_agent(policy_delay=3),
          "cql": lambda: make_agent(cql_alpha=1.0), "cql_uniform_only": lambda: make_agent(cql_alpha=1.0,
                                                                                           cql_uniform_only=True),
          "cql_lagrange": lambda: make_agent(cql_alpha=1.0, cql_target_gap=1.0),
          "td3_bc_auto": lambda: make_agent(bc_weight="auto"), "bc": make_bc, "iql": make_iql}


@pytest.mark.parametrize("name", AGENTS)
def test_an_agents_declared_metrics_are_what_its_updates_return(name):
    agent, returned = AGENTS[name](), []
    for _ in range(6):
        returned += agent.update(*batch())
    assert list(dict.fromkeys(returned)) == list(agent.metric_names())


@pytest.mark.parametrize("flags", [
    ["--total_steps", "7", "--log_every", "5", "--policy_delay", "4"],
    ["--total_steps", "5", "--log_every", "2", "--cql_alpha", "1"],
    ["--total_steps", "3", "--log_every", "1"],
])
def test_every_train_csv_row_has_the_header_s_columns_whatever_updates_fell_inside_it(tiny_dataset, tmp_path, flags):
    assert runner.main([*FAST, *flags, "--eval_every", "100", "--results_dir", str(tmp_path / "r")]) == 0
    with open(os.path.join(only_run(tmp_path / "r"), "train.csv"), newline="") as f:
        header, *rows = list(csv.reader(f))
    assert all(len(row) == len(header) for row in rows)
    assert "actor_loss" in header and rows[-1][header.index("actor_loss")] == ""  # no actor step in the last row
    assert rows[-1][header.index("q1")] != ""


def test_a_run_of_one_step_resumes_to_more(tiny_dataset, tmp_path):
    assert runner.main([*FAST, "--total_steps", "1", "--results_dir", str(tmp_path / "r")]) == 0
    run_dir = only_run(tmp_path / "r")
    assert runner.main(["--resume", run_dir, "--total_steps", "10"]) == 0
    rows = read_csv(os.path.join(run_dir, "train.csv"))
    assert [row["step"] for row in rows] == ["1", "10"]
    assert rows[0]["actor_loss"] == "" and rows[1]["actor_loss"] != ""


# --- Hangs and tracebacks: what is read from run folders --------------------------------------------------------

@pytest.mark.parametrize("name", ["progress.csv", "config.json"])
def test_a_fifo_in_a_run_folder_is_skipped_by_plot_not_waited_on(tmp_path, name):
    results = tmp_path / "results"
    write_run(results, "td3")
    jammed = write_run(results, "td3_lr=0.001", lr=1e-3)
    (jammed / name).unlink()
    os.mkfifo(jammed / name)
    done = subprocess.run([sys.executable, "plot.py", str(results)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=os.environ | {"MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    assert f"skipping {jammed}: " in done.stderr and "not a regular file" in done.stderr


def test_a_fifo_train_csv_is_one_line_on_resume_not_a_hang(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"flags": {"dataset": DATASET_ID}}))
    os.mkfifo(run_dir / "train.csv")
    done = subprocess.run([sys.executable, "runner.py", "--resume", str(run_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{run_dir}/train.csv cannot be read" in done.stderr and "not a regular file" in done.stderr


@pytest.mark.parametrize("label", [5, ["td3"], "td3\ud800"])
def test_a_config_json_label_that_is_not_a_text_skips_that_run_in_one_line(tmp_path, capsys, label):
    results = tmp_path / "results"
    write_run(results, "td3")
    odd = write_run(results, "td3_lr=0.001", lr=1e-3)
    meta = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps(meta | {"config": label}))
    assert plot.main([str(results)]) == 0
    err = capsys.readouterr().err
    assert f"plot.py: warning: skipping {odd}: config.json " in err and "Traceback" not in err
    (row,) = read_csv(str(results / "summary.csv"))
    assert row["group"] == "td3"


def test_a_seed_whose_last_progress_row_is_cut_short_counts_as_stopped_early(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "td3", seed=0)
    cut = write_run(results, "td3", seed=1)
    text = (cut / "progress.csv").read_text()
    (cut / "progress.csv").write_text(text[:text.rindex(",")])  # the last row lost its last cell
    assert plot.main([str(results)]) == 0
    (row,) = read_csv(str(results / "summary.csv"))
    assert (row["seeds"], row["seeds_reached_final"], row["seeds_stopped_early"]) == ("2", "1", "1")
    assert "its last row is cut short" in capsys.readouterr().err


# --- Silent wrong results: checkpoints and config.json edited ----------------------------------------------------

def two_step_run(results: Path, *flags: str) -> str:
    """A finished run of 2 steps, checkpointed at step 2; its folder."""
    assert runner.main([*FAST, "--total_steps", "2", "--eval_every", "2", "--results_dir", str(results), *flags]) == 0
    return only_run(results)


def test_a_checkpoint_written_by_another_agent_is_refused(tiny_dataset, tmp_path, capsys):
    bc_run, iql_run = two_step_run(tmp_path / "bc", "--agent", "bc"), two_step_run(tmp_path / "iql", "--agent", "iql")
    Path(bc_run, "checkpoint.pt").write_bytes(Path(iql_run, "checkpoint.pt").read_bytes())
    err = one_line_error(capsys, runner.main, ["--resume", bc_run, "--total_steps", "4"])
    assert "it was written by --agent iql, this run is --agent bc" in err


def test_a_checkpoint_whose_update_count_was_edited_is_refused(tiny_dataset, tmp_path, capsys):
    run_dir = two_step_run(tmp_path / "r")
    path = os.path.join(run_dir, "checkpoint.pt")
    state = torch.load(path, weights_only=True)
    state["agent"]["updates"] += 1  # the actor would step on odd updates from here on
    torch.save(state, path)
    err = one_line_error(capsys, runner.main, ["--resume", run_dir, "--total_steps", "4"])
    assert "its update count 3 is not its step 2" in err


@pytest.mark.parametrize("flag, agent", [("bc_top_percent", "bc"), ("episodes_percent", "td3")])
def test_an_edited_keeping_flag_in_config_json_is_refused_on_resume(tiny_dataset, tmp_path, capsys, flag, agent):
    run_dir = two_step_run(tmp_path / "r", "--agent", agent, f"--{flag}", "50")
    meta = json.loads(Path(run_dir, "config.json").read_text())
    assert meta[f"{flag}_episodes"] == 8
    meta["flags"][flag] = 25.0
    Path(run_dir, "config.json").write_text(json.dumps(meta))
    err = one_line_error(capsys, runner.main, ["--resume", run_dir, "--total_steps", "4"])
    assert f"records {flag}_episodes 8, its flags now give 4" in err


# --- Silent wrong results and tracebacks: datasets ---------------------------------------------------------------

def empty_episode(dataset, k: int) -> None:
    """Make episode k of a written dataset one of no step: its first observation and nothing else."""
    with h5py.File(os.path.join(dataset.spec.data_path, "main_data.hdf5"), "r+") as f:
        episode = f[f"episode_{k}"]
        removed = len(episode["actions"])
        for name in ("actions", "rewards", "terminations", "truncations", "observations"):
            kept = episode[name][:1 if name == "observations" else 0]
            del episode[name]
            episode.create_dataset(name, data=kept)
        episode.attrs["total_steps"] = 0
    edit_metadata(dataset, total_steps=dataset.total_steps - removed)


@pytest.mark.parametrize("where", [1, 2])
def test_a_dataset_with_an_episode_of_no_steps_is_refused_in_one_line(minari_root, tmp_path, capsys, where):
    empty_episode(write_dataset(minari_root, episodes=rollout_episodes((20, 20, 20))), where)
    err = one_line_error(capsys, runner.main, [*FAST, "--total_steps", "2", "--results_dir", str(tmp_path / "r")])
    assert f"episode {where} has no steps" in err and not (tmp_path / "r").exists()


def test_an_episode_of_no_steps_returns_zero_not_the_next_episode_s_reward():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0])
    data = torch.zeros(5, 2 * 11 + 3 + 2)
    data[:, 11 + 3] = rewards
    buffer = ReplayBuffer(data, 11, 3, np.array([3, 3, 5, 5]))
    np.testing.assert_array_equal(episode_returns(buffer), [6.0, 0.0, 30.0, 0.0])


@pytest.mark.parametrize("changes, said", [
    ({"kwargs": {"terminate_when_unhealthy": False}, "max_episode_steps": 10 ** 9}, "with the arguments"),
    ({"max_episode_steps": 10 ** 9}, "with the max_episode_steps 1000000000 (registered: 1000)"),
    ({"kwargs": {"render_mode": "human"}}, "with the arguments {\"render_mode\": \"human\"}"),
])
def test_a_dataset_may_not_change_its_evaluation_task(tiny_dataset, tmp_path, capsys, changes, said):
    stored_spec(tiny_dataset, **changes)
    err = one_line_error(capsys, runner.main, [*FAST, "--total_steps", "2", "--results_dir", str(tmp_path / "r")])
    assert said in err and "refused: that changes the task" in err


def test_iql_on_episodes_of_equal_returns_warns_and_leaves_advantages_unscaled(minari_root, tmp_path, capsys):
    write_dataset(minari_root, episodes=episodes_with_returns([10.0] * 4))
    assert runner.main([*FAST, "--agent", "iql", "--total_steps", "2", "--results_dir", str(tmp_path / "r")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["runner.py: warning: --dataset: its 4 episodes all return 10: IQL's advantage scale 1000 / "
                        "(max - min episode return) is undefined; the advantages are left unscaled (scale 1)"]


def test_bc_top_percent_asks_for_a_value_it_then_takes(minari_root, tmp_path, capsys):
    write_dataset(minari_root, episodes=episodes_with_returns([5.0, 50.0, 1.0]))
    argv = [*FAST, "--agent", "bc", "--total_steps", "2", "--batch_size", "4", "--results_dir", str(tmp_path / "r")]
    err = one_line_error(capsys, runner.main, [*argv, "--bc_top_percent", "10"])
    assert err.endswith("keeps none of the dataset's 3 episodes; give at least 33.4\n")
    assert runner.main([*argv, "--bc_top_percent", "33.4"]) == 0


# --- Tracebacks and unbounded memory: values checked where they enter ----------------------------------------------

@pytest.mark.parametrize("argv, said", [
    (["--seed", "99999999999999999999"], "argument --seed: must be an integer >= 0 and <= 4294967295"),
    (["--seeds", "0", "99999999999999999999"], "argument --seeds: must be an integer >= 0 and <= 4294967295"),
    (["--eval_episodes", "2000"], "argument --eval_episodes: must be an integer >= 1 and <= 100"),
])
def test_a_seed_or_episode_count_out_of_range_is_one_line(capsys, argv, said):
    assert said in one_line_error(capsys, runner.main, argv)


def test_the_largest_seed_trains(tiny_dataset, tmp_path):
    assert runner.main([*FAST, "--total_steps", "2", "--seed", str(config.SEED_MAX),
                        "--results_dir", str(tmp_path / "r")]) == 0


def test_the_readme_s_actor_takes_one_observation():
    actor = networks.Actor(11, 3, -torch.ones(3), torch.ones(3), hidden=(128, 128))
    obs = np.zeros(11)
    action = actor(torch.as_tensor(obs, dtype=torch.float32))
    assert action.shape == (3,)
    torch.testing.assert_close(action, actor(torch.as_tensor(obs[None], dtype=torch.float32))[0])
