"""--ray: groups of runs (sweep.py's plan) as tasks on a Ray cluster, retried from their checkpoints.

sweep.py and runner.py import this module only when --ray is given, and it imports Ray: Ray is an
optional dependency (requirements-ray.txt). Each group is one task of its --threads CPUs; a task
whose worker dies is run again by Ray, and runner.run_group continues the runs it had begun from
their checkpoints. Before any task, a probe file written from every node checks that the results
folder is one every node sees.
"""
import csv
import io
import os
from collections.abc import Callable

from tqdm import tqdm

from harness import flags
from harness.files import RunFolderError, read_text, write_text
from harness.runs import begun_runs

RAY_RETRIES = 3  # times a group whose Ray worker died is run again, each time from its checkpoints
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # Ray workers import the repo's modules from here


def connect_ray(address: str, prog: str):
    """Import Ray and join the cluster: 'local' starts one of this machine's cores, else ray.init(address).

    A driver already connected (the tests, a notebook) keeps its cluster. Returns the ray module.
    """
    try:
        import ray
    except ImportError:
        raise flags.fail(prog, "--ray needs Ray: pip install -r requirements-ray.txt") from None
    if ray.is_initialized():
        return ray
    if address == "local":
        ray.init(num_cpus=os.cpu_count())
        return ray
    try:
        ray.init(address=address)
    except ConnectionError:
        raise flags.fail(prog, f"--ray {address}: no Ray cluster found there; start one with `ray start --head`, "
                          f"or use --ray local") from None
    return ray


def worker_env() -> dict:
    """What a Ray worker needs of this process: the repo's modules, the datasets' folder, no progress bars."""
    env = {"PYTHONPATH": REPO, "TQDM_DISABLE": "1"}
    if "MINARI_DATASETS_PATH" in os.environ:
        env["MINARI_DATASETS_PATH"] = os.environ["MINARI_DATASETS_PATH"]
    return {"env_vars": env}


def write_probe(path: str) -> str | None:
    """In a Ray worker: write the file at path (and its folder); None, or why it could not."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as err:
        return err.strerror or str(err)
    try:
        write_text(path, "written by a Ray worker to check that every node sees this folder\n")
    except RunFolderError as err:
        return str(err)
    return None


def check_shared_folder(ray, folder: str, prog: str) -> None:
    """A worker on every node writes a probe file in folder, which this machine must then see; else one line."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    probe = ray.remote(num_cpus=0, max_retries=0, runtime_env=worker_env())(write_probe)
    nodes = [node for node in ray.nodes() if node["Alive"]]
    paths = [os.path.join(folder, f".ray-probe-{node['NodeID'][:16]}") for node in nodes]
    problems = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                        .remote(path) for node, path in zip(nodes, paths)])
    for node, path, problem in zip(nodes, paths, problems):
        where = f"--results_dir: a Ray worker on node {node['NodeManagerAddress']}"
        if problem:
            raise flags.fail(prog, f"{where} cannot write {folder} ({problem}); give a folder on storage every node sees")
        if not os.path.isfile(path):
            raise flags.fail(prog, f"{where} wrote {path} but this machine does not see it; give a folder on storage "
                              f"every node sees")
        os.remove(path)


def ray_group(train_group: Callable, runs: list[dict], older: frozenset[str]) -> tuple[int, list[str]]:
    """A Ray task: one group (train_group, runner.run_group, resumes what a dead worker began); its status and
    a line per run."""
    try:
        status = train_group(runs, older)
    except SystemExit as stop:  # runner's one-line errors: a failure to report, not a dead worker to retry
        status = stop.code if isinstance(stop.code, int) else 1
    lines = []
    for run_dir in begun_runs(runs, older).values():
        last = list(csv.DictReader(io.StringIO(read_text(os.path.join(run_dir, "progress.csv")), newline="")))[-1:]
        lines += [f"{run_dir}: step {last[0]['step']}, final return {float(last[0]['eval_return_mean']):.0f}"
                  if last else f"{run_dir}: no evaluation"]
    return status, lines


def run_on_ray(ray, groups: list[list[dict]], prog: str, train_group: Callable) -> int:
    """Each group as a task on the Ray cluster (connect_ray), of its --threads CPUs (1 if not given); returns
    the worst status. A progress bar counts the runs, with one line per finished run.
    """
    groups = [[{"threads": 1} | run | {"results_dir": os.path.abspath(run["results_dir"])} for run in group]
              for group in groups]
    folders = sorted({run["results_dir"] for group in groups for run in group})
    for folder in folders:
        check_shared_folder(ray, folder, prog)
    older = frozenset(os.path.join(folder, name) for folder in folders for name in os.listdir(folder))
    task = ray.remote(max_retries=RAY_RETRIES, runtime_env=worker_env())(ray_group)
    pending = {task.options(num_cpus=max(1, group[0]["threads"])).remote(train_group, group, older): group
               for group in groups}
    worst = 0
    with tqdm(total=sum(map(len, groups)), unit="run", desc="runs") as bar:
        while pending:
            (done,), _ = ray.wait(list(pending))
            group = pending.pop(done)
            try:
                status, lines = ray.get(done)
            except ray.exceptions.RayError as err:
                status, lines = 1, [f"{prog}: error: a group of {len(group)} runs failed on Ray "
                                    f"({type(err).__name__}); see its log above"]
            worst = max(worst, status)
            for line in lines:
                bar.write(line)
            bar.update(len(group))
    return worst
