"""Fitted models through runner.py: fitted once, reused and said so, refused when they do not match; the new
methods' flags; resume exact with model rollouts on."""
import os
import shutil

import pytest
import torch

import plot
import runner
from harness import fitted
from conftest import DATASET_ID
from helpers import FAST, read_csv
from resume_helpers import resume_error

# tiny models: a fit takes a second or two
MOPO = ["--rollout_length", "3", "--rollout_every", "7", "--rollout_starts", "40", "--real_ratio", "0.25",
        "--model_ensemble", "3", "--model_elites", "2", "--model_hidden", "16", "16", "--model_epoch_steps", "20",
        "--model_max_epochs", "3"]
SPOT = ["--support_weight", "0.2", "--vae_hidden", "16", "16", "--vae_steps", "200"]


def train(tmp_path, *flags: str, steps: int = 20, results: str = "results") -> int:
    """runner.main on the tiny dataset, models in tmp_path/models."""
    return runner.main([*FAST, "--total_steps", str(steps), "--eval_every", "10", "--log_every", "5",
                        "--results_dir", str(tmp_path / results), "--model_dir", str(tmp_path / "models"), *flags])


def model_files(tmp_path, kind: str) -> list[str]:
    return sorted(f for f in os.listdir(tmp_path / "models") if f.endswith(".pt") and f"-{kind}-" in f)


