"""summary.py as a specification: how run folders are read and grouped, and what the summary says."""
import csv
import json

import numpy as np
import pytest

import plot
from harness import summary
from fake_runs import write_run
from harness import config


def test_runs_launched_differently_are_seeds_of_one_group_named_by_config(tmp_path):
    # what runner.py records of two runs of one configuration launched with other threads, devices, folders
    for seed, argv in ((0, ["--threads", "1"]), (1, ["--threads", "4", "--device", "cpu", "--results_dir", "x"])):
        recorded = config.recorded_flags(config.parse(["--bc_weight", "10", *argv])[0])
        write_run(tmp_path, "td3_bc10", seed, **{k: v for k, v in recorded.items() if k != "seed"})
    groups = summary.group_runs(summary.load_runs(str(tmp_path)))
    assert {label: len(runs) for label, runs in groups.items()} == {"td3_bc10": 2}


@pytest.mark.parametrize("flag, values, labels", [
    ("lr", (1e-4, 3e-4), ["lr=0.0001", "lr=0.0003"]),
    ("total_steps", (3000, 6000), ["total_steps=3000", "total_steps=6000"]),
    ("eval_episodes", (5, 10), ["eval_episodes=5", "eval_episodes=10"]),
    ("hidden", ([64], [256, 256]), ["hidden=64", "hidden=256,256"])])
def test_runs_differing_in_any_other_flag_are_kept_apart_and_labelled_by_it(tmp_path, flag, values, labels):
    for seed, value in enumerate(values):
        write_run(tmp_path, "td3", seed, **{flag: value})  # one config label for both: the flag must tell them apart
    groups = summary.group_runs(summary.load_runs(str(tmp_path)))
    assert list(groups) == labels  # in numeric order
    assert all(len(runs) == 1 for runs in groups.values())


def test_groups_take_runners_own_labels_when_those_tell_them_apart(tmp_path):
    write_run(tmp_path, "td3_cql_alpha=5", 0, cql_alpha=5.0)
    write_run(tmp_path, "td3_cql_alpha=5", 1, cql_alpha=5.0)
    write_run(tmp_path, "td3", 0)
    groups = summary.group_runs(summary.load_runs(str(tmp_path)))
    assert {label: len(runs) for label, runs in groups.items()} == {"td3": 1, "td3_cql_alpha=5": 2}


def test_labels_name_every_differing_flag_and_a_flag_older_runs_lack(tmp_path):
    # one label for all three (as from an older runner.py): the flags must tell them apart
    write_run(tmp_path, "td3", 0, cql_alpha=5.0, cql_policy_actions=False)
    write_run(tmp_path, "td3", 1, cql_alpha=5.0, cql_policy_actions=True)
    write_run(tmp_path, "td3", 2)
    labels = list(summary.group_runs(summary.load_runs(str(tmp_path))))
    assert labels == ["cql_alpha=0 cql_policy_actions=unset", "cql_alpha=5 cql_policy_actions=False",
                      "cql_alpha=5 cql_policy_actions=True"]
    assert len({plot.file_safe(label) for label in labels}) == 3
    assert all(" " not in plot.file_safe(label) for label in labels)


def test_a_broken_train_csv_is_skipped_with_a_warning_but_the_run_still_counts(tmp_path, capsys):
    train = write_run(tmp_path, "td3", 0) / "train.csv"
    train.write_text("step,q1\n1000\n2000,2.0")  # (a last row cut short is read without it: test_reliability_round4)
    runs = summary.load_runs(str(tmp_path))
    assert len(runs) == 1 and runs[0].train is None
    assert capsys.readouterr().err == f"plot.py: warning: skipping {train}: train.csv has a truncated or malformed row\n"


