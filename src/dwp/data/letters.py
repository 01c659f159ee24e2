"""notMNIST-style letters A..J rendered from the fonts on this machine.

notMNIST is glyphs A..J taken from many fonts; offline, the same kind of data comes from rendering
the letters with every usable font we can find (matplotlib's bundled fonts plus system fonts),
centred and scaled to fill a 28x28 frame like notMNIST, with random affine jitter (scale, shift,
rotation, shear) and stroke-width variation. Rendering is deterministic for a given seed, size and
font list, and is cached on disk (see :func:`dwp.data.paths.cache_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from dwp.errors import DWPError
from dwp.io import atomic_path

__all__ = [
    "LETTERS",
    "FontInfo",
    "JitterConfig",
    "export_letters",
    "find_fonts",
    "load_letters",
    "render_letters",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)

LETTERS = "ABCDEFGHIJ"
_FORMAT_VERSION = 1
_SUPERSAMPLE = 4  # glyphs are rendered and jittered at 4x resolution, then box-filtered down
_FONT_SUFFIXES = {".ttf", ".otf"}
# Fonts whose code points for A..J hold symbols, boxes or pictures rather than letters.
_DENY = ("lastresort", "stixsiz", "cmex10", "cmsy10", "awesome", "dingbat", "symbol", "emoji")
SYSTEM_FONT_DIRS = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".fonts",
    Path.home() / ".local" / "share" / "fonts",
)


@dataclass(frozen=True)
class FontInfo:
    """A font file and its human-readable name (family and style)."""

    path: Path
    name: str


@dataclass(frozen=True)
class JitterConfig:
    """Ranges of the random per-image distortions (uniform between the bounds).

    Attributes:
        scale: isotropic zoom of the glyph (1 fills the frame like notMNIST).
        shift: translation as a fraction of the frame size, in x and y.
        rotation: rotation in degrees.
        shear: horizontal shear factor.
        stroke: change of stroke width in pixels of the 28x28 image (negative thins);
            applied as grey-level dilation / erosion at 4x resolution.
    """

    scale: tuple[float, float] = (0.8, 1.05)
    shift: float = 0.08
    rotation: float = 12.0
    shear: float = 0.25
    stroke: tuple[float, float] = (-0.5, 1.0)


@contextlib.contextmanager
def _quiet_font_tools():
    """fontTools' warnings about harmless quirks of a font file (``1 extra bytes in
    post.stringData array``) held back while a font is read: the scan judges a font by whether
    it can render A..J, and a user of the CLI has nothing to act on."""
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _font_name(path: Path) -> str | None:
    """Family and style of a font whose cmap covers A..J, or None if it does not."""
    from fontTools.ttLib import TTFont  # a dependency of matplotlib

    try:
        with _quiet_font_tools(), TTFont(path, lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
            if any(ord(ch) not in cmap for ch in LETTERS):
                return None
            names = font["name"]
            family = names.getDebugName(16) or names.getDebugName(1) or path.stem
            style = names.getDebugName(17) or names.getDebugName(2) or ""
    except Exception:  # an unreadable font file is simply not a candidate
        return None
    return f"{family} {style}".strip()


def _candidate_files(dirs: list[Path]) -> list[Path]:
    files = []
    for folder in dirs:
        if folder.is_dir():
            files.extend(p for p in folder.rglob("*") if p.suffix.lower() in _FONT_SUFFIXES)
    return files


def _render_glyph(font: ImageFont.FreeTypeFont, letter: str, size: int) -> np.ndarray | None:
    """The glyph, cropped to its ink and scaled so its longer side fills ``size`` pixels,
    centred in a ``size`` x ``size`` float array in [0, 1]; None if the glyph has no ink."""
    left, top, right, bottom = font.getbbox(letter)
    pad = 8
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), letter, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    w, h = glyph.size
    factor = size / max(w, h)
    new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
    glyph = glyph.resize((new_w, new_h), Image.Resampling.LANCZOS)
    out = Image.new("L", (size, size), 0)
    out.paste(glyph, ((size - new_w) // 2, (size - new_h) // 2))
    return np.asarray(out, dtype=np.float32) / 255.0


def _glyph_set(path: Path, size: int) -> np.ndarray | None:
    """The ten letters of one font as a (10, size, size) array, or None if the font is unusable
    (missing ink, or letters that all look alike, as in fonts that map A..J to one box)."""
    try:
        font = ImageFont.truetype(str(path), 4 * size)
    except OSError:
        return None
    glyphs = []
    for letter in LETTERS:
        g = _render_glyph(font, letter, size)
        if g is None:
            return None
        glyphs.append(g)
    stack = np.stack(glyphs)
    flat = np.round(stack.reshape(len(LETTERS), -1) * 16)
    if len(np.unique(flat, axis=0)) < len(LETTERS):
        return None
    return stack


#: The error when no font here can render A..J.
NO_FONTS = ("no usable fonts found for the 'letters' dataset: install a font package (for example "
            "Debian's fonts-dejavu) or set DWP_FONT_DIRS")  # fmt: skip


def find_fonts(dirs: list[str | Path] | None = None) -> list[FontInfo]:
    """Fonts usable for rendering A..J, one per distinct family and style, sorted by name.

    Searches ``dirs`` if given; otherwise matplotlib's bundled fonts, the system font
    directories, and the directories in ``DWP_FONT_DIRS`` (``os.pathsep``-separated).
    """
    if dirs is None:
        import matplotlib

        search = [Path(matplotlib.get_data_path()) / "fonts" / "ttf", *SYSTEM_FONT_DIRS]
        extra = os.environ.get("DWP_FONT_DIRS", "")
        search.extend(Path(p) for p in extra.split(os.pathsep) if p)
    else:
        search = [Path(d) for d in dirs]
    files = sorted(_candidate_files(search))
    key = tuple(_file_key(p) for p in files)
    if key not in _FOUND:  # parsing and rendering every font takes seconds: once per process
        _FOUND.clear()
        _FOUND[key] = _usable_fonts(files)
    return list(_FOUND[key])


#: find_fonts' last answer, keyed by its candidate files' paths, sizes and modification times.
_FOUND: dict[tuple, list[FontInfo]] = {}


def _file_key(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns)


def _usable_fonts(files: list[Path]) -> list[FontInfo]:
    found: dict[str, FontInfo] = {}
    for path in files:
        if any(word in path.name.lower() for word in _DENY):
            continue
        name = _font_name(path)
        if name is None or name.lower() in found or any(w in name.lower() for w in _DENY):
            continue
        if _glyph_set(path, 32) is None:
            continue
        found[name.lower()] = FontInfo(path=path, name=name)
    return sorted(found.values(), key=lambda f: f.name)


def _affine_thetas(n: int, jitter: JitterConfig, gen: torch.Generator) -> torch.Tensor:
    """Random inverse affine maps for ``F.affine_grid``, shape (n, 2, 3)."""
    u = torch.rand(n, 5, generator=gen, dtype=torch.float64)
    lo, hi = jitter.scale
    scale = lo + (hi - lo) * u[:, 0]
    angle = torch.deg2rad((2 * u[:, 1] - 1) * jitter.rotation)
    shear = (2 * u[:, 2] - 1) * jitter.shear
    shift = (2 * u[:, 3:5] - 1) * jitter.shift * 2  # affine_grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map: output = R @ Shear @ (scale * input) + shift; affine_grid needs its inverse.
    fwd = torch.zeros(n, 3, 3, dtype=torch.float64)
    fwd[:, 0, 0] = scale * cos
    fwd[:, 0, 1] = scale * (cos * shear - sin)
    fwd[:, 1, 0] = scale * sin
    fwd[:, 1, 1] = scale * (sin * shear + cos)
    fwd[:, :2, 2] = shift
    fwd[:, 2, 2] = 1
    return torch.linalg.inv(fwd)[:, :2, :].float()


def _change_stroke(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey-level dilation (radius > 0) or erosion (radius < 0) with a square window."""
    if radius == 0:
        return x
    k = 2 * abs(radius) + 1
    if radius > 0:
        return F.max_pool2d(x, k, stride=1, padding=abs(radius))
    return -F.max_pool2d(-x, k, stride=1, padding=abs(radius))


