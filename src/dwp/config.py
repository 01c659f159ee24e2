"""Every choice and default of dwp, in one torch-free module.

The library's config dataclasses (one per component, nanoGPT-style) and the string options
(``StrEnum`` members, each with a docstring) live here, so that the CLI takes its choices and
defaults from the same objects the library validates with, and ``dwp --help`` does not import
torch. Each config checks itself at construction (:func:`require`) and raises
:class:`~dwp.errors.DWPError` with the names of the fields that are out of range.

Each component re-exports its config (``dwp.train.bnn.BNNConfig`` is :class:`BNNConfig`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path

from dwp.errors import DWPError

__all__ = [
    "ALL_METHODS",
    "ARCHS",
    "BAYES_METHODS",
    "DEFAULT_MIN_NORM",
    "KERNEL_PRIOR_METHODS",
    "L2_METHODS",
    "PRESETS",
    "Arch",
    "BNNConfig",
    "ClassificationConfig",
    "ConvergenceConfig",
    "ConvergenceModel",
    "ExecutorKind",
    "FeaturesConfig",
    "Init",
    "KernelConfig",
    "KernelEstimator",
    "Method",
    "Preset",
    "PresetName",
    "PriorInit",
    "PriorKind",
    "PriorScale",
    "PriorTrainConfig",
    "Sampling",
    "Shift",
    "SourceConfig",
    "check_init_sources",
    "cifarnet_hidden",
    "defaults",
    "load_preset",
    "parse_inits",
    "require",
    "resolve_arch",
    "stage_configs",
    "valid_hidden",
]

log = logging.getLogger(__name__)

BNN_FORMAT_VERSION = 1
EXPERIMENT_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- choices
class Arch(StrEnum):
    """A network family."""

    auto = "auto"
    """Chosen by the images: CIFARNet for 3-channel 32x32 images, FConv otherwise."""
    fconv = "fconv"
    """FConv: two conv layers (7x7, 5x5) and a linear classifier (MNIST-like images)."""
    cifarnet = "cifarnet"
    """CIFARNet: conv layers of 7x7, 5x5, 5x5, 5x5 kernels with BatchNorm (CIFAR)."""
    vgg = "vgg"
    """VGG-style: two blocks of two 3x3 convs, max-pool after each, a linear classifier."""


#: The concrete network families (:class:`Arch` without ``auto``).
ARCHS = tuple(a.value for a in Arch if a is not Arch.auto)


class PriorKind(StrEnum):
    """The prior over the conv kernels."""

    normal = "normal"
    """Standard normal N(0, 1) per weight (closed-form KL)."""
    log_uniform = "log-uniform"
    """Log-uniform, with the posterior N(mu, alpha mu^2) of sparse variational dropout."""
    dwp = "dwp"
    """The deep weight prior: one kernel VAE per conv layer (``prior_dirs``)."""
    gaussian = "gaussian"
    """A Gaussian over each kernel with a full covariance (closed-form KL): ``prior_dirs`` of
    Gaussian priors, or of kernel VAEs (then fitted to the kernels each VAE was fitted to)."""


class PriorScale(StrEnum):
    """How a learned kernel prior's scale is set for the target net."""

    data = "data"
    """Moved so that its kernels give unit-std pre-activations on the training images
    (:func:`dwp.priors.data_scales`)."""
    none = "none"
    """As fitted (the source kernels' scale)."""


class KernelEstimator(StrEnum):
    """What stands in for the kernels a fast-mode DWP step leaves out (``dwp_kernel_batch``)."""

    cache = "cache"
    """A second-order model of each one's last estimate (the default)."""
    subsample = "subsample"
    """Nothing: the fresh kernels' sum times M/B, an unbiased estimate of the exact bound."""


class Sampling(StrEnum):
    """How a training step samples the Bayesian layers."""

    local = "local"
    """Local reparameterization: fresh pre-activation noise per example (the paper's)."""
    weight = "weight"
    """One weight draw per batch, shared by its examples: one conv per layer, not two."""


class Shift(StrEnum):
    """A dataset shift of the uncertainty evaluation."""

    rotate = "rotate"
    """The test images rotated by 0, 15, ..., 180 degrees (:data:`dwp.data.shift.ROTATIONS`)."""


class Init(StrEnum):
    """How conv kernels start."""

    xavier = "xavier"
    """Xavier-normal."""
    kaiming = "kaiming"
    """Kaiming-normal (He et al. 2015) for the nets' LeakyReLU(0.01): std sqrt(2 / (1 + 0.01^2)
    / fan_in), the usual init of modern CNNs."""
    dwp = "dwp"
    """Decoder means of the layer's deep weight prior at z ~ N(0, I) (the paper's)."""
    dwp_draw = "dwp-draw"
    """Draws of the layer's deep weight prior, w ~ p(w | z) at z ~ N(0, I): the prior's own
    samples, its decoder variance included. Where the decoder variance carries much of the
    kernels' variety (3x3 kernels), the means are less varied than the kernels and the draws
    are not."""
    filters = "filters"
    """Random kernels of the source nets' kernel set for the layer's kernel size."""

    @property
    def uses_prior(self) -> bool:
        """Whether the kernels are samples of a learned kernel prior (``dwp``, ``dwp-draw``)."""
        return self in (Init.dwp, Init.dwp_draw)


class PriorInit(StrEnum):
    """The inits that are samples of a learned kernel prior (see :class:`Init`)."""

    dwp = "dwp"
    """Decoder means at z ~ N(0, I) (the paper's)."""
    dwp_draw = "dwp-draw"
    """Draws w ~ p(w | z) at z ~ N(0, I)."""


