"""What to train and how, torch-free: the variant, backbone and engine names, `ModelConfig`, `TrainConfig`
and the per-variant recipes, and `MachineConfig` (how this machine runs a recipe).

    from qtl.config import MachineConfig, ModelConfig, recipe
    fit(ModelConfig("quantum"), recipe("quantum"), MachineConfig(device="cuda"))

A checkpoint records the `ModelConfig` (the architecture) and the `TrainConfig` (the recipe), never the
`MachineConfig`: where the data lay, which device ran it and how many threads it used say nothing about
the model. This module imports only `qtl.quantum.circuit` and `qtl.quantum.noise` (both torch-free), so
the command line builds its choices and defaults from it without importing torch.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.noise import NO_NOISY_REUPLOAD, NoiseConfig

# ---- names

VARIANTS = ("quantum", "finetuned", "linear", "hybrid", "dressed-classical")
"""The models trained by gradient and saved as checkpoints."""
KERNEL_BASELINES = ("quantum-kernel", "rbf-svm")
"""Support vector machines on the same frozen features (`qtl.models.kernels`): a fidelity kernel of the
circuit, and a classical RBF kernel on the same inputs. Sweeps and comparisons run them; they are not
saved as checkpoints."""
RUN_VARIANTS = VARIANTS + KERNEL_BASELINES
"""Everything a run (a sweep, `qtl compare`) may train."""
FROZEN_VARIANTS = frozenset({"quantum", "linear", "dressed-classical"})  # only the head trains
QUANTUM_VARIANTS = frozenset({"quantum", "hybrid"})  # the head holds a variational circuit
DEFAULT_VARIANT = "quantum"

BUNDLED_BACKBONE = "efficientnet_lite0"
"""The pretrained backbone whose ImageNet weights ship with an installed package: it needs no network."""
BACKBONE_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "vit_b_16",
    BUNDLED_BACKBONE,
)
"""torchvision's backbones (the keys of `qtl.models.backbones.BACKBONES`, in order), then the bundled one."""
TIMM_PREFIX = "timm/"
"""Any timm model is a backbone as `timm/<model>[.<tag>]`, e.g. `timm/convnext_atto`."""


def check_backbone_name(name: str) -> str:
    """`name` if it names a backbone (one of BACKBONE_NAMES, or `timm/<model>`), else ValueError. Whether
    timm knows the model is checked when it is built."""
    if name in BACKBONE_NAMES or (
        isinstance(name, str) and name.startswith(TIMM_PREFIX) and name != TIMM_PREFIX
    ):
        return name
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)} or timm/<model>")


DEFAULT_BACKBONE = "resnet18"

NATIVE = "native"  # qtl's own statevector simulator
MPS = "mps"  # qtl's matrix product state simulator, for wide circuits (up to 128 qubits)
# any other engine name is a PennyLane device
ENGINES = (NATIVE, MPS, "default.qubit", "lightning.qubit")
"""The engines qtl offers by name (forms list these); any other installed PennyLane device works too."""
DIFF_METHODS = ("best", "backprop", "adjoint", "parameter-shift", "finite-diff")
"""Differentiation methods a PennyLane engine accepts; "best" lets PennyLane choose for the device."""

OPTIMIZERS = ("adam", "sgd")


@functools.cache
def engine_names() -> tuple[str, ...]:
    """The engines this machine has: ENGINES, then every other installed PennyLane device (the
    `pennylane.plugins` entry points PennyLane itself looks devices up in; no PennyLane import)."""
    from importlib.metadata import entry_points

    devices = {e.name for e in entry_points(group="pennylane.plugins")}
    return (*ENGINES, *sorted(devices - set(ENGINES)))


def check_engine_name(name: str) -> str:
    """`name` if it names an engine this machine has (`engine_names`), else ValueError listing them."""
    if isinstance(name, str) and name in engine_names():
        return name
    raise ValueError(f"{name!r} is no engine here; choose from: {', '.join(engine_names())}")


def check_variant(variant: str) -> str:
    """Return `variant` if it is known (a model or a kernel baseline), else raise ValueError listing them."""
    if variant not in RUN_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(RUN_VARIANTS)}")
    return variant


# ---- checks every config makes of its fields: one ValueError naming the field


