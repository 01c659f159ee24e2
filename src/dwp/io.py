"""Small file helpers: atomic writes (nothing half-written is ever left behind), strict JSON
records (NaN and inf are refused, not written as the non-JSON ``NaN``), the finiteness check of
a result, safe loading of ``.pt`` files, the one-config-per-directory check, and a
per-directory lock."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from dwp.errors import CorruptFileError, DWPError, NonFiniteError, one_line

__all__ = [
    "append_jsonl",
    "atomic_path",
    "check_finite",
    "check_finite_state",
    "check_out_dir",
    "check_same_config",
    "cleanup_on_failure",
    "jsonable",
    "load_checkpoint",
    "load_torch",
    "read_json",
    "read_jsonl",
    "restoring",
    "run_lock",
    "truncate_jsonl",
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
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
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


def check_out_dir(path: str | Path) -> Path:
    """``path`` if a directory can be made there: an error naming the first part of it that
    exists and is not a directory (before a long job that would fail only when it writes)."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise DWPError(f"{part} is a file; expected a directory (or nothing) there")
            break
    return path


@contextlib.contextmanager
def cleanup_on_failure(directory: str | Path, keep: Iterable[str] = ()) -> Iterator[Path]:
    """Run the block; if it raises (a bad input, Ctrl-C), remove what it created in
    ``directory``: the directory itself and any parents it made, or in a directory that existed
    the entries that are new. Nothing is removed where an entry named in ``keep`` now exists
    (a checkpoint: progress the next run resumes from)."""
    directory = Path(directory).absolute()
    top = directory
    while not top.parent.exists() and top.parent != top:
        top = top.parent  # the topmost directory the block may create
    before = set(os.listdir(directory)) if directory.is_dir() else None
    try:
        yield directory
    except BaseException:
        if not any((directory / k).exists() for k in keep):
            if before is None:
                if top.is_dir():  # it did not exist when the block began
                    shutil.rmtree(top, ignore_errors=True)
            elif directory.is_dir():
                for name in set(os.listdir(directory)) - before:
                    path = directory / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        raise


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


def _non_finite(value, key: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, float):
        if not math.isfinite(value):
            yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _non_finite(v, f"{key}[{i}]")


def check_finite(record, what: str) -> None:
    """Raise :class:`~dwp.errors.NonFiniteError` naming the numbers of ``record`` (nested dicts
    and lists of floats) that are NaN or infinite: ``WHAT: nll = nan, ece = nan``."""
    bad = list(_non_finite(record))
    if bad:
        shown = ", ".join(f"{k} = {v}" for k, v in bad[:4]) + (" ..." if len(bad) > 4 else "")
        raise NonFiniteError(f"{what}: {shown}")


def check_finite_state(state, path: str | Path) -> None:
    """Refuse a loaded state dict whose float tensors hold NaN or inf (a diverged or damaged
    model), naming the file and the first such tensor."""
    import torch

    if not isinstance(state, dict):
        return
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise CorruptFileError(path, f"tensor {key!r} holds NaN or inf values")


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented, strict JSON, atomically (a NaN or inf in it is a bug of the
    caller, which should have refused it: ``ValueError``)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append ``record`` as one strict JSON line to ``path`` (a run's metrics log; a line is
    written whole by one ``write``; a kill can still tear the last one, which
    :func:`read_jsonl` drops)."""
    line = json.dumps(record, allow_nan=False) + "\n"
    with open(path, "a") as f:
        f.write(line)


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log. A torn last line (the process was killed while
    appending it) is dropped; an unreadable line before the last is
    :class:`~dwp.errors.CorruptFileError` naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise CorruptFileError(path, f"not a text file of JSON lines ({exc.reason})") from None
    lines = text.splitlines()
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) and not text.endswith("\n"):
                break  # torn by a kill mid-append: the record was never complete
            raise CorruptFileError(path, f"line {i} is not a JSON record") from None
        if not isinstance(record, dict):
            raise CorruptFileError(path, f"line {i} is not a JSON record")
        records.append(record)
    return records


def truncate_jsonl(path: str | Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite a JSON-lines log with only the records ``keep`` accepts (those of the epochs a
    resumed run's checkpoint holds), atomically; a torn last line goes too."""
    path = Path(path)
    if not path.is_file():
        return
    records = [r for r in read_jsonl(path) if keep(r)]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))