def render_letters(
    n: int,
    seed: int,
    fonts: list[FontInfo],
    size: int = 28,
    jitter: JitterConfig | None = None,
    chunk: int = 512,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render ``n`` jittered letters.

    Labels are balanced (``n // 10`` or one more per letter) and shuffled; each image takes a font
    at random. Returns ``(images, labels, font_index)``: uint8 images of shape (n, 1, size, size)
    with white ink on black, int64 labels 0..9 for A..J, and the index into ``fonts`` of each
    image's font. ``progress(stage, done, total)`` is called as fonts load (stage ``"fonts"``)
    and as letters are drawn (``"letters"``).
    """
    if not fonts:
        raise DWPError(NO_FONTS)
    jitter = jitter or JitterConfig()
    big = size * _SUPERSAMPLE
    glyphs = []
    for i, font in enumerate(fonts, 1):
        g = _glyph_set(font.path, big)
        if g is None:
            raise DWPError(f"font {font.path} cannot render the letters {LETTERS}")
        glyphs.append(g)
        if progress is not None:
            progress("fonts", i, len(fonts))
    bank = torch.from_numpy(np.stack(glyphs))  # (fonts, 10, big, big)

    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(LETTERS)
    labels = labels[torch.randperm(n, generator=gen)]
    font_idx = torch.randint(len(fonts), (n,), generator=gen)
    thetas = _affine_thetas(n, jitter, gen)
    s_lo, s_hi = jitter.stroke
    stroke = s_lo + (s_hi - s_lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    radius = torch.round(stroke * _SUPERSAMPLE / 2).long()  # dilation by r grows strokes by 2r

    out = torch.empty(n, 1, size, size)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        x = bank[font_idx[sl], labels[sl]].unsqueeze(1)  # (b, 1, big, big)
        r = radius[sl]
        for value in r.unique().tolist():
            mask = r == value
            x[mask] = _change_stroke(x[mask], int(value))
        grid = F.affine_grid(thetas[sl], list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[sl] = F.avg_pool2d(x, _SUPERSAMPLE)
        if progress is not None:
            progress("letters", sl.stop, n)
    images = torch.round(out.clamp(0, 1) * 255).to(torch.uint8).numpy()
    return images, labels.numpy().astype(np.int64), font_idx.numpy().astype(np.int64)


def _cache_key(n_train: int, n_test: int, seed: int, fonts: list[FontInfo], size: int) -> str:
    spec = {
        "version": _FORMAT_VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "size": size,
        "jitter": JitterConfig().__dict__,
        "fonts": [[f.name, f.path.stat().st_size] for f in fonts],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_letters(
    n_train: int = 20000,
    n_test: int = 2000,
    seed: int = 0,
    fonts: list[FontInfo] | None = None,
    cache: Path | None = None,
    size: int = 28,
    progress: Progress | None = None,
) -> dict:
    """Rendered letters, from the cache when the same configuration was rendered before.

    Train and test images are drawn with independent streams derived from ``seed``; both use the
    same fonts. Returns a dict with ``train_images``, ``train_labels``, ``test_images``,
    ``test_labels`` (uint8 / int64 arrays), ``fonts`` (names) and ``cache_path``.
    ``progress``: as for :func:`render_letters`, with stages ``train fonts``, ``train letters``,
    ``test fonts``, ``test letters`` (not called on a cache hit).
    """
    fonts = find_fonts() if fonts is None else fonts
    if not fonts:
        render_letters(1, seed, fonts)  # raises the "no usable fonts" error
    path = None
    if cache is not None:
        path = cache / "letters" / f"letters-{_cache_key(n_train, n_test, seed, fonts, size)}.npz"
        if path.exists():
            try:
                with np.load(path) as z:
                    data = {k: z[k] for k in z.files}
                data["fonts"] = [str(f) for f in data["fonts"]]
                data["cache_path"] = path
                return data
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable letters cache %s", path)
    # Independent streams for train and test from one seed.
    train_seed, test_seed = (
        int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2)
    )

    def part(name: str) -> Progress | None:
        return None if progress is None else lambda st, d, t: progress(f"{name} {st}", d, t)

    tr_x, tr_y, _ = render_letters(n_train, train_seed, fonts, size, progress=part("train"))
    te_x, te_y, _ = render_letters(n_test, test_seed, fonts, size, progress=part("test"))
    data = {
        "train_images": tr_x,
        "train_labels": tr_y,
        "test_images": te_x,
        "test_labels": te_y,
        "fonts": [f.name for f in fonts],
    }
    if path is not None:
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in data.items()})
    data["cache_path"] = path
    return data


def export_letters(
    out: str | Path,
    n_train: int = 100000,
    n_test: int = 10000,
    seed: int = 0,
    fonts: list[FontInfo] | None = None,
    cache: Path | None = None,
    progress: Progress | None = None,
) -> dict:
    """Render letters (as :func:`load_letters` does, ``progress`` included) and write them in
    notMNIST's IDX layout.

    Writes ``out/notMNIST/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (each file atomically)
    and ``out/notMNIST/fonts.txt``, so that the ``notmnist`` dataset reads them with
    ``data_root=out``: a large rendered source set travels to a machine without these fonts (a
    GPU box, say) as plain files. Returns ``{"folder", "n_train", "n_test", "fonts"}``.
    """
    from dwp.data.readers import write_idx

    if n_train < 10 or n_test < 10:
        raise DWPError(f"need at least 10 train and 10 test letters, got {n_train} / {n_test}")
    fonts = find_fonts() if fonts is None else fonts
    data = load_letters(n_train, n_test, seed, fonts=fonts, cache=cache, progress=progress)
    folder = Path(out) / "notMNIST"
    for prefix, part in (("train", "train"), ("t10k", "test")):
        arrays = {
            "images-idx3": data[f"{part}_images"][:, 0],
            "labels-idx1": data[f"{part}_labels"].astype(np.uint8),
        }
        for kind, array in arrays.items():
            with atomic_path(folder / f"{prefix}-{kind}-ubyte.gz") as tmp:
                write_idx(tmp, array)
    with atomic_path(folder / "fonts.txt") as tmp:
        tmp.write_text("".join(f"{name}\n" for name in data["fonts"]))
    return {"folder": folder, "n_train": n_train, "n_test": n_test, "fonts": len(data["fonts"])}