class Method(StrEnum):
    """A method of the classification sweep."""

    dwp = "dwp"
    """Bayesian net under the deep weight prior, posterior means from prior samples."""
    log_uniform = "log-uniform"
    """Bayesian net under the log-uniform prior, from Xavier."""
    normal = "normal"
    """Bayesian net under the standard normal prior, from Xavier."""
    gaussian = "gaussian"
    """Bayesian net under the Gaussian kernel prior fitted to the DWP's kernels, from its
    samples (the control: is the VAE needed?)."""
    l2_xavier = "l2-xavier"
    """Deterministic net with L2 on the conv parameters, from Xavier."""
    l2_dwp = "l2-dwp"
    """Deterministic net with L2, kernels from prior samples."""
    l2_kaiming = "l2-kaiming"
    """Deterministic net with L2, from Kaiming-normal (not in the default sweep)."""
    ensemble = "ensemble"
    """A deep ensemble (Lakshminarayanan et al. 2017): ``ensemble_size`` l2-xavier nets from
    different inits, their predictive probabilities averaged (not in the default sweep)."""


BAYES_METHODS = ("dwp", "gaussian", "log-uniform", "normal")
#: The methods whose nets use the learned priors (``prior_dirs``) and their scale rule.
KERNEL_PRIOR_METHODS = ("dwp", "gaussian", "l2-dwp")
L2_METHODS = ("l2-xavier", "l2-dwp")
#: Every method of the classification sweep (the default sweep: the paper's, without the
#: ensemble and the Kaiming-init L2 net).
ALL_METHODS = BAYES_METHODS + L2_METHODS + ("l2-kaiming", "ensemble")


class ConvergenceModel(StrEnum):
    """What the convergence experiment trains."""

    classifier = "classifier"
    """The ordinary classifier; test accuracy."""
    vae = "vae"
    """A conv VAE whose encoder convs are FConv's (28x28 grey images); test ELBO."""


class ExecutorKind(StrEnum):
    """Where a sweep's runs execute."""

    local = "local"
    """This machine: one run after another, or worker processes."""
    ray = "ray"
    """A Ray cluster: one Ray task per run."""


#: Default widths per family and role (``source``: the source nets; ``target``: the nets
#: trained on the target set). CIFARNet's are its width scale k = 1: 128k, 256k, 256k.
DEFAULT_HIDDEN = {
    ("fconv", "source"): (256, 512),
    ("fconv", "target"): (32, 128),
    ("cifarnet", "source"): (128, 256, 256),
    ("cifarnet", "target"): (128, 256, 256),
    ("vgg", "source"): (32, 64),
    ("vgg", "target"): (32, 64),
}

#: The paper's kernel VAE per kernel size: (latent size z, hidden width h).
VAE_DEFAULTS = {7: (2, 32), 5: (4, 64), 3: (2, 32)}

#: Default pruning threshold on a kernel's L2 norm. Kernels the L2 penalty has switched off end
#: up with norms of 1e-4..1e-3 (Adam's steps shrink with the learning rate, which decays to 0);
#: kernels in use have norms of 0.05 and more (5x5) or 0.5 and more (7x7).
DEFAULT_MIN_NORM = 1e-2


def cifarnet_hidden(k: float) -> tuple[int, int, int]:
    """CIFARNet's widths at scale ``k``: ``(128k, 256k, 256k)``, at least 1 each."""
    return tuple(max(1, round(h * k)) for h in (128, 256, 256))


def resolve_arch(arch: str, channels: int, size: int) -> str:
    """``arch`` itself, or for ``auto`` the family that fits images of ``channels`` x ``size``
    x ``size``: CIFARNet for 3-channel 32x32 images, FConv otherwise."""
    if arch == "auto":
        return "cifarnet" if (channels, size) == (3, 32) else "fconv"
    if arch not in ARCHS:
        raise DWPError(f"unknown network {arch!r}; expected auto or one of {', '.join(ARCHS)}")
    return arch


def valid_hidden(hidden: tuple[int, ...] | None) -> bool:
    """Whether ``hidden`` can be widths of some family (checked before the dataset is known)."""
    return hidden is None or (len(hidden) in (2, 3) and min(hidden) >= 1)


def parse_inits(inits: Iterable[str]) -> tuple[str, ...]:
    """Init names as :class:`Init` values; a one-line error for an unknown one."""
    try:
        return tuple(Init(i).value for i in inits)
    except ValueError as exc:
        raise DWPError(str(exc)) from None


def check_init_sources(inits, prior_dirs, kernel_dirs) -> None:
    """``dwp`` needs priors; ``filters`` needs kernel sets (or priors, whose training kernels
    serve)."""
    for init in ("dwp", "dwp-draw"):
        if init in inits and not prior_dirs:
            raise DWPError(f"init {init} needs --prior-dirs (one prior directory per conv layer)")
    if "filters" in inits and not (kernel_dirs or prior_dirs):
        raise DWPError("init filters needs --kernel-dirs (or --prior-dirs of trained priors)")


def require(what: str, source=None, /, **checks: bool) -> None:
    """Raise :class:`DWPError` naming every check that is False: ``invalid WHAT: a = 1, b =
    inf out of range`` (the values read from ``source``'s attributes where it has them). The
    one validation helper of the config classes."""
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        shown = [f"{n} = {getattr(source, n)!r}" if hasattr(source, n) else n for n in bad]
        raise DWPError(f"invalid {what}: {', '.join(shown)} out of range")


def positive(x) -> bool:
    """A finite number > 0 (rejects NaN and inf, which compare oddly)."""
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def non_negative(x) -> bool:
    """A finite number >= 0."""
    return isinstance(x, int | float) and math.isfinite(x) and x >= 0


def seed_ok(x) -> bool:
    """A seed: an integer in 0 .. 2**32 - 1 (what numpy's and torch's generators both take)."""
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32


def defaults(config_class) -> dict:
    """The default value of every field of a config dataclass that has one."""
    out = {}
    for f in fields(config_class):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def _ints(values) -> tuple[int, ...] | None:
    return None if values is None else tuple(int(v) for v in values)


