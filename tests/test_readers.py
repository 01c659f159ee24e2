from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dwp.cli import main
from dwp.data import load_dataset
from dwp.data.readers import read_cifar_batches, read_idx, read_png_folders, write_idx
from dwp.errors import CorruptFileError, DatasetNotFoundError, DWPError

from conftest import make_idx_set


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_roundtrip(tmp_path, suffix, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype is np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_matches_the_mnist_spec(tmp_path):
    # MNIST label files start with magic 0x00000801 then the count, big-endian.
    path = tmp_path / "labels"
    write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    raw = path.read_bytes()
    assert raw[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 3])
    assert raw[8:] == bytes([7, 2, 1])


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(CorruptFileError, match="not an IDX file") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_idx_truncated(tmp_path):
    path = tmp_path / "img.gz"
    write_idx(path, np.zeros((5, 4, 4), dtype=np.uint8))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(CorruptFileError, match="truncated"):
        read_idx(path)


def test_idx_broken_gzip(tmp_path):
    path = tmp_path / "img.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(CorruptFileError, match="cannot read"):
        read_idx(path)


@pytest.mark.parametrize("layout", ["", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_root(tmp_path, layout, gz):
    arrays = make_idx_set(tmp_path / layout if layout else tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.train.images.shape == (30, 1, 28, 28)
    assert ds.train.images.dtype == torch.float32 and ds.train.labels.dtype == torch.int64
    x, y = arrays["train"]
    np.testing.assert_allclose(ds.train.images[:, 0].numpy(), x / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.train.labels.numpy(), y)
    assert len(ds.test) == 20


def test_label_out_of_range(tmp_path):
    make_idx_set(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(20, 12, dtype=np.uint8))
    with pytest.raises(CorruptFileError, match=r"label out of range.*0\.\.9"):
        load_dataset("mnist", tmp_path)


def test_label_count_mismatch(tmp_path):
    make_idx_set(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(CorruptFileError, match="3 labels for 20 images"):
        load_dataset("mnist", tmp_path)


def test_missing_dataset_names_files_and_places(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg


def test_fashion_from_root(tmp_path):
    make_idx_set(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.classes[0] == "T-shirt/top" and len(ds.train) == 30


def test_test_examples_keeps_one_stratified_subset(tmp_path):
    arrays = make_idx_set(tmp_path / "fashion-mnist", n_test=60)
    full = load_dataset("fashion-mnist", tmp_path)
    cut = load_dataset("fashion-mnist", tmp_path, test_examples=20)
    again = load_dataset("fashion-mnist", tmp_path, test_examples=20)
    assert len(cut.test) == 20 and len(cut.train) == len(full.train) == 30
    assert cut.test.labels.bincount(minlength=10).tolist() == [2] * 10  # stratified
    assert torch.equal(cut.test.images, again.test.images)  # one set, call after call
    # the images kept are test images, with their labels
    x, y = arrays["t10k"]
    pixels = {bytes(img.tobytes()): int(lab) for img, lab in zip(x, y, strict=True)}
    for img, lab in zip(cut.test.images, cut.test.labels, strict=True):
        key = bytes((img[0] * 255).round().to(torch.uint8).numpy().tobytes())
        assert pixels[key] == int(lab)
    assert len(load_dataset("fashion-mnist", tmp_path, test_examples=1000).test) == 60
    with pytest.raises(DWPError, match="fewer than the 10 classes"):
        load_dataset("fashion-mnist", tmp_path, test_examples=5)
    with pytest.raises(DWPError, match="positive integer"):
        load_dataset("fashion-mnist", tmp_path, test_examples=0)


def test_missing_fashion_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import dwp.data.catalog as catalog

    monkeypatch.setattr(catalog, "FASHION_SYSTEM_DIR", tmp_path / "no-package")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"holds it\.$"):  # no hint for plain MNIST
        load_dataset("mnist", tmp_path)
    args = ["bnn", "train", "--dataset", "fashion-mnist", "--data-root", str(tmp_path),
            "--examples", "10", "--epochs", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    # the modern preset says so before its first stage
    monkeypatch.setenv("DWP_DATA_ROOT", str(tmp_path))
    assert main(["reproduce", "--preset", "modern", "--out", str(tmp_path / "modern")]) == 2
    err = capsys.readouterr().err
    assert "the preset needs fashion-mnist, not found here" in err
    assert "apt-get install dataset-fashion-mnist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "modern").exists()


def _png_folders(root, per_class=3, corrupt=1, size=28):
    rng = np.random.default_rng(0)
    for letter in "ABCDEFGHIJ":
        (root / letter).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
            Image.fromarray(arr, mode="L").save(root / letter / f"img{i}.png")
    for i in range(corrupt):
        (root / "C" / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def test_png_folders_skip_corrupt(tmp_path):
    _png_folders(tmp_path / "notMNIST_small", corrupt=2)
    images, labels, skipped = read_png_folders(tmp_path / "notMNIST_small", list("ABCDEFGHIJ"))
    assert images.shape == (30, 1, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [3] * 10
    assert skipped == {"C": {"unreadable": 2, "wrong_size": 0}}
    first = np.asarray(Image.open(tmp_path / "notMNIST_small" / "A" / "img0.png"))
    np.testing.assert_array_equal(images[0, 0], first)


def test_one_odd_size_png_costs_only_itself(tmp_path, caplog):
    """The expected size is the format's (28x28), not the first file's: a 40x40 image sorted
    first in A is the one skipped, and said so per class."""
    root = tmp_path / "notMNIST_small"
    _png_folders(root, corrupt=0)
    Image.fromarray(np.zeros((40, 40), np.uint8), mode="L").save(root / "A" / "000big.png")
    images, labels, skipped = read_png_folders(root, list("ABCDEFGHIJ"))
    assert images.shape == (30, 1, 28, 28) and np.bincount(labels).tolist() == [3] * 10
    assert skipped == {"A": {"unreadable": 0, "wrong_size": 1}}
    ds = load_dataset("notmnist", tmp_path)
    assert len(ds.train) + len(ds.test) == 30
    assert ds.info["skipped"] == {"notMNIST_small": skipped}
    assert "skipped 0 unreadable and 1 images that are not 28x28" in caplog.text


def test_a_class_without_usable_images_names_its_folder(tmp_path):
    root = tmp_path / "notMNIST_small"
    _png_folders(root, corrupt=0)
    for f in (root / "D").iterdir():
        f.write_bytes(b"not a png")
    with pytest.raises(CorruptFileError, match=r"notMNIST_small/D: no usable 28x28 PNG images "
                       r"\(3 unreadable\)"):  # fmt: skip
        read_png_folders(root, list("ABCDEFGHIJ"))


def test_decode_cache_sees_a_file_fixed_in_place(tmp_path):
    root = tmp_path / "notMNIST_small"
    _png_folders(root, per_class=10, corrupt=0)
    before = load_dataset("notmnist", tmp_path)
    target, folder = root / "B" / "img3.png", (root / "B").stat()
    Image.fromarray(np.full((28, 28), 7, np.uint8), mode="L").save(target)  # fixed in place
    os.utime(root / "B", ns=(folder.st_atime_ns, folder.st_mtime_ns))  # the folder looks unchanged
    after = load_dataset("notmnist", tmp_path)
    changed = (before.train.images != after.train.images).flatten(1).any(1).sum() + (
        before.test.images != after.test.images
    ).flatten(1).any(1).sum()
    assert int(changed) == 1


def test_an_empty_idx_set_is_an_error(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=0, n_test=5)
    with pytest.raises(CorruptFileError, match="the train part of mnist holds no images"):
        load_dataset("mnist", tmp_path)


def test_notmnist_large_and_small(tmp_path):
    _png_folders(tmp_path / "notMNIST_large", per_class=4, corrupt=1)
    _png_folders(tmp_path / "notMNIST_small", per_class=2, corrupt=0)
    ds = load_dataset("notmnist", tmp_path)
    assert (len(ds.train), len(ds.test)) == (40, 20)
    assert ds.info["skipped"] == {"notMNIST_large": {"C": {"unreadable": 1, "wrong_size": 0}}}
    ds2 = load_dataset("notmnist", tmp_path)  # from the decoded cache
    assert torch.equal(ds.train.images, ds2.train.images)


def test_notmnist_small_only_is_split(tmp_path):
    _png_folders(tmp_path / "notmnist" / "notMNIST_small", per_class=10, corrupt=0)
    ds = load_dataset("notmnist", tmp_path)
    assert (len(ds.train), len(ds.test)) == (90, 10)
    assert torch.bincount(ds.test.labels).tolist() == [1] * 10


def test_notmnist_idx(tmp_path):
    make_idx_set(tmp_path / "notMNIST")
    ds = load_dataset("notmnist", tmp_path)
    assert ds.classes == tuple("ABCDEFGHIJ") and len(ds.train) == 30


def _cifar_batch(path, n, label_key, classes, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = list(rng.integers(0, classes, size=n))
    with open(path, "wb") as f:
        pickle.dump({b"data": data, label_key.encode(): labels, b"batch_label": b"x"}, f)
    return data, labels


def test_cifar10(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = [_cifar_batch(folder / f"data_batch_{i}", 4, "labels", 10, i) for i in range(1, 6)]
    _cifar_batch(folder / "test_batch", 3, "labels", 10, 9)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train.images.shape == (20, 3, 32, 32) and len(ds.test) == 3
    data, labels = written[0]
    # rows are channel-first: 1024 red, then 1024 green, then 1024 blue values
    red = data[0, :1024].reshape(32, 32) / 255.0
    np.testing.assert_allclose(ds.train.images[0, 0].numpy(), red, atol=1e-7)
    assert ds.train.labels[:4].tolist() == [int(v) for v in labels]
    assert ds.classes[0] == "airplane"


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _cifar_batch(folder / "train", 6, "fine_labels", 100, 0)
    _cifar_batch(folder / "test", 2, "fine_labels", 100, 1)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and len(ds.train) == 6


def test_cifar_bad_pickle(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(CorruptFileError, match="not a readable CIFAR pickle") as err:
        read_cifar_batches([path], "labels", 10)
    assert str(path) in str(err.value)


def test_cifar_label_out_of_range(tmp_path):
    path = tmp_path / "b"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, f)
    with pytest.raises(CorruptFileError, match="label out of range"):
        read_cifar_batches([path], "labels", 10)


def test_cifar_missing_keys(tmp_path):
    path = tmp_path / "b"
    with open(path, "wb") as f:
        pickle.dump({b"pixels": 1}, f)
    with pytest.raises(CorruptFileError, match="missing keys"):
        read_cifar_batches([path], "labels", 10)
