"""Sweep specs: a TOML file naming grids of runs, and the plan of `Run`s it stands for.

    name = "depth-study"                  # the sweep's name in the results database
    backbone = "resnet18"                 # settings at the top level apply to every grid
    pretrained = false
    epochs = 10

    [[grid]]                              # every combination of the listed values
    variant = ["quantum", "dressed-classical"]
    qubits = [2, 4]
    depth = [1, 3]
    seeds = 3                             # seeds = n means seeds 0 .. n-1 (seed = 3 is seed 3 alone)

    [[grid]]                              # a second grid (or one run: all values single)
    variant = "linear"
    seeds = [0, 1, 2]

Without `[[grid]]` tables the top level is the one grid. Every value may be one value or a list. A run's
id comes from its configs (`qtl.experiments.runs.run_id`), so a point the grids name twice (a
dressed-classical head at two depths, which it ignores) is one run. Torch-free: the CLI checks a spec
before loading torch.

The data regime is an axis like any other (`qtl.config.DataRegime`): `split` ("given" or "kfold"),
`folds`, `classes`, `per_class` (few-shot; "all" for every image), `label_noise`; `feature_dim` reduces a
frozen head's features ("all": the backbone's width), `reupload` re-embeds the data in every block.

A plan is counted before it is enumerated: one of more than `max_runs` points (MAX_RUNS, or the
QTL_SWEEP_MAX_RUNS environment variable) is refused at once, naming its size and the axes that make it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from qtl.paths import DEFAULT_DATASET  # qtl's default dataset (QTL_DATA_DIR, else hymenoptera)

# Torch-free: the runs module (torch) and the dataset resolver are imported inside the functions that plan.

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

AXES = {
    "variant": str,
    "backbone": str,
    "pretrained": bool,
    "dataset": str,
    "qubits": int,
    "depth": int,
    "entangler": str,
    "rotation": str,
    "reupload": bool,
    "engine": str,
    "feature_dim": int,
    "lr": float,
    "epochs": int,
    "batch_size": int,
    "augment": bool,
    "split": str,
    "folds": int,
    "classes": int,
    "per_class": int,
    "label_noise": float,
    "seed": int,
}
"""What a grid may vary, with the type of one value. Unset axes take the defaults below or the recipe's."""
ALL = "all"
OPTIONAL = frozenset({"feature_dim", "classes", "per_class"})  # these also take "all" (no limit: None)
CIRCUIT_AXES = {"qubits": "n_qubits", "depth": "depth", "entangler": "entangler", "rotation": "rotation"}
CIRCUIT_AXES |= {"reupload": "reupload"}
REGIME_AXES = ("split", "folds", "classes", "per_class", "label_noise")
MAX_RUNS = 100_000
MAX_RUNS_ENV = "QTL_SWEEP_MAX_RUNS"
ORDER = ("seed", *(a for a in AXES if a != "seed"))  # how points are enumerated
ALIASES = {"variants": "variant", "seeds": "seed", "backbones": "backbone", "datasets": "dataset"}
DEFAULTS = {"variant": "quantum", "dataset": DEFAULT_DATASET, "seed": 0}
SETTINGS = ("name", "checkpoints", "grid")  # top-level keys that are not axes
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SpecError(ValueError):
    """A sweep spec that cannot be run; the message names the file and the key."""


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec: its name, its grids (axis -> values), and its source text for the database."""

    name: str
    grids: tuple[dict[str, tuple | range], ...]  # `seeds = n` stays range(n) until enumerated
    checkpoints: bool = False  # save every run's best epoch under <models>/sweeps/<name>/
    source: str = ""  # the TOML text as written
    base_dir: Path = Path(".")  # relative dataset paths are relative to the spec's folder

    def size(self) -> int:
        """How many points the grids name (before duplicates merge), counted without enumerating them."""
        return sum(math.prod(len(v) for v in grid.values()) for grid in self.grids)

    def points(self) -> list[dict]:
        """Every combination of every grid, grid by grid, seeds outermost (an interrupted sweep has whole
        grids for its first seeds), then in AXES order: dicts of axis -> one value (duplicates kept)."""
        out = []
        for grid in self.grids:
            axes = sorted(grid, key=ORDER.index)
            for values in itertools.product(*(grid[a] for a in axes)):
                out.append(dict(zip(axes, values, strict=True)))
        return out


def max_runs() -> int:
    """The largest plan a spec may make: $QTL_SWEEP_MAX_RUNS, else MAX_RUNS."""
    value = os.environ.get(MAX_RUNS_ENV, "").strip()
    try:
        cap = int(value) if value else MAX_RUNS
    except ValueError:
        raise SpecError(f"{MAX_RUNS_ENV} must be a whole number, got {value!r}") from None
    if cap < 1:
        raise SpecError(f"{MAX_RUNS_ENV} must be at least 1, got {cap}")
    return cap


def load_spec(path: str | Path, *, limit: int | None = None) -> SweepSpec:
    """Read and check a TOML spec; SpecError (one line, naming the file) for anything wrong, a file that
    is not UTF-8 text, or a plan of more than `limit` (default `max_runs()`) runs."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        doc = tomllib.loads(text)
    except OSError as exc:
        raise SpecError(f"cannot read sweep spec {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path} is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}): "
            "a sweep spec is a TOML text file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_spec(doc, name=path.stem, source=text, base_dir=path.parent, limit=limit)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec(
    doc: dict, *, name: str = "sweep", source: str = "", base_dir: Path = Path("."), limit: int | None = None
) -> SweepSpec:
    """A SweepSpec from a parsed TOML document (see the module docstring); `name` unless it sets one.
    SpecError for a plan of more than `limit` (default `max_runs()`) points, before any is made."""
    top = {k: v for k, v in doc.items() if k not in SETTINGS}
    base = _axes(top, "the top level")
    grids = doc.get("grid", [{}])
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids) or not grids:
        raise SpecError("'grid' must be one or more [[grid]] tables")
    merged = []
    for i, grid in enumerate(grids, start=1):
        axes = {**DEFAULTS, **base, **_axes(grid, f"[[grid]] number {i}")}
        merged.append({a: v if isinstance(v, range) else tuple(_listed(v)) for a, v in axes.items()})
    named = "name" in doc
    name = doc.get("name", name)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        whence = "" if named else ' (taken from the file name: add name = "..." to the spec, or rename it)'
        raise SpecError(f"name {name!r} must be 1-64 letters, digits, '.', '_' or '-'{whence}")
    checkpoints = doc.get("checkpoints", False)
    if not isinstance(checkpoints, bool):
        raise SpecError(f"checkpoints must be true or false, got {checkpoints!r}")
    spec = SweepSpec(name, tuple(merged), checkpoints, source, Path(base_dir))
    check_size(spec, max_runs() if limit is None else limit)
    return spec


