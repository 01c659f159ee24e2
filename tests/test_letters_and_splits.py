from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from dwp.data import (
    find_fonts,
    load_dataset,
    mnist5k_split,
    render_letters,
    stratified_indices,
)
from dwp.data import letters as letters_mod
from dwp.data.paths import data_roots
from dwp.errors import DWPError

MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@pytest.fixture(scope="module")
def fonts():
    return find_fonts([MPL_FONTS])


def test_matplotlib_alone_gives_twenty_fonts(fonts):
    names = [f.name for f in fonts]
    assert len(names) >= 20 and len(set(names)) == len(names)
    # fonts that map A..J to boxes or symbols are not letters
    assert not any("LastResort" in n or "cmex" in n or "cmsy" in n for n in names)


def test_render_is_deterministic(fonts):
    a = render_letters(60, seed=3, fonts=fonts[:4])
    b = render_letters(60, seed=3, fonts=fonts[:4])
    c = render_letters(60, seed=4, fonts=fonts[:4])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    calls = []  # progress: every font as it loads, then the letters chunk by chunk
    d = render_letters(60, seed=3, fonts=fonts[:4], chunk=25, progress=lambda *a: calls.append(a))
    np.testing.assert_array_equal(d[0], a[0])
    assert calls == [("fonts", i, 4) for i in (1, 2, 3, 4)] + [
        ("letters", n, 60) for n in (25, 50, 60)]  # fmt: skip


def test_render_shapes_balance_and_ink(fonts):
    images, labels, font_idx = render_letters(95, seed=0, fonts=fonts[:5])
    assert images.shape == (95, 1, 28, 28) and images.dtype == np.uint8
    counts = np.bincount(labels, minlength=10)
    assert counts.min() == 9 and counts.max() == 10
    assert set(font_idx.tolist()) <= set(range(5))
    ink = images.reshape(95, -1).astype(float).mean(1) / 255
    assert (ink > 0.03).all() and (ink < 0.7).all()  # a glyph, not a blank or a filled frame
    # corners are background: glyphs are centred
    assert images[:, 0, :3, :3].mean() < images[:, 0, 10:18, 10:18].mean()


def test_glyphs_are_distinct_letters(fonts):
    # Without jitter, two letters of one font differ far more than one letter rendered twice.
    none = letters_mod.JitterConfig(scale=(1, 1), shift=0, rotation=0, shear=0, stroke=(0, 0))
    images, labels, _ = render_letters(20, seed=0, fonts=fonts[:1], jitter=none)
    first = {int(lab): images[i, 0].astype(float) for i, lab in enumerate(labels)}
    same = [np.abs(images[i, 0] - first[int(lab)]).mean() for i, lab in enumerate(labels)]
    assert max(same) == 0
    assert np.abs(first[0] - first[1]).mean() > 10  # A vs B