def _plain_name(name) -> bool:
    """Whether ``name`` is a usable single directory name (no separators, not ``.``/``..``)."""
    import re

    return (
        isinstance(name, str)
        and name not in (".", "..")
        and bool(re.fullmatch(r"[A-Za-z0-9_.-]+", name))
    )


def _paths(values) -> tuple[str, ...]:
    """Directories as absolute paths (a run's config then names them wherever it is read); the
    name of a shipped prior or kernel layer (``letters-fconv/conv1``, no such path here) as it
    is."""
    from dwp.data.shipped import is_shipped_name

    return tuple(p if is_shipped_name(p) else str(Path(p).resolve()) for p in map(str, values))


def _lists(d: dict, keys: Iterable[str]) -> dict:
    for k in keys:
        d[k] = None if d[k] is None else list(d[k])
    return d


def _choice(enum: type[StrEnum], value, name: str) -> str:
    """``value`` as one of ``enum``'s values, or a one-line error naming them."""
    try:
        return enum(value).value
    except ValueError:
        raise DWPError(
            f"{name}: {value!r} is not one of {', '.join(e.value for e in enum)}"
        ) from None


def _dropped(option: str, value, default, why: str) -> None:
    """Say so when a config ignores a value it was given (a value equal to the default is
    what every caller passes, and not worth a line)."""
    if value is not None and value != default:
        log.warning("%s = %r is ignored: %s", option, value, why)


# --------------------------------------------------------------------------- stage configs
@dataclass
class SourceConfig:
    """How to train a set of source nets. Net ``i`` uses seed ``seed + i``."""

    dataset: str = "letters"
    nets: int = 100
    hidden: tuple[int, ...] | None = None  # None: the family's (FConv 256/512, CIFARNet k=1)
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    l2: float = 1e-3
    seed: int = 0
    n_train: int | None = None  # use only the first n training images (None: all)
    arch: str = "auto"  # fconv, cifarnet, or auto (by the dataset's image shape)

    def __post_init__(self):
        self.hidden = _ints(self.hidden)
        require(
            "source config",
            self,
            nets=self.nets >= 1,
            epochs=self.epochs >= 1,
            batch_size=self.batch_size >= 1,
            lr=positive(self.lr),
            l2=non_negative(self.l2),
            seed=seed_ok(self.seed),
            hidden=valid_hidden(self.hidden),
            arch=self.arch in (*ARCHS, "auto"),
            n_train=self.n_train is None or self.n_train >= 1,
        )


@dataclass
class KernelConfig:
    """How to turn source nets into kernel datasets."""

    min_norm: float = DEFAULT_MIN_NORM
    test_fraction: float = 0.2
    # None: every conv layer; else names or glob patterns (``features.*``) of conv layers
    layers: tuple[str, ...] | None = None
    max_kernels: int | None = None  # per layer and part, a random subset (seeded) when exceeded
    seed: int = 0
    kernel_size: int | None = None  # only the layers of k x k kernels
    # one kernel set of this name from all the chosen layers (one prior for several layers)
    merge: str | None = None

    def __post_init__(self):
        if self.kernel_size is not None and not (
            isinstance(self.kernel_size, int) and self.kernel_size >= 1
        ):
            raise DWPError(f"--kernel-size must be a positive integer, got {self.kernel_size}")
        if not non_negative(self.min_norm):
            raise DWPError(f"--min-norm must be a finite number >= 0, got {self.min_norm}")
        if not seed_ok(self.seed):
            raise DWPError(f"--seed must be an integer in 0..2**32-1, got {self.seed}")
        if not 0 < self.test_fraction < 1:
            raise DWPError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if self.max_kernels is not None and self.max_kernels < 1:
            raise DWPError(f"--max-kernels must be >= 1, got {self.max_kernels}")
        if self.merge is not None and not _plain_name(self.merge):
            raise DWPError(
                f"--merge must be a plain directory name (letters, digits, - _ .), got "
                f"{self.merge!r}"
            )


@dataclass
class PriorTrainConfig:
    """How to train a kernel VAE.

    ``min_steps``: small kernel sets get more epochs than ``epochs`` so that training takes at
    least this many optimisation steps (see :meth:`epochs_for`); 0 keeps exactly ``epochs``.
    ``val_fraction``: share of the training kernels held out to choose the best epoch (0: keep
    the last epoch's weights and train on all kernels, as the paper did).
    ``min_norm``: leave out train and test kernels whose L2 norm is below it (0: none). Why: a
    kernel set with many small kernels gives a VAE whose density peaks at the zero kernel, and a
    mean-field Bayesian layer under that prior (the KL is mode-seeking) shrinks its kernels
    towards zero; ``zero_kernel_elbo`` shows it.
    """

    epochs: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    min_steps: int = 0
    val_fraction: float = 0.0
    min_norm: float = 0.0

    def __post_init__(self):
        if not (self.min_norm >= 0 and math.isfinite(self.min_norm)):
            raise DWPError(f"min_norm must be a number >= 0, got {self.min_norm}")
        if not 0 <= self.val_fraction < 1:
            raise DWPError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        require(
            "prior training config",
            self,
            epochs=self.epochs >= 1,
            batch_size=self.batch_size >= 1,
            lr=positive(self.lr),
            seed=seed_ok(self.seed),
            min_steps=self.min_steps >= 0,
        )

    def epochs_for(self, n: int) -> int:
        """Epochs to run on ``n`` kernels: ``epochs``, or more if ``epochs`` epochs would take
        fewer than ``min_steps`` steps. (The paper's 300 epochs of 1769 raw kernels are only
        4200 steps, and the ELBO still rises when the learning rate reaches 0; on standardised
        kernels more steps mostly overfit to the training nets.)"""
        steps_per_epoch = -(-n // self.batch_size)
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))