def error_line(capsys, *argv: str) -> str:
    """The one line runner.py prints when it refuses these flags (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runner.main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: " in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags, kind", [(MOPO, "dynamics"), (SPOT, "behaviour")])
def test_a_model_is_fitted_once_then_every_later_run_and_seed_loads_it_and_says_so(tiny_dataset, tmp_path, capsys,
                                                                                  flags, kind):
    assert train(tmp_path, *flags) == 0
    err = capsys.readouterr().err
    assert "fitted and saved" in err and "loaded" not in err
    (name,) = model_files(tmp_path, kind)
    saved = (tmp_path / "models" / name).read_bytes()
    assert len(read_csv(str(tmp_path / "models" / name.replace(".pt", ".csv")))) >= 1  # the fit's losses
    assert train(tmp_path, *flags, "--seeds", "1", "2") == 0
    err = capsys.readouterr().err
    assert err.count(f"loaded {tmp_path / 'models' / name}") == 1 and "fitted and saved" not in err
    assert model_files(tmp_path, kind) == [name] and (tmp_path / "models" / name).read_bytes() == saved
    assert plot.main([str(tmp_path / "models")]) == 0  # the fit's losses as a figure
    assert (tmp_path / "models" / name.replace(".pt", ".png")).stat().st_size > 10_000


def test_other_settings_fit_a_model_of_their_own_beside_the_first(tiny_dataset, tmp_path, capsys):
    assert train(tmp_path, *MOPO) == 0
    assert train(tmp_path, *MOPO, "--model_hidden", "8", "8") == 0
    assert len(model_files(tmp_path, "dynamics")) == 2


def test_a_saved_model_from_other_data_settings_or_code_or_damaged_is_refused_in_one_line(tiny_dataset, tmp_path,
                                                                                          capsys, monkeypatch):
    assert train(tmp_path, *MOPO) == 0
    (name,) = model_files(tmp_path, "dynamics")
    path = tmp_path / "models" / name
    monkeypatch.setattr(fitted, "code_version", lambda fit_code: "another-version")  # other code: another name,
    assert train(tmp_path, *MOPO) == 0  # so a new fit, the first file untouched
    (other,) = set(model_files(tmp_path, "dynamics")) - {name}
    shutil.copy(path, tmp_path / "models" / other)  # a file whose record is not what its name promises
    before = sorted(os.listdir(tmp_path / "results"))
    err = error_line(capsys, *FAST, "--total_steps", "20", "--results_dir", str(tmp_path / "results"),
                     "--model_dir", str(tmp_path / "models"), *MOPO)
    assert "was fitted on other code_version" in err and other in err
    (tmp_path / "models" / other).write_bytes(path.read_bytes()[:200])  # cut short
    err = error_line(capsys, *FAST, "--total_steps", "20", "--results_dir", str(tmp_path / "results"),
                     "--model_dir", str(tmp_path / "models"), *MOPO)
    assert "cannot be read" in err and "delete it" in err
    assert sorted(os.listdir(tmp_path / "results")) == before  # nothing written


def test_a_model_of_other_data_under_this_datas_name_is_refused(tiny_dataset, tmp_path, capsys):
    assert train(tmp_path, *SPOT) == 0
    (name,) = model_files(tmp_path, "behaviour")
    saved = torch.load(tmp_path / "models" / name, weights_only=True)
    saved["record"]["fingerprint"] = "0" * 16
    torch.save(saved, tmp_path / "models" / name)
    err = error_line(capsys, *FAST, "--total_steps", "20", "--results_dir", str(tmp_path / "results"),
                     "--model_dir", str(tmp_path / "models"), *SPOT)
    assert "was fitted on other fingerprint" in err


def test_resume_with_model_rollouts_writes_the_rows_of_the_uninterrupted_run(tiny_dataset, tmp_path):
    assert train(tmp_path, *MOPO, "--seeds", "0", "1", steps=30, results="whole") == 0
    assert train(tmp_path, *MOPO, "--seeds", "0", "1", steps=10, results="cut") == 0  # rollouts at 0 and 7
    cut = sorted(str(p) for p in (tmp_path / "cut").iterdir())
    assert runner.main(["--resume", *cut, "--total_steps", "30", "--model_dir", str(tmp_path / "models")]) == 0
    for mine, whole in zip(cut, sorted((tmp_path / "whole").iterdir())):
        for log in ("train.csv", "progress.csv"):
            got, expected = read_csv(os.path.join(mine, log)), read_csv(str(whole / log))
            assert len(got) == len(expected) > 1
            for row, other in zip(got, expected):
                row.pop("time_s", None), other.pop("time_s", None)
                assert row == other, log


def test_resume_refuses_when_the_model_it_began_with_would_change(tiny_dataset, tmp_path, capsys, monkeypatch):
    assert train(tmp_path, *MOPO, steps=10) == 0
    (run_dir,) = (tmp_path / "results").iterdir()
    monkeypatch.setattr(fitted, "code_version", lambda fit_code: "another-version")
    err = resume_error(capsys, str(run_dir), "--total_steps", "20", "--model_dir", str(tmp_path / "models"))
    assert "began with the fitted model" in err


@pytest.mark.parametrize("argv, message", [
    (["--rollout_length", "-1"], "--rollout_length: must be an integer >= 0"),
    (["--rollout_length", "5", "--reward_penalty", "-1"], "--reward_penalty: must be a finite number >= 0"),
    (["--rollout_length", "5", "--real_ratio", "1"], "--real_ratio: must be a finite number > 0 and < 1"),
    (["--rollout_length", "5", "--real_ratio", "0.001", "--bc_weight", "10"], "--real_ratio: 0.001 of --batch_size"),
    (["--rollout_length", "5", "--model_elites", "9"], "--model_elites: 9 is more than --model_ensemble 7"),
    (["--rollout_length", "5", "--penalty_kind", "epistemic"], "--penalty_kind: invalid choice"),
    (["--support_weight", "-0.1"], "--support_weight: must be a finite number >= 0"),
    (["--support_weight", "0.1", "--bc_weight", "10"], "--support_weight: SPOT's support term takes the place"),
    (["--reward_penalty", "2"], "--reward_penalty: has no effect without --rollout_length > 0"),
    (["--vae_steps", "10"], "--vae_steps: has no effect without --support_weight > 0"),
    (["--agent", "bc", "--rollout_length", "5"], "--rollout_length: has no effect with --agent bc"),
    (["--agent", "iql", "--support_weight", "0.1"], "--support_weight: has no effect with --agent iql"),
])
def test_the_new_flags_refuse_what_would_not_work_in_one_line_writing_nothing(tmp_path, capsys, argv, message):
    err = error_line(capsys, "--results_dir", str(tmp_path / "r"), "--model_dir", str(tmp_path / "m"), *argv)
    assert message in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()


def test_model_rollouts_on_an_env_without_a_termination_rule_are_refused(minari_root, tmp_path, capsys):
    import gymnasium as gym
    import minari
    from conftest import rollout
    env = gym.make("InvertedPendulum-v5")
    minari.create_dataset_from_buffers("test/pendulum/tiny-v0", [rollout(env, k, k, 30) for k in range(4)], env=env,
                                       algorithm_name="random", author="tests", author_email="tests@localhost",
                                       code_permalink="tests/test_fitted.py", description="tiny")
    err = error_line(capsys, "--dataset", "test/pendulum/tiny-v0", "--results_dir", str(tmp_path / "r"),
                     "--model_dir", str(tmp_path / "m"), "--rollout_length", "5", "--batch_size", "8")
    assert "--rollout_length: model rollouts need the env's termination rule" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()


def test_a_fit_never_replaces_a_saved_file(tiny_dataset, tmp_path, capsys):
    assert train(tmp_path, *SPOT) == 0
    (name,) = model_files(tmp_path, "behaviour")
    path = tmp_path / "models" / name
    saved = path.read_bytes()
    record = torch.load(path, weights_only=True)["record"]
    fitted.save(str(path), record, torch.nn.Linear(2, 2), [{"step": 1}], {})  # another process's fit, finished later
    assert path.read_bytes() == saved
    assert not [f for f in os.listdir(tmp_path / "models") if f.endswith(".tmp")]


def test_a_run_gets_its_fitted_models_frozen(tiny_dataset, tmp_path):
    from harness import config, runs
    from harness.config import LaunchConfig
    cfg = config.from_flags({"dataset": DATASET_ID, "batch_size": 32, "hidden": [32, 32], "support_weight": 0.2,
                             "vae_hidden": [16, 16], "vae_steps": 200, "rollout_length": 3, "rollout_starts": 40,
                             "model_hidden": [16, 16], "model_epoch_steps": 20, "model_max_epochs": 2})[0]
    group = runs.build([cfg], LaunchConfig(model_dir=str(tmp_path / "models"), device="cpu"))
    for model in (group.agent.behaviour, group.rollouts.model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    group.rollouts.rollout(group.agent.actor)
    for _ in range(4):
        group.agent.update(*group.rollouts.sample(group.agent.members.generators))
    assert all(p.grad is None for p in group.agent.behaviour.parameters())
