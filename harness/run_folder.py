"""A run's folder: config.json, the CSV logs, the checkpoints, and the lock that keeps it to one process.

<results_dir>/<label>-seed<k>-<time>[-n]/ holds config.json (every flag), progress.csv and train.csv
(a row appended per evaluation / per --log_every updates), checkpoint.pt and actor.pt (rewritten
whole after each evaluation) and .lock (the pid of the process that holds the folder). Files are
replaced atomically, so whatever fails, the last checkpoint stays loadable; a failure is one
RunFolderError whose message names the file and says what is intact.
"""
import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import pickle
import shutil
import time
from typing import IO

import torch

from harness import config
from harness.config import RunConfig
from utils import reason

CONFIG, CHECKPOINT, ACTOR, LOCK = "config.json", "checkpoint.pt", "actor.pt", ".lock"
LOGS = ("progress.csv", "train.csv")
# A run's progress as checkpoint.pt holds it, beside "agent": its member's part of networks.Members.state_dicts(),
# which holds its random generator's state too (training draws from nothing else).
PROGRESS = {"step": int, "elapsed": float, "last_return": float, "best_return": float, "best_step": int}


RESUME_MAY_CHANGE = ("resume", "total_steps", "threads", "device", "video_every")  # flags allowed beside --resume


class RunFolderError(Exception):
    """A run folder that cannot be read, written or held; the message is one line."""


def write_atomically(path: str, data: bytes, intact: str = "") -> None:
    """Write data to path through path.tmp and a rename: path is whole, old or new, whatever happens.

    A failure is a RunFolderError saying what could not be written, then `intact` (what still is).
    """
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise RunFolderError(f"cannot write {path} ({err.strerror or err}){intact}") from None


def save_tensors(obj, path: str) -> None:
    """torch.save, atomically (serialised in memory first, so a full disk is an OSError, not torch's)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getvalue())


def write_config(run_dir: str, meta: dict, intact: str = "") -> None:
    """config.json: {"flags": ..., "config": label, ...}, atomically."""
    write_atomically(os.path.join(run_dir, CONFIG), json.dumps(meta, indent=2).encode(), intact)


def append_row(path: str, columns: list[str], row: dict) -> None:
    """Append a row to a CSV file, writing the header first if the file is new.

    A metric not among the columns raises ValueError (csv.DictWriter): a new term must be named.
    """
    new_file = not os.path.exists(path) or os.path.getsize(path) == 0
    try:
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
    except OSError as err:
        raise RunFolderError(f"cannot write {path} ({err.strerror or err})") from None


def hold(run_dir: str) -> IO:
    """Lock run_dir for this process: fcntl.flock on its .lock, which holds our pid.

    Returns the open lock file: closing it, or the end of the process however it ends, lets go.
    """
    path = os.path.join(run_dir, LOCK)
    try:
        lock = open(path, "a+")
    except OSError as err:
        raise RunFolderError(f"cannot write {path} ({err.strerror or err})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise RunFolderError(f"{run_dir} is in use by process {holder} (the pid in its {LOCK}); let that run "
                             f"end, or stop it, then resume") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def create(results_dir: str, run_config: RunConfig, meta: dict) -> tuple[str, IO]:
    """A new run folder, <results_dir>/<label>-seed<k>-<time>[-n]/, held, with its config.json.

    Returns its path and its lock. A label too long for a folder name is cut, with a hash of the
    whole label appended (the full label is in config.json). On a failure nothing is left of it.
    """
    label = config.config_name(run_config)
    if len(label) > 120:
        label = f"{label[:110]}~{hashlib.sha1(label.encode()).hexdigest()[:8]}"
    stem = os.path.join(results_dir, f"{label}-seed{run_config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir, n = stem, 1
    while True:
        try:
            os.makedirs(run_dir)
            break
        except FileExistsError:
            run_dir, n = f"{stem}-{n}", n + 1
        except OSError as err:
            raise RunFolderError(f"cannot create {run_dir} ({err.strerror or err}); nothing was trained") from None
    try:
        write_config(run_dir, meta)
        return run_dir, hold(run_dir)  # a name no other process knows yet: held from its first file on
    except RunFolderError as err:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise RunFolderError(f"{err}; nothing was trained") from None


def read_config(run_dir: str) -> dict:
    """The run's config.json, with a "flags" object, or a RunFolderError saying what is wrong."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        raise RunFolderError(f"--resume '{run_dir}' has no {CONFIG}; give a run folder written by runner.py")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
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
    run_config, _, _ = config.parse(config.command_line(meta["flags"]), where=f"{os.path.join(run_dir, CONFIG)}: ")
    total_steps = given.get("total_steps", run_config.total_steps)
    if total_steps < run_config.total_steps:
        raise RunFolderError(f"--total_steps {total_steps} beside --resume must be larger than the run's "
                             f"{run_config.total_steps}: it can only lengthen the run")
    return dataclasses.replace(run_config, total_steps=total_steps)


