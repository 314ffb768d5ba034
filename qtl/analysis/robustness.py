"""How a trained quantum checkpoint holds up under noise: accuracy over a grid of noise and shots.

The backbone and the head's input layer run once per split (`head_inputs`); each grid point then only
re-runs the circuit and the output layer, on the native density-matrix engine or on an IBM backend:

    inputs = head_inputs(loaded, root)                                   # (N, n) angles, labels
    results = noise_sweep(loaded, inputs, noise_grid([0, 0.01, 0.05], [None, 100]), backends=["FakeManilaV2"])
    write_report(results, "models/noise-p0.05")                          # noise-p0.05.csv, .json, .png
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from qtl.analysis.inference import split_features
from qtl.models.checkpoint import LoadedModel
from qtl.quantum.engines import make_engine
from qtl.quantum.noise import NoiseConfig
from qtl.utils.atomic import atomic_write

# Imported inside functions: matplotlib (figures only) and qtl.quantum.hardware.backends (Qiskit, an
# optional extra).

#: Samples per circuit call (bounds the density-matrix engine's memory at any qubit count it accepts).
CHUNK = 256


def noise_refusal(loaded: LoadedModel) -> str | None:
    """Why `evaluate_noise` cannot run this checkpoint's circuit under noise, in one line; None when it
    can. Noise is simulated on density matrices (4**n numbers per sample), CHUNK samples at a time, within
    the density-matrix engine's memory budget; only quantum variants have a circuit."""
    from qtl.quantum.circuit import STATEVECTOR_MAX_QUBITS
    from qtl.quantum.engines import make_engine
    from qtl.quantum.engines._memory import human_bytes
    from qtl.quantum.engines.native import MEMORY_BUDGET_ENV

    if not loaded.model_config.is_quantum:
        return f"a {loaded.variant!r} model has no circuit"
    if loaded.model_config.circuit.reupload:  # whatever its width (it was called too large)
        return "its circuit re-uploads the data, which noise simulation (density matrices) does not take"
    n = loaded.model_config.circuit.n_qubits
    if n > STATEVECTOR_MAX_QUBITS:
        return (
            f"its {n}-qubit circuit is too wide: noise is simulated on density matrices (4**n numbers "
            f"per sample), up to {STATEVECTOR_MAX_QUBITS} qubits at most"
        )
    try:
        engine = make_engine(loaded.model_config.circuit, "native", noise=NoiseConfig(depolarizing=0.01))
    except ValueError as exc:  # too large for even one sample (SimulationTooLargeError)
        return f"its {n}-qubit circuit is too large for density matrices: {exc}"
    need = engine.estimate_bytes(CHUNK, torch.float64, training=False)
    if need > engine.memory_budget:
        return (
            f"its {n}-qubit circuit needs about {human_bytes(need)} of density matrices per {CHUNK} images, "
            f"over the memory budget of {human_bytes(engine.memory_budget)} ({MEMORY_BUDGET_ENV})"
        )
    return None


@dataclass
class HeadInputs:
    """What the circuit of a quantum checkpoint sees on one split: its embedded angles and the labels."""

    angles: torch.Tensor  # (N, n_qubits) float32, CPU
    labels: torch.Tensor  # (N,) int64
    paths: list[str]
    split: str = "val"  # which split of `data` the images are
    data: str | None = None  # the dataset's root
    checkpoint: str | None = None  # the checkpoint's file


@torch.no_grad()
def head_inputs(
    loaded: LoadedModel,
    root: str | Path,
    split: str = "val",
    *,
    cache_dir: str | Path | None = None,
    progress: Callable | None = None,
) -> HeadInputs:
    """The circuit's input angles for every image of a split (backbone features cached when frozen)."""
    if not loaded.model_config.is_quantum:
        raise ValueError(f"{loaded.name} is a {loaded.variant!r} model: only quantum variants have a circuit")
    data = split_features(loaded, root, split, cache_dir=cache_dir, progress=progress)
    angles = loaded.model.head.angles(data.features).float().cpu()
    return HeadInputs(angles, data.labels, data.paths, split, str(root), str(loaded.path))


