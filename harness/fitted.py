"""Fitted models (the dynamics ensemble, the behaviour VAE): fitted once per dataset and settings, saved, reloaded.

A fitted model is data, not part of an agent. <model_dir>/<dataset>-<kind>-<key>.pt holds its
weights and a record of what it was fitted on: the dataset's id, size and fingerprint, its settings,
and the code version (a hash of the source of the classes and functions that decide its weights). The key hashes that record, so
other data, settings or code never look for this file; a file whose record differs from the one its
name promises, or that cannot be read, is refused in one line. The fit's per-epoch losses go to
<same name>.csv (plot.py draws it). A fit never replaces a file: if two processes fit the same model
at once, the first to finish keeps the name and the other uses its model.
"""
import contextlib
import dataclasses
import hashlib
import inspect
import io
import json
import os
import pickle
import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

import behaviour_vae
import dynamics
from behaviour_vae import BehaviourVAE
from dynamics import DynamicsEnsemble
from harness.config import RunConfig
from harness.files import csv_text, only_new, write_text
from utils import ReplayBuffer, reason

FIT_SEED = 0  # every run shares the one fit, whatever its own seed


class FittedModelError(Exception):
    """A saved model that cannot be used; the message is one line."""


def code_version(fit_code: tuple) -> str:
    """A hash of the source of what decides a fit's weights (a module's FIT_CODE): an edit there means a new fit."""
    digest = hashlib.sha256()
    for part in fit_code:
        digest.update(inspect.getsource(part).encode())
    return digest.hexdigest()[:16]


def record(kind: str, fit_code: tuple, buffer: ReplayBuffer, dataset: str, settings: dict) -> dict:
    """What a fitted model is fitted on, as its file records it (JSON values only)."""
    return json.loads(json.dumps({"kind": kind, "dataset": dataset, "transitions": len(buffer),
                                  "fingerprint": buffer.fingerprint, "settings": settings, "fit_seed": FIT_SEED,
                                  "code_version": code_version(fit_code)}, sort_keys=True))


def model_path(model_dir: str, wanted: dict) -> str:
    """<model_dir>/<dataset>-<kind>-<hash of the record>.pt"""
    key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(model_dir, f"{wanted['dataset'].replace('/', '-')}-{wanted['kind']}-{key}.pt")


def load(path: str, wanted: dict, build: Callable[[], nn.Module]) -> tuple[nn.Module, dict]:
    """The model saved at path, checked against the record wanted; (model, the fit's summary)."""
    hint = "delete it to fit the model again, or give --model_dir another folder"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # data only: no code runs from the file
        found, state, summary = saved["record"], saved["state"], saved["summary"]
    except (pickle.UnpicklingError, OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError) as err:
        raise FittedModelError(f"{path} cannot be read ({reason(err)}); {hint}") from None
    if found != wanted:
        differ = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k)) \
            if isinstance(found, dict) else ["record"]
        raise FittedModelError(f"{path} was fitted on other {', '.join(differ)} than this run's; {hint}")
    model = build()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        raise FittedModelError(f"{path} holds weights that do not fit its settings ({reason(err)}); {hint}") from None
    return model, summary


def run_fit(fit: Iterator[tuple[nn.Module, dict]], label: str, unit: str, total: int) -> tuple[nn.Module, list[dict]]:
    """Drive a fit under a progress bar; the fitted model and its CSV rows."""
    rows, model = [], None
    with tqdm(total=total, desc=f"fitting the {label}", unit=unit, leave=True) as bar:
        for model, row in fit:
            rows.append(row)
            bar.update(row.get("epoch", row.get("step", 0)) - bar.n)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k.startswith("holdout")})
    return model, rows


def save(path: str, wanted: dict, model: nn.Module, rows: list[dict], summary: dict) -> None:
    """Write the model (and its fit's CSV) at path, unless a file is there already."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    data = io.BytesIO()
    torch.save({"record": wanted, "state": model.state_dict(), "summary": summary}, data)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb", opener=only_new) as f:
        f.write(data.getvalue())
    try:
        os.link(tmp, path)  # unlike a rename, never replaces a file already there
    except FileExistsError:
        return  # another process saved the same fit first: its file stays
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
    write_text(path[:-len(".pt")] + ".csv", csv_text(list(rows[0]), rows))


def obtain(label: str, model_dir: str, wanted: dict, build: Callable[[], nn.Module],
           fit: Callable[[], Iterator[tuple[nn.Module, dict]]], unit: str, total: int,
           summarise: Callable[[list[dict]], dict]) -> tuple[nn.Module, str]:
    """The model of this record: loaded if saved, else fitted (progress bar, CSV) and saved; and its path.

    Says which in one line. Raises FittedModelError for a saved file that cannot be used.
    """
    path = model_path(model_dir, wanted)
    if os.path.exists(path):
        model, summary = load(path, wanted, build)
        print(f"{label}: loaded {path} ({describe(summary)}); not fitted again", file=sys.stderr)
        return model, path
    model, rows = run_fit(fit(), label, unit, total)
    save(path, wanted, model, rows, summarise(rows))
    model, summary = load(path, wanted, build)  # the file's model, whoever wrote it: every run uses the same
    print(f"{label}: fitted and saved {path} ({describe(summary)}); its losses in {path[:-3]}.csv", file=sys.stderr)
    return model, path


def describe(summary: dict) -> str:
    """A fit's summary as one phrase: 'epochs 23, holdout_mse 0.0123'."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())