def test_iqm_is_the_25_percent_trimmed_mean_with_a_bootstrap_ci_inside_the_seeds_range():
    iqm, low, high = summary.iqm_ci(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert iqm == 3.0  # the outlier 100 (and the 1) are trimmed
    assert 1.0 <= low <= iqm <= high <= 100.0
    assert summary.iqm_ci(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == (iqm, low, high)  # fixed random state


def summary_of(root) -> list[dict]:
    """The summary rows of the runs below root."""
    return summary.summary_rows(summary.group_runs(summary.load_runs(str(root))))


def test_one_seed_leaves_blank_what_one_seed_cannot_give(tmp_path):
    write_run(tmp_path / "runs", "td3", 0, dataset="mujoco/hopper/medium-v0")
    row = summary_of(tmp_path / "runs")[0]
    assert row["final_return_iqm"] == 900.0 and row["final_return_mean"] == 900.0
    assert row["final_return_std"] is row["final_return_ci_low"] is row["best_return_std"] is None
    table = summary.summary_table([row])
    assert "[" not in table and "IQM" not in table.splitlines()[0]  # no interval over one number
    assert "no spread or interval" in table
    assert plot.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        (written,) = csv.DictReader(f)
    assert not {"final_return_std", "final_return_ci_low", "seeds_diverged", "copies"} & set(written)  # blank columns
    assert float(written["final_return_iqm"]) == 900.0
    write_run(tmp_path / "runs", "td3", 1, dataset="mujoco/hopper/medium-v0")
    assert plot.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        (written,) = csv.DictReader(f)
    assert float(written["final_return_ci_low"]) == 900.0 and "seeds_diverged" not in written  # two seeds: a spread


def test_best_return_is_each_seeds_best_evaluation(tmp_path):
    write_run(tmp_path, "td3", 0, returns=(100.0, 700.0, 200.0))
    write_run(tmp_path, "td3", 1, returns=(500.0, 100.0, 300.0))
    row = summary.summary_rows(summary.group_runs(summary.load_runs(str(tmp_path))))[0]
    assert (row["final_return_iqm"], row["best_return_iqm"]) == (250.0, 600.0)


def test_normalized_score_uses_config_json_references_else_the_d4rl_hopper_proxy(tmp_path):
    write_run(tmp_path / "refs", "td3", 0, returns=(500.0,), refs=(0.0, 1000.0), total_steps=1000)
    write_run(tmp_path / "proxy", "td3", 0, returns=(-20.272305 + 0.5 * (3234.3 + 20.272305),),
              dataset="mujoco/hopper/medium-v0", total_steps=1000)
    with_refs = summary.summary_rows(summary.group_runs(summary.load_runs(str(tmp_path / "refs"))))
    proxy = summary.summary_rows(summary.group_runs(summary.load_runs(str(tmp_path / "proxy"))))
    assert with_refs[0]["final_normalized_iqm"] == pytest.approx(50.0)
    assert with_refs[0]["normalized_reference"] == "config.json"
    assert proxy[0]["final_normalized_iqm"] == pytest.approx(50.0)
    assert "normalized final (D4RL hopper proxy)" in summary.summary_table(proxy).splitlines()[0]
    assert "proxy" not in summary.summary_table(with_refs)
    write_run(tmp_path / "mixed", "td3", 0, returns=(500.0,), refs=(0.0, 1000.0), total_steps=1000)
    write_run(tmp_path / "mixed", "td3_bc10", 0, returns=(500.0,), bc_weight=10.0, dataset="mujoco/hopper/medium-v0",
              total_steps=1000)
    table = summary.summary_table(summary.summary_rows(summary.group_runs(summary.load_runs(str(tmp_path / "mixed")))))
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert "* 16.0" in rows["td3_bc10"] and "*" not in rows["td3"]  # the proxy row is marked
    assert "* D4RL hopper proxy for Hopper runs where it has none" in table


def test_a_walker2d_run_gets_no_hopper_references(tmp_path):
    write_run(tmp_path, "td3", 0, returns=(500.0,), dataset="mujoco/walker2d/medium-v0", total_steps=1000)
    (row,) = summary_of(tmp_path)
    assert row["normalized_reference"] == "none" and row["final_normalized_iqm"] is None
    table = summary.summary_table([row])
    assert "proxy" not in table and "none: no references for that environment" in table
    assert table.splitlines()[1].split()[-3] == "none"


def test_a_seed_whose_last_evaluation_is_nan_diverged_and_is_not_counted_as_finished(tmp_path):
    write_run(tmp_path, "td3", 0, returns=(300.0, 600.0, 900.0))
    write_run(tmp_path, "td3", 1, returns=(300.0, 600.0, float("nan")))  # as a diverged run writes its last row
    (row,) = summary_of(tmp_path)
    assert (row["seeds"], row["seeds_reached_final"], row["seeds_diverged"], row["seeds_stopped_early"]) == (2, 1, 1, 0)
    assert row["final_return_iqm"] == 900.0 and row["final_returns_per_seed"] == "900.0"  # not seed 1's 600
    table = summary.summary_table([row])
    assert "2: 1/1/0" in table.splitlines()[1]
    assert ("td3: 1 of 2 seeds reached 3000 (1 diverged: non-finite eval_return_mean at step 3000, 0 stopped "
            "early); its returns are over the seeds that finished") in table


def test_a_seed_whose_only_evaluation_is_nan_does_not_drop_out(tmp_path):
    write_run(tmp_path, "td3", 0, returns=(float("nan"),), total_steps=1000)
    write_run(tmp_path, "td3", 1, returns=(float("nan"),), total_steps=1000)
    (row,) = summary_of(tmp_path)
    assert (row["seeds"], row["seeds_reached_final"], row["seeds_diverged"]) == (2, 0, 2)
    assert row["final_return_iqm"] is None and row["final_return_mean"] is None
    assert "td3: 0 of 2 seeds reached 1000 (2 diverged" in summary.summary_table([row])


def test_a_run_whose_last_train_row_is_non_finite_diverged_though_its_evaluations_are_finite(tmp_path):
    run_dir = write_run(tmp_path, "td3", 0)
    with open(run_dir / "train.csv", "a") as f:
        f.write("3500,nan,0,0,0,0,0,0,,0\n")  # the row that stopped it; an empty cell is only an absent metric
    write_run(tmp_path, "td3", 1)
    (row,) = summary_of(tmp_path)
    assert (row["seeds_reached_final"], row["seeds_diverged"]) == (1, 1)
    assert row["why_diverged"] == "non-finite q1 at step 3500"


def test_a_run_stopped_early_is_not_final_and_a_run_past_max_abs_q_diverged(tmp_path):
    write_run(tmp_path, "td3", 0, max_abs_q=1000.0)
    write_run(tmp_path, "td3", 1, returns=(300.0, 700.0), max_abs_q=1000.0)  # its worker died at step 2000 of 3000
    progress = write_run(tmp_path, "td3", 2, max_abs_q=1000.0) / "progress.csv"
    progress.write_text(progress.read_text().replace(",30.0,", ",3e6,"))  # |dataset Q| passed 1000: it was stopped
    (row,) = summary_of(tmp_path)
    assert (row["seeds_reached_final"], row["seeds_diverged"], row["seeds_stopped_early"]) == (1, 1, 1)
    assert row["final_returns_per_seed"] == "900.0" and row["best_return_iqm"] == 900.0


def test_a_copied_run_folder_is_flagged_and_counted_once(tmp_path):
    original = write_run(tmp_path / "a", "td3", 0, returns=(300.0, 600.0, 900.0))
    write_run(tmp_path / "a", "td3", 1, returns=(300.0, 600.0, 100.0))
    copy = tmp_path / "b" / original.name
    copy.parent.mkdir()
    copy.mkdir()
    for name in ("config.json", "progress.csv", "train.csv"):
        (copy / name).write_bytes((original / name).read_bytes())
    (row,) = summary_of(tmp_path)
    assert (row["seeds"], row["copies"], row["final_return_mean"]) == (2, 1, 500.0)  # (900 + 100) / 2
    assert row["copy_folders"] == str(copy)
    assert (f"td3: 1 run folder(s) repeat the flags and seed of another (copies, not seeds), each counted once: "
            f"{copy}") in summary.summary_table([row])


def test_the_summary_is_written_when_a_label_is_too_long_for_a_file_name(tmp_path, capsys):
    for seed, letter in enumerate("xy"):
        write_run(tmp_path / "runs", "td3", seed, dataset=letter * 300)  # labelled by the flag that differs
    assert plot.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "summary.csv" in names and all(len(name) < 255 for name in names)
    assert len([name for name in names if name.startswith("training_curves_")]) == 2
    assert json.loads((tmp_path / "runs" / "td3-seed0" / "config.json").read_text())["flags"]["dataset"] == "x" * 300