@dataclass
class NoisyResult:
    """One checkpoint at one grid point."""

    model: str  # the checkpoint's name
    noise: NoiseConfig  # for a backend: its shots and seed only
    backend: str | None  # an IBM backend's name, None for the native engine
    accuracy: float
    expvals: torch.Tensor  # (N, n) <Z_i> per sample
    probs: torch.Tensor  # (N, C)
    seconds: float
    split: str = "val"  # what it was scored on (`HeadInputs`' split, data and checkpoint)
    data: str | None = None
    checkpoint: str | None = None

    @property
    def label(self) -> str:
        if self.backend is not None:
            return f"{self.backend}, {self.noise.shots} shots"
        return self.noise.label()

    def row(self) -> dict:
        """Plain values for tables, CSV and JSON: what was scored last (columns added after the others, so
        readers by position still read them), its paths as they may be shared (`qtl.paths.portable`)."""
        from qtl.paths import portable

        return {
            "model": self.model,
            "setting": self.label,
            "backend": self.backend or "native",
            "depolarizing": None if self.backend else self.noise.depolarizing,
            "shots": self.noise.shots,
            "accuracy": round(self.accuracy, 4),
            "seconds": round(self.seconds, 3),
            "split": self.split,
            "data": None if self.data is None else portable(self.data),
            "checkpoint": None if self.checkpoint is None else portable(self.checkpoint),
        }


@torch.no_grad()
def evaluate_noise(
    loaded: LoadedModel, inputs: HeadInputs, noise: NoiseConfig | None = None, *, backend=None
) -> NoisyResult:
    """Accuracy, on `inputs`' split, of a loaded quantum model when its circuit runs under `noise`
    (default: ideal), or on an IBM `backend` (a fake backend's name or a Qiskit backend; shots =
    noise.shots or 1024).

    The shot sampler starts from noise.seed, so a result repeats exactly.
    """
    noise = noise or NoiseConfig()
    head, config = loaded.model.head, loaded.model_config.circuit
    t0 = time.perf_counter()
    weights = head.q_params.detach().cpu()
    if backend is not None:
        from qtl.quantum.hardware.backends import backend_expvals

        noise = replace(NoiseConfig(), shots=noise.shots or 1024, seed=noise.seed)
        expvals = backend_expvals(config, inputs.angles, weights, backend, shots=noise.shots, seed=noise.seed)
        name = backend_name(backend)
    else:
        engine = make_engine(config, "native", noise=noise)
        angles = inputs.angles.double()
        expvals = torch.cat(
            [engine(angles[i : i + CHUNK], weights.double()) for i in range(0, len(angles), CHUNK)]
        )
        name = None
    post = head.post_net.cpu()
    probs = torch.softmax(post(expvals.to(post.weight.dtype)), dim=1)
    accuracy = (probs.argmax(1) == inputs.labels).double().mean().item()
    seconds = time.perf_counter() - t0
    where = {"split": inputs.split, "data": inputs.data, "checkpoint": inputs.checkpoint}
    return NoisyResult(loaded.name, noise, name, accuracy, expvals.float(), probs, seconds, **where)


def noise_grid(
    strengths: Sequence[float] = (0.0, 0.01, 0.02, 0.05),
    shots: Sequence[int | None] = (None,),
    base: NoiseConfig | None = None,
) -> list[NoiseConfig]:
    """Every (depolarizing strength, shots) pair over `base`'s other channels; depolarizing p after every
    gate (one- and two-qubit alike), shots None for exact <Z>. A value given twice is one point (in the
    order first given): it was scored, and reported, twice."""
    base = base or NoiseConfig()
    strengths, shots = dict.fromkeys(strengths), dict.fromkeys(shots)
    return [replace(base, depolarizing=p, depolarizing_2q=p, shots=s) for s in shots for p in strengths]


def backend_refusal(loaded: LoadedModel, backend) -> str | None:
    """Why `evaluate_noise` cannot run this checkpoint's circuit on `backend` (a fake backend's name or a
    Qiskit backend), in one line; None when it can: a backend with fewer qubits than the circuit."""
    from qtl.quantum.hardware.backends import get_backend
    from qtl.quantum.hardware.programs import width_refusal

    if not loaded.model_config.is_quantum:
        return f"a {loaded.variant!r} model has no circuit"
    device = get_backend(backend)
    return width_refusal(backend_name(backend), device.num_qubits, loaded.model_config.circuit.n_qubits)


