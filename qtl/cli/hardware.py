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
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from qtl.utils.words import count, duration

OWN_NOISE = "checkpoint's noise"  # qtl.analysis.hardware_runs.OWN_NOISE (the parser stays torch-free)

DEFAULT_SHOTS = 4000
NOISE_FROM = "FakeManilaV2"  # braket_dm's calibration unless --noise-from names another
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
        "--extrapolation",
        default=None,
        choices=EXTRAPOLATIONS,
        help="ZNE fit through scale 1, 3, 5 (default: richardson; only with zne or readout+zne)",
    )
    g.add_argument("--samples", type=int, default=None, metavar="N", help="a seeded subset of N images")
    g.add_argument("--split", default="val", choices=("train", "val", "test"), help="which split to run")
    g.add_argument(
        "--seed", type=_seed, default=0, help="seeds the subset, transpiler, folds and simulator (0 or more)"
    )
    g.add_argument(
        "--noise-from",
        default=None,
        metavar="BACKEND",
        help=f"braket_dm only: simulate the calibration of this fake IBM backend (default: {NOISE_FROM})",
    )


def _seed(text: str) -> int:
    """A seed: a whole number from 0 (Qiskit's transpiler refuses a negative one, after the features)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text}")
    return int(text)


def _check_options(args) -> None:
    """ValueError (one line) for an option the run would ignore: --noise-from sets braket_dm's noise
    alone (a fake or real IBM backend's noisy simulation is its own calibration; braket_sv is ideal), and
    --extrapolation fits ZNE alone. Then the default extrapolation, richardson."""
    from qtl.quantum.hardware.mitigation import needs

    if args.noise_from is not None and args.backend != "braket_dm":
        raise ValueError(
            f"--noise-from sets the noise of braket_dm alone; {args.backend}'s noisy simulation is "
            f"{_own_noise(args.backend)}: drop --noise-from, or use --backend braket_dm"
        )
    if args.extrapolation is not None and not needs(args.mitigation, "zne"):
        raise ValueError(
            "--extrapolation fits ZNE, and --mitigation has no zne or readout+zne: add one, or drop it"
        )
    args.extrapolation = args.extrapolation or "richardson"


def _own_noise(backend: str) -> str:
    from qtl.quantum.hardware.braket import is_braket

    return "none (an ideal simulator)" if is_braket(backend) else "its own calibration"


def _calibration_noise(config, args):
    """braket_dm's NoiseConfig: the calibration of --noise-from, whose default is named where it is too
    narrow (the user never named it)."""
    from qtl.quantum.hardware.calibration import noise_from_backend

    try:
        return noise_from_backend(config, args.noise_from or NOISE_FROM)
    except ValueError as exc:
        if args.noise_from is not None:
            raise
        raise ValueError(
            f"braket_dm simulates the calibration of --noise-from, by default {NOISE_FROM}: {exc}; name a "
            "wider fake backend with --noise-from ('qtl hardware backends' lists them)"
        ) from None


def run(args, bar, scoring_root) -> int:
    """Run `qtl hardware SUBCOMMAND`; `scoring_root(args, bar, models)` is the dataset root checkpoints
    are scored on: --data split as they recorded, else the dataset they recorded (`qtl evaluate`'s)."""
    if args.hardware_command in ("estimate", "run"):
        return {"estimate": _estimate, "run": _run}[args.hardware_command](args, bar, scoring_root)
    return {"backends": _backends, "resume": _resume, "jobs": _jobs}[args.hardware_command](args, bar)


def _db_path(args) -> Path:
    from qtl.paths import results_db

    return Path(args.db) if args.db else results_db()


def _db(args, *, readonly: bool = False, existing: bool = False):
    """The results database. `existing`: refuse (one line, nothing written) where there is none, as
    `jobs` and `resume` have nothing to read there; `readonly` (`jobs`) opens it without writing.
    Otherwise (`run`) its folder must exist: refused before any work, as other qtl outputs are."""
    from qtl.experiments.database import ResultsDB

    path = _db_path(args)
    if (existing or readonly) and not path.is_file():
        raise ValueError(f"no results database at {path} (--db names another; 'qtl hardware run' makes one)")
    return ResultsDB(_db_folder(path), readonly=readonly)


def _db_folder(path: Path) -> Path:
    """`path`, whose folder must exist (ResultsDB would make it) and take a file: refused before any work."""
    from qtl.utils.atomic import check_folder

    check_folder(path)
    return path


def _check_db(path: Path) -> None:
    """ValueError (one line) where `qtl hardware run` could not record its job in `path`: a missing or
    unwritable folder, another program's SQLite file, a file it cannot write (`ResultsDB` says which).
    Asked before any work, and writing nothing where there is no database yet: it was found only once
    the features were computed and the circuits compiled."""
    import os

    from qtl.experiments.database import ResultsDB

    _db_folder(path)
    if path.exists():
        with ResultsDB(path):  # refuses a foreign or unwritable file; a qtl database is left as it is
            pass
    elif not os.access(path.parent, os.W_OK):
        raise ValueError(f"cannot write {path.name} into {path.parent}: no permission")


def _write_json(doc, target: str | None) -> None:
    if target is None:
        return
    text = json.dumps(doc, indent=1)
    if target == "-":
        print(text)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)  # as `check_outputs` let it
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


def _plan(args, bar, scoring_root, *, submitting: bool = False):
    from qtl.analysis.hardware_runs import check_request, prepare, select
    from qtl.analysis.robustness import head_inputs
    from qtl.models.checkpoint import load_checkpoint
    from qtl.quantum.hardware.devices import open_device
    from qtl.quantum.hardware.mitigation import counts_refusal, needs
    from qtl.quantum.hardware.programs import width_refusal

    check_request(args.shots, args.samples)  # what the arguments alone decide, before the backbone runs
    _check_options(args)
    loaded = load_checkpoint(args.checkpoint)
    if not loaded.model_config.is_quantum:
        raise ValueError(
            f"{args.checkpoint} is a {loaded.variant!r} model: only quantum checkpoints have a circuit"
        )
    config = loaded.model_config.circuit
    if refusal := counts_refusal(config.n_qubits):
        raise ValueError(refusal)
    noise = _calibration_noise(config, args) if args.backend == "braket_dm" else None
    device = open_device(args.backend, noise)  # an unknown name or a missing account fail before any work
    if submitting and hasattr(device, "check_account"):  # a real Braket device: AWS set up (an estimate
        device.check_account()  # prices it without)
    if device.num_qubits and (refusal := width_refusal(device.name, device.num_qubits, config.n_qubits)):
        raise ValueError(refusal)  # before the features, not after them (compiling says it too)
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


def format_estimate(e: dict) -> str:
    """The estimate as text lines."""
    where = "locally" if e["local"] else "on the device"
    if e["cost_usd"] is not None:
        cost = f", list price about ${e['cost_usd']:.2f}"
    elif e["provider"] == "braket" and not e["local"]:
        cost = ", list price not known to qtl (see https://aws.amazon.com/braket/pricing/)"
    else:
        cost = ""
    time = "n/a" if e["device_seconds"] is None else f"{duration(e['device_seconds'])} estimated"
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
        f"{p['mitigation']:<14}{p['shots']:>10}{duration(p['device_seconds']):>14}"
        for p in e["per_mitigation"]
    ]
    lines += [_skipped_simulation(s) for s in e.get("skipped_simulations", [])]
    return "\n".join(lines)


