"""--ray: runs as tasks on a real local Ray cluster (2 CPUs), the same rows as without Ray, retried from checkpoints."""
import os
import signal
import sys
import threading
import time

import pytest

import runner
import sweep
from conftest import DATASET_ID
from helpers import FAST, only_run, read_csv

TINY = ["--total_steps", "20", "--eval_every", "10", "--dataset", DATASET_ID, "--batch_size", "32", "--hidden",
        "32", "32", "--eval_episodes", "1", "--device", "cpu", "--video_every", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the module (its start-up is paid once); --ray finds it connected."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2)
    yield ray
    ray.shutdown()


def rows_without_time(path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time_s"} for row in read_csv(path)]


def sweep_rows(results) -> dict[str, tuple[list, list]]:
    """Each run of the one sweep under results: its progress.csv and train.csv rows, all columns but time_s."""
    (sweep_dir,) = results.iterdir()
    return {run.name.rsplit("-seed", 1)[0]: (rows_without_time(run / "progress.csv"),
                                            rows_without_time(run / "train.csv"))
            for run in sweep_dir.iterdir() if run.is_dir()}


def test_a_sweep_on_ray_writes_the_rows_it_writes_without_ray(ray_cluster, tiny_dataset, tmp_path):
    for name, extra in (("local", []), ("ray", ["--ray", "local"])):
        assert sweep.main(["--bc_weight", "0", "10", "--results_dir", str(tmp_path / name), *TINY, *extra]) == 0
    without_ray = sweep_rows(tmp_path / "local")
    assert len(without_ray) == 2 and all(len(progress) == 2 for progress, _ in without_ray.values())
    assert sweep_rows(tmp_path / "ray") == without_ray


def evaluations(results) -> int:
    """The rows in the progress.csv of the one run under results (0 before it has one)."""
    path = results.glob("*/progress.csv")
    return sum(len(read_csv(p)) for p in path)


def test_a_run_whose_worker_is_killed_resumes_from_its_checkpoint(ray_cluster, tiny_dataset, tmp_path):
    results = tmp_path / "results"
    argv = [*FAST, "--eval_episodes", "1", "--total_steps", "800", "--eval_every", "50", "--ray", "local",
            "--results_dir", str(results)]
    status = []
    launcher = threading.Thread(target=lambda: status.append(runner.main(argv)))
    launcher.start()
    while evaluations(results) < 3:  # checkpoints at steps 50 and 100 are written
        assert launcher.is_alive(), "the run ended before it was killed"
        time.sleep(0.05)
    run_dir = only_run(results)
    killed = int(open(os.path.join(run_dir, ".lock")).read())
    os.kill(killed, signal.SIGKILL)
    before_kill = read_csv(os.path.join(run_dir, "progress.csv"))
    launcher.join(timeout=600)
    assert status == [0]
    assert int(open(os.path.join(run_dir, ".lock")).read()) != killed  # another worker finished it
    rows = read_csv(os.path.join(run_dir, "progress.csv"))
    assert [int(row["step"]) for row in rows] == list(range(50, 801, 50))
    assert rows[:len(before_kill) - 1] == before_kill[:-1]  # kept, time_s and all: resumed, not started again


def test_a_results_dir_a_worker_cannot_write_is_one_line(ray_cluster, tiny_dataset, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        runner.main([*TINY, "--ray", "local", "--results_dir", str(tmp_path / "file" / "results")])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith("runner.py: error: --results_dir: a Ray worker on node ")
    assert "cannot write" in errors[0] and "storage every node sees" in errors[0]


def test_ray_missing_is_one_line_naming_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is not installed
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--bc_weight", "1", "--results_dir", str(tmp_path), "--ray", "local"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "sweep.py: error: --ray needs Ray: pip install -r requirements-ray.txt\n"
    assert os.listdir(tmp_path) == []