BACKEND_SECONDS_PER_AMPLITUDE = 7e-7
"""Aer's time per image, shot and amplitude on a fake backend (its noise model makes every shot a
trajectory of 2**n amplitudes): measured on a 2-core CPU machine, 16 and 20 qubits (20 qubits, 2 images x
40 shots: 55 s)."""
BACKEND_MAX_SECONDS = 600.0
"""A backend simulation estimated to take longer (`backend_slow_refusal`) is skipped, by default: 153 images
x 10 shots at 20 qubits ran 11 minutes and more without a word. The rate is this 2-core machine's, so the
limit can be raised (`noise_sweep`'s backend_max_s, `qtl noise --backend-minutes`)."""


def backend_slow_refusal(
    loaded: LoadedModel, samples: int, shots: int, backend, max_seconds: float | None = BACKEND_MAX_SECONDS
) -> str | None:
    """Why a fake backend's simulation of this circuit, `samples` images x `shots` shots, would take too
    long to run (over `max_seconds` by `BACKEND_SECONDS_PER_AMPLITUDE`; None: no limit), in one line; None
    when it would not. A real device is not simulated here: never refused."""
    from qtl.quantum.hardware.backends import is_fake

    name = backend_name(backend)
    if max_seconds is None or (not is_fake(name) and not type(backend).__name__.startswith("Fake")):
        return None
    n = loaded.model_config.circuit.n_qubits
    seconds = samples * shots * 2**n * BACKEND_SECONDS_PER_AMPLITUDE
    if seconds <= max_seconds:
        return None
    return (
        f"simulating its {n}-qubit circuit with {name}'s noise would take about {seconds / 60:.0f} min "
        f"({samples} images x {shots} shots, each shot a trajectory of 2**{n} amplitudes), over "
        f"{max_seconds / 60:.0f} min: fewer backend shots or images, a narrower circuit, or a higher limit "
        "(qtl noise --backend-minutes)"
    )


def backend_name(backend) -> str:
    """A backend as results name it: the name it was asked by, else the Qiskit backend's own."""
    return backend if isinstance(backend, str) else getattr(backend, "name", str(backend))


def _point_refusal(loaded: LoadedModel, noise: NoiseConfig) -> str | None:
    """Why one grid point cannot run: an exact ideal point runs on the statevector engine (up to its
    qubit cap), every other one on density matrices (`noise_refusal`)."""
    from qtl.quantum.circuit import STATEVECTOR_MAX_QUBITS as most

    n = loaded.model_config.circuit.n_qubits
    if not noise.is_ideal:
        return noise_refusal(loaded)
    return None if n <= most else f"its {n}-qubit circuit is too wide for statevectors (up to {most} qubits)"


def noise_sweep(
    models: Sequence[LoadedModel],
    inputs: Sequence[HeadInputs],
    grid: Sequence[NoiseConfig],
    *,
    backends: Sequence = (),
    backend_shots: Sequence[int] = (1024,),
    progress: Callable[[int, int], None] | None = None,
    refused: list | None = None,
    seed: int | None = None,
    backend_max_s: float | None = BACKEND_MAX_SECONDS,
) -> list[NoisyResult]:
    """Every model (with its own inputs) at every grid point, then on every backend at every shot count.

    The backend runs are seeded (transpiler and shot simulator) with `seed`, else with the first grid
    point's seed (`noise_grid` gives every point its base's seed: the CLI's --noise-seed), else 0.

    A model skips the grid points it cannot run (`_point_refusal`: the noisy ones where density matrices
    cannot hold it, `noise_refusal`; an exact ideal point runs on statevectors), a backend narrower
    than its circuit (`backend_refusal`) and a backend shot count whose simulation would take too long
    (`backend_slow_refusal`, over `backend_max_s` seconds; None: no limit): each (model name, "noise" or
    the backend, reason) goes to `refused`, and the rest runs; without a `refused` list the first one
    raises ValueError instead."""
    if seed is None:
        seed = grid[0].seed if grid else 0
    backend_shots = list(dict.fromkeys(backend_shots))  # a shot count given twice runs once
    jobs, skipped = [], []
    for m, x in zip(models, inputs, strict=True):
        first = {noise.is_ideal: noise for noise in reversed(grid)}  # one point of each kind
        reasons = {ideal: _point_refusal(m, noise) for ideal, noise in first.items()}
        jobs += [(m, x, noise, None) for noise in grid if not reasons[noise.is_ideal]]
        skipped += [(m.name, "noise", reason) for reason in dict.fromkeys(reasons.values()) if reason]
    for m, x in zip(models, inputs, strict=True):
        for b in backends:
            reason = backend_refusal(m, b)
            slow = (
                {}
                if reason
                else {s: backend_slow_refusal(m, len(x.labels), s, b, backend_max_s) for s in backend_shots}
            )
            jobs += [(m, x, NoiseConfig(shots=s, seed=seed), b) for s, why in slow.items() if not why]
            skipped += [(m.name, backend_name(b), reason)] if reason else []
            skipped += [(m.name, backend_name(b), why) for why in slow.values() if why]
    if skipped and refused is None:
        raise ValueError(f"{skipped[0][0]}: {skipped[0][2]}")
    if refused is not None:
        refused += skipped
    out = []
    for i, (m, x, noise, backend) in enumerate(jobs):
        out.append(evaluate_noise(m, x, noise, backend=backend))
        if progress is not None:
            progress(i + 1, len(jobs))
    return out