def check_size(spec: SweepSpec, limit: int) -> None:
    """SpecError when the spec names more than `limit` points: its size and, per grid, the axes with more
    than one value (largest first) that multiply to it."""
    size = spec.size()
    if size <= limit:
        return
    grids = []
    for i, grid in enumerate(spec.grids, start=1):
        axes = sorted(((a, len(v)) for a, v in grid.items() if len(v) > 1), key=lambda x: -x[1])
        product = " x ".join(f"{a} {n:,}" for a, n in axes) or "1"
        grids.append(f"grid {i}: {product} = {math.prod(n for _, n in axes):,}")
    raise SpecError(
        f"the spec plans {size:,} runs, over the limit of {limit:,} ({'; '.join(grids)}); "
        f"shrink the axes, or raise the limit with --max-runs or {MAX_RUNS_ENV}"
    )


def _axes(table: dict, where: str) -> dict:
    """Axis -> list of checked values; SpecError naming an unknown key or a bad value."""
    out = {}
    for key, value in table.items():
        axis = ALIASES.get(key, key)
        if axis not in AXES:
            known = ", ".join([*AXES, *ALIASES])
            raise SpecError(f"unknown key {key!r} in {where}; a grid may set: {known}")
        if axis in out:
            raise SpecError(f"{where} sets {axis!r} twice")
        if key == "seeds" and type(value) is int:  # a count: kept a range, so a typo is counted, not built
            if value < 1:
                raise SpecError(f"{key!r} in {where}: a number of seeds must be at least 1, got {value}")
            out[axis] = range(value)
            continue
        values = _listed(value)  # seed = 3 is seed 3 (it was seeds 0, 1, 2), a list those seeds
        if not values:
            raise SpecError(f"{key!r} in {where} is an empty list")
        out[axis] = [_checked(axis, v, where) for v in values]
    return out


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


KIND_WORDS = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _checked(axis: str, value, where: str):
    if axis in OPTIONAL and value == ALL:
        return None
    kind = AXES[axis]
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        also = f' or "{ALL}"' if axis in OPTIONAL else ""
        raise SpecError(f"{axis!r} in {where}: {value!r} is not {KIND_WORDS[kind]}{also}")
    if axis == "backbone":  # known before any run, as an unknown variant is
        from qtl.config import check_backbone_name

        try:
            check_backbone_name(value)
        except ValueError as exc:
            raise SpecError(f"'backbone' in {where}: {exc}") from None
    if axis == "engine":  # native, mps, or a PennyLane device this machine has
        from qtl.config import check_engine_name

        try:
            check_engine_name(value)
        except ValueError as exc:
            raise SpecError(f"'engine' in {where}: {exc}") from None
    return value


