"""What the --resume tests share: a run folder's files, and the one line --resume prints when it refuses."""
from pathlib import Path

import pytest

import runner


def files_of(run_dir: str) -> dict[str, bytes]:
    """Every file of a run folder but its lock, by name."""
    return {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file() and p.name != ".lock"}


def resume_error(capsys, *argv: str) -> str:
    """The one line --resume prints when it refuses (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["--resume", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("runner.py: error: ") and "Traceback" not in err, err
    return err