def plot(results: Sequence[NoisyResult], title: str = "accuracy under noise"):
    """A matplotlib figure, one panel per model: accuracy against depolarizing strength, one line per shot
    count; each backend as a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in results))
    fig, axes = plt.subplots(
        1, len(models), figsize=(4.2 * len(models) + 1, 4), dpi=110, sharey=True, squeeze=False
    )
    for ax, model in zip(axes[0], models, strict=True):
        lines: dict[int | None, list] = {}
        for r in results:
            if r.model == model and r.backend is None:
                lines.setdefault(r.noise.shots, []).append((r.noise.depolarizing, r.accuracy))
        for i, (shots, points) in enumerate(sorted(lines.items(), key=lambda kv: kv[0] or 10**9)):
            label = "exact" if shots is None else f"{shots} shots"
            ax.plot(*zip(*sorted(points), strict=True), marker="o", label=label, color=f"C{i % 10}")
        for j, r in enumerate(r for r in results if r.model == model and r.backend is not None):
            ax.axhline(r.accuracy, linestyle="--", color=f"C{(len(lines) + j) % 10}", label=r.label)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("depolarizing p (after every gate)")
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    splits = dict.fromkeys(r.split for r in results)
    axes[0][0].set_ylabel(f"{' / '.join(splits) or 'val'} accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


REPORT_SUFFIXES = (".csv", ".json", ".png")
"""The files `write_report(results, PREFIX)` writes: PREFIX with these suffixes (`report_paths`)."""


def report_paths(prefix: str | Path) -> list[Path]:
    """The files `write_report` writes for `prefix`: PREFIX.csv, PREFIX.json and PREFIX.png, the suffix
    added to the whole name ("sweep-p0.05" -> "sweep-p0.05.csv": a dot in it is no suffix to replace, or
    p0.05 and p0.1 wrote one report); a prefix already ending in one of them ("report.csv") drops it."""
    prefix = Path(prefix)
    if prefix.suffix in REPORT_SUFFIXES:
        prefix = prefix.with_suffix("")
    return [prefix.with_name(prefix.name + s) for s in REPORT_SUFFIXES]


def write_report(results: Sequence[NoisyResult], prefix: str | Path) -> list[Path]:
    """PREFIX.csv (one row per result: its checkpoint, data and split too), PREFIX.json (rows + noise
    configs) and PREFIX.png (`plot`); the files are `report_paths(prefix)`."""
    paths = report_paths(prefix)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["model"])
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(paths[0]) as f:
        f.write(text.getvalue().encode())
    doc = [{**row, "noise": r.noise.to_dict()} for row, r in zip(rows, results, strict=True)]
    with atomic_write(paths[1]) as f:
        f.write(json.dumps(doc, indent=2).encode())
    fig = plot(results)
    with atomic_write(paths[2]) as f:
        fig.savefig(f, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths
