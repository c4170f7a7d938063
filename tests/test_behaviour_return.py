"""The dataset's own return (its behaviour policy's), recorded by each run and drawn by plot.py without a flag."""
import json
import os

import numpy as np
import pytest

import plot
from harness import summary
from helpers import short_run


def test_a_run_records_the_mean_and_std_of_its_datasets_episode_returns(tiny_dataset, tmp_path):
    meta = json.loads(open(os.path.join(short_run(tmp_path / "results"), "config.json")).read())
    returns = np.array([episode.rewards.sum() for episode in tiny_dataset.iterate_episodes()])  # undiscounted
    assert meta["dataset_episodes"] == len(returns) == 16
    assert meta["behaviour_return_mean"] == pytest.approx(returns.mean(), rel=1e-6)
    assert meta["behaviour_return_std"] == pytest.approx(returns.std(), rel=1e-6)


def test_plot_draws_the_recorded_behaviour_return_by_default_and_the_flag_replaces_it(tiny_dataset, tmp_path):
    results = tmp_path / "results"
    meta = json.loads(open(os.path.join(short_run(results), "config.json")).read())
    groups = summary.group_runs(summary.load_runs(str(results)))
    mean, std = meta["behaviour_return_mean"], meta["behaviour_return_std"]
    fig = plot.make_figures(groups, None)["returns.png"]
    drawn = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("behaviour policy return")]
    assert len(drawn) == 1 and drawn[0].get_ydata()[0] == pytest.approx(mean, abs=1e-3 * abs(mean))
    assert drawn[0].get_label() == f"behaviour policy return (dataset) = {mean:.4g} ± {std:.3g}"
    fig = plot.make_figures(groups, 1673.0)["returns.png"]
    assert [line.get_label() for line in fig.axes[0].get_lines() if "behaviour" in line.get_label()] == [
        "behaviour policy return = 1673"]
