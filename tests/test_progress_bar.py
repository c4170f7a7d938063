"""What runner.py shows while it trains: the progress bar's text and the line of each video it writes."""
import math
import os
import re
import sys

import runner
from conftest import DATASET_ID
from helpers import FAST, short_run


def bar_states(err: str) -> list[str]:
    """Each state the bar was drawn in, first to last (tqdm redraws it after a carriage return)."""
    return [state.strip() for state in err.split("\r") if state.strip()]


def shown(state: str, name: str) -> str:
    """The value the bar's postfix shows for name, e.g. '12 7' for eval_return=12 7."""
    return re.search(rf"{name}=([^,\]]*)", state).group(1).strip()


def test_the_bar_shows_no_return_before_the_first_evaluation_and_the_last_one_at_the_end(tiny_dataset, tmp_path,
                                                                                         capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar, redrawn in place
    assert runner.main([*FAST, "--total_steps", "20", "--eval_every", "10", "--log_every", "5",
                        "--results_dir", str(tmp_path / "results")]) == 0
    out, err = capsys.readouterr()
    states = [state for state in bar_states(err) if "eval_return=" in state]
    assert "nan" not in err
    assert shown(next(s for s in states if " 5/20 " in s), "eval_return") == "-"  # at step 5, before any evaluation
    final = re.search(r"final return (-?\d+)", out).group(1)
    assert shown(states[-1], "eval_return") == final  # the evaluation of step 20, not the one of step 10


def test_output_that_is_no_terminal_gets_one_line_per_evaluation_and_no_carriage_returns(tiny_dataset, tmp_path,
                                                                                       capsys):
    run_dir = short_run(tmp_path / "results", "--log_every", "5")  # evaluations at 10 and 20; capsys is no terminal
    out, err = capsys.readouterr()
    assert "\r" not in err
    name = os.path.basename(run_dir)
    lines = [line for line in err.splitlines() if line.startswith(name)]
    assert [re.match(rf"{re.escape(name)}: step (\d+)/20: eval_return=", line).group(1) for line in lines] == \
        ["10", "20"], err
    final = re.search(r"final return (-?\d+)", out).group(1)
    assert shown(lines[-1], "eval_return") == final


def test_a_resumed_runs_bar_names_its_run_as_a_fresh_one_does(tiny_dataset, tmp_path, capsys):
    run_dir = short_run(tmp_path / "results")
    capsys.readouterr()
    assert runner.main(["--resume", run_dir + "/", "--total_steps", "30"]) == 0  # a folder as the shell completes it
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{os.path.basename(run_dir)}: step 30/30: ") for line in lines), lines


def test_a_groups_bar_names_its_runs_in_one_short_line_values_in_run_order(tiny_dataset, tmp_path, capsys):
    run = {"dataset": DATASET_ID, "batch_size": 32, "hidden": [32, 32], "eval_episodes": 1, "device": "cpu",
           "video_every": 0, "total_steps": 4, "eval_every": 4, "results_dir": str(tmp_path / "results")}
    assert runner.run_group([run | {"bc_weight": 1.0}, run | {"bc_weight": 10.0},
                             run | {"bc_weight": 10.0, "seed": 1}]) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("3 runs: ")]
    label = line.split(": step ")[0]
    assert label == "3 runs: td3_dataset=test-hopper-tiny-v0_batch_size=32_hidden=32-32 seed=0,0,1 bc_weight=1,10,10"


def test_the_video_line_says_how_long_the_episode_it_shows_lasted(tiny_dataset, tmp_path, capsys):
    short_run(tmp_path / "results", "--video_every", "20")
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("video: ")]
    found = re.fullmatch(r"video: \S+step20\.mp4 \((\d+) frames: the episode ended after (\d+) steps\)", line)
    assert found, line
    frames, steps = map(int, found.groups())
    assert frames == math.ceil((steps + 1) / 4)  # Hopper's 125 Hz drawn every 4th state (utils.record_video)