def test_letters_cache(tmp_path, fonts, monkeypatch):
    data = letters_mod.load_letters(40, 20, seed=1, fonts=fonts[:3], cache=tmp_path)
    assert data["cache_path"].exists()

    def boom(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(letters_mod, "render_letters", boom)
    again = letters_mod.load_letters(40, 20, seed=1, fonts=fonts[:3], cache=tmp_path)
    np.testing.assert_array_equal(data["train_images"], again["train_images"])
    assert again["fonts"] == [f.name for f in fonts[:3]]
    assert not any(p.name.endswith(".tmp.npz") for p in tmp_path.rglob("*"))


def test_letters_train_and_test_differ(fonts, tmp_path):
    data = letters_mod.load_letters(30, 30, seed=0, fonts=fonts[:3], cache=None)
    assert not np.array_equal(data["train_images"], data["test_images"])


def test_find_fonts_parses_once_and_sees_a_changed_folder(fonts, tmp_path, monkeypatch):
    import shutil

    src = next(f.path for f in fonts if f.name.startswith("DejaVu Sans"))
    shutil.copy(src, tmp_path / "a.ttf")
    first = find_fonts([tmp_path])
    assert [f.path.name for f in first] == ["a.ttf"]
    calls = []
    monkeypatch.setattr(letters_mod, "_font_name", lambda p: calls.append(p))
    assert find_fonts([tmp_path]) == first and calls == []  # the same files: not parsed again
    (tmp_path / "a.ttf").unlink()
    assert find_fonts([tmp_path]) == []  # a removed font is seen


def test_no_fonts_is_a_clear_error(tmp_path):
    assert find_fonts([tmp_path]) == []
    with pytest.raises(DWPError, match="no usable fonts"):
        render_letters(10, 0, [])


def test_stratified_counts_and_determinism():
    labels = np.repeat(np.arange(10), 50)
    idx = stratified_indices(labels, 100, split_seed=0)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert np.bincount(labels[idx]).tolist() == [10] * 10
    np.testing.assert_array_equal(idx, stratified_indices(labels, 100, split_seed=0))
    assert not np.array_equal(idx, stratified_indices(labels, 100, split_seed=1))


def test_stratified_remainder_and_nesting():
    labels = np.repeat(np.arange(10), 30)
    idx = stratified_indices(labels, 55, split_seed=2)
    counts = np.bincount(labels[idx])
    assert sorted(counts.tolist()) == [5] * 5 + [6] * 5
    small = set(stratified_indices(labels, 50, split_seed=7).tolist())
    large = set(stratified_indices(labels, 200, split_seed=7).tolist())
    assert small <= large


def test_stratified_errors():
    labels = np.repeat(np.arange(10), 5)
    with pytest.raises(DWPError, match="only 5 exist"):
        stratified_indices(labels, 100, 0)
    with pytest.raises(DWPError, match="smaller than the number of classes"):
        stratified_indices(labels, 5, 0)


def test_mnist5k_split_is_fixed_and_disjoint():
    labels = np.repeat(np.arange(10), 500)
    train, test = mnist5k_split(labels)
    assert len(train) == 4000 and len(test) == 1000
    assert not set(train.tolist()) & set(test.tolist())
    assert np.bincount(labels[test]).tolist() == [100] * 10


def test_mnist5k_loads_real_digits():
    ds = load_dataset("mnist5k")
    assert ds.train.images.shape == (4000, 1, 28, 28) and ds.test.images.shape == (1000, 1, 28, 28)
    assert float(ds.train.images.min()) == 0.0 and float(ds.train.images.max()) == 1.0
    # few-shot subsets come from the train part, so no test image is ever trained on
    sub = ds.train.subset(stratified_indices(ds.train.labels.numpy(), 1000, split_seed=9))
    train_rows = {bytes(r) for r in (sub.images.numpy() * 255).astype(np.uint8).reshape(1000, -1)}
    test_rows = {
        bytes(r) for r in (ds.test.images.numpy() * 255).astype(np.uint8).reshape(1000, -1)
    }
    assert not train_rows & test_rows


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "legacy"))
    monkeypatch.setenv("DWP_DATA_ROOT", str(tmp_path / "a") + ":" + str(tmp_path / "b"))
    roots = data_roots()
    assert roots[:3] == [tmp_path / "a", tmp_path / "b", tmp_path / "legacy"]
    assert data_roots(tmp_path / "x")[0] == tmp_path / "x"
    assert tmp_path / "legacy" not in data_roots(tmp_path / "x")


def test_unknown_dataset():
    with pytest.raises(DWPError, match="unknown dataset 'mnsit'; expected one of: mnist5k"):
        load_dataset("mnsit")


def test_font_scan_holds_back_font_tools_warnings(caplog):
    import logging

    from dwp.data.letters import _quiet_font_tools

    quirk = logging.getLogger("fontTools.ttLib.tables._p_o_s_t")
    with caplog.at_level(logging.WARNING):
        with _quiet_font_tools():
            quirk.warning("1 extra bytes in post.stringData array")
            quirk.error("a font that cannot be read")
        assert [r.getMessage() for r in caplog.records] == ["a font that cannot be read"]
        quirk.warning("after the scan")  # the level is restored
    assert caplog.records[-1].getMessage() == "after the scan"