def _skipped_simulation(s: dict) -> str:
    """A noisy simulation the report leaves out, and why (the device's rows are scored all the same)."""
    return f"{s['name']} will be skipped: {s['reason']}"


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
    for s in r.get("skipped_simulations", []):  # reports from before it had none
        lines.append(f"{s['name']:<22}not run: {s['reason']}")
    for m in r["results"]:
        lines.append(
            f"{'device, ' + m['mitigation']:<22}{m['accuracy']:>10.4f}{m['expval_error']:>14.4f}"
            f"{m['shots']:>10}{duration(m['device_seconds']):>14}"
        )
    for skipped in r.get("skipped", []):  # reports from before it had none
        lines.append(f"{'device, ' + skipped['mitigation']:<22}not applied: {skipped['reason']}")
    names = {s["name"]: s for s in r["simulations"]}
    notes = []
    if own := names.get(OWN_NOISE):
        notes.append(
            f"{OWN_NOISE}: the noise the checkpoint was trained with, as 'qtl evaluate' scores it "
            f"({own['noise']}); the noiseless simulation leaves it out"
        )
    if noisy := names.get("noisy simulation"):
        notes.append(f"noisy simulation: the device's calibration as a NoiseConfig ({noisy['noise']})")
    lines += ["", *notes] if notes else []
    lines.append("expval_error: mean |<Z> - exact (noiseless) <Z>| over samples and wires")
    return "\n".join(lines)