def plan(
    spec: SweepSpec,
    *,
    machine: dict | None = None,
    models_dir: str | Path | None = None,
    limit: int | None = None,
) -> list:
    """The spec's runs (`qtl.experiments.runs.Run`), one per distinct run id, in grid order.

    machine: MachineConfig fields for every run (device, cache_dir, num_workers, cpu_threads); each
        run's data_dir is its dataset's resolved folder.
    models_dir: where checkpoints go when the spec saves them (<models_dir>/sweeps/<name>/<id>.pt).
    limit: the most points it may make (default `max_runs()`): SpecError above it, before enumerating.
    Datasets are resolved here (the default one may be downloaded); ValueError for any bad value, a
    dataset's naming it as the spec does.
    """
    from qtl.config import DataRegime, MachineConfig, ModelConfig, TrainConfig
    from qtl.experiments.runs import Run, kernel_recipe, recipe_for
    from qtl.paths import models_dir as default_models_dir
    from qtl.quantum.circuit import CircuitConfig

    check_size(spec, max_runs() if limit is None else limit)
    check_feature_dims(spec)
    roots: dict[str, str] = {}
    names: dict[Path, str] = {}  # a resolved folder -> the name its runs take: the spec's first for it
    folder = Path(models_dir or default_models_dir()) / "sweeps" / spec.name
    runs: dict[str, Run] = {}
    for point in spec.points():
        p = dict(point)
        try:  # a value no config takes (qubits = 0, classes = 1) is said with the point it came from
            circuit = CircuitConfig(**{CIRCUIT_AXES[k]: p.pop(k) for k in CIRCUIT_AXES if k in p})
            model = {k: p.pop(k) for k in ("backbone", "pretrained", "engine", "feature_dim") if k in p}
            mc = ModelConfig(variant=p.pop("variant"), circuit=circuit, **model)
            regime = DataRegime(**{k: p.pop(k) for k in REGIME_AXES if k in p})
            tc = recipe_for(mc.variant, regime=regime, **{k: v for k, v in p.items() if k != "dataset"})
            if mc.is_kernel:  # one fit: the spec's epochs, lr ... made runs (and cells) of their own
                tc = TrainConfig.from_dict(kernel_recipe(mc.variant, tc.to_dict()))
        except (TypeError, ValueError) as exc:
            where = ", ".join(f"{k} = {v!r}" for k, v in point.items() if k != "dataset")
            raise SpecError(f"sweep {spec.name!r}, the point {where}: {exc}") from None
        dataset = p.pop("dataset")
        if dataset not in roots:
            try:  # the dataset as the spec names it: a sweep of several said which one failed
                roots[dataset] = _dataset_root(dataset, spec.base_dir)
            except ValueError as exc:
                raise SpecError(f"sweep {spec.name!r}, dataset {dataset!r}: {exc}") from None
        # "data/tiny", "./data/tiny/" and its absolute path are one dataset: one run each, not one a spelling
        name = names.setdefault(Path(roots[dataset]).resolve(), _run_dataset(dataset, roots[dataset]))
        run = Run(mc, tc, None, name, MachineConfig(data_dir=roots[dataset], **(machine or {})))
        if run.id not in runs:
            keep = spec.checkpoints and not mc.is_kernel  # a kernel SVM has no checkpoint (`unsaved_note`)
            path = folder / f"{mc.variant}-{run.id}.pt" if keep else None
            runs[run.id] = dataclasses.replace(run, checkpoint_path=path)
    return list(runs.values())


def check_feature_dims(spec: SweepSpec) -> None:
    """SpecError, in one line, where a grid pairs a `feature_dim` with a backbone whose features are
    narrower (2000 of resnet18's 512): every such run failed when it started. The widths come from the
    architectures alone (`qtl.models.backbones.feature_width`): no weights are read or downloaded."""
    from qtl.config import DEFAULT_BACKBONE
    from qtl.models.variants import feature_dim_refusal

    for grid in spec.grids:
        dims = sorted({d for d in grid.get("feature_dim", ()) if d is not None})
        if not dims:
            continue
        for backbone in grid.get("backbone", (DEFAULT_BACKBONE,)):
            try:
                refusal = feature_dim_refusal(dims[-1], backbone, every=f'"{ALL}"')
            except ValueError as exc:  # no such backbone
                raise SpecError(f"sweep {spec.name!r}, backbone {backbone!r}: {exc}") from None
            if refusal:
                raise SpecError(f"sweep {spec.name!r}: {refusal}")


def _run_dataset(name: str, root: str) -> str:
    """The dataset a run names (in its id and row): the spec's, but for the default one its folder's name
    where $QTL_DATA_DIR points at another dataset than hymenoptera; runs on it were recorded, and then
    skipped as done, as hymenoptera's."""
    from qtl.paths import HYMENOPTERA_DIRNAME

    folder = Path(root).resolve().name  # QTL_DATA_DIR=. names the folder it is, not ""
    if name == DEFAULT_DATASET and folder != HYMENOPTERA_DIRNAME:
        return folder
    return name


def _dataset_root(name: str, base_dir: Path) -> str:
    from qtl.data.datasets import open_dataset
    from qtl.data.sources import is_named, resolve_dataset

    if name == DEFAULT_DATASET:
        return str(resolve_dataset(None))
    path = Path(name).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if is_named(name) and not path.exists():  # "digits", "torchvision/...": written out once
        return str(open_dataset(name).root)
    return str(open_dataset(path).root)  # a train/val folder, a folder of class folders or a zip
