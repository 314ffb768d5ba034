"""A quantum checkpoint on a device: estimate, one job, error mitigation, scoring, resume after a restart.

    inputs = head_inputs(loaded, root)                       # the circuit's angles on the val split
    plan = prepare(loaded, inputs, "FakeManilaV2", shots=4000, mitigations=["none", "readout", "zne"])
    plan.estimate                                            # circuits, shots, depth, 2q gates, time, cost
    job_id, job = submit(plan, db)                           # ONE job; its row is in the db before any wait
    report = collect(job_id, db, job)                        # wait, mitigate, score -> JSON-ready dict
    report = collect(job_id, db)                             # after a restart: from what the db holds
    report = job_report(job_id, db)                          # stored if done, else collect

The job holds every sample as a parameter set of the one compiled circuit, each sample's ZNE folds and
the two readout calibration circuits (`qtl.quantum.hardware.devices`). The database row holds all that scoring
needs (circuit, trained weights, angles, labels, the output layer, which program is which), so a restart
loses nothing: a real device's job is found again by id; a local one (fake backend, Braket simulator)
lives only in its process and is run again from the row, seeded as before.

The report: accuracy and `expval_error` (mean |<Z> - exact <Z>| over samples and wires) per mitigation,
beside the exact simulation ("noiseless simulation" for a checkpoint trained with noise, which also gets a
"checkpoint's noise" row: itself as `qtl evaluate` scores it) and the noisy simulation of the device's
calibration, with the shots and estimated device time each mitigation costs, and every sample's <Z>
(`expvals`). A noisy simulation too large for the density-matrix engine (from 14 qubits at its default
memory budget) is skipped with its reason (`skipped_simulations`, said in the estimate too), and the
device's rows are scored.
Circuits wider than 16 qubits are refused before anything is submitted (`counts_refusal`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from qtl.analysis.robustness import HeadInputs
from qtl.models.checkpoint import LoadedModel
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.hardware.devices import open_device
from qtl.quantum.hardware.mitigation import (
    SCALE_FACTORS,
    check_mitigations,
    counts_expvals,
    counts_refusal,
    extrapolate,
    needs,
    readout_corrected,
    readout_matrices,
    readout_refusal,
)
from qtl.quantum.hardware.programs import Program
from qtl.quantum.noise import NoiseConfig
from qtl.utils.download import sha256_file
from qtl.utils.words import error_line


@dataclass
class Plan:
    """What one hardware run will do, before anything is submitted."""

    device: object  # a qtl.quantum.hardware.devices device
    compiled: object  # its Compiled circuit
    record: dict  # JSON-ready: everything scoring needs (goes to the database as the job's plan)
    estimate: dict = field(default_factory=dict)


EXACT, NOISELESS = "exact simulation", "noiseless simulation"
"""The circuit without noise; "noiseless" where the checkpoint itself was trained with noise."""
OWN_NOISE = "checkpoint's noise"
"""The simulation row of the checkpoint under the noise it was trained with, as `qtl evaluate` scores it."""

MAX_SHOTS = 100_000  # per execution, what `prepare` takes


def check_request(shots: int | None = None, samples: int | None = None) -> None:
    """ValueError, in one line, for shots outside 1..MAX_SHOTS or fewer than 1 sample (`prepare` and
    `select` check them; the CLI before any feature is computed)."""
    if shots is not None and not 1 <= shots <= MAX_SHOTS:
        raise ValueError(f"shots must be between 1 and {MAX_SHOTS}, got {shots}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")


def select(inputs: HeadInputs, samples: int | None, seed: int = 0) -> HeadInputs:
    """A seeded random subset of `samples` inputs (in their original order); all of them for None."""
    check_request(samples=samples)
    if samples is None or samples >= len(inputs.labels):
        return inputs
    keep = torch.randperm(len(inputs.labels), generator=torch.Generator().manual_seed(seed))[:samples]
    keep = keep.sort().values
    paths = [inputs.paths[i] for i in keep.tolist()]
    return replace(inputs, angles=inputs.angles[keep], labels=inputs.labels[keep], paths=paths)


def _programs(count: int, scales, calibrate: bool, parametrised_folds: bool = False) -> list[Program]:
    """The programs of a job before submission (no qubits yet); an IBM device runs each fold as one
    parametrised circuit (`IBMDevice.parametrised_folds`), Braket one circuit per sample."""
    out = [Program("base", 1, count)]
    out += [Program("fold", s, count, parametrised=parametrised_folds) for s in scales]
    return out + ([Program("cal", 0, 1), Program("cal", 1, 1)] if calibrate else [])


def _uses(mitigation: str, programs: list[Program]) -> list[Program]:
    """The programs a mitigation reads: base, plus folds for ZNE, plus calibration for readout."""
    keep = {"base"} | ({"fold"} if needs([mitigation], "zne") else set())
    return [p for p in programs if p.kind in keep or (p.kind == "cal" and needs([mitigation], "readout"))]


def prepare(
    loaded: LoadedModel,
    inputs: HeadInputs,
    backend,
    *,
    shots: int = 4000,
    mitigations=("none",),
    extrapolation: str = "richardson",
    seed: int = 0,
    noise: NoiseConfig | None = None,
) -> Plan:
    """Open the device (`backend`: a name, or a device from
    `qtl.quantum.hardware.devices.open_device`), compile
    the circuit once and estimate the run; nothing is submitted. noise: the NoiseConfig of Braket's noisy
    local simulator (braket_dm), for a name."""
    if not loaded.model_config.is_quantum:
        raise ValueError(f"{loaded.name} is a {loaded.variant!r} model: only quantum variants have a circuit")
    check_request(shots=shots)
    mitigations = check_mitigations(mitigations)
    extrapolate(np.zeros((len(SCALE_FACTORS), 1, 1)), method=extrapolation)  # an unknown name fails now
    config = loaded.model_config.circuit
    if refusal := counts_refusal(config.n_qubits):  # before the device is opened or anything runs
        raise ValueError(refusal)
    device = open_device(backend, noise) if isinstance(backend, str) else backend
    compiled = device.compile(config, seed)
    scales = list(SCALE_FACTORS[1:]) if needs(mitigations, "zne") else []
    head = loaded.model.head
    path = Path(loaded.path)
    sim_noise = device.noise(config)
    record = {
        "backend": device.name,
        "provider": device.provider,
        "local": device.local,
        "checkpoint": {"path": str(path), "name": loaded.name, "sha256": sha256_file(path)},
        "config": config.to_dict(),
        "weights": head.q_params.detach().cpu().double().reshape(-1).tolist(),
        "post_net": {
            "weight": head.post_net.weight.detach().cpu().double().tolist(),
            "bias": head.post_net.bias.detach().cpu().double().tolist(),
        },
        "class_names": list(loaded.class_names),
        "angles": inputs.angles.double().tolist(),
        "labels": inputs.labels.tolist(),
        "paths": [str(p) for p in inputs.paths],
        "shots": shots,
        "seed": seed,
        "mitigations": mitigations,
        "extrapolation": extrapolation,
        "scales": scales,
        "noise": None if sim_noise is None else sim_noise.to_dict(),
        "model_noise": _own_noise(loaded),
        "device_noise": None if device.provider != "braket" or sim_noise is None else sim_noise.to_dict(),
    }
    plan = Plan(device, compiled, record)
    plan.estimate = estimate(plan)
    plan.estimate["skipped_simulations"] = skipped_simulations(record)
    record["estimate"] = plan.estimate
    return plan


def _own_noise(loaded: LoadedModel) -> dict | None:
    """The noise the checkpoint was trained and is evaluated with (`qtl evaluate` scores it so), or None
    for an ideal one."""
    noise = loaded.model_config.noise
    return None if noise is None or noise.is_ideal else noise.to_dict()


def _simulated_noises(plan: dict) -> list[tuple[str, NoiseConfig]]:
    """(name, NoiseConfig) of the noisy simulations a report holds beside the device's rows: the
    checkpoint's own noise (where it has one) and the device's calibration (where it has one)."""
    out = []
    if plan.get("model_noise"):  # plans recorded before it was kept have none
        out.append((OWN_NOISE, NoiseConfig.from_dict(plan["model_noise"])))
    if plan["noise"] is not None:
        out.append(("noisy simulation", NoiseConfig.from_dict(plan["noise"])))
    return out


def simulation_refusal(config: CircuitConfig, noise: NoiseConfig) -> str | None:
    """Why the density-matrix engine cannot simulate the circuit under `noise` here, in one line, or None:
    it holds 4**n numbers per sample and stops at its memory budget (14 qubits need 15 GiB or more). Asked
    before anything is submitted (the estimate says which simulation a report will skip) and again when a
    job is scored, so a wide circuit's device counts are scored without it rather than thrown away."""
    from qtl.quantum.engines.density import DensityMatrixEngine

    try:
        DensityMatrixEngine(config, noise)
    except ValueError as exc:  # SimulationTooLargeError, a re-uploading circuit
        return error_line(exc)
    return None