def save_checkpoint(run_dir: str, progress: dict, member_state: dict) -> None:
    """actor.pt (the policy alone), then checkpoint.pt: the member's agent state and the progress."""
    save_tensors(member_state["agent"]["actor"], os.path.join(run_dir, ACTOR))
    save_tensors({"agent": member_state} | progress, os.path.join(run_dir, CHECKPOINT))


def damaged(path: str, why: str) -> RunFolderError:
    """The error for a checkpoint that cannot be restored."""
    return RunFolderError(f"--resume: {path} cannot be restored ({why}); it is damaged or was written by "
                          f"another version of this code. Its progress.csv and train.csv are untouched; "
                          f"start a new run.")


def checkpoint_problem(state) -> str | None:
    """What is missing or of the wrong type in a loaded checkpoint, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    expected = PROGRESS | {"agent": dict}
    for key, kind in expected.items():
        kind = (int, float) if kind is float else kind
        if key not in state:
            return f"it has no '{key}'"
        if not isinstance(state[key], kind):
            return f"its '{key}' is a {type(state[key]).__name__}"
    return None


def read_checkpoint(run_dir: str) -> dict:
    """checkpoint.pt, loaded with weights_only=True and checked, or a RunFolderError."""
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
    problem = checkpoint_problem(state)
    if problem:
        raise damaged(path, problem)
    return state


def restore(run_dirs: list[str], states: list[dict], agent) -> None:
    """Load the agent, member m from states[m] (read_checkpoint() of run_dirs[m])."""
    try:
        agent.members.load_state_dicts(agent, [state["agent"] for state in states])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        where = os.path.join(run_dirs[0], CHECKPOINT) if len(run_dirs) == 1 else \
            f"the {CHECKPOINT} of {', '.join(run_dirs)}"
        raise damaged(where, reason(err)) from None


def truncate_logs(run_dir: str, step: int) -> None:
    """Drop the CSV rows logged after `step` (the checkpoint's), so a resumed run appends where it left off."""
    for name in LOGS:
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            continue
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            header, *body = rows
            if body and len(body[-1]) < len(header):
                body.pop()  # a row cut short by a failed write (a full disk): its step was not checkpointed
            kept = [header] + [row for row in body if int(row[header.index("step")]) <= step]
        except (OSError, ValueError, IndexError, csv.Error) as err:  # UnicodeDecodeError is a ValueError
            raise RunFolderError(f"--resume: {path} cannot be read ({reason(err)}); {CHECKPOINT} is intact: "
                                 f"repair or delete {name}, then resume again") from None
        text = io.StringIO()
        csv.writer(text).writerows(kept)
        write_atomically(path, text.getvalue().encode(), f"; {CHECKPOINT} and {name} are intact")


def record_length(run_dir: str, meta: dict, run_config: RunConfig) -> None:
    """Write the new --total_steps (and so the new label) into config.json if --resume lengthened the run."""
    if run_config.total_steps != meta["flags"].get("total_steps"):
        write_config(run_dir, meta | {"flags": meta["flags"] | {"total_steps": run_config.total_steps},
                                      "config": config.config_name(run_config)}, f"; {CHECKPOINT} is intact")
