"""Readers for the on-disk formats of the datasets: IDX (MNIST-style), folders of PNGs
(notMNIST), and the CIFAR python pickles.

Each reader returns ``(images, labels)`` as numpy arrays: images ``uint8`` of shape
``(N, C, H, W)``, labels ``int64`` of shape ``(N,)``. Scaling to [0, 1] happens in the catalog.
Every reader raises :class:`~dwp.errors.CorruptFileError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dwp.errors import CorruptFileError

__all__ = [
    "read_cifar_batches",
    "read_idx",
    "read_idx_pair",
    "read_png_folders",
    "write_idx",
]


# IDX type codes (third byte of the magic number) -> numpy big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}


def _open_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CorruptFileError(path, f"cannot read: {exc}") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of the shape its header declares.

    The IDX format: two zero bytes, a type code, the number of dimensions ``d``, then ``d``
    big-endian uint32 sizes, then the data in row-major order.
    """
    path = Path(path)
    raw = _open_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        magic = raw[:4].hex() if raw else "empty file"
        raise CorruptFileError(
            path, f"not an IDX file (magic {magic}, expected 0000 + type + ndim)"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CorruptFileError(path, f"IDX header truncated ({len(raw)} bytes, ndim {ndim})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptFileError(
            path,
            f"IDX data truncated or padded: header declares shape {shape} ({expected} bytes), "
            f"file holds {len(raw) - header} bytes of data",
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    code = _IDX_CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def read_idx_pair(
    images_path: Path, labels_path: Path, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read an (images, labels) pair of IDX files and check they agree."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptFileError(
            images_path,
            f"expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}",
        )
    if labels.ndim != 1:
        raise CorruptFileError(labels_path, f"expected labels of shape (N,), got {labels.shape}")
    if len(labels) != len(images):
        raise CorruptFileError(
            labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    labels = labels.astype(np.int64)
    _check_labels(labels_path, labels, num_classes)
    return images[:, None], labels


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        found = f"{labels.min()}..{labels.max()}"
        raise CorruptFileError(
            path, f"label out of range: found {found}, expected 0..{num_classes - 1}"
        )


def read_png_folders(
    root: str | Path, classes: list[str], size: tuple[int, int] = (28, 28)
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, int]]]:
    """Read a folder-per-class layout of grey images (the notMNIST archives).

    ``root/<class>/*.png`` for each name in ``classes``; the label of an image is the index of
    its folder in ``classes``. Every image must be ``size`` (height, width), the format's size
    (28x28 for notMNIST), never one guessed from the first file. Unreadable images (the real
    notMNIST archives hold a few) and images of another size are skipped and counted per class:
    the third element is ``{class: {"unreadable": n, "wrong_size": m}}`` for the classes
    that had any. A class folder left with no image is :class:`CorruptFileError` naming it.
    """
    root = Path(root)
    size = tuple(size)
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: dict[str, dict[str, int]] = {}
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise CorruptFileError(root, f"class folder {name!r} missing (expected {classes})")
        bad = {"unreadable": 0, "wrong_size": 0}
        found = 0
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() != ".png":
                continue
            try:
                with Image.open(file) as img:
                    arr = np.asarray(img.convert("L"), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
                bad["unreadable"] += 1
                continue
            if arr.shape != size:
                bad["wrong_size"] += 1
                continue
            images.append(arr)
            labels.append(label)
            found += 1
        if any(bad.values()):
            skipped[name] = bad
        if not found:
            why = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in bad.items() if n)
            raise CorruptFileError(
                folder,
                f"no usable {size[0]}x{size[1]} PNG images"
                + (f" ({why})" if why else " (the folder holds no .png files)"),
            )
    return np.stack(images)[:, None], np.asarray(labels, dtype=np.int64), skipped


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as exc:  # a corrupt pickle can raise almost anything
        problem = f"not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
        raise CorruptFileError(path, problem) from exc
    if not isinstance(obj, dict):
        raise CorruptFileError(path, f"expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batches(
    paths: list[Path], label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR python-pickle batches.

    Each batch is a dict with ``data`` (uint8, shape (N, 3072), channels-first rows of 32x32
    images) and a label list under ``label_key`` (``labels`` for CIFAR-10, ``fine_labels`` for
    CIFAR-100).
    """
    images, labels = [], []
    for path in paths:
        batch = _load_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise CorruptFileError(
                path, f"missing keys: expected 'data' and {label_key!r}, found {sorted(batch)}"
            )
        data = np.asarray(batch["data"])
        try:
            lab = np.asarray(batch[label_key])
            if lab.dtype.kind not in "iub":  # strings, floats, objects
                raise TypeError(lab.dtype)
            lab = lab.astype(np.int64)
        except (TypeError, ValueError):
            raise CorruptFileError(
                path, f"{label_key!r} must be a list of integer class indices"
            ) from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise CorruptFileError(
                path, f"expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}"
            )
        if lab.shape != (len(data),):
            raise CorruptFileError(path, f"{lab.size} labels for {len(data)} images")
        _check_labels(path, lab, num_classes)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)