def skipped_simulations(plan: dict) -> list[dict]:
    """{name, reason} of each noisy simulation of `plan` that cannot run here (`simulation_refusal`)."""
    config = CircuitConfig.from_dict(plan["config"])
    return [
        {"name": name, "reason": reason}
        for name, noise in _simulated_noises(plan)
        if (reason := simulation_refusal(config, noise))
    ]


@torch.no_grad()
def _simulate(config: CircuitConfig, noise: NoiseConfig, angles, weights) -> np.ndarray:
    """(N, n) <Z_i> of the density-matrix engine under `noise`, in eval mode (shots, if the noise has
    them, drawn per input as `qtl evaluate` draws them), as many samples at a time as its memory budget
    holds (all 153 val images at 12 qubits would need about 60 GiB at once)."""
    from qtl.quantum.engines.density import DensityMatrixEngine

    engine = DensityMatrixEngine(config, noise).eval()
    chunk = max(1, engine.memory_budget // engine.estimate_bytes(1, torch.float64, training=False))
    return torch.cat([engine(angles[i : i + chunk], weights) for i in range(0, len(angles), chunk)]).numpy()


def estimate(plan: Plan) -> dict:
    """Circuits, executions, shots, the compiled depth and two-qubit gates, estimated device seconds and
    list price (Braket), in total and per mitigation; nothing is submitted."""
    r, device, compiled = plan.record, plan.device, plan.compiled
    count, shots = len(r["labels"]), r["shots"]
    folds = getattr(device, "parametrised_folds", False)
    programs = _programs(count, r["scales"], needs(r["mitigations"], "readout"), folds)
    executions = sum(p.count for p in programs)
    cost = getattr(device, "cost", None)
    per = []
    for m in r["mitigations"]:
        used = _uses(m, programs)
        per.append(
            {
                "mitigation": m,
                "shots": sum(p.count for p in used) * shots,
                "device_seconds": device.seconds(compiled, used, shots),
            }
        )
    return {
        "backend": r["backend"],
        "provider": r["provider"],
        "local": r["local"],
        "samples": count,
        "jobs": 1,
        "circuits": sum(p.circuits for p in programs),
        "executions": executions,
        "shots_per_execution": shots,
        "total_shots": executions * shots,
        "qubits": compiled.physical,
        "depth": compiled.depth,
        "two_qubit_gates": compiled.two_qubit_gates,
        "device_seconds": device.seconds(compiled, programs, shots),
        "cost_usd": None if cost is None else cost(programs, shots),
        "per_mitigation": per,
    }


def submit(plan: Plan, db) -> tuple[str, object]:
    """Submit the plan as one job and record it (with its plan) in the ResultsDB `db` before returning:
    -> (job id, job). Nothing here waits for the device."""
    from qtl.experiments.database import owner_tag

    r = plan.record
    job, programs = _submit(plan.device, plan.compiled, r)
    job_id = plan.device.job_id(job)
    r["programs"] = [p.to_dict() for p in programs]
    if r["local"]:  # it runs in this process alone: `local_state` tells whether that still runs
        r["owner"] = owner_tag()
    db.add_hardware_job(
        job_id,
        provider=r["provider"],
        backend=r["backend"],
        local=r["local"],
        checkpoint=r["checkpoint"]["name"],
        samples=len(r["labels"]),
        shots=r["shots"],
        mitigations=r["mitigations"],
        plan=r,
    )
    return job_id, job


def _submit(device, compiled, r: dict):
    config = CircuitConfig.from_dict(r["config"])
    return device.submit(
        compiled,
        config,
        torch.tensor(r["angles"], dtype=torch.float64).reshape(len(r["labels"]), config.n_qubits),
        torch.tensor(r["weights"], dtype=torch.float64).reshape(config.weight_shape),
        r["shots"],
        scales=r["scales"],
        calibrate=needs(r["mitigations"], "readout"),
        seed=r["seed"],
    )


def local_state(record: dict) -> str | None:
    """What can be said of a recorded job that is still `submitted` and ran locally (a fake backend, a
    Braket simulator: it lives only in the process that submitted it), in a few words; None for any
    other job. `resume` runs such a job again from its row either way."""
    from qtl.experiments.database import owner_gone, owner_parts

    if record["status"] != "submitted" or not record["local"]:
        return None
    owner = record["plan"].get("owner")  # rows from before it was kept have none
    if owner is None:
        return "local: runs only in the process that submitted it; resume runs it again"
    host, pid, _ = owner_parts(owner)
    if host != socket.gethostname():
        return f"local: submitted on {host}, whose process this machine cannot see; resume runs it again"
    if owner_gone(owner):
        return "local: its process ended before it finished; resume runs it again"
    return f"local: running in process {pid}"


def collect(job_id: str, db, job=None) -> dict:
    """Wait for the job, mitigate and score it, and store the report in `db` (status done; failed with
    the reason if anything raises). Without `job` (after a restart) the job comes from the database: a
    real device's by id, a local one run again from its plan -> the report (see `score`)."""
    record = db.hardware_job(job_id)
    if record is None:
        raise ValueError(f"no hardware job {job_id!r} in the database ('qtl hardware jobs' lists them)")
    plan = record["plan"]
    try:
        noise = plan["device_noise"] and NoiseConfig.from_dict(plan["device_noise"])
        device = open_device(plan["backend"], noise or None)
        programs = [Program.from_dict(p) for p in plan["programs"]]
        rerun = job is None and plan["local"]
        if rerun:  # a local job does not outlive its process: the same seeded job again
            compiled = device.compile(CircuitConfig.from_dict(plan["config"]), plan["seed"])
            job, programs = _submit(device, compiled, plan)
        elif job is None:
            job = device.retrieve(job_id)
        report = score(plan, device.counts(job, programs), programs)
    except Exception as exc:
        db.fail_hardware_job(job_id, error_line(exc))
        raise
    report = {"job_id": job_id, "rerun_locally": rerun, **report}
    db.finish_hardware_job(job_id, report)
    return report


def job_report(job_id: str, db) -> dict:
    """A recorded job's report: the stored one when it is done, else `collect(job_id, db)` now; refused
    for a local job another process of this host is still running (`live_here`)."""
    from qtl.experiments.database import live_here, owner_parts, owner_tag

    record = db.hardware_job(job_id)
    if record is None:
        raise ValueError(f"no hardware job {job_id!r} in {db.path} ('qtl hardware jobs' lists them)")
    if record["status"] == "done":
        return record["results"]
    owner = record["plan"].get("owner")
    if record["status"] == "submitted" and record["local"] and owner != owner_tag() and live_here(owner):
        raise ValueError(  # resuming it would simulate it a second time beside it; the last report won
            f"hardware job {job_id} is still running locally in process {owner_parts(owner)[1]}: its "
            "report is stored when it ends ('qtl hardware jobs' says when); stop that process to run it here"
        )
    return collect(job_id, db)


def _expvals(counts: np.ndarray, program: Program, calibration) -> np.ndarray:
    """(count, 2**n) counts -> (count, n) <Z_i>, readout-corrected when `calibration` (matrices, the
    qubits they were measured on) is given."""
    if calibration is None:
        return counts_expvals(counts)
    matrices, calibrated = calibration
    return readout_corrected(counts, matrices, program.physical, calibrated)


def score(plan: dict, counts: list[np.ndarray], programs: list[Program]) -> dict:
    """Mitigate and score a job's counts (one (count, 2**n) array per program) against the exact and the
    noisy simulation -> {"results": [{mitigation, accuracy, expval_error, shots, device_seconds}],
    "simulations": [...], "expvals": {name: (N, n) list}, ...}."""
    from qtl.quantum.engines.native import NativeEngine

    config = CircuitConfig.from_dict(plan["config"])
    n_samples = len(plan["labels"])
    angles = torch.tensor(plan["angles"], dtype=torch.float64).reshape(n_samples, config.n_qubits)
    weights = torch.tensor(plan["weights"], dtype=torch.float64).reshape(config.weight_shape)
    labels = np.asarray(plan["labels"])
    weight = np.asarray(plan["post_net"]["weight"])
    bias = np.asarray(plan["post_net"]["bias"])
    with torch.no_grad():
        exact = NativeEngine(config)(angles, weights).numpy()

    def row(z: np.ndarray) -> dict:
        logits = z @ weight.T + bias
        return {
            "accuracy": round(float((logits.argmax(1) == labels).mean()), 4),
            "expval_error": round(float(np.abs(z - exact).mean()), 5),
        }

    expvals = {"exact": exact}
    # "exact" leaves out the noise a noise-trained checkpoint is evaluated with: name it so
    simulations = [{"name": NOISELESS if plan.get("model_noise") else EXACT, **row(exact)}]
    skipped_sims = skipped_simulations(plan)
    for name, noise in _simulated_noises(plan):
        if any(s["name"] == name for s in skipped_sims):
            continue
        expvals[name] = _simulate(config, noise, angles, weights)
        simulations.append({"name": name, "noise": noise.label(), **row(expvals[name])})
    by_kind = {(p.kind, p.value): (c, p) for p, c in zip(programs, counts, strict=True)}
    matrices, calibration, skipped = None, None, []
    if ("cal", 0) in by_kind:
        matrices = readout_matrices(by_kind[("cal", 0)][0][0], by_kind[("cal", 1)][0][0])
        calibrated = by_kind[("cal", 0)][1].physical[0]
        refusal = readout_refusal(matrices, calibrated, plan["shots"])
        calibration = None if refusal else (matrices, calibrated)
        if refusal:  # the other mitigations are still scored
            skipped = [
                {"mitigation": m, "reason": refusal} for m in plan["mitigations"] if needs([m], "readout")
            ]
    prices = {p["mitigation"]: p for p in plan["estimate"]["per_mitigation"]}
    results = []
    for m in plan["mitigations"]:
        if any(s["mitigation"] == m for s in skipped):
            continue
        cal = calibration if needs([m], "readout") else None
        if needs([m], "zne"):
            scales = [1, *plan["scales"]]
            values = [_expvals(*by_kind[("base", 1)], cal)]
            values += [_expvals(*by_kind[("fold", s)], cal) for s in plan["scales"]]
            z = extrapolate(np.stack(values), scales, plan["extrapolation"])
        else:
            z = _expvals(*by_kind[("base", 1)], cal)
        expvals[m] = z
        price = prices[m]
        results.append(
            {"mitigation": m, **row(z), "shots": price["shots"], "device_seconds": price["device_seconds"]}
        )
    return {
        "backend": plan["backend"],
        "provider": plan["provider"],
        "local": plan["local"],
        "checkpoint": plan["checkpoint"]["name"],
        "samples": n_samples,
        "shots": plan["shots"],
        "extrapolation": plan["extrapolation"],
        "results": results,
        "skipped": skipped,  # mitigations that could not be applied: {mitigation, reason}
        "simulations": simulations,
        "skipped_simulations": skipped_sims,  # noisy simulations too large to run here: {name, reason}
        "estimate": plan["estimate"],
        "calibration": None if matrices is None else matrices.tolist(),
        "labels": plan["labels"],
        "expvals": {k: np.round(v, 5).tolist() for k, v in expvals.items()},
    }