def _whole(name: str, value, least: int, most: int | None = None, *, none: bool = False) -> None:
    """ValueError unless `value` is an int (a bool is none here) from `least` to `most` (None too where
    `none`)."""
    if value is None and none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < least
        or (most is not None and value > most)
    ):
        span = f"from {least} to {most}" if most is not None else f"of at least {least}"
        raise ValueError(f"{name} must be a whole number {span}{' or None' if none else ''}, got {value!r}")


def _real(name: str, value, ok: Callable[[float], bool], rule: str, *, none: bool = False) -> None:
    """ValueError unless `value` is a finite int or float (not a bool, NaN or inf) for which `ok` holds
    (`rule` says which in words, e.g. "above 0"), or None where `none`."""
    if value is None and none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not ok(value)
    ):
        rule = f" {rule}" if rule else ""
        raise ValueError(f"{name} must be a finite number{rule}{' or None' if none else ''}, got {value!r}")


def _flag(name: str, value) -> None:
    """ValueError unless `value` is True or False: a string such as "no" is not taken for True."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


_STORED = contextvars.ContextVar("qtl_config_stored", default=False)


@contextmanager
def _stored() -> Iterator[None]:
    """While reading a stored config (`ModelConfig.from_dict`: checkpoints, results databases), what
    depends on this machine (an engine's PennyLane plugin) and the settings a variant never reads are
    left to be checked where they are used: a checkpoint or a row written elsewhere still reads here."""
    token = _STORED.set(True)
    try:
        yield
    finally:
        _STORED.reset(token)


def _from_dict(cls, d: dict, what: str, ignore: frozenset = frozenset()):
    """cls(**d) without the `ignore`d keys; ValueError naming any other key cls does not have."""
    unknown = set(d) - {f.name for f in fields(cls)} - ignore
    if unknown:
        raise ValueError(f"unknown {what} config keys: {sorted(unknown)}")
    return cls(**{k: v for k, v in d.items() if k not in ignore})


# ---- the architecture


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (not its weights)."""

    variant: str = DEFAULT_VARIANT  # one of VARIANTS
    backbone: str = DEFAULT_BACKBONE  # a name in qtl.models.backbones.BACKBONES
    pretrained: bool = True  # ImageNet weights; False gives a seeded random-init backbone
    class_names: tuple[str, ...] = ()  # output classes in label order; empty: fit() takes the dataset's
    circuit: CircuitConfig = field(default_factory=CircuitConfig)  # the circuit; also the classical width
    engine: str = NATIVE  # simulator of the quantum variants: "native", "mps" or a PennyLane device name
    diff_method: str = "best"  # PennyLane engines only: how gradients are computed
    shots: int | None = None  # PennyLane engines only: None gives exact expectation values
    max_bond: int | None = None  # MPS engine only: largest bond kept; None simulates exactly
    q_delta: float = 0.01  # spread of the initial circuit angles, as in the paper
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # quantum variants: channels, readout, shots
    feature_dim: int | None = None  # frozen heads: PCA of the features to this width first (None: all)

    def __post_init__(self) -> None:
        check_variant(self.variant)
        check_backbone_name(self.backbone)
        _flag("pretrained", self.pretrained)
        self._check_class_names()
        if isinstance(self.circuit, dict):
            object.__setattr__(self, "circuit", CircuitConfig.from_dict(self.circuit))
        if not isinstance(self.circuit, CircuitConfig):
            raise ValueError(f"circuit must be a CircuitConfig (or its dict), got {self.circuit!r}")
        if self.noise is None or isinstance(self.noise, dict):  # None: written before noise existed
            object.__setattr__(self, "noise", NoiseConfig.from_dict(self.noise))
        if not isinstance(self.noise, NoiseConfig):
            raise ValueError(f"noise must be a NoiseConfig (or its dict), got {self.noise!r}")
        self._check_simulation()
        if self.feature_dim is not None:
            _whole("feature_dim", self.feature_dim, 1, none=True)
            if self.variant not in FROZEN_VARIANTS:
                raise ValueError(
                    f"feature_dim reduces cached features: frozen heads only, not {self.variant!r}"
                )
        if self.is_quantum and self.engine == NATIVE and self.circuit.reupload and not self.noise.is_ideal:
            raise ValueError(NO_NOISY_REUPLOAD)  # said by the form and the spec, before any training
        if self.is_quantum and self.engine == MPS and not self.noise.is_ideal:  # said before any training
            raise ValueError(
                "the MPS engine simulates exact pure states, without noise or shots, and this model asks "
                f"for {self.noise.label()}: give engine 'native' (density matrices) or a PennyLane device"
            )

    def _check_class_names(self) -> None:
        """Class names: a list or tuple (never one string, which would split into letters) of distinct,
        non-empty names, stored as a tuple of strings; none (fit takes the dataset's) or at least 2."""
        names = self.class_names
        if isinstance(names, str) or not isinstance(names, list | tuple):
            raise ValueError(f"class_names must be a list or tuple of names, got {names!r}")
        names = tuple(str(c) for c in names)
        if any(not c.strip() for c in names):
            raise ValueError(f"class names must not be empty, got {list(names)}")
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:
            raise ValueError(f"class names must be distinct, {', '.join(map(repr, repeated))} repeats")
        if len(names) == 1:
            raise ValueError(f"a classifier needs at least 2 class names, got {list(names)}")
        object.__setattr__(self, "class_names", names)

    def _check_simulation(self) -> None:
        """The quantum head's simulation settings: an engine this machine has, a known diff method,
        shots and bond of at least 1 (or None), a finite non-negative initial spread. A stored config
        (`from_dict`) has only those its model reads checked, its engine need not be installed here and
        its spread need only be finite."""
        stored = _STORED.get()
        used = used_settings(self.variant, self.engine) if stored else None
        if used is None or "engine" in used:
            if not stored:
                check_engine_name(self.engine)
            elif not isinstance(self.engine, str) or not self.engine:
                raise ValueError(f"engine must be an engine's name, got {self.engine!r}")
        if (used is None or "diff_method" in used) and self.diff_method not in DIFF_METHODS:
            raise ValueError(
                f"diff_method must be one of {', '.join(DIFF_METHODS)}, got {self.diff_method!r}"
            )
        if used is None or "shots" in used:
            _whole("shots", self.shots, 1, none=True)
        if used is None or "max_bond" in used:
            _whole("max_bond", self.max_bond, 1, none=True)
        if used is None:
            _real("q_delta", self.q_delta, lambda x: x >= 0, "of at least 0")
        elif "q_delta" in used:  # a trained head's spread is history: any finite one it was made with
            _real("q_delta", self.q_delta, lambda x: True, "")

    @property
    def frozen(self) -> bool:
        """True when the backbone is frozen and only the head trains (on cached features)."""
        return self.variant in FROZEN_VARIANTS or self.is_kernel

    @property
    def is_kernel(self) -> bool:
        """True for a kernel baseline (an SVM on the features, `KERNEL_BASELINES`)."""
        return self.variant in KERNEL_BASELINES

    @property
    def is_quantum(self) -> bool:
        """True when the head contains a variational circuit."""
        return self.variant in QUANTUM_VARIANTS

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def engine_options(self) -> dict:
        """Keyword options for `make_engine`: PennyLane's diff_method and shots, the MPS engine's max_bond,
        and the noise model when there is one (always for PennyLane: its seed seeds the device's shots)."""
        noise = {} if self.noise.is_ideal else {"noise": self.noise}
        if self.engine == NATIVE:
            return noise
        if self.engine == MPS:
            return {"max_bond": self.max_bond, **noise}
        return {"diff_method": self.diff_method, "shots": self.shots, "noise": self.noise}

    def to_dict(self) -> dict:
        """Plain Python values only (str, int, float, bool, None, list, dict): safe in checkpoints."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["class_names"] = list(self.class_names)
        d["circuit"] = self.circuit.to_dict()
        d["noise"] = self.noise.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """A stored config (`to_dict()` output, as checkpoints and results databases keep it): checked as
        one built here, except that its engine need not be installed here (building it says so), nor
        need a classical variant's unused simulation settings be valid (`_stored`)."""
        d = dict(d)
        if isinstance(d.get("circuit"), dict):
            d["circuit"] = CircuitConfig.from_dict(d["circuit"])
        if isinstance(d.get("noise"), dict):  # absent in checkpoints written before noise existed: ideal
            d["noise"] = NoiseConfig.from_dict(d["noise"])
        with _stored():
            return _from_dict(cls, d, "model")


# ---- which settings a variant reads

SETTINGS = (
    "engine", "diff_method", "shots", "max_bond", "q_delta",
    "circuit.n_qubits", "circuit.depth", "circuit.entangler", "circuit.rotation", "circuit.hadamard",
    "circuit.reupload",
    "noise.depolarizing", "noise.amplitude_damping", "noise.phase_damping", "noise.depolarizing_2q",
    "noise.amplitude_damping_2q", "noise.phase_damping_2q", "noise.readout", "noise.shots", "noise.seed",
)  # fmt: skip
"""A `ModelConfig`'s settings that only some variants (or engines) read, as `used_settings` names them."""

SETTING_FLAGS = {
    "engine": "--engine", "diff_method": "--diff-method", "max_bond": "--max-bond", "q_delta": "--q-delta",
    "circuit.n_qubits": "--qubits", "circuit.depth": "--depth", "circuit.entangler": "--entangler",
    "circuit.rotation": "--rotation", "circuit.hadamard": "--no-hadamard", "circuit.reupload": "--reupload",
    "noise.depolarizing": "--depolarizing", "noise.depolarizing_2q": "--depolarizing",
    "noise.amplitude_damping": "--amplitude-damping", "noise.amplitude_damping_2q": "--amplitude-damping",
    "noise.phase_damping": "--phase-damping", "noise.phase_damping_2q": "--phase-damping",
    "noise.readout": "--readout", "noise.shots": "--shots", "noise.seed": "--noise-seed",
}  # fmt: skip
"""The command line's option for each of SETTINGS (`check_settings_apply` names them so); `shots`, the
PennyLane engines' own, has none."""

_CIRCUIT = frozenset(s for s in SETTINGS if s.startswith("circuit."))
_NOISE = frozenset(s for s in SETTINGS if s.startswith("noise."))


def used_settings(variant: str, engine: str = NATIVE) -> frozenset[str]:
    """Those of SETTINGS a `variant` model on `engine` reads: a quantum head every circuit and noise
    setting, the initial spread and its engine, and the engine's own options (max_bond: mps; diff_method
    and shots: PennyLane devices); the quantum kernel its circuit's states (its weights are zero and it
    always re-uploads, so rotation and reupload change nothing); dressed-classical and rbf-svm the width
    (n_qubits) alone; linear and finetuned none."""
    if variant in QUANTUM_VARIANTS:
        own = {"max_bond"} if engine == MPS else set() if engine == NATIVE else {"diff_method", "shots"}
        return frozenset({"engine", "q_delta", *_CIRCUIT, *_NOISE, *own})
    if variant == "quantum-kernel":
        return frozenset({"circuit.n_qubits", "circuit.depth", "circuit.entangler", "circuit.hadamard"})
    if variant in ("dressed-classical", "rbf-svm"):
        return frozenset({"circuit.n_qubits"})
    return frozenset()


def _setting(model: ModelConfig, name: str):
    value = model
    for part in name.split("."):
        value = getattr(value, part)
    return value


def unused_settings(model: ModelConfig) -> list[str]:
    """Those of SETTINGS that `model` sets apart from its variant's defaults but never reads (in
    SETTINGS order): e.g. ["noise.shots", "engine"] for a linear model given shots and an engine."""
    default, used = ModelConfig(model.variant), used_settings(model.variant, model.engine)
    return [s for s in SETTINGS if s not in used and _setting(model, s) != _setting(default, s)]


def check_settings_apply(model: ModelConfig, names: Mapping[str, str] = SETTING_FLAGS) -> ModelConfig:
    """`model` if it reads every setting it sets apart from its variant's defaults (`unused_settings`),
    else one ValueError naming them as `names` does (the command line's options by default; a setting
    without a name there by its own), e.g. "linear has no quantum circuit: --engine, --shots do not
    apply". Not part of `ModelConfig`'s own checks: runs of several variants share one model's settings
    (a sweep's dressed-classical rows record its quantum rows' engine), so only a command that trains
    one variant (`qtl train`) refuses them."""
    raw = unused_settings(model)
    unused = list(dict.fromkeys(names.get(s, s) for s in raw))  # both depolarizing strengths: one option
    if not unused:
        return model
    v, verb = model.variant, "does" if len(unused) == 1 else "do"
    if v in QUANTUM_VARIANTS:  # only an engine's own options can go unread
        only = [f"{names.get(s, s)} on engine 'mps' only" for s in raw if s == "max_bond"]
        only += [f"{names.get(s, s)} on PennyLane devices only" for s in raw if s in ("diff_method", "shots")]
        raise ValueError(
            f"{v} runs on engine {model.engine!r}: {', '.join(unused)} {verb} not apply ({'; '.join(only)})"
        )
    if v == "quantum-kernel":
        why = f"{v} takes its circuit's states, exactly, on the native engine"
    elif used_settings(v):
        why = (
            f"{v} has no quantum circuit ({names.get('circuit.n_qubits', 'circuit.n_qubits')} sets its width)"
        )
    else:
        why = f"{v} has no quantum circuit"
    raise ValueError(f"{why}: {', '.join(unused)} {verb} not apply")


# ---- the data a run sees

SPLITS = ("given", "kfold")
"""given: the dataset's own train/val(/test) splits. kfold: every image pooled into stratified folds."""


@dataclass(frozen=True)
class DataRegime:
    """How a run's data is split for model selection and testing, and the regime it trains in
    (`qtl.data.protocol` applies it). Every variant with the same seed sees the same splits."""

    split: str = "given"  # "given" (test only where the dataset has test/) or "kfold"
    folds: int = 5  # kfold: fold seed % folds is test, the next one val, the rest train
    classes: int | None = None  # keep only the first k classes (None: all)
    per_class: int | None = None  # few-shot: labelled training images per class, drawn with the seed
    label_noise: float = 0.0  # share of training labels replaced by another class, drawn with the seed

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        _whole("folds", self.folds, 3)
        _whole("classes", self.classes, 2, none=True)
        _whole("per_class", self.per_class, 1, none=True)
        _real("label_noise", self.label_noise, lambda x: 0 <= x < 1, "in [0, 1)")

    @property
    def split_label(self) -> str:
        """ "given" or "kfold-<folds>"."""
        return self.split if self.split == "given" else f"kfold-{self.folds}"

    @property
    def label(self) -> str:
        """A short name, e.g. "kfold-5" or "kfold-5, 5 per class, 20% label noise" ("given" alone)."""
        parts = [self.split_label]
        if self.classes is not None:
            parts.append(f"{self.classes} classes")
        if self.per_class is not None:
            parts.append(f"{self.per_class} per class")
        if self.label_noise:
            parts.append(f"{self.label_noise:.0%} label noise")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> DataRegime:
        return _from_dict(cls, d or {}, "regime")


def row_settings(model: ModelConfig, regime: DataRegime) -> dict:
    """The settings a run's result row records that its configs alone decide (`n_classes` is not one:
    `fit` takes the classes from the dataset). `qtl.experiments.runs.result_row` writes them, and
    `ResultsDB.rows` fills them from the stored configs of rows written before these columns existed."""
    quantum = model.is_quantum
    return {
        "engine": model.engine if quantum else None,
        "noise": model.noise.label() if quantum and not model.noise.is_ideal else None,
        "reupload": model.circuit.reupload if quantum else None,
        "feature_dim": model.feature_dim,
        "split": regime.split_label,
        "per_class": regime.per_class,
        "label_noise": regime.label_noise,
    }


def run_settings(model: ModelConfig, train: dict) -> dict:
    """The settings of a run's result row that its model config and its stored train config (a dict)
    decide: the variant, its backbone and weights, the circuit's (None where the variant has no such
    setting), `row_settings`, the seed, lr and epochs. `qtl.experiments.runs.result_row` writes them for
    a finished run, and `ResultsDB.rows` fills them for a run not done from its stored configs."""
    width = model.is_quantum or model.variant in ("dressed-classical", "quantum-kernel", "rbf-svm")
    circuit = model.is_quantum or model.variant == "quantum-kernel"
    return {
        "variant": model.variant,
        "backbone": model.backbone,
        "weights": "imagenet" if model.pretrained else "random",
        "qubits": model.circuit.n_qubits if width else None,
        "depth": model.circuit.depth if circuit else None,  # None: the variant has no such setting
        "entangler": model.circuit.entangler if circuit else None,
        "rotation": model.circuit.rotation if circuit else None,
        **row_settings(model, DataRegime.from_dict(train.get("regime"))),
        "seed": train.get("seed"),
        "lr": train.get("lr"),
        "epochs": train.get("epochs"),
    }


RECIPE_SETTINGS = (
    "batch_size", "optimizer", "backbone_lr", "momentum", "step_size", "gamma", "augment", "views",
    "freeze_batchnorm", "shuffle",
)  # fmt: skip
"""The recipe's settings a result row names in `recipe_label` where a run changed them (lr and epochs
have columns of their own, the seed and the regime too)."""


def recipe_label(model: ModelConfig, train: dict) -> str | None:
    """What a run's recipe sets apart from its variant's defaults, beyond what a row's own columns name:
    e.g. "batch_size 32, augment False"; None for the variant's own recipe, and for the kernel SVMs, which
    one fit makes whatever the recipe. Two runs differing there are two configurations, never seeds of
    one (`qtl.experiments.stats.CELL_KEYS` has it): a sweep over batch size pooled them into one cell."""
    if model.is_kernel:
        return None
    base = recipe(model.variant).to_dict()
    parts = [f"{k} {train[k]}" for k in RECIPE_SETTINGS if k in train and train[k] != base[k]]
    return ", ".join(parts) or None


def circuit_label(model: ModelConfig) -> str | None:
    """What a run's circuit sets apart beyond the columns (qubits, depth, entangler, rotation, engine,
    noise, reupload), where its variant uses it (`qtl.experiments.runs` ids the same way): a quantum head's
    initial spread, Hadamards, shots and bond; the quantum kernel's Hadamards. None for the defaults."""
    default, parts = ModelConfig(model.variant), []
    if model.is_quantum:
        if model.q_delta != default.q_delta:
            parts.append(f"q_delta {model.q_delta:g}")
        if model.shots is not None:
            parts.append(f"shots {model.shots}")
        if model.max_bond is not None:
            parts.append(f"max_bond {model.max_bond}")
    if (model.is_quantum or model.variant == "quantum-kernel") and not model.circuit.hadamard:
        parts.append("no hadamard")
    return ", ".join(parts) or None


# ---- the recipe


SEED_LIMIT = 2**32
"""Seeds run from 0 to SEED_LIMIT - 1: numpy's and scikit-learn's generators, which draw the splits, take
no others."""

MACHINE_KEYS = frozenset({"device", "data", "num_workers", "cache_dir", "cpu_threads"})
"""Machine settings that checkpoints written before `MachineConfig` existed kept in their train config."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the recipe a checkpoint records. `recipe(variant)` gives each variant's defaults."""

    epochs: int = 30  # passes over the training set; the paper trains the quantum head for 30
    batch_size: int = 4  # the paper's and tutorial's batch size: small batches suit 245 images
    optimizer: str = "adam"  # "adam" (the paper) or "sgd" (the tutorial's fine-tuning)
    lr: float = 4e-4  # head learning rate (and backbone's, unless backbone_lr is set)
    backbone_lr: float | None = None  # a separate, usually smaller, rate for a trainable backbone
    momentum: float = 0.9  # SGD only
    step_size: int = 10  # StepLR: multiply the learning rates by gamma every step_size epochs
    gamma: float = 0.1  # StepLR decay factor
    augment: bool = False  # RandomResizedCrop + horizontal flip on training images
    views: int = 0  # frozen variants with augment: augmented views per image to cache (0: no cache)
    freeze_batchnorm: bool = False  # trainable backbones: keep batch-norm statistics (batch 4 is too small)
    shuffle: bool = True  # False keeps a fixed batch order (data order), for exact comparisons
    seed: int = 0  # seeds head init, batch order and augmentation: same seed, same metrics on CPU
    regime: DataRegime = field(default_factory=DataRegime)  # splits and data regime, drawn with the seed

    def __post_init__(self) -> None:
        if self.regime is None or isinstance(self.regime, dict):  # None: written before regimes existed
            object.__setattr__(self, "regime", DataRegime.from_dict(self.regime))
        if not isinstance(self.regime, DataRegime):
            raise ValueError(f"regime must be a DataRegime (or its dict), got {self.regime!r}")
        for name in ("epochs", "batch_size", "step_size"):
            _whole(name, getattr(self, name), 1)
        _whole("views", self.views, 0)
        _whole("seed", self.seed, 0, SEED_LIMIT - 1)  # numpy and sklearn take no other seeds
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lr", "backbone_lr"):
            value = getattr(self, name)
            if value is None and name == "backbone_lr":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"learning rates must be finite numbers above 0, got {name}={value!r}")
        _real("momentum", self.momentum, lambda x: 0 <= x < 1, "in [0, 1)")
        _real("gamma", self.gamma, lambda x: 0 < x <= 1, "in (0, 1]")
        for name in ("augment", "freeze_batchnorm", "shuffle"):
            _flag(name, getattr(self, name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The recipe in `d`; the machine settings older checkpoints recorded beside it are dropped."""
        d = {**d, "regime": DataRegime.from_dict(d.get("regime"))}
        return _from_dict(cls, d, "train", ignore=MACHINE_KEYS)


# The paper's recipe (Mari et al. 2019) and the PyTorch transfer learning tutorial's.
_PAPER = dict(epochs=30, batch_size=4, optimizer="adam", lr=4e-4, step_size=10, gamma=0.1)
_TUTORIAL = dict(
    epochs=25, batch_size=4, optimizer="sgd", lr=1e-3, momentum=0.9, step_size=7, gamma=0.1, augment=True
)
#: TrainConfig fields per variant; `recipe` builds them.
RECIPES = {
    "quantum": _PAPER,
    "dressed-classical": _PAPER,
    "finetuned": _TUTORIAL,
    "linear": {**_TUTORIAL, "views": 5},  # 5 cached augmented views: its epochs never run the backbone
    "hybrid": {**_PAPER, "epochs": 25, "backbone_lr": 1e-4, "augment": True},
    # kernel baselines fit once (no epochs, no optimizer): C (and the RBF width) chosen on val
    "quantum-kernel": {"epochs": 1},
    "rbf-svm": {"epochs": 1},
}


def recipe(variant: str) -> TrainConfig:
    """The training defaults of a variant; override fields with dataclasses.replace.

    quantum, dressed-classical: the paper's: Adam lr 4e-4, StepLR(10, 0.1), batch 4, 30 epochs, no
        augmentation.
    finetuned, linear: the PyTorch tutorial's: SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1), batch 4,
        25 epochs, RandomResizedCrop + flip (linear caches 5 augmented views so its epochs skip the backbone).
    hybrid: Adam, head lr 4e-4 and backbone lr 1e-4, StepLR(10, 0.1), batch 4, 25 epochs, augmentation.
    quantum-kernel, rbf-svm: one fit; only the seed (and the data regime) matter.
    """
    return TrainConfig(**RECIPES[check_variant(variant)])


# ---- the machine


@dataclass(frozen=True)
class MachineConfig:
    """How this machine runs a recipe: where the data and caches are, which device, how parallel.

    None of it changes what a run learns (on one device), so checkpoints do not record it.
    """

    device: str = "auto"  # "auto" picks CUDA when present, else "cpu"; or any torch device string
    data_dir: str | None = None  # dataset root (train/ and val/); None: QTL_DATA_DIR or hymenoptera
    cache_dir: str | None = None  # feature cache folder; None: qtl.data.features' default
    num_workers: int = 0  # DataLoader workers for image batches; 0 loads in the training process
    cpu_threads: int | None = None  # torch CPU threads during the run; None: 1 for a small head on cached
    # features (threads only add synchronisation to such tiny steps, 10x+ on a busy CPU), else unchanged

    def __post_init__(self) -> None:
        for name in ("device", "data_dir", "cache_dir"):  # plain strings (paths, torch.device) stay JSON-safe
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        _whole("num_workers", self.num_workers, 0)
        _whole("cpu_threads", self.cpu_threads, 1, none=True)
