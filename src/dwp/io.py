"""Small file helpers: atomic writes (nothing half-written is ever left behind), JSON records,
the one-config-per-directory check, and a per-directory lock."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from dwp.errors import DWPError

__all__ = [
    "append_jsonl",
    "atomic_path",
    "check_same_config",
    "jsonable",
    "read_json",
    "run_lock",
    "write_csv",
    "write_json",
]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file keeps ``path``'s suffix, so writers that choose a format by extension
    (``np.save``, ``savefig``) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[Path]:
    """Hold ``directory/.lock`` while the block runs, so that one process at a time writes a run
    directory. A lock left behind by a dead process of this host is taken over; a live holder
    (or one on another host) raises :class:`~dwp.errors.DWPError`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    host = socket.gethostname()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner_host, owner_pid = path.read_text().split()
                pid = int(owner_pid)
            except (OSError, ValueError):
                owner_host, pid = "?", -1
            if owner_host == host and pid > 0 and not _pid_alive(pid):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise DWPError(
                f"{directory} is in use by process {pid} on {owner_host} (delete {path} if no "
                "such process is running)"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{host} {os.getpid()}\n")
        break
    else:
        raise DWPError(f"could not lock {directory}")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def jsonable(value):
    """``value`` as a JSON round trip gives it back (tuples become lists): what a stored
    config is compared with."""
    return json.loads(json.dumps(value))


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append ``record`` as one JSON line to ``path`` (a run's metrics log; a line is
    written whole by one ``write``)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable]) -> None:
    """Write a header and rows as CSV, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def read_json(path: str | Path):
    """The JSON in ``path``; :class:`~dwp.errors.DWPError` if it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DWPError(f"{path} is unreadable ({exc}); delete it to start over") from None


def check_same_config(directory: str | Path, want: dict, what: str = "a run") -> None:
    """Refuse a directory whose ``config.json`` differs from ``want`` (nothing to check if it
    has none), naming the first key that differs."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return
    stored = read_json(path)
    diff = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
    if diff:
        k = diff[0]
        raise DWPError(
            f"{directory} holds {what} with another config ({k}: {stored.get(k)!r} there, "
            f"{want.get(k)!r} now); use another --out or delete it"
        )