def _load_problem(path: Path, exc: Exception) -> str:
    message = str(exc)
    if isinstance(exc, EOFError) or (path.is_file() and path.stat().st_size == 0):
        return "the file is empty"
    if "Weights only load failed" in message or "Unpickl" in type(exc).__name__:
        # never pass on torch's advice to retry with weights_only=False: for a file of unknown
        # origin that would run whatever code it holds
        return "not tensors and plain containers, the only content dwp loads"
    if (
        "central directory" in message
        or "PytorchStreamReader" in message
        or (isinstance(exc, OSError) and exc.errno == 22)
    ):
        return "truncated or damaged (not a complete torch zip archive)"
    return one_line(exc, 160)


def load_torch(path: str | Path, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so an
    untrusted file cannot run code. A file that is not one is
    :class:`~dwp.errors.CorruptFileError`: ``PATH: not a readable WHAT (why)``."""
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # the path's own problem: the CLI names it
    except Exception as exc:  # a damaged archive raises almost anything (an OSError too)
        raise CorruptFileError(
            path, f"not a readable {what} ({_load_problem(path, exc)})"
        ) from None


def _module_classes() -> list[type]:
    """torch.nn's and dwp.nn's module classes: what a saved model of standard layers pickles."""
    import inspect

    import torch

    import dwp.nn

    found = []
    for space in (torch.nn, dwp.nn):
        for name in dir(space):
            obj = getattr(space, name)
            if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
                found.append(obj)
    return found


def load_torch_model(path: str | Path, what: str, trust: bool = False, map_location="cpu"):
    """A file saved by ``torch.save``: a state dict, a checkpoint, or a whole model. Whole
    models of torch.nn's and dwp.nn's layers load without unpickling code; a model of another
    class needs ``trust`` (then the file is unpickled as is: it can run code, so only for a
    file you made), else ``PATH: ... holds a pickled CLASS`` saying what to do instead."""
    import torch

    path = Path(path)
    try:
        return load_torch(path, what, map_location)
    except CorruptFileError as first:
        problem = first.problem
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_module_classes()):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported is None:
        raise CorruptFileError(path, problem) from None
    if trust:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            raise CorruptFileError(
                path, f"not loadable even trusted ({one_line(exc, 160)})"
            ) from None
    raise CorruptFileError(
        path,
        f"holds a pickled {unsupported.group(1)}, which dwp does not unpickle (that runs code "
        "from the file): save model.state_dict() instead, or pass --trust-pickle (trust=True) "
        "for a file you made",
    )


def load_checkpoint(path: str | Path, remedy: str) -> dict:
    """A training checkpoint (a dict, on CPU: RNG states stay there) by :func:`load_torch`; a
    damaged one is one line ending in ``remedy`` (how to start over)."""
    try:
        state = load_torch(path, "checkpoint")
    except DWPError as exc:
        raise DWPError(f"{exc}; {remedy}") from None
    if not isinstance(state, dict):
        raise CorruptFileError(path, f"not a checkpoint (a {type(state).__name__}); {remedy}")
    return state


@contextlib.contextmanager
def restoring(path: str | Path, remedy: str) -> Iterator[None]:
    """Around the code that puts a checkpoint's states back (model, optimiser, RNGs): a state
    missing or of another shape is one line naming ``path``, ending in ``remedy``."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(
            path, f"does not fit this training ({one_line(exc, 160)}); {remedy}"
        ) from None


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable]) -> None:
    """Write a header and rows as CSV, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def read_json(path: str | Path, remedy: str = "delete it to start over"):
    """The JSON in ``path``; :class:`~dwp.errors.CorruptFileError` if it cannot be read or
    parsed, ending in ``remedy`` (a run's own state: delete it; a user's input: what to fix)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CorruptFileError(path, f"unreadable JSON ({why}); {remedy}") from None


def first_difference(a: dict, b: dict) -> str | None:
    """The first key (sorted) whose value differs between two configs, or None."""
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return diff[0] if diff else None


def check_same_config(
    directory: str | Path,
    want: dict,
    what: str = "a run",
    legacy: dict | None = None,
    ignore: tuple[str, ...] = (),
) -> None:
    """Refuse a directory whose ``config.json`` differs from ``want`` (nothing to check if it
    has none), naming the first key that differs. ``legacy``: the value a key that a config
    written before it existed stands for (what those runs did); ``ignore``: keys that may
    differ."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return
    stored = read_json(path, f"it records what {directory} holds: use another --out, or delete "
                       "the directory to start over")  # fmt: skip
    if not isinstance(stored, dict):
        raise CorruptFileError(path, "not a config (a JSON object); use another --out")
    stored = {k: v for k, v in {**(legacy or {}), **stored}.items() if k not in ignore}
    k = first_difference(stored, {k: v for k, v in want.items() if k not in ignore})
    if k is not None:
        raise DWPError(
            f"{directory} holds {what} with another config ({k}: {stored.get(k)!r} there, "
            f"{want.get(k)!r} now); use another --out or delete it"
        )