@dataclass
class BNNConfig:
    """One Bayesian CNN run. ``prior_dirs``: one prior directory per conv layer, in order
    (needed by ``prior='dwp'`` and ``init='dwp'``); ``kernel_dirs``: one kernel-set directory
    (or ``.npy`` file) per conv layer for ``init='filters'`` (default: the kernels each prior
    was trained on). ``eval_every`` None: 10 evaluations per run.

    ``dwp_kernel_batch`` applies to the DWP prior only and ``normal_std`` to the normal prior
    only; under another prior they are stored as None / 1.0, and a value other than the
    default is logged as ignored."""

    dataset: str = "mnist5k"
    examples: int | None = 50
    split_seed: int = 0
    prior: PriorKind = PriorKind.normal
    prior_dirs: tuple[str, ...] = ()
    kernel_dirs: tuple[str, ...] = ()
    init: Init = Init.xavier
    hidden: tuple[int, ...] | None = None  # None: the family's (FConv 32/128, CIFARNet k=1)
    epochs: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    eval_every: int | None = None
    ens_samples: int = 10
    dwp_samples: int = 1
    dwp_kernel_batch: int | None = 256  # None: the paper's exact mode
    dwp_estimator: str = "cache"  # with a kernel batch: cache (the others' model) or subsample
    sampling: str = "local"  # Sampling: local reparameterization, or one weight draw per batch
    # how the learned priors (dwp, gaussian, and the dwp init's) are scaled: data or none
    prior_scale: PriorScale = PriorScale.data
    train_encoder: bool = False
    log_sigma2_init: float = -10.0
    normal_std: float = 1.0
    arch: str = "auto"  # fconv, cifarnet, or auto (by the dataset's image shape)
    test_examples: int | None = None  # test images scored (load_dataset's subset; None: all)
    # a user's architecture instead of FConv / CIFARNet: "package.module:factory" or
    # "file.py:factory", called with those of in_channels, num_classes, image_size it takes
    model: str | None = None
    format_version: int = field(default=BNN_FORMAT_VERSION)

    def __post_init__(self):
        if self.model is not None:
            if not (isinstance(self.model, str) and ":" in self.model):
                raise DWPError(
                    f"--model must be package.module:factory or file.py:factory, got {self.model!r}"
                )
            if self.init is Init.filters or self.init == "filters":
                raise DWPError("--init filters applies to FConv / CIFARNet, not to --model")
            if self.hidden is not None or self.arch != "auto":
                raise DWPError("--hidden, --width-scale and --arch apply to FConv / CIFARNet, "
                               "not to --model")  # fmt: skip
            if self.model.split(":")[0].endswith(".py"):  # a file: by absolute path
                path, _, attr = self.model.rpartition(":")
                self.model = f"{Path(path).resolve()}:{attr}"
        try:
            self.prior = PriorKind(self.prior)
            self.init = Init(self.init)
            self.prior_scale = PriorScale(self.prior_scale)
        except ValueError as exc:
            raise DWPError(str(exc)) from None
        if not self.uses_kernel_priors:  # recorded as what it does: no learned prior to move
            self.prior_scale = PriorScale.none
        if self.prior is not PriorKind.dwp:
            _dropped("dwp_kernel_batch", self.dwp_kernel_batch, 256,
                     f"the {self.prior.value} prior has a closed-form KL")  # fmt: skip
            self.dwp_kernel_batch = None  # only the DWP's KL uses it
        if self.prior is not PriorKind.dwp or self.dwp_kernel_batch is None:
            _dropped("dwp_estimator", self.dwp_estimator, "cache",
                     "only the DWP's kernel batch has an estimator")  # fmt: skip
            self.dwp_estimator = "cache"
        self.dwp_estimator = _choice(KernelEstimator, self.dwp_estimator, "dwp_estimator")
        self.sampling = _choice(Sampling, self.sampling, "sampling")
        if self.prior is PriorKind.dwp and self.train_encoder and self.dwp_kernel_batch is not None:
            raise DWPError(
                "training the DWP encoder needs the exact mode (--exact, dwp_kernel_batch=None): "
                "the fast mode caches estimates of a frozen encoder"
            )
        if self.prior is not PriorKind.normal:
            _dropped("normal_std", self.normal_std, 1.0, "only the normal prior has a std")
            self.normal_std = 1.0  # only the normal prior uses it
        self.hidden = _ints(self.hidden)
        if self.model is not None and self.prior is PriorKind.dwp and not self.prior_dirs:
            self.prior_dirs = ("letters-fconv",)  # the shipped 7x7 and 5x5 priors
        self.prior_dirs = _paths(self.prior_dirs)
        self.kernel_dirs = _paths(self.kernel_dirs)
        require(
            "Bayesian CNN config",
            self,
            examples=self.examples is None or self.examples >= 1,
            split_seed=seed_ok(self.split_seed),
            seed=seed_ok(self.seed),
            epochs=self.epochs >= 1,
            batch_size=self.batch_size >= 1,
            lr=positive(self.lr),
            log_sigma2_init=isinstance(self.log_sigma2_init, int | float)
            and math.isfinite(self.log_sigma2_init),
            hidden=valid_hidden(self.hidden),
            arch=self.arch in (*ARCHS, "auto"),
            eval_every=self.eval_every is None or self.eval_every >= 1,
            ens_samples=self.ens_samples >= 1,
            dwp_samples=self.dwp_samples >= 1,
            dwp_kernel_batch=self.dwp_kernel_batch is None or self.dwp_kernel_batch >= 1,
            normal_std=positive(self.normal_std),
            test_examples=self.test_examples is None
            or (isinstance(self.test_examples, int) and self.test_examples >= 1),
        )
        if self.uses_kernel_priors and not self.prior_dirs:
            raise DWPError(
                f"prior {self.prior.value} with init {self.init.value} needs --prior-dirs "
                "(one prior directory per conv layer)"
            )
        if self.init is Init.filters and not (self.kernel_dirs or self.prior_dirs):
            raise DWPError("init filters needs --kernel-dirs (or --prior-dirs of trained priors)")

    @property
    def epochs_between_evals(self) -> int:
        """Epochs between evaluations: ``eval_every``, or a tenth of the run."""
        return self.eval_every or max(1, self.epochs // 10)

    @property
    def uses_kernel_priors(self) -> bool:
        """Whether the run uses the learned priors of ``prior_dirs`` (as prior or init)."""
        return self.prior in (PriorKind.dwp, PriorKind.gaussian) or self.init.uses_prior

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(prior=self.prior.value, init=self.init.value, prior_scale=self.prior_scale.value)
        return _lists(d, ("hidden", "prior_dirs", "kernel_dirs"))


@dataclass
class ClassificationConfig:
    """One classification sweep. Bayesian DWP runs start from DWP samples (the reference's
    command), the other priors from Xavier; every method trains ``epochs`` epochs with Adam
    (lr decayed linearly to 0) on the whole few-shot set per step."""

    dataset: str = "mnist5k"
    examples: tuple[int, ...] = (50, 100, 200, 500, 1000)
    splits: tuple[int, ...] = tuple(range(10))
    methods: tuple[str, ...] = BAYES_METHODS + L2_METHODS
    epochs: int = 1000
    hidden: tuple[int, ...] | None = None  # None: the family's (FConv 32/128, CIFARNet k=1)
    lr: float = 1e-3
    prior_dirs: tuple[str, ...] = ()
    dwp_kernel_batch: int | None = 256  # None: the exact mode
    dwp_estimator: str = "cache"  # BNNConfig.dwp_estimator
    prior_scale: str = "data"  # PriorScale of the learned priors (dwp, gaussian, l2-dwp)
    sampling: str = "local"  # BNNConfig.sampling of the Bayesian nets
    l2: float = 1e-3  # weight of the sum of squares of the conv parameters (mean cross-entropy)
    ensemble_size: int = 5  # nets of the ``ensemble`` method
    ens_samples: int = 10
    # the uncertainty evaluation of every run (none by default): out-of-distribution sets
    # (catalog names) and rotation angles of the test images (degrees)
    ood: tuple[str, ...] = ()
    rotations: tuple[float, ...] = ()
    shift_examples: int | None = None  # test images rotated (a seeded subset; None: all)
    arch: str = "auto"  # fconv, cifarnet, or auto (by the dataset's image shape)
    test_examples: int | None = None  # test images scored (load_dataset's subset; None: all)
    dwp_init: str = "dwp"  # what the learned priors' methods start from: dwp or dwp-draw
    format_version: int = field(default=EXPERIMENT_FORMAT_VERSION)

    def __post_init__(self):
        self.examples = _ints(self.examples)
        self.splits = _ints(self.splits)
        self.methods = tuple(str(m) for m in self.methods)
        self.ood = tuple(dict.fromkeys(str(o) for o in self.ood))
        self.rotations = tuple(float(a) for a in self.rotations)
        self.hidden = _ints(self.hidden)
        self.prior_dirs = _paths(self.prior_dirs)
        self.prior_scale = _choice(PriorScale, self.prior_scale, "prior_scale")
        self.sampling = _choice(Sampling, self.sampling, "sampling")
        self.dwp_init = _choice(PriorInit, self.dwp_init, "dwp_init")
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            raise DWPError(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
        require(
            "classification config",
            self,
            examples=len(self.examples) >= 1 and min(self.examples) >= 1,
            splits=len(self.splits) >= 1
            and len(set(self.splits)) == len(self.splits)
            and all(seed_ok(v) for v in self.splits),
            methods=len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods),
            epochs=self.epochs >= 1,
            hidden=valid_hidden(self.hidden),
            arch=self.arch in (*ARCHS, "auto"),
            lr=positive(self.lr),
            l2=non_negative(self.l2),
            ens_samples=self.ens_samples >= 1,
            ensemble_size=self.ensemble_size >= 1,
            dwp_kernel_batch=self.dwp_kernel_batch is None or self.dwp_kernel_batch >= 1,
            shift_examples=self.shift_examples is None
            or (isinstance(self.shift_examples, int) and self.shift_examples >= 1),
            test_examples=self.test_examples is None
            or (isinstance(self.test_examples, int) and self.test_examples >= 1),
        )
        if any(m in KERNEL_PRIOR_METHODS for m in self.methods) and not self.prior_dirs:
            raise DWPError(
                "methods dwp, gaussian and l2-dwp need --prior-dirs (one per conv layer)"
            )

    def to_dict(self) -> dict:
        return _lists(asdict(self), ("examples", "splits", "methods", "hidden", "prior_dirs",
                                     "ood", "rotations"))  # fmt: skip

    def tasks(self) -> list[dict]:
        """Every (method, examples, split) run, split by split (the smallest sets first within
        one), so that a sweep stopped part-way has whole curves for the splits it finished."""
        return [{"method": m, "examples": n, "split": s}
                for s in self.splits for n in self.examples for m in self.methods]  # fmt: skip


@dataclass
class ConvergenceConfig:
    """One convergence experiment. Seed ``s`` draws the kernels and the other parameters' init
    from ``s`` and orders the batches with ``s + 1`` (the VAE's noise: ``s + 2``), the same for
    every init. ``model``: ``classifier`` (test accuracy) or ``vae`` (test ELBO)."""

    dataset: str = "mnist5k"
    examples: int | None = None  # training examples, stratified (None: the whole train part)
    hidden: tuple[int, ...] | None = None  # None: the family's (FConv 32/128, CIFARNet k=1)
    inits: tuple[str, ...] = ("xavier", "dwp", "filters")
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 300
    batch_size: int = 256
    lr: float = 1e-3  # Adam, constant
    eval_every: int = 10
    prior_dirs: tuple[str, ...] = ()
    kernel_dirs: tuple[str, ...] = ()
    arch: str = "auto"  # fconv, cifarnet, or auto (by the dataset's image shape)
    model: str = "classifier"
    z_dim: int = 16  # the VAE's latent size
    format_version: int = field(default=EXPERIMENT_FORMAT_VERSION)

    def __post_init__(self):
        self.hidden = _ints(self.hidden)
        models = tuple(m.value for m in ConvergenceModel)
        if self.model not in models:
            raise DWPError(f"unknown convergence model {self.model!r}; choose from {models}")
        self.seeds = _ints(self.seeds)
        self.inits = parse_inits(self.inits)
        self.prior_dirs = _paths(self.prior_dirs)
        self.kernel_dirs = _paths(self.kernel_dirs)
        require(
            "convergence config",
            self,
            examples=self.examples is None or self.examples >= 1,
            hidden=valid_hidden(self.hidden),
            arch=self.arch in (*ARCHS, "auto"),
            inits=len(self.inits) >= 1 and len(set(self.inits)) == len(self.inits),
            seeds=len(self.seeds) >= 1
            and len(set(self.seeds)) == len(self.seeds)
            and all(seed_ok(v) for v in self.seeds),
            steps=self.steps >= 1,
            batch_size=self.batch_size >= 1,
            lr=positive(self.lr),
            eval_every=self.eval_every >= 1,
            z_dim=self.z_dim >= 1,
        )
        check_init_sources(self.inits, self.prior_dirs, self.kernel_dirs)

    def to_dict(self) -> dict:
        return _lists(asdict(self), ("hidden", "inits", "seeds", "prior_dirs", "kernel_dirs"))

    @property
    def metric(self) -> str:
        """The recorded test metric: ``test_acc`` or ``test_elbo``."""
        return "test_elbo" if self.model == "vae" else "test_acc"


@dataclass
class FeaturesConfig:
    """One random-feature experiment. Seed ``s`` draws the kernels and the trained parameters'
    init from ``s`` and orders the batches with ``s + 1``, the same for every init."""

    dataset: str = "mnist5k"
    examples: int | None = None  # training examples, stratified (None: the whole train part)
    base_hidden: tuple[int, ...] | None = None  # widths at scale 1 (None: the source nets')
    scales: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
    inits: tuple[str, ...] = ("xavier", "dwp", "filters")
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-2  # Adam, decayed linearly to 0 (only BatchNorm and the classifier train)
    prior_dirs: tuple[str, ...] = ()
    kernel_dirs: tuple[str, ...] = ()
    arch: str = "auto"  # fconv, cifarnet, or auto (by the dataset's image shape)
    format_version: int = field(default=EXPERIMENT_FORMAT_VERSION)

    def __post_init__(self):
        self.base_hidden = _ints(self.base_hidden)
        self.scales = tuple(float(k) for k in self.scales)
        self.seeds = _ints(self.seeds)
        self.inits = parse_inits(self.inits)
        self.prior_dirs = _paths(self.prior_dirs)
        self.kernel_dirs = _paths(self.kernel_dirs)
        require(
            "random-feature config",
            self,
            examples=self.examples is None or self.examples >= 1,
            base_hidden=valid_hidden(self.base_hidden),
            arch=self.arch in (*ARCHS, "auto"),
            scales=len(self.scales) >= 1 and all(0 < k <= 64 for k in self.scales),
            inits=len(self.inits) >= 1 and len(set(self.inits)) == len(self.inits),
            seeds=len(self.seeds) >= 1
            and len(set(self.seeds)) == len(self.seeds)
            and all(seed_ok(v) for v in self.seeds),
            epochs=self.epochs >= 1,
            batch_size=self.batch_size >= 1,
            lr=positive(self.lr),
        )
        check_init_sources(self.inits, self.prior_dirs, self.kernel_dirs)

    def to_dict(self) -> dict:
        keys = ("base_hidden", "scales", "inits", "seeds", "prior_dirs", "kernel_dirs")
        return _lists(asdict(self), keys)


# --------------------------------------------------------------------------- presets
@dataclass
class Preset:
    """Everything a reproduction runs. The ``*_args`` dicts are keyword arguments of the stage's
    config class (:class:`SourceConfig`, :class:`KernelConfig`, :class:`PriorTrainConfig` per
    layer, and the experiments' configs; their dataset and prior directories are filled in by
    ``dwp reproduce``). ``kernels``: a kernel-set directory or the name of a shipped set
    (``dwp.kernels.shipped_kernel_sets``); the source and kernel stages are then skipped.
    :func:`stage_configs` checks every stage's arguments at once."""

    name: str
    description: str
    source_dataset: str
    target_dataset: str
    kernels: str | None = None  # kernel sets to use instead of training source nets
    # a shipped prior set (dwp/data/priors/NAME) whose priors were fitted with prior_args to
    # these kernels: the priors stage copies them instead of fitting (--refit-priors fits)
    priors: str | None = None
    source_args: dict = field(default_factory=dict)
    kernel_args: dict = field(default_factory=dict)
    # layer -> PriorTrainConfig kwargs, optionally "z_dim" / "hidden" of the VAE (default: the
    # paper's for the kernel size) and "median_norm": the Bayesian nets then use the fitted prior
    # moved to kernels of that median norm (see dwp.priors.rescale_prior)
    prior_args: dict = field(default_factory=dict)
    classification_args: dict = field(default_factory=dict)
    convergence_args: dict = field(default_factory=dict)
    features_args: dict = field(default_factory=dict)
    # the VAE variant of convergence (ConvergenceConfig with model="vae"); 28x28 targets only
    vae_convergence_args: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


#: The keys of a layer's ``prior_args`` that shape the VAE or move the prior (the others are
#: :class:`PriorTrainConfig`'s).
PRIOR_SHAPE_KEYS = ("median_norm", "z_dim", "hidden")


def _stage_config(preset: Preset, key: str, cls, args, **filled):
    """``cls(**filled, **args)``, or a one-line error naming the preset, the ``*_args`` field
    and the first key that is not an option of ``cls`` (or is one the pipeline fills in)."""
    where = f"preset {preset.name}: {key}"
    if not isinstance(args, dict):
        raise DWPError(f"{where} must be an object of {cls.__name__} options, got {args!r}")
    known = {f.name for f in fields(cls)} - set(filled) - {"format_version"}
    for k in args:
        if k in filled:
            raise DWPError(f"{where} sets {k!r}, which the preset fills in itself")
        if k not in known:
            raise DWPError(
                f"{where} has an unknown key {k!r}; {cls.__name__} takes {', '.join(sorted(known))}"
            )
    try:
        return cls(**filled, **args)
    except (TypeError, ValueError, DWPError) as exc:  # a value of the wrong type or range
        raise DWPError(f"{where}: {exc}") from None


def stage_configs(
    preset: Preset,
    prior_dirs: tuple[str, ...] = ("conv1", "conv2"),
    bnn_prior_dirs: tuple[str, ...] | None = None,
) -> dict:
    """Every stage's config of ``preset``, built (and so validated) before any stage runs:
    ``source``, ``kernels``, ``priors`` (layer -> ``(PriorTrainConfig, vae_shape,
    median_norm)``), ``classification``, ``convergence``, ``vae-convergence``, ``features``.
    ``prior_dirs``: the priors as fitted (ordinary nets); ``bnn_prior_dirs``: the ones the
    Bayesian nets use (default: the same)."""
    bnn_prior_dirs = prior_dirs if bnn_prior_dirs is None else bnn_prior_dirs
    target = preset.target_dataset
    if not isinstance(preset.prior_args, dict):
        raise DWPError(f"preset {preset.name}: prior_args must map conv layers to options")
    priors = {}
    for layer, args in preset.prior_args.items():
        if not isinstance(args, dict):
            raise DWPError(f"preset {preset.name}: prior_args.{layer} must be an object")
        rest = {k: v for k, v in args.items() if k not in PRIOR_SHAPE_KEYS}
        cfg = _stage_config(preset, f"prior_args.{layer}", PriorTrainConfig, rest)
        shape = {"z_dim": args.get("z_dim"), "hidden": args.get("hidden")}
        priors[layer] = (cfg, shape, args.get("median_norm"))
    return {
        "source": _stage_config(preset, "source_args", SourceConfig, preset.source_args,
                                dataset=preset.source_dataset),
        "kernels": _stage_config(preset, "kernel_args", KernelConfig, preset.kernel_args),
        "priors": priors,
        "classification": _stage_config(preset, "classification_args", ClassificationConfig,
                                        preset.classification_args, dataset=target,
                                        prior_dirs=bnn_prior_dirs),
        "convergence": _stage_config(preset, "convergence_args", ConvergenceConfig,
                                     preset.convergence_args, dataset=target,
                                     prior_dirs=prior_dirs),
        "vae-convergence": _stage_config(preset, "vae_convergence_args", ConvergenceConfig,
                                         preset.vae_convergence_args, dataset=target,
                                         prior_dirs=prior_dirs, model="vae"),
        "features": _stage_config(preset, "features_args", FeaturesConfig, preset.features_args,
                                  dataset=target, prior_dirs=prior_dirs),
    }  # fmt: skip


#: The methods of the modern preset's classification sweep: every prior, and the deterministic
#: net from the three inits a modern CNN could start from.
MODERN_METHODS = ("dwp", "gaussian", "normal", "log-uniform", "l2-kaiming", "l2-xavier", "l2-dwp")

PRESETS: dict[str, Preset] = {
    "quick": Preset(
        name="quick",
        description="embedded data: the shipped priors letters-fconv (fitted to the shipped "
        "kernels of 13 paper-protocol source nets on letters rendered from 1331 fonts; "
        "--refit-priors fits them again, 3-4 more minutes), moved to each training set's scale "
        "(--prior-scale data) for the Bayesian nets; 5000 MNIST digits as the target, 2 splits "
        "at 50 and 100 examples, 300 epochs, with the Gaussian kernel prior as a control, each "
        "run's calibration, letters as out-of-distribution inputs and rotated digits; about "
        "14 minutes on 2 CPU cores",
        source_dataset="letters",
        target_dataset="mnist5k",
        kernels="letters-fconv",
        priors="letters-fconv",
        # Why these priors differ from the paper's (docs/design.md): wider latents (z 8 / 16
        # against 2 / 4), because the Bayesian kernels drift towards what the VAE reconstructs,
        # so its samples must be as varied as the kernels; min_norm, because many small kernels
        # put the prior's density peak at the zero kernel, where the mode-seeking KL pulls
        # every kernel. Their scale comes from the data (ClassificationConfig.prior_scale).
        prior_args={
            "conv1": {"epochs": 300, "z_dim": 8, "min_norm": 0.2},
            "conv2": {"epochs": 10, "z_dim": 16, "min_norm": 0.03},
        },
        # one weight draw per training batch (half the step of local reparameterization at
        # the same accuracy: docs/results.md), which pays for the uncertainty evaluation:
        # letters as the out-of-distribution set, 300 test digits rotated every 30 degrees
        classification_args={
            "examples": (50, 100),
            "splits": (0, 1),
            "epochs": 300,
            "sampling": "weight",
            "ood": ("letters",),
            "rotations": (0, 30, 60, 90, 120, 150, 180),
            "shift_examples": 300,
        },
        convergence_args={"seeds": (0, 1, 2), "steps": 200},
        features_args={"scales": (1 / 32, 1 / 16, 1 / 8), "seeds": (0, 1, 2), "epochs": 10},
        vae_convergence_args={"seeds": (0, 1, 2), "steps": 100, "batch_size": 128},
    ),
    "modern": Preset(
        name="modern",
        description="3x3 priors for modern CNNs: the shipped prior letters-vgg/all3x3 (one VAE "
        "fitted to every 3x3 kernel of six VGG-style source nets on letters rendered from 1331 "
        "fonts; --refit-priors fits it again, 2-3 more minutes) on every conv of a VGGNet 32/64; "
        "Fashion-MNIST as the target (the Debian package dataset-fashion-mnist): 5 splits at 50 "
        "and 100 examples, 300 epochs, scored on 2000 test images, with the Gaussian kernel prior "
        "as a control; the convergence of an ordinary VGGNet from Kaiming, DWP and source-filter "
        "kernels; its kernels as frozen random features",
        source_dataset="letters",
        target_dataset="fashion-mnist",
        kernels="letters-vgg",
        priors="letters-vgg",
        # what made the shipped kernels (used when `kernels` is cleared, e.g. by a preset file)
        source_args={"arch": "vgg", "hidden": (32, 64), "nets": 6, "epochs": 5},
        # one prior for every 3x3 conv: it served better downstream than one per depth
        # (docs/results.md, "3x3 priors")
        kernel_args={"merge": "all3x3"},
        prior_args={"all3x3": {"epochs": 60, "z_dim": 8, "min_norm": 0.08}},
        classification_args={
            "arch": "vgg",
            "examples": (50, 100),
            "splits": (0, 1, 2, 3, 4),
            "methods": MODERN_METHODS,
            "epochs": 300,
            "sampling": "weight",
            "test_examples": 2000,
        },
        convergence_args={
            "arch": "vgg",
            "inits": ("kaiming", "dwp", "filters"),
            "seeds": (0, 1, 2),
            "steps": 200,
            "eval_every": 20,
        },
        features_args={
            "arch": "vgg",
            "examples": 50,
            "base_hidden": (32, 64),
            "scales": (1.0,),
            "inits": ("xavier", "kaiming", "dwp", "filters"),
            "seeds": (0, 1, 2),
            "epochs": 300,
        },
    ),
    "paper": Preset(
        name="paper",
        description="the paper's protocol: 100 source nets 256/512 on notMNIST, 100 epochs; "
        "MNIST with 50..1000 examples, 10 splits, 10000 epochs (a GPU or a long night)",
        source_dataset="notmnist",
        target_dataset="mnist",
        source_args={"nets": 100, "hidden": (256, 512), "epochs": 100},
        kernel_args={},
        prior_args={"conv1": {"epochs": 300}, "conv2": {"epochs": 300}},
        classification_args={"epochs": 10000},
        convergence_args={"seeds": (0, 1, 2, 3, 4), "steps": 300},
        features_args={"seeds": (0, 1, 2), "epochs": 10},
        vae_convergence_args={"seeds": (0, 1, 2, 3, 4), "steps": 1000},
    ),
    "paper-cifar": Preset(
        name="paper-cifar",
        description="the paper's CIFAR experiments: CIFARNet (k = 1) source nets on CIFAR-100, "
        "one prior per conv layer; CIFAR-10 with 50 / 200 / 500 examples, 10 splits (the "
        "Bayesian CIFARNet variant, 1000 epochs: our choice, the paper does not say), random "
        "features at k = 1/8 .. 1, convergence; needs the CIFAR pickles and a GPU",
        source_dataset="cifar100",
        target_dataset="cifar10",
        source_args={"nets": 10, "epochs": 100},
        prior_args={f"conv{i}": {"epochs": 300} for i in range(1, 5)},
        classification_args={"examples": (50, 200, 500), "epochs": 1000},
        convergence_args={"seeds": (0, 1, 2, 3, 4), "steps": 500},
        features_args={"scales": (1 / 8, 1 / 4, 1 / 2, 1.0), "seeds": (0, 1, 2), "epochs": 10},
    ),
}

#: The names of the built-in presets, as a choice of ``dwp reproduce --preset``.
PresetName = StrEnum("PresetName", {name: name for name in PRESETS})
PresetName.__doc__ = "A built-in preset of ``dwp reproduce``."


def load_preset(path: str | Path) -> Preset:
    """A custom preset from a JSON file holding :class:`Preset`'s fields, with every stage's
    arguments checked (:func:`stage_configs`) before anything runs.

    With ``"base": NAME`` the file starts from the built-in preset NAME and says only what
    differs: a field it gives replaces the base's, except the ``*_args`` objects, which are
    merged key by key (``{"base": "modern", "name": "modern-500", "classification_args":
    {"examples": [500]}}`` is the modern preset at 500 examples; a key set to null takes the
    stage's default back)."""
    import json

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DWPError(f"{path} is not a readable JSON preset ({exc})") from None
    if not isinstance(d, dict):
        raise DWPError(f"{path}: a preset is a JSON object of dwp.config.Preset's fields")
    names = {f.name for f in fields(Preset)}
    unknown = sorted(set(d) - names - {"base"})
    if unknown:
        raise DWPError(f"{path}: unknown preset fields {unknown}; known: {sorted(names)}")
    description = f"custom preset from {path}"
    if "base" in d:
        base_name = d.pop("base")
        if base_name not in PRESETS:
            raise DWPError(f"{path}: base {base_name!r} is not a built-in preset; "
                           f"one of {sorted(PRESETS)}")  # fmt: skip
        d = _over_base(PRESETS[base_name].to_dict(), d, path)
        description = f"custom preset from {path}, based on {base_name}"
    if not {"name", "source_dataset", "target_dataset"} <= set(d):
        raise DWPError(f"{path}: a preset needs at least name, source_dataset, target_dataset")
    preset = Preset(**{"description": description, **d})
    stage_configs(preset)
    return preset


def _over_base(base: dict, d: dict, path) -> dict:
    """The fields of ``base`` with those of ``d`` over them; ``*_args`` objects merged a key at
    a time (nested ones too: a ``prior_args`` layer), a null value dropping the base's key."""

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            if v is None:
                out.pop(k, None)
            elif isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = v
        return out

    out = dict(base)
    for k, v in d.items():
        if k.endswith("_args"):
            if not isinstance(v, dict):
                raise DWPError(f"{path}: {k} must be an object of stage options, got {v!r}")
            out[k] = merge(base[k], v)
        else:
            out[k] = v
    if "description" not in d:
        del out["description"]  # the caller's says what the file is based on
    return out
