"""benchmarks/plot_scale.py makes run folders plot.py reads as the configurations asked for."""
import plot_scale
from harness import summary


def test_the_made_folders_are_one_readable_run_per_configuration_and_seed(tmp_path):
    plot_scale.make_runs(str(tmp_path), configs=12, seeds=2)
    groups = summary.group_runs(summary.load_runs(str(tmp_path)))
    assert len(groups) == 12 and all(len(runs) == 2 for runs in groups.values())
    assert all(run.train is not None and len(run.train["step"]) == 100 for runs in groups.values() for run in runs)
