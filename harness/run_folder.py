"""A run's folder: config.json, the CSV logs, the checkpoints, and the lock that keeps it to one process.

<results_dir>/<label>-seed<k>-<time>[-n]/ holds config.json (every flag), progress.csv and train.csv
(a row appended per evaluation / per --log_every updates), checkpoint.pt and actor.pt (rewritten
whole after each evaluation) and .lock (the pid of the process that holds the folder). Files are
replaced atomically and through no link (files.py), so whatever fails, the last checkpoint stays
loadable; a failure is one RunFolderError whose message names the file and says what is intact.
"""
import csv
import dataclasses
import hashlib
import inspect
import io
import json
import math
import os
import pickle
import platform
import shutil
import sys
import time
from typing import IO

import torch

import networks
from harness import config
from harness.config import RunConfig
from harness.files import (LINK_HINT, RunFolderError, append_row, check_header, hold, links_in,  # noqa: F401
                           make_folder, read_text, save_tensors, write_atomically)
from utils import reason

CONFIG, CHECKPOINT, ACTOR = "config.json", "checkpoint.pt", "actor.pt"
LOGS = ("progress.csv", "train.csv")
# A run's progress as checkpoint.pt holds it, beside "agent": its member's part of networks.Members.state_dicts(),
# which holds its random generator's state too (training draws from nothing else). "metric_sums" and
# "metric_counts" hold the train.csv metrics summed since the last row (absent in older checkpoints);
# "written_by" the --agent and a digest of the code that wrote it (written_by()).
PROGRESS = {"step": int, "elapsed": float, "last_return": float, "best_return": float, "best_step": int}
RESUME_MAY_CHANGE = ("resume", "total_steps", "threads", "device", "video_every", "model_dir")  # flags allowed beside --resume


def write_config(run_dir: str, meta: dict, intact: str = "") -> None:
    """config.json: {"flags": ..., "config": label, ...}, atomically."""
    write_atomically(os.path.join(run_dir, CONFIG), json.dumps(meta, indent=2).encode(), intact)


