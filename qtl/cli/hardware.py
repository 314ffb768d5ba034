"""`qtl hardware`: a quantum checkpoint on IBM and Braket devices (the `qtl[hardware]` extra).

    qtl hardware backends                                   fake IBM backends, Braket simulators; with an
                                                            account, the real devices (status, queue)
    qtl hardware estimate CKPT --backend NAME --shots N     circuits, shots, depth, 2q gates, device time
    qtl hardware run CKPT --backend NAME --shots N --mitigation none readout zne [--json FILE]
    qtl hardware resume JOB_ID                              finish a submitted job after a restart
    qtl hardware jobs                                       the jobs in the results database

The parser part is torch-free (`add_parser`); `run` imports the library when a command runs. Neither
imports the rest of `qtl.cli`: the parser passes its shared argument groups in, and `commands` the
function that resolves where checkpoints are scored (`commands._scoring_root`, as evaluate and noise do).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qtl.utils.words import count

DEFAULT_SHOTS = 4000
JSON_HELP = "also write {} as JSON ('-': stdout holds the JSON alone, the table goes to stderr)"


def add_parser(command, add_data_arg, add_db_arg) -> None:
    """Add `hardware` and its subcommands; `command(name, help, description)` makes a subparser,
    `add_data_arg(parser)` and `add_db_arg(parser)` add the shared --data and --db groups."""
    p = command(
        "hardware",
        "run quantum checkpoints on IBM and Braket devices, with error mitigation",
        "Estimate and run a quantum checkpoint's circuit on a fake or real IBM backend (Qiskit Runtime V2 "
        "primitives) or an Amazon Braket device: every sample of the split in ONE job, its id recorded "
        "in the results database before waiting, with readout (M3) and zero-noise (mitiq) mitigation, "
        "scored beside the exact and the noisy simulation. Needs: pip install 'qtl[hardware]'. "
        "Credentials come from the saved Qiskit account or QISKIT_IBM_TOKEN (AWS: boto3's usual chain) "
        "and are never written anywhere. See docs/hardware.md.",
    )
    sub = p.add_subparsers(dest="hardware_command", metavar="SUBCOMMAND", required=True)

    def subcommand(name: str, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help, formatter_class=p.formatter_class)
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        q.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="no progress")
        return q

    q = subcommand(
        "backends", "list the fake IBM backends, Braket's simulators and, with an account, devices"
    )
    q.add_argument("--no-real", action="store_true", help="do not ask IBM's service for real devices")
    q.add_argument("--json", default=None, metavar="FILE", help=JSON_HELP.format("the list"))

    for name, what in (
        (
            "estimate",
            "what a run would cost: circuits, shots, depth, two-qubit gates, device time; submits nothing",
        ),
        ("run", "run a checkpoint's circuit on a device as one job, with error mitigation"),
    ):
        q = subcommand(name, what)
        q.add_argument("checkpoint", help="a quantum checkpoint (.pt)")
        _add_run_args(q)
        add_data_arg(q)
        add_db_arg(q)
        q.add_argument("--json", default=None, metavar="FILE", help=JSON_HELP.format("the report"))
        if name == "run":
            q.add_argument(
                "--no-wait",
                action="store_true",
                help="submit, record the job and stop ('qtl hardware resume JOB_ID' finishes it)",
            )

    q = subcommand("resume", "finish a submitted job from what the results database holds")
    q.add_argument("job_id", metavar="JOB_ID", help="the job's id, as 'qtl hardware jobs' lists it")
    add_db_arg(q)
    q.add_argument("--json", default=None, metavar="FILE", help=JSON_HELP.format("the report"))

    q = subcommand("jobs", "list the hardware jobs of the results database with their state")
    add_db_arg(q)


def _add_run_args(q: argparse.ArgumentParser) -> None:
    from qtl.quantum.hardware.mitigation import EXTRAPOLATIONS, MITIGATIONS

    g = q.add_argument_group("device and mitigation")
    g.add_argument(
        "--backend",
        default="FakeManilaV2",
        metavar="NAME",
        help="a fake IBM backend (FakeManilaV2), a real IBM device (ibm_brisbane; needs an account), "
        "braket_sv, braket_dm, rigetti/Ankaa-3, ionq/Forte-1 or iqm/Garnet",
    )
    g.add_argument(
        "--shots", type=int, default=DEFAULT_SHOTS, metavar="N", help="shots per circuit execution"
    )
    g.add_argument(
        "--mitigation",
        nargs="+",
        default=["none"],
        choices=MITIGATIONS,
        metavar="M",
        help=f"mitigations to score, from one job: {', '.join(MITIGATIONS)}",
    )
    g.add_argument(
        "--extrapolation", default="richardson", choices=EXTRAPOLATIONS, help="ZNE fit through scale 1, 3, 5"
    )
    g.add_argument("--samples", type=int, default=None, metavar="N", help="a seeded subset of N images")
    g.add_argument("--split", default="val", choices=("train", "val", "test"), help="which split to run")
    g.add_argument("--seed", type=int, default=0, help="seeds the subset, transpiler, folds and simulator")
    g.add_argument(
        "--noise-from",
        default="FakeManilaV2",
        metavar="BACKEND",
        help="braket_dm: simulate the calibration of this fake IBM backend",
    )


def run(args, bar, scoring_root) -> int:
    """Run `qtl hardware SUBCOMMAND`; `scoring_root(args, bar, models)` is the dataset root checkpoints
    are scored on: --data split as they recorded, else the dataset they recorded (`qtl evaluate`'s)."""
    if args.hardware_command in ("estimate", "run"):
        return {"estimate": _estimate, "run": _run}[args.hardware_command](args, bar, scoring_root)
    return {"backends": _backends, "resume": _resume, "jobs": _jobs}[args.hardware_command](args, bar)


def _db(args):
    from qtl.experiments.database import ResultsDB
    from qtl.paths import results_db

    return ResultsDB(Path(args.db) if args.db else results_db())


def _write_json(doc, target: str | None) -> None:
    if target is None:
        return
    text = json.dumps(doc, indent=1)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")
        print(f"wrote {target}", file=sys.stderr)


def _table_out(args):
    """Where the text table goes: stdout, or stderr when `--json -` makes stdout the JSON alone."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def _backends(args, bar) -> int:
    from qtl.quantum.hardware.backends import ibm_account, list_backends
    from qtl.quantum.hardware.braket import DEVICES, LOCAL

    notes: list[str] = []
    rows = list_backends(real=not args.no_real, notes=notes)
    rows += [{"name": k, "kind": "braket", "qubits": None, "status": v} for k, v in LOCAL.items()]
    rows += [{"name": k, "kind": "braket", "qubits": None, "status": "AWS account"} for k in DEVICES]
    out = _table_out(args)
    print(f"{'name':<22}{'kind':<8}{'qubits':>7}  status", file=out)
    for r in rows:
        queue = f", {r['pending_jobs']} jobs queued" if "pending_jobs" in r else ""
        print(f"{r['name']:<22}{r['kind']:<8}{r['qubits'] or '':>7}  {r['status']}{queue}", file=out)
    if not ibm_account():
        notes.append("no IBM Quantum account: real IBM devices are not listed (see docs/hardware.md)")
    for note in notes:
        print(f"qtl: warning: {note}", file=sys.stderr)
    _write_json(rows, args.json)
    return 0


def _plan(args, bar, scoring_root):
    from qtl.analysis.hardware_runs import check_request, prepare, select
    from qtl.analysis.robustness import head_inputs
    from qtl.models.checkpoint import load_checkpoint
    from qtl.quantum.hardware.devices import open_device
    from qtl.quantum.hardware.mitigation import needs

    check_request(args.shots, args.samples)  # what the arguments alone decide, before the backbone runs
    loaded = load_checkpoint(args.checkpoint)
    if not loaded.model_config.is_quantum:
        raise ValueError(
            f"{args.checkpoint} is a {loaded.variant!r} model: only quantum checkpoints have a circuit"
        )
    noise = None
    if args.backend == "braket_dm":
        from qtl.quantum.hardware.calibration import noise_from_backend

        noise = noise_from_backend(loaded.model_config.circuit, args.noise_from)
    device = open_device(args.backend, noise)  # an unknown name or a missing account fail before any work
    if hasattr(device, "check_zne"):  # a real Braket device refuses ZNE, in the estimate as in the run
        device.check_zne(needs(args.mitigation, "zne"))
    root = scoring_root(args, bar, [loaded])
    inputs = head_inputs(loaded, root, args.split, progress=bar.hook(f"features of {loaded.name}"))
    inputs = select(inputs, args.samples, args.seed)
    bar.message(f"compiling for {args.backend} ...")
    return prepare(
        loaded,
        inputs,
        device,
        shots=args.shots,
        mitigations=args.mitigation,
        extrapolation=args.extrapolation,
        seed=args.seed,
    )


def _seconds(value) -> str:
    """Seconds in words: "n/a", "0.35 ms", "12.0 s", "14.2 min"."""
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"


def format_estimate(e: dict) -> str:
    """The estimate as text lines."""
    where = "locally" if e["local"] else "on the device"
    if e["cost_usd"] is not None:
        cost = f", list price about ${e['cost_usd']:.2f}"
    elif e["provider"] == "braket" and not e["local"]:
        cost = ", list price not known to qtl (see https://aws.amazon.com/braket/pricing/)"
    else:
        cost = ""
    time = "n/a" if e["device_seconds"] is None else f"{_seconds(e['device_seconds'])} estimated"
    lines = [
        f"backend      {e['backend']} ({e['provider']}, runs {where})",
        f"job          {count(e['jobs'], 'job')}: {count(e['circuits'], 'circuit')}, "
        f"{count(e['executions'], 'execution')} ({count(e['samples'], 'sample')} as parameter sets) "
        f"x {e['shots_per_execution']} shots = {e['total_shots']} shots",
        f"compiled     depth {e['depth']}, {e['two_qubit_gates']} two-qubit gates, qubits {e['qubits']}",
        f"device time  {time}{cost}",
        "",
        f"{'mitigation':<14}{'shots':>10}{'device time':>14}",
    ]
    lines += [
        f"{p['mitigation']:<14}{p['shots']:>10}{_seconds(p['device_seconds']):>14}"
        for p in e["per_mitigation"]
    ]
    return "\n".join(lines)


def format_report(r: dict) -> str:
    """A run's report as a table: simulations, then one row per mitigation."""
    lines = [
        f"job {r['job_id']} on {r['backend']} ({r['checkpoint']}): "
        f"{r['samples']} samples x {r['shots']} shots"
        + (" (local job run again from the database)" if r.get("rerun_locally") else ""),
        "",
        f"{'':<22}{'accuracy':>10}{'expval_error':>14}{'shots':>10}{'device time':>14}",
    ]
    for s in r["simulations"]:
        lines.append(f"{s['name']:<22}{s['accuracy']:>10.4f}{s['expval_error']:>14.4f}")
    for m in r["results"]:
        lines.append(
            f"{'device, ' + m['mitigation']:<22}{m['accuracy']:>10.4f}{m['expval_error']:>14.4f}"
            f"{m['shots']:>10}{_seconds(m['device_seconds']):>14}"
        )
    for skipped in r.get("skipped", []):  # reports from before it had none
        lines.append(f"{'device, ' + skipped['mitigation']:<22}not applied: {skipped['reason']}")
    noisy = next((s for s in r["simulations"] if "noise" in s), None)
    if noisy:
        lines += ["", f"noisy simulation: the device's calibration as a NoiseConfig ({noisy['noise']})"]
    lines.append("expval_error: mean |<Z> - exact <Z>| over samples and wires")
    return "\n".join(lines)


def _estimate(args, bar, scoring_root) -> int:
    plan = _plan(args, bar, scoring_root)
    bar.close()
    print(format_estimate(plan.estimate), file=_table_out(args))
    _write_json(plan.estimate, args.json)
    return 0


def _run(args, bar, scoring_root) -> int:
    from qtl.analysis.hardware_runs import collect, submit

    plan = _plan(args, bar, scoring_root)
    with _db(args) as db:
        bar.message(f"submitting one job to {args.backend} ...")
        job_id, job = submit(plan, db)
        bar.close()
        print(f"job {job_id} submitted to {args.backend}; recorded in {db.path}", file=sys.stderr)
        if args.no_wait:
            if args.json == "-":  # stdout is JSON: the job, as there is no report yet
                _write_json({"job_id": job_id, "backend": args.backend, "status": "submitted"}, "-")
            else:
                print(job_id)
            return 0
        bar.message("waiting for the job ...")
        return _show(collect(job_id, db, job), args, bar)


def _show(report: dict, args, bar) -> int:
    bar.close()
    print(format_report(report), file=_table_out(args))
    _write_json(report, args.json)
    return 0


def _resume(args, bar) -> int:
    from qtl.analysis.hardware_runs import job_report

    with _db(args) as db:
        bar.message(f"resuming job {args.job_id} (stored if done, else waited for and scored) ...")
        return _show(job_report(args.job_id, db), args, bar)


def _jobs(args, bar) -> int:
    with _db(args) as db:
        rows = db.hardware_jobs()
    print(f"{'job id':<38}{'status':<11}{'backend':<16}{'samples':>8}{'shots':>7}  mitigations  created")
    for r in rows:
        print(
            f"{r['id']:<38}{r['status']:<11}{r['backend']:<16}{r['samples']:>8}{r['shots']:>7}  "
            f"{' '.join(r['mitigations']):<12} {r['created']}" + (f"  ({r['error']})" if r["error"] else "")
        )
    print(f"{len(rows)} job(s)", file=sys.stderr)
    return 0
