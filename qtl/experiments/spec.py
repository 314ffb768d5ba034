"""Sweep specs: a TOML file naming grids of runs, and the plan of `Run`s it stands for.

    name = "depth-study"                  # the sweep's name in the results database
    backbone = "resnet18"                 # settings at the top level apply to every grid
    pretrained = false
    epochs = 10

    [[grid]]                              # every combination of the listed values
    variant = ["quantum", "dressed-classical"]
    qubits = [2, 4]
    depth = [1, 3]
    seeds = 3                             # an integer n means seeds 0 .. n-1

    [[grid]]                              # a second grid (or one run: all values single)
    variant = "linear"
    seeds = [0, 1, 2]

Without `[[grid]]` tables the top level is the one grid. Every value may be one value or a list. A run's
id comes from its configs (`qtl.experiments.runs.run_id`), so a point the grids name twice (a
dressed-classical head at
two depths, which it ignores) is one run. Torch-free: the CLI checks a spec before loading torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

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
    "engine": str,
    "lr": float,
    "epochs": int,
    "batch_size": int,
    "seed": int,
}
"""What a grid may vary, with the type of one value. Unset axes take the defaults below or the recipe's."""
ORDER = ("seed", *(a for a in AXES if a != "seed"))  # how points are enumerated
ALIASES = {"variants": "variant", "seeds": "seed", "backbones": "backbone", "datasets": "dataset"}
DEFAULTS = {"variant": "quantum", "dataset": "hymenoptera", "seed": 0}
SETTINGS = ("name", "checkpoints", "grid")  # top-level keys that are not axes
DEFAULT_DATASET = "hymenoptera"  # the name for qtl's default dataset (QTL_DATA_DIR, else hymenoptera)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SpecError(ValueError):
    """A sweep spec that cannot be run; the message names the file and the key."""


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec: its name, its grids (axis -> values), and its source text for the database."""

    name: str
    grids: tuple[dict[str, tuple], ...]
    checkpoints: bool = False  # save every run's best epoch under <models>/sweeps/<name>/
    source: str = ""  # the TOML text as written
    base_dir: Path = Path(".")  # relative dataset paths are relative to the spec's folder

    def points(self) -> list[dict]:
        """Every combination of every grid, grid by grid, seeds outermost (an interrupted sweep has whole
        grids for its first seeds), then in AXES order: dicts of axis -> one value (duplicates kept)."""
        out = []
        for grid in self.grids:
            axes = sorted(grid, key=ORDER.index)
            for values in itertools.product(*(grid[a] for a in axes)):
                out.append(dict(zip(axes, values, strict=True)))
        return out


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a TOML spec; SpecError (one line, naming the file) for anything wrong."""
    path = Path(path)
    try:
        text = path.read_text()
        doc = tomllib.loads(text)
    except OSError as exc:
        raise SpecError(f"cannot read sweep spec {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_spec(doc, name=path.stem, source=text, base_dir=path.parent)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec(doc: dict, *, name: str = "sweep", source: str = "", base_dir: Path = Path(".")) -> SweepSpec:
    """A SweepSpec from a parsed TOML document (see the module docstring); `name` unless it sets one."""
    top = {k: v for k, v in doc.items() if k not in SETTINGS}
    base = _axes(top, "the top level")
    grids = doc.get("grid", [{}])
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids) or not grids:
        raise SpecError("'grid' must be one or more [[grid]] tables")
    merged = []
    for i, grid in enumerate(grids, start=1):
        axes = {**DEFAULTS, **base, **_axes(grid, f"[[grid]] number {i}")}
        merged.append({a: tuple(_listed(v)) for a, v in axes.items()})
    name = doc.get("name", name)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SpecError(f"name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    checkpoints = doc.get("checkpoints", False)
    if not isinstance(checkpoints, bool):
        raise SpecError(f"checkpoints must be true or false, got {checkpoints!r}")
    return SweepSpec(name, tuple(merged), checkpoints, source, Path(base_dir))


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
        values = list(range(value)) if axis == "seed" and type(value) is int else _listed(value)
        if not values:
            raise SpecError(f"{key!r} in {where} is an empty list")
        out[axis] = [_checked(axis, v, where) for v in values]
    return out


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _checked(axis: str, value, where: str):
    kind = AXES[axis]
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise SpecError(f"{axis!r} in {where}: {value!r} is not a {kind.__name__}")
    return value


def plan(spec: SweepSpec, *, machine: dict | None = None, models_dir: str | Path | None = None) -> list:
    """The spec's runs (`qtl.experiments.runs.Run`), one per distinct run id, in grid order.

    machine: MachineConfig fields for every run (device, cache_dir, num_workers, cpu_threads); each
        run's data_dir is its dataset's resolved folder.
    models_dir: where checkpoints go when the spec saves them (<models_dir>/sweeps/<name>/<id>.pt).
    Datasets are resolved here (the default one may be downloaded); ValueError for any bad value.
    """
    from qtl.config import MachineConfig, ModelConfig
    from qtl.experiments.runs import Run, recipe_for
    from qtl.paths import models_dir as default_models_dir
    from qtl.quantum.circuit import CircuitConfig

    roots: dict[str, str] = {}
    folder = Path(models_dir or default_models_dir()) / "sweeps" / spec.name
    runs: dict[str, Run] = {}
    for point in spec.points():
        p = dict(point)
        circuit = {k: p.pop(k) for k in ("qubits", "depth", "entangler", "rotation") if k in p}
        circuit = CircuitConfig(
            **{{"qubits": "n_qubits"}.get(k, k): v for k, v in circuit.items()}  # type: ignore[arg-type]
        )
        model = {k: p.pop(k) for k in ("backbone", "pretrained", "engine") if k in p}
        mc = ModelConfig(variant=p.pop("variant"), circuit=circuit, **model)
        dataset = p.pop("dataset")
        if dataset not in roots:
            roots[dataset] = _dataset_root(dataset, spec.base_dir)
        tc = recipe_for(mc.variant, **p)
        run = Run(mc, tc, None, dataset, MachineConfig(data_dir=roots[dataset], **(machine or {})))
        if run.id not in runs:
            path = folder / f"{mc.variant}-{run.id}.pt" if spec.checkpoints else None
            runs[run.id] = dataclasses.replace(run, checkpoint_path=path)
    return list(runs.values())


def _dataset_root(name: str, base_dir: Path) -> str:
    from qtl.data.sources import resolve_dataset

    if name == DEFAULT_DATASET:
        return str(resolve_dataset(None))
    path = Path(name).expanduser()
    return str(resolve_dataset(path if path.is_absolute() else base_dir / path))