def create(results_dir: str, run_config: RunConfig, meta: dict) -> tuple[str, IO]:
    """A new run folder, <results_dir>/<label>-seed<k>-<time>[-n]/, held, with its config.json.

    Returns its path and its lock. A label too long for a folder name is cut, with a hash of the
    whole label appended (the full label is in config.json). On a failure nothing is left of it.
    """
    label = config.config_name(run_config)
    if len(label) > 120:
        label = f"{label[:110]}~{hashlib.sha1(label.encode()).hexdigest()[:8]}"
    stem = os.path.join(results_dir, f"{label}-seed{run_config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        run_dir = make_folder(stem)
    except OSError as err:
        raise RunFolderError(f"cannot create {err.filename or stem} ({err.strerror or err}); nothing was "
                             f"trained") from None
    try:
        write_config(run_dir, meta)
        return run_dir, hold(run_dir)  # a name no other process knows yet: held from its first file on
    except RunFolderError as err:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise RunFolderError(f"{err}; nothing was trained") from None


def check_no_links(run_dir: str) -> None:
    """--resume writes into a run folder only if it holds no symbolic link (runner.py makes none)."""
    links = links_in(run_dir)
    if links:
        raise RunFolderError(f"--resume: {links[0]} is a symbolic link; {LINK_HINT}, then resume")


def read_config(run_dir: str) -> dict:
    """The run's config.json, with a "flags" object, or a RunFolderError saying what is wrong."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        raise RunFolderError(f"--resume '{run_dir}' has no {CONFIG}; give a run folder written by runner.py")
    try:
        meta = json.loads(read_text(path, follow=False))
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise RunFolderError(f"--resume: {path} cannot be read ({reason(err)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("flags"), dict):
        raise RunFolderError(f"--resume: {path} has no \"flags\" object; give a run folder written by runner.py")
    return meta


def resumed_config(run_dir: str, meta: dict, given: dict) -> RunConfig:
    """The run's flags from its config.json, checked as the command line's are; a larger --total_steps wins.

    Other flags of the run given beside --resume are refused: the run continues as it began.
    --threads, --device and --video_every may be given: they change nothing the run writes but its videos.
    """
    others = [f"--{name}" for name in given if name not in RESUME_MAY_CHANGE]
    if others:
        raise RunFolderError(f"--resume continues a run with the flags of its {CONFIG}; only a larger "
                             f"--total_steps, --threads, --device and --video_every may be given beside it, "
                             f"not {' '.join(others)}")
    run_config, _ = config.from_flags(meta["flags"], where=f"{os.path.join(run_dir, CONFIG)}: ")
    total_steps = given.get("total_steps", run_config.total_steps)
    if total_steps < run_config.total_steps:
        raise RunFolderError(f"--total_steps {total_steps} beside --resume must be larger than the run's "
                             f"{run_config.total_steps}: it can only lengthen the run")
    return dataclasses.replace(run_config, total_steps=total_steps)


def check_dataset(run_dir: str, meta: dict, transitions: int, fingerprint: str) -> None:
    """The dataset under the run's id must be the one it began on: config.json's size and fingerprint."""
    path = os.path.join(run_dir, CONFIG)
    size, digest = meta.get("dataset_transitions"), meta.get("dataset_fingerprint")
    if size is not None and not (type(size) is int and size >= 0) or digest is not None and type(digest) is not str:
        raise RunFolderError(f"--resume: {path}: dataset_transitions must be a count and dataset_fingerprint a "
                             f"text, not {size!r} and {digest!r}; restore them or start a new run")
    changed = (f"holds {transitions} transitions, {CONFIG} records {size}" if size is not None and size != transitions
               else "is not the one it began on (its fingerprint differs)" if digest and digest != fingerprint
               else None)
    if changed:
        raise RunFolderError(f"--resume: the dataset '{meta['flags'].get('dataset')}' of {run_dir} changed since "
                             f"the run began: it {changed}; put the original dataset back, or start a new run")


# The flags that keep part of the dataset (runs.training_buffer, in this order); config.json records what each kept
# as <flag>_episodes and <flag>_transitions.
KEEPING_FLAGS = ("episodes_percent", "bc_top_percent")


def check_kept(run_dir: str, meta: dict, kept: dict) -> None:
    """What the run trains on now (runs.training_buffer's figures: the dataset's, and what --episodes_percent and
    --bc_top_percent kept) must be what its config.json records: an edited flag there would train on other data."""
    for name in sorted(set(kept) | {n for n in meta if n.startswith(tuple(f"{f}_" for f in KEEPING_FLAGS))}):
        if name in meta and meta[name] != kept.get(name):
            raise RunFolderError(f"--resume: {os.path.join(run_dir, CONFIG)} records {name} {meta[name]!r}, its "
                                 f"flags now give {kept.get(name)!r} (its flags or dataset were edited); restore "
                                 f"them, or start a new run")


def save_checkpoint(run_dir: str, progress: dict, member_state: dict) -> None:
    """actor.pt (the policy alone), then checkpoint.pt: the member's agent state and the progress."""
    save_tensors(member_state["agent"]["actor"], os.path.join(run_dir, ACTOR))
    save_tensors({"agent": member_state} | progress, os.path.join(run_dir, CHECKPOINT))


def damaged(path: str, why: str) -> RunFolderError:
    """The error for a checkpoint that cannot be restored."""
    return RunFolderError(f"--resume: {path} cannot be restored ({why}); it is damaged or was written by "
                          f"another version of this code. Its progress.csv and train.csv are untouched; "
                          f"start a new run.")


def value_problem(state: dict) -> str | None:
    """What is out of range among a checkpoint's progress values (of the right types), or None."""
    step, best_step = state["step"], state["best_step"]
    problems = ((step < 0, f"its step is {step}"),
                (not (math.isfinite(state["elapsed"]) and state["elapsed"] >= 0), f"its elapsed is {state['elapsed']}"),
                (not 0 <= best_step <= step, f"its best_step {best_step} is not in 0..{step}"),
                (math.isnan(state["best_return"]), "its best_return is NaN"))
    return next((what for bad, what in problems if bad), None)


def metrics_problem(state: dict, names: tuple[str, ...]) -> str | None:
    """What is wrong with a checkpoint's metric sums (names must be train.csv metrics), or None if absent."""
    sums, counts = state.get("metric_sums", {}), state.get("metric_counts", {})
    if not (isinstance(sums, dict) and isinstance(counts, dict)) or sums.keys() != counts.keys():
        return "its metric_sums and metric_counts are not dicts of the same metrics"
    for name in sums:
        if names and name not in names:
            return f"its metric_sums hold '{name}', which train.csv has no column for"
        if not (isinstance(sums[name], torch.Tensor) and sums[name].dim() == 0 and sums[name].is_floating_point()):
            return f"its metric_sums['{name}'] is not one number"
        if not (type(counts[name]) is int and counts[name] >= 1):
            return f"its metric_counts['{name}'] is {counts[name]!r}, not a count"
    return None


def writer_problem(state: dict, agent: str | None) -> str | None:
    """Whether the checkpoint was written by this agent (`agent`: --agent, None: not checked) at its own step:
    its update count is its step (one update a step), else the actor's update phase would shift."""
    written_by, updates = state.get("written_by"), state["agent"].get("updates")
    if not (isinstance(written_by, dict) and isinstance(written_by.get("agent"), str)):
        return "it does not record which agent wrote it"
    if agent is not None and written_by["agent"] != agent:
        return f"it was written by --agent {written_by['agent']}, this run is --agent {agent}"
    if type(updates) is int and updates != state["step"]:  # one of another type fails to load (restore)
        return f"its update count {updates} is not its step {state['step']}"
    return None


def checkpoint_problem(state, names: tuple[str, ...] = (), agent: str | None = None) -> str | None:
    """What is missing, of the wrong type or out of range in a loaded checkpoint, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    for key, kind in (PROGRESS | {"agent": dict}).items():
        if key not in state:
            return f"it has no '{key}'"
        kinds = (int, float) if kind is float else (kind,)
        if not isinstance(state[key], kinds) or isinstance(state[key], bool):
            return f"its '{key}' is a {type(state[key]).__name__}"
    return value_problem(state) or metrics_problem(state, names) or writer_problem(state, agent)


def written_by(agent_name: str, agent) -> dict:
    """What a checkpoint records of the code that wrote it: the --agent, and a digest of the agent's and the
    networks' source (a resumed run whose code changed since is told so)."""
    sources = [inspect.getsource(sys.modules[type(agent).__module__]), inspect.getsource(networks)]
    return {"agent": agent_name, "code": hashlib.sha1("".join(sources).encode()).hexdigest()[:12]}


def check_code(run_dir: str, state: dict, now: dict) -> None:
    """A warning line if the checkpoint was written by other code than this (the agent's or networks.py's)."""
    if state["written_by"].get("code") != now["code"]:
        print(f"runner.py: warning: {os.path.join(run_dir, CHECKPOINT)} was written by other code (the agent's module "
              f"or networks.py changed since); the run goes on with this code", file=sys.stderr)


def read_checkpoint(run_dir: str, names: tuple[str, ...] = (), agent: str | None = None) -> dict:
    """checkpoint.pt, loaded with weights_only=True and checked (its metric sums against `names`, its writer
    against `agent`), or a RunFolderError."""
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise RunFolderError(f"--resume: {run_dir} has a {CONFIG} but no {CHECKPOINT}: the run was stopped "
                             f"before its first evaluation wrote one; start it again without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch says why in one of many lines
        lines = str(err).partition("WeightsUnpickler error: ")[2].splitlines()
        refusal = next((line.split(". ")[0].strip() for line in lines if line.strip()), "")
        why = f"torch.load(weights_only=True) refuses it: {refusal}" if refusal else reason(err)
        raise damaged(path, why) from None
    except (OSError, EOFError, RuntimeError, ValueError) as err:
        raise damaged(path, reason(err)) from None
    problem = checkpoint_problem(state, names, agent)
    if problem:
        raise damaged(path, problem)
    return state


def restore(run_dirs: list[str], states: list[dict], agent, rollouts=None) -> None:
    """Load the agent, member m from states[m] (read_checkpoint() of run_dirs[m]), and its model buffer if any."""
    try:
        agent.members.load_state_dicts(agent, [state["agent"] for state in states])
        for m, state in enumerate(states if rollouts is not None else []):
            rollouts.load(m, state["model_buffer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        where = os.path.join(run_dirs[0], CHECKPOINT) if len(run_dirs) == 1 else \
            f"the {CHECKPOINT} of {', '.join(run_dirs)}"
        raise damaged(where, reason(err)) from None


def kept_rows(path: str, step: int, columns: list[str] | None) -> list[list[str]] | None:
    """A log's header and its rows up to `step` (a row cut short by a failed write dropped); None if empty."""
    rows = list(csv.reader(io.StringIO(read_text(path, follow=False), newline="")))
    if not rows:
        return None
    header, *body = rows
    if columns is not None:
        check_header(path, header, columns)
    if body and len(body[-1]) < len(header):
        body.pop()  # a row cut short by a failed write (a full disk): its step was not checkpointed
    return [header] + [row for row in body if int(row[header.index("step")]) <= step]


def truncate_logs(run_dir: str, step: int, columns: dict[str, list[str]]) -> None:
    """Drop the CSV rows logged after `step` (the checkpoint's), so a resumed run appends where it left off.

    columns: each log's columns as this code writes them (logs.progress_columns, logs.train_columns); a log
    with another header is refused.
    """
    for name in LOGS:
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            continue
        try:
            kept = kept_rows(path, step, columns.get(name))
        except (OSError, ValueError, IndexError, csv.Error) as err:  # UnicodeDecodeError is a ValueError
            raise RunFolderError(f"--resume: {path} cannot be read ({reason(err)}); {CHECKPOINT} is intact: "
                                 f"repair or delete {name}, then resume again") from None
        if kept is None:
            continue
        text = io.StringIO()
        csv.writer(text).writerows(kept)
        write_atomically(path, text.getvalue().encode(), f"; {CHECKPOINT} and {name} are intact")


def this_machine() -> dict:
    """The CPU and torch build a run trains on: on another kind of CPU the same seed takes another path."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "torch": torch.__version__}


def record_resume(run_dir: str, meta: dict, run_config: RunConfig, step: int) -> None:
    """config.json after --resume: the new --total_steps if it lengthened the run (the label leaves it out),
    and this machine in "machines" if the run was on another CPU or torch (or recorded none) until `step`."""
    now, machines = this_machine(), meta.get("machines", [])
    was = {k: v for k, v in machines[-1].items() if k != "from_step"} if machines else None
    if was is not None and was != now:
        print(f"runner.py: note: {run_dir} ran on {was['cpu']} (torch {was['torch']}) until step {step} and "
              f"resumes on {now['cpu']} (torch {now['torch']}): from here a seed takes another path than it "
              f"would have there; config.json records both", file=sys.stderr)
    new = {}
    if run_config.total_steps != meta["flags"].get("total_steps"):
        new |= {"flags": meta["flags"] | {"total_steps": run_config.total_steps},
                "config": config.config_name(run_config)}
    if was != now:
        new["machines"] = [*machines, now | {"from_step": step}]
    if new:
        write_config(run_dir, meta | new, f"; {CHECKPOINT} is intact")