def _estimate(args, bar, scoring_root) -> int:
    plan = _plan(args, bar, scoring_root)
    bar.close()
    print(format_estimate(plan.estimate), file=_table_out(args))
    _write_json(plan.estimate, args.json)
    return 0


def _run(args, bar, scoring_root) -> int:
    from qtl.analysis.hardware_runs import collect, submit

    _check_db(_db_path(args))  # before any work: the features, the compile, the job
    plan = _plan(args, bar, scoring_root, submitting=True)
    for skipped in plan.estimate.get("skipped_simulations", []):  # known now, not after the device ran
        bar.note(f"qtl: warning: {_skipped_simulation(skipped)}; the device's rows are scored")
    with _db(args) as db:
        bar.message(f"submitting one job to {args.backend} ...")
        job_id, job = submit(plan, db)
        bar.close()
        local = plan.record["local"] and not args.no_wait
        here = f"; it runs in this process: {LOCAL_CTRL_C.format(job_id=job_id)}" if local else ""
        print(f"job {job_id} submitted to {args.backend}; recorded in {db.path}{here}", file=sys.stderr)
        if args.no_wait:
            if args.json == "-":  # stdout is JSON: the job, as there is no report yet
                _write_json({"job_id": job_id, "backend": args.backend, "status": "submitted"}, "-")
            else:
                print(job_id)
            return 0
        bar.message("waiting for the job ...")
        with ctrl_c_ends_at_once(local):
            return _show(collect(job_id, db, job), args, bar)


def _show(report: dict, args, bar) -> int:
    bar.close()
    print(format_report(report), file=_table_out(args))
    _write_json(report, args.json)
    return 0


def _resume(args, bar) -> int:
    from qtl.analysis.hardware_runs import job_report

    with _db(args, existing=True) as db:
        bar.message(f"resuming job {args.job_id} (stored if done, else waited for and scored) ...")
        record = db.hardware_job(args.job_id) or {}
        rerun = record.get("local") and record.get("status") != "done"  # it runs again, in this process
        if rerun:
            again = LOCAL_CTRL_C.format(job_id=args.job_id)
            bar.note(f"qtl: note: job {args.job_id} runs again in this process: {again}")
        with ctrl_c_ends_at_once(rerun):
            return _show(job_report(args.job_id, db), args, bar)


LOCAL_CTRL_C = "Ctrl-C ends it at once, and 'qtl hardware resume {job_id}' runs it again"
"""What Ctrl-C does to a local job (`ctrl_c_ends_at_once`), said as it starts."""


@contextlib.contextmanager
def ctrl_c_ends_at_once(when: bool = True):
    """While a fake IBM backend's simulation runs (qiskit-aer, which holds the interpreter until it
    ends), Ctrl-C ends the process at once, by the signal's default action: Python would see it only
    once the simulation is over (a run of 100,000 shots with ZNE went on 100 s after a Ctrl-C and
    printed its report). Nothing is lost that waiting would keep: a local job is recorded before it runs
    and `qtl hardware resume` runs it again, and an interrupted `qtl noise` writes nothing either way.
    Only in the main thread, and only `when`."""
    if not when or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _jobs(args, bar) -> int:
    import sqlite3

    from qtl.analysis.hardware_runs import local_state

    with _db(args, readonly=True) as db:
        try:
            rows = db.hardware_jobs()
        except sqlite3.OperationalError:  # a database from before hardware jobs: none
            rows = []
        notes = {r["id"]: local_state(db.hardware_job(r["id"])) for r in rows if r["local"]}
    print(format_jobs(rows, notes))
    print(f"{len(rows)} job(s)", file=sys.stderr)
    return 0


def format_jobs(rows: list[dict], notes: dict | None = None) -> str:
    """The jobs as a table, each column as wide as its widest entry; a failed job's error, or what can be
    said of a local job still `submitted` (`notes`: id -> words), after the row."""
    notes = notes or {}
    cells = [
        [r["id"], r["status"], r["backend"], str(r["samples"]), str(r["shots"]), " ".join(r["mitigations"])]
        for r in rows
    ]
    head = ["job id", "status", "backend", "samples", "shots", "mitigations"]
    widths = [max(len(c) for c in column) for column in zip(head, *cells, strict=True)]
    right = {3, 4}  # numbers

    def line(values: list[str]) -> str:
        padded = zip(values, widths, strict=True)
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(padded))

    lines = [line(head) + "  created"]
    for r, c in zip(rows, cells, strict=True):
        note = r["error"] or notes.get(r["id"])
        lines.append(line(c) + f"  {r['created']}" + (f"  ({note})" if note else ""))
    return "\n".join(lines)
