"""Writing a run folder's files: atomically, through no link, under a lock held by one process.

No file here is written through a symbolic link: new files are created exclusively (O_EXCL), files
that exist are opened without following a link (O_NOFOLLOW), and a replaced file is renamed over,
which replaces a link rather than what it points to. A failure is one RunFolderError line.
"""
import contextlib
import csv
import errno
import fcntl
import io
import os
import stat
from typing import IO

import torch

LOCK = ".lock"  # in each run folder: the pid of the process that holds it
LINK_HINT = "this code writes through no link it did not make: remove the link (and see what it points to)"


class RunFolderError(Exception):
    """A run folder that cannot be read, written or held; the message is one line."""


def why(path: str, err: OSError) -> str:
    """What went wrong writing path, as a message says it: the OS's reason, or that path is a link."""
    if err.errno == errno.ELOOP or os.path.islink(path):
        return f"{path} is a symbolic link; {LINK_HINT}"
    return f"cannot write {path} ({err.strerror or err})"


def no_follow(path: str, flags: int) -> int:
    """open()'s opener for a file that may exist: a link at path is refused (ELOOP), never followed."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def only_new(path: str, flags: int) -> int:
    """open()'s opener for a file that must not exist yet (O_EXCL): no link or other file there is written."""
    return os.open(path, flags | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def write_atomically(path: str, data: bytes, intact: str = "") -> None:
    """Write data to path through path.tmp and a rename: path is whole, old or new, whatever happens.

    A regular path.tmp (left by a killed run) is replaced; a link there is refused. A failure is a
    RunFolderError saying what could not be written, then `intact` (what still is).
    """
    tmp = path + ".tmp"
    if os.path.isfile(tmp) and not os.path.islink(tmp):
        with contextlib.suppress(OSError):
            os.remove(tmp)
    try:
        with open(tmp, "wb", opener=only_new) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except FileExistsError:  # what is left at tmp is no file of ours
        what = "a symbolic link" if os.path.islink(tmp) else "not a file"
        raise RunFolderError(f"{tmp} is {what}; {LINK_HINT}{intact}") from None
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise RunFolderError(f"{why(path, err)}{intact}") from None


def write_text(path: str, text: str, intact: str = "") -> None:
    """Write text (UTF-8) to path as write_atomically does: every file a program here writes goes through it."""
    write_atomically(path, text.encode("utf-8", "surrogateescape"), intact)  # a folder name's undecodable bytes


# A spreadsheet reads a cell starting with one of these as a formula (CSV injection): such text gets a leading "'"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def is_numbers(text: str) -> bool:
    """Whether text is one or more numbers separated by spaces ('-12.5 40.1'): a spreadsheet shows them as they are."""
    try:
        numbers = [float(word) for word in text.split()]
    except ValueError:
        return False
    return bool(numbers)


def safe_cell(value):
    """A CSV cell that no spreadsheet runs: text starting like a formula gets a leading "'", other values stay."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not is_numbers(value):
        return "'" + value
    return value


def csv_text(columns: list[str], rows: list[dict]) -> str:
    """A CSV table of rows under columns (blank where a row has no value), text cells made safe (safe_cell)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({name: safe_cell(value) for name, value in row.items()} for row in rows)
    return text.getvalue()


def read_text(path: str, follow: bool = True) -> str:
    """A regular file's text (UTF-8): a FIFO, device or folder at path is an OSError, never waited on or read;
    with follow=False so is a link (ELOOP).

    The file is opened without blocking (a FIFO would wait for a writer) and checked before it is read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW))
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return f.read().decode("utf-8")


def save_tensors(obj, path: str) -> None:
    """torch.save, atomically (serialised in memory first, so a full disk is an OSError, not torch's)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getvalue())


def header_of(path: str) -> list[str] | None:
    """The CSV file's header row, or None if the file does not exist or is empty."""
    if not os.path.lexists(path):
        return None
    return next(csv.reader(io.StringIO(read_text(path, follow=False), newline="")), None)


def check_header(path: str, header: list[str] | None, columns: list[str]) -> None:
    """A CSV file's header must be the code's columns: rows are written in that order."""
    if header is not None and header != list(columns):
        raise RunFolderError(f"{path} has the columns {','.join(header)}, this code writes "
                             f"{','.join(columns)}; rows would land under the wrong names: move {path} "
                             f"aside and start a new run")


def append_row(path: str, columns: list[str], row: dict) -> None:
    """Append a row to a CSV file, writing the header first if the file is new.

    A file whose header is not `columns` is refused. A metric not among the columns raises
    ValueError (csv.DictWriter): a new term must be named.
    """
    try:
        header = header_of(path)
        check_header(path, header, columns)
        with open(path, "a", newline="", opener=no_follow) as f:
            writer = csv.DictWriter(f, columns, restval="")
            if header is None:
                writer.writeheader()
            writer.writerow(row)
    except (OSError, UnicodeDecodeError) as err:
        raise RunFolderError(why(path, err) if isinstance(err, OSError) else f"cannot read {path} ({err})") from None


def hold(run_dir: str) -> IO:
    """Lock run_dir for this process: fcntl.flock on its .lock, which holds our pid.

    Returns the open lock file: closing it, or the end of the process however it ends, lets go.
    """
    path = os.path.join(run_dir, LOCK)
    try:
        lock = open(path, "a+", opener=no_follow)
    except OSError as err:
        raise RunFolderError(why(path, err)) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        if holder == str(os.getpid()):
            raise RunFolderError(f"{run_dir} is held by this process already: give each run folder once") from None
        raise RunFolderError(f"{run_dir} is in use by process {holder} (the pid in its {LOCK}); "
                             f"let that run end, or stop it, then resume") from None
    try:
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
    except OSError as err:  # a full disk: the pid cannot be written
        lock.close()
        raise RunFolderError(why(path, err)) from None
    return lock


def links_in(run_dir: str) -> list[str]:
    """The symbolic links in a run folder and its videos/ folder: paths this code would write through."""
    found = []
    for folder in (run_dir, os.path.join(run_dir, "videos")):
        if os.path.isdir(folder) and not os.path.islink(folder):
            found += [entry.path for entry in os.scandir(folder) if entry.is_symlink()]
    return sorted(found)


def make_folder(stem: str) -> str:
    """Make the folder stem, or stem-1, stem-2, ... if taken (two runs started in the same second); its path.

    An OSError other than the name being taken is raised.
    """
    path, n = stem, 1
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            path, n = f"{stem}-{n}", n + 1