def dynamics_model(run: RunConfig, buffer: ReplayBuffer, model_dir: str, expect: str | None = None
                   ) -> tuple[DynamicsEnsemble, str]:
    """The run's dynamics ensemble (dynamics.py), loaded or fitted; `expect`: the file a resumed run began with."""
    settings = dataclasses.asdict(run.dynamics)
    wanted = record("dynamics", dynamics.FIT_CODE, buffer, run.dataset, settings)
    check_expected(model_path(model_dir, wanted), expect)

    def summarise(rows: list[dict]) -> dict:
        return {"epochs": len(rows), "holdout_mse": min(r["best_holdout_mse"] for r in rows),
                "mean_predictor_mse": dynamics.mean_predictor_mse(buffer)}
    return obtain("dynamics model", model_dir, wanted,
                  lambda: DynamicsEnsemble(buffer.obs_dim, buffer.act_dim, run.dynamics, torch.Generator()),
                  lambda: dynamics.fit(buffer, run.dynamics, FIT_SEED), "epoch", run.dynamics.model_max_epochs,
                  summarise)


def behaviour_model(run: RunConfig, buffer: ReplayBuffer, low: torch.Tensor, high: torch.Tensor, model_dir: str,
                    expect: str | None = None) -> tuple[BehaviourVAE, str]:
    """The run's behaviour VAE (behaviour_vae.py), loaded or fitted; `expect`: the file a resumed run began with."""
    wanted = record("behaviour", behaviour_vae.FIT_CODE, buffer, run.dataset, dataclasses.asdict(run.vae))
    check_expected(model_path(model_dir, wanted), expect)

    def summarise(rows: list[dict]) -> dict:
        return {"steps": rows[-1]["step"], "holdout_loss": rows[-1]["holdout_loss"]}
    return obtain("behaviour VAE", model_dir, wanted,
                  lambda: BehaviourVAE(buffer.obs_dim, buffer.act_dim, low, high, run.vae, torch.Generator()),
                  lambda: behaviour_vae.fit(buffer, low, high, run.vae, FIT_SEED), "step", run.vae.vae_steps,
                  summarise)


def check_expected(path: str, expect: str | None) -> None:
    """A resumed run goes on with the model it began with: this code and settings must name the same file."""
    if expect is not None and os.path.basename(path) != os.path.basename(expect):
        raise FittedModelError(f"the run began with the fitted model {os.path.basename(expect)}, and this code "
                               f"would use {os.path.basename(path)} (the model's code or settings changed); "
                               f"resume it with the code it began with, or start a new run")


def run_models(run: RunConfig, buffer: ReplayBuffer, env, model_dir: str, device: torch.device, expect: dict
               ) -> tuple[DynamicsEnsemble | None, BehaviourVAE | None, dict]:
    """A run's fitted models, loaded or fitted, frozen on the device: the dynamics ensemble with --rollout_length,
    the behaviour VAE with --support_weight (None where off); and their files, for config.json. `expect`: a resumed
    run's config.json, naming the files it began with."""
    dynamics = behaviour = None
    paths = {}
    if run.mopo.rollout_length:
        dynamics, paths["dynamics_model"] = dynamics_model(run, buffer, model_dir, expect.get("dynamics_model"))
    if run.td3.support_weight > 0:
        low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (env.action_space.low, env.action_space.high))
        behaviour, paths["behaviour_model"] = behaviour_model(run, buffer, low, high, model_dir,
                                                              expect.get("behaviour_model"))
    for model in (dynamics, behaviour):
        if model is not None:  # frozen: neither trains again, and the actor's support term sends the VAE no gradient
            model.to(device).eval().requires_grad_(False)
    return dynamics, behaviour, paths
