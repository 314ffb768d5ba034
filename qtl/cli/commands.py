"""One handler per `qtl` subcommand: parsed arguments -> config dataclasses -> library call -> print.

Each handler takes (args, bar) and returns the exit status; `HANDLERS` maps command names to them.
This module imports torch (through the progress callbacks), so `main` imports it only once a command
runs: `qtl --help` never loads torch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import time
from pathlib import Path

from qtl.cli.output import (
    COMPARE_FIELDS,
    check_outputs,
    format_dataset,
    format_evaluation,
    format_noise_table,
    format_predictions,
    format_runs,
    format_skipped,
    format_summary,
    format_sweeps,
    predictions_document,
    write_compare,
    write_rows,
)
from qtl.cli.parser import HELD_OUT_METRIC
from qtl.cli.progress import BarCallback, ProgressBar, RunsBar, SweepBar
from qtl.config import (
    DEFAULT_BACKBONE,
    FROZEN_VARIANTS,
    DataRegime,
    MachineConfig,
    ModelConfig,
    check_settings_apply,
)
from qtl.models.weights import describe_backbone
from qtl.quantum.circuit import CircuitConfig
from qtl.utils.atomic import check_folder
from qtl.utils.devices import resolve_device
from qtl.utils.words import count, duration

# Each handler imports the library functions it calls: a command loads only its own part of qtl.

# ---- configs from arguments


def _backbone(args) -> tuple[str, bool]:
    """(backbone, pretrained) from --backbone / --random-init. Without --backbone: resnet18, or, where its
    ImageNet weights cannot be had, the bundled pretrained efficientnet_lite0 (with a warning saying so)."""
    if args.backbone is not None:
        return args.backbone, not args.random_init
    choice = default_backbone(not args.random_init)
    return choice.backbone, choice.pretrained


def _backbone_notice(args) -> str | None:
    """Why the backbone is the bundled fallback (None when it was asked for, or is the default)."""
    return None if args.backbone is not None else default_backbone(not args.random_init).notice


@functools.cache
def default_backbone(pretrained: bool):
    """The backbone a command without --backbone uses (`qtl.models.weights.resolve_backbone`), resolved
    and warned about once per command: `main` clears this cache before each one."""
    from qtl.models.weights import resolve_backbone

    choice = resolve_backbone(DEFAULT_BACKBONE, pretrained)
    if choice.notice:
        logging.warning("%s (choose one with --backbone)", choice.notice)
    return choice


def _model_config(args, variant: str) -> ModelConfig:
    backbone, pretrained = _backbone(args)
    circuit = CircuitConfig(
        n_qubits=args.qubits,
        depth=args.depth,
        entangler=args.entangler,
        rotation=args.rotation,
        hadamard=not args.no_hadamard,
        reupload=args.reupload,
    )
    return ModelConfig(
        variant=variant,
        feature_dim=args.feature_dim if variant in FROZEN_VARIANTS else None,
        backbone=backbone,
        pretrained=pretrained,
        circuit=circuit,
        engine=args.engine,
        diff_method=args.diff_method,
        max_bond=args.max_bond,
        q_delta=args.q_delta,
        noise=_noise_config(args, shots=args.shots, circuit=circuit),
    )


def _strengths(values: list[float] | None, name: str) -> tuple[float, float]:
    """--name P or --name P1 P2 -> (one-qubit, two-qubit) strengths."""
    if not values:
        return 0.0, 0.0
    if len(values) > 2:
        raise ValueError(f"--{name} takes one strength, or two (one- and two-qubit gates), got {len(values)}")
    return values[0], values[-1]


def _noise_config(args, shots: int | None = None, circuit: CircuitConfig | None = None):
    from qtl.quantum.noise import NoiseConfig

    if getattr(args, "noise_from", None):
        from qtl.quantum.hardware.calibration import noise_from_backend

        flags = ("depolarizing", "amplitude_damping", "phase_damping")
        if any(getattr(args, k, None) for k in flags) or args.readout:
            raise ValueError("--noise-from sets the channels and readout error; drop the other noise flags")
        derived = noise_from_backend(circuit or CircuitConfig(), args.noise_from)
        return dataclasses.replace(derived, shots=shots, seed=args.noise_seed)

    dep = _strengths(getattr(args, "depolarizing", None), "depolarizing")
    amp = _strengths(args.amplitude_damping, "amplitude-damping")
    phase = _strengths(args.phase_damping, "phase-damping")
    return NoiseConfig(
        depolarizing=dep[0],
        amplitude_damping=amp[0],
        phase_damping=phase[0],
        depolarizing_2q=dep[1],
        amplitude_damping_2q=amp[1],
        phase_damping_2q=phase[1],
        readout=args.readout,
        shots=shots,
        seed=args.noise_seed,
    )


def _plan(args, variants: list[str], seeds: list[int], root: Path):
    """`qtl.experiments.runs.plan_runs` with the command line's overrides: one Run per (variant, seed)."""
    from qtl.experiments.runs import RECIPE_OVERRIDES, plan_runs
    from qtl.paths import models_dir

    overrides = {k: getattr(args, k) for k in RECIPE_OVERRIDES if getattr(args, k, None) is not None}
    overrides["regime"] = _regime(args)
    directory = Path(args.models_dir) if args.models_dir else models_dir()
    machine = MachineConfig(
        device=args.device,
        data_dir=str(root),
        cache_dir=args.cache_dir,
        num_workers=getattr(args, "num_workers", None) or 0,
    )
    runs = plan_runs(
        variants,
        _model_config(args, variants[0]),
        seeds,
        directory,
        epochs=args.epochs,
        overrides=overrides,
        machine=machine,
    )
    extra = {
        k: getattr(args, k)
        for k in ("backbone_lr", "views", "freeze_batchnorm")
        if getattr(args, k, None) is not None
    }
    return [dataclasses.replace(r, train_config=dataclasses.replace(r.train_config, **extra)) for r in runs]


def _regime(args) -> DataRegime:
    """The data regime of --split, --folds, --classes, --per-class and --label-noise."""
    return DataRegime(
        split=args.split,
        folds=args.folds,
        classes=args.classes,
        per_class=args.per_class,
        label_noise=args.label_noise,
    )


def _dataset(args, bar: ProgressBar, *, download: bool = True, report: bool = True, split=None):
    """The PreparedDataset `--data` names (hymenoptera by default); skipped files are reported once. A
    folder of class folders is split by --val-ratio and --split-seed, else by `split` (val_ratio, seed:
    a checkpoint's own), else by the defaults."""
    from qtl.data.datasets import DEFAULT_VAL_RATIO, open_dataset

    ratio, seed = split or (DEFAULT_VAL_RATIO, 0)
    ds = open_dataset(
        args.data,
        val_ratio=ratio if args.val_ratio is None else args.val_ratio,
        seed=seed if args.split_seed is None else args.split_seed,
        download=download,
        progress=bar.hook(_preparing(args.data), unit="B"),
    )
    if args.val_ratio is not None or args.split_seed is not None:  # asked here: said if it did not apply
        for note in ds.notes:
            bar.note(f"qtl: note: {note}")
    if report and ds.skipped:
        bar.message(format_skipped(ds.skipped))
    return ds


def _preparing(data: str | None) -> str:
    """The progress bar's label while `--data` is made ready: a zip is extracted, the rest downloaded."""
    path = Path(data) if data else None
    if path is not None and path.is_file():
        return f"extracting {path.name}"
    return "downloading the dataset"


def _recorded_elsewhere(records: list[tuple[dict | None, Path | None]]) -> str | None:
    """Why checkpoints are not scored on the dataset they recorded ((record, its root here or None) per
    checkpoint): theirs is not on this machine, or they recorded different ones; None otherwise."""
    missing = sorted({r["name"] for r, here in records if r and r.get("name") and here is None})
    roots = {(r.get("name"), str(here) if here else r.get("root")) for r, here in records if r}
    if len(roots) > 1:
        named = [(name, root) for name, root in roots if name]
        names = [name for name, _ in named]  # one name at two places: each said with its place
        shown = sorted({f"{n} at {root}" if names.count(n) > 1 and root else n for n, root in named})
        gone = f"; not on this machine as trained on: {', '.join(missing)}" if missing else ""
        return f"the checkpoints recorded different datasets ({', '.join(shown)}{gone})"
    if missing:
        return (
            f"the dataset the checkpoint recorded ({', '.join(missing)}) is not on this machine as trained on"
        )
    return None


def _scoring_root(args, bar: ProgressBar, models) -> Path:
    """Where checkpoints are scored: `--data`, else the dataset they all recorded where it is on this
    machine (`recorded_root`: a folder, or a zip's arranged copy), else `_dataset`'s default. ValueError
    for --val-ratio or --split-seed without --data (they were ignored)."""
    from qtl.data.datasets import recorded_root
    from qtl.data.folders import DatasetError

    if args.data is None:
        given = [
            flag
            for flag, v in (("--val-ratio", args.val_ratio), ("--split-seed", args.split_seed))
            if v is not None
        ]
        if given:  # they split a folder --data names; the recorded dataset was scored as recorded, silently
            raise ValueError(
                f"{' and '.join(given)} {'split' if len(given) > 1 else 'splits'} the folder or zip --data "
                "names: pass it too (without it the checkpoint's recorded dataset, or the default one, is "
                "scored as it is split)"
            )
        records = [(r, recorded_root(r)) for m in models for r in [(m.meta or {}).get("dataset")]]
        found = {root for _, root in records}
        if len(found) == 1 and None not in found:
            root = found.pop()
            bar.message(f"scoring on {root.name}, the dataset the checkpoint recorded (--data picks another)")
            return root
        why = _recorded_elsewhere(records)
        try:  # the default dataset where it is here
            root = _dataset(args, bar, download=False).root
        except DatasetError:  # said first: a failed download would be the only message
            if why:
                bar.note(f"qtl: warning: {why}: scoring on the default dataset (--data names the one to use)")
            return _dataset(args, bar).root
        named = {r["name"] for r, _ in records if r and r.get("name")}
        if why and (len(named) > 1 or root.name not in named):  # said: it was a silent switch of data
            bar.note(f"qtl: warning: {why}: scoring on {root.name} instead (--data names the one to use)")
        return root
    # --data: a folder of class folders split as the checkpoints recorded (they all agree), so its val
    # images are theirs, not the default split's (with training images among them)
    splits = {
        (r["val_ratio"], r.get("seed") or 0)
        for m in models
        if (r := (m.meta or {}).get("dataset")) and r.get("val_ratio") is not None
    }
    return _dataset(args, bar, split=splits.pop() if len(splits) == 1 else None).root


def _figure_path(path, *, figure: bool = True) -> Path:
    """A figure's file, checked before any work: a format matplotlib writes, in a folder that exists;
    with figure=False any file (a JSON beside the figure), in a folder that exists."""
    path = Path(path)
    if figure:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        kinds = FigureCanvasAgg(Figure()).get_supported_filetypes()
        if path.suffix.lstrip(".").lower() not in kinds:
            raise ValueError(
                f"{path}: a figure is written as one of {', '.join(sorted(kinds))} (by its suffix)"
            )
    check_folder(path)  # missing (never made: a typo in -o would leave a tree behind), a file, read-only
    return path


# ---- commands


def cmd_train(args, bar: ProgressBar) -> int:
    from qtl.models.variants import check_feature_dim
    from qtl.training.fit import fit

    _check_new_checkpoint(args)
    mc = check_settings_apply(_model_config(args, args.variant))  # --shots on linear: said, not kept unused
    check_feature_dim(mc)  # before the dataset opens (and maybe downloads)
    root = _dataset(args, bar).root
    (run,) = _plan(args, [args.variant], [args.seed], root)
    path = Path(args.out) if args.out else run.checkpoint_path
    if path.is_dir():  # --out a folder: the checkpoint's own name inside it (it failed after training)
        path = path / run.checkpoint_path.name
    tc = run.train_config
    bar.message(
        f"training {args.variant} on {root} "
        f"({describe_backbone(run.model_config.backbone, run.model_config.pretrained)}): "
        f"{count(tc.epochs, 'epoch')}, batch {tc.batch_size}, "
        f"{tc.optimizer} lr {tc.lr:g}, seed {tc.seed}"
    )
    try:
        result = fit(
            run.model_config,
            tc,
            run.machine,
            callbacks=[BarCallback(bar)],
            checkpoint_path=path,
            progress=bar.hook("extracting features"),
        )
    except KeyboardInterrupt:
        if path.is_file():
            bar.close()
            print(f"qtl: interrupted; the last good checkpoint is kept at {path}", file=sys.stderr)
        raise
    best = result.metrics
    test = f"; test acc {best['test_acc']:.4f} ({best['n_test']} images)" if "test_acc" in best else ""
    print(
        f"best epoch {result.best_epoch}/{len(result.history)} (selected on val): val acc "
        f"{best['val_acc']:.4f}, val loss {best['val_loss']:.4f}{test}"
    )
    if not test:
        print("no test split: pass --split kfold, or give the dataset a test/ folder, for a held-out score")
    print(f"checkpoint: {result.checkpoint_path}")
    return 0


def _check_new_checkpoint(args) -> None:
    """ValueError before any work where `qtl train` could not write its checkpoint (`check_folder`: --out's
    folder, or --models-dir, a file or read-only: it failed at the first save, after an epoch), or --out
    names a file that exists (it replaced another model, silently), unless --overwrite says to replace
    it."""
    from qtl.paths import models_dir

    path = Path(args.out) if args.out else None
    if path is not None and not path.is_dir():
        check_folder(path, made=True)
    else:
        check_folder((path or Path(args.models_dir or models_dir())) / "its checkpoint", made=True)
    if path is None or args.overwrite or not (path.exists() and not path.is_dir()):
        return
    raise ValueError(
        f"--out {path} exists: choose another name or delete it (--overwrite replaces it, as when a "
        "stopped run trains again into its own file)"
    )


def cmd_evaluate(args, bar: ProgressBar) -> int:
    from qtl.analysis.inference import accuracy_at_training, evaluate
    from qtl.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(args.checkpoint, resolve_device(args.device), engine=args.engine)
    _check_engine_applies(args.engine, [loaded], bar)
    root = _scoring_root(args, bar, [loaded])
    ev = evaluate(loaded, root, args.split, batch_size=args.batch_size, progress=bar.hook("evaluating"))
    bar.close()
    m = ev.metrics
    if args.json:
        out = {"checkpoint": str(args.checkpoint), "data": str(root), "split": args.split, "metrics": m}
        print(json.dumps(out, indent=2))
    else:
        recorded = accuracy_at_training(loaded, root, args.split, m["n"])
        print(format_evaluation(args.checkpoint, loaded, root, args.split, m, recorded))
    return 0


def _check_engine_applies(engine: str | None, models, bar: ProgressBar) -> None:
    """--engine runs a quantum circuit: ValueError where no checkpoint given has one (it was ignored), a
    note naming those it skips otherwise."""
    if engine is None:
        return
    classical = [m for m in models if not m.model_config.is_quantum]
    named = ", ".join(f"{m.path} ({m.variant})" for m in classical)
    if classical and len(classical) == len(models):
        has = "has" if len(classical) == 1 else "have"
        raise ValueError(f"--engine {engine} runs a quantum circuit, and {named} {has} none: drop --engine")
    if classical:
        bar.note(f"qtl: note: --engine {engine} applies to the quantum checkpoints only, not to {named}")


def _image_paths(given: list[str]) -> list[str]:
    """The image files named, a folder standing for the image files in it and its subfolders (sorted;
    hidden and non-image files left out). ValueError for a folder that holds none."""
    from qtl.data.folders import IMAGE_EXTENSIONS, is_image_file

    out = []
    for name in given:
        folder = Path(name)
        if not folder.is_dir():
            out.append(name)
            continue
        found = sorted(str(p) for p in folder.rglob("*") if is_image_file(p) and not _hidden_below(p, folder))
        if not found:
            raise ValueError(
                f"{name} is a folder with no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        out += found
    return out


def _load_images(given: list[str], bar: ProgressBar) -> tuple[list[str], list]:
    """(paths, decoded images) of the files and folders named (`_image_paths`). A file named fails, by
    name; one found in a folder that does not decode is skipped with a warning line, as the training
    loader skips it (its reason: `check_image`), and the rest are decoded. ValueError where none is left."""
    from qtl.data.images import ImageLoadError, check_image, load_image

    paths, images = [], []
    for name in given:
        in_folder = Path(name).is_dir()
        for path in _image_paths([name]):
            try:
                images.append(load_image(path))
            except ImageLoadError as exc:
                if not in_folder:
                    raise
                bar.note(f"qtl: warning: skipping image {path}: {check_image(Path(path)) or exc}")
                continue
            paths.append(path)
    if not images:
        raise ValueError(f"no image in {', '.join(given)} could be decoded")
    return paths, images


def _hidden_below(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def cmd_predict(args, bar: ProgressBar) -> int:
    from qtl.analysis.inference import predict

    args.images, images = _load_images(args.images, bar)  # a bad file named fails here, by name
    if args.runtime == "torch":
        from qtl.models.checkpoint import load_checkpoint

        device = resolve_device(args.device)
        models = [load_checkpoint(path, device, engine=args.engine) for path in args.checkpoint]
        _check_engine_applies(args.engine, models, bar)
        preds = predict(models, images)
    else:
        from qtl.deploy.runtime import load_exported, predict_exported

        if args.engine is not None:
            raise ValueError(f"--engine applies to checkpoints: an {args.runtime} file holds its circuit")
        _check_exported_device(args)
        preds = predict_exported([load_exported(p, args.runtime) for p in args.checkpoint], images)
    if args.json:
        print(json.dumps(predictions_document(args.images, preds), indent=2))
    else:
        print(format_predictions(args.images, preds))
    return 0


def _check_exported_device(args) -> None:
    """--device with --runtime onnx|torchscript, which run on the CPU: a device this machine lacks is
    refused as for checkpoints (and by `qtl serve`), any other than the CPU named as ignored (it was,
    silently); 'auto' stays the default's quiet choice."""
    device = resolve_device(args.device)
    if args.device != "auto" and device.type != "cpu":
        raise ValueError(
            f"--device {args.device}: --runtime {args.runtime} runs exported files on the CPU; give cpu, or "
            "leave --device out"
        )


def cmd_explain(args, bar: ProgressBar) -> int:
    from qtl.analysis.explain import explain_all, explanation_figure
    from qtl.analysis.inference import named_models
    from qtl.models.checkpoint import load_checkpoint

    _figure_path(args.output)
    check_outputs({"--output": args.output}, [*args.checkpoint, *_image_paths(args.images)])
    args.images, images = _load_images(args.images, bar)  # a bad file named fails here, by name
    device = resolve_device(args.device)
    # named as predict names them: two files of one name are "model" and "model#2", both shown
    models = named_models([load_checkpoint(p, device, engine=args.engine) for p in args.checkpoint])
    _check_engine_applies(args.engine, list(models.values()), bar)
    rows = []
    for path, image in zip(args.images, images, strict=True):
        row = explain_all(models, image, method=args.method)
        for name, ex in row.items():
            note = f" ({ex.note})" if ex.note else ""  # a blank heatmap: why
            print(f"{path}  {name}: {ex.class_name} ({ex.probs[ex.target]:.1%}), {ex.method}{note}")
        rows.append((Path(path).name, row))
    explanation_figure(rows).savefig(args.output, bbox_inches="tight", dpi=110)
    print(f"saved {args.output}")
    return 0


def cmd_export(args, bar: ProgressBar) -> int:
    from qtl.deploy.export import default_output, export_model, export_path

    checkpoint = Path(args.checkpoint)
    if args.output:  # --format, else the file's suffix says (-o m.torchscript wrote ONNX)
        out, fmt = export_path(checkpoint, args.output, args.format)  # a folder: the file inside
    else:
        fmt = args.format or "onnx"
        out = default_output(checkpoint, fmt)  # model.v1 -> model.v1.onnx: never model.v2's file
    replaced = out.is_file() and out.stat().st_size > 0  # export_model replaces only its own earlier one
    path, meta = export_model(checkpoint, args.output or out, fmt)
    if replaced:  # said apart from stdout's line, which scripts read as "wrote PATH (format, ...)"
        bar.note(f"qtl: note: replaced {path}, an earlier export of the same checkpoint ({checkpoint.name})")
    classes = ", ".join(meta["class_names"])
    pre = meta["preprocessing"]
    print(
        f"wrote {path} ({fmt}, {path.stat().st_size / 2**20:.1f} MiB): {meta['variant']} on "
        f"{meta['backbone']}, classes {classes}; input {meta['input']['name']} (batch, 3, {pre['crop']}, "
        f"{pre['crop']}): resize {pre['resize']} {pre['interpolation']}, crop {pre['crop']}, "
        f"mean {pre['mean']}, std {pre['std']}"
    )
    return 0


def cmd_serve(args, bar: ProgressBar) -> int:
    from qtl.deploy.limits import ServeLimits

    limits = ServeLimits(
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        max_request_pixels=args.max_request_pixels,
        formats=tuple(args.formats),
    )
    batching = {"max_batch": args.max_batch, "max_wait_s": args.max_wait_ms / 1000, "workers": args.workers}
    device = str(resolve_device(args.device))
    if args.ray:
        if args.port == 0:  # Ray's HTTP proxy binds the port itself and does not say which it took
            raise ValueError(
                "--ray needs a port number: Ray Serve's proxy cannot take any free one (--port 0)"
            )
        url = f"http://{args.host}:{args.port}"
        from qtl.deploy.ray_serve import run_ray

        print(f"deploying {', '.join(args.models)} on Ray Serve at {url} (docs: {url}/docs)", file=sys.stderr)
        run_ray(
            args.models,
            limits,
            address=args.address,
            host=args.host,
            port=args.port,
            replicas=args.replicas,
            cpus_per_replica=args.cpus_per_replica,
            device=device,
            **batching,
        )
        return 0
    from qtl.deploy.models import ModelStore
    from qtl.deploy.server import create_app, listen, listen_url, uvicorn_server

    sock = listen(args.host, args.port)  # a busy port fails here, in one line, before models load
    url = listen_url(sock)  # the port opened (--port 0: a free one, not 0)
    store = ModelStore.load(args.models, device)
    server = uvicorn_server(create_app(store, limits, **batching))
    print(f"serving {', '.join(store.models)} at {url} (docs: {url}/docs)", file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    return 0


def cmd_draw(args, bar: ProgressBar) -> int:
    from qtl.quantum.circuit import circuit_summary
    from qtl.quantum.draw import draw_figure, draw_text

    weights = None
    if args.output:
        _figure_path(args.output)
    check_outputs({"--output": args.output}, [args.checkpoint])
    if args.checkpoint:
        from qtl.models.checkpoint import load_checkpoint

        _check_circuit_unset(args)
        loaded = load_checkpoint(args.checkpoint)
        if not loaded.model_config.is_quantum:
            raise ValueError(f"{args.checkpoint} is a {loaded.variant!r} model: it has no circuit to draw")
        config, weights = loaded.model_config.circuit, loaded.model.head.q_params.detach()
    else:
        config = CircuitConfig(
            args.qubits, args.depth, args.entangler, args.rotation, not args.no_hadamard, args.reupload
        )
    s = circuit_summary(config)
    gates = ", ".join(f"{n} {k}" for k, n in s["gate_counts"].items())
    summary = (
        f"{count(s['n_qubits'], 'qubit')}, depth {config.depth}: {count(s['n_gates'], 'gate')} ({gates}), "
        f"{count(s['n_weights'], 'trainable weight')}, circuit depth {s['circuit_depth']}"
    )
    if args.output:
        fig = draw_figure(config, weights)
        fig.savefig(args.output, bbox_inches="tight")
        print(f"{summary}\nsaved {args.output}")
    else:
        print(draw_text(config, weights))
        print(summary)
    return 0


CIRCUIT_OPTIONS = ("qubits", "depth", "entangler", "rotation", "no_hadamard", "reupload")
"""`qtl draw`'s circuit options: a config's circuit, which --checkpoint's own circuit replaces."""


def _check_circuit_unset(args) -> None:
    """ValueError naming the circuit options `qtl draw --checkpoint` would ignore (given: not defaults)."""
    _refuse_given(args, "draw", CIRCUIT_OPTIONS, "--checkpoint draws the checkpoint's own circuit")


def cmd_compare(args, bar: ProgressBar) -> int:
    from qtl.experiments.runs import checkpoint_row, train_runs
    from qtl.experiments.stats import comparisons, format_comparisons, one_per_run, summarise
    from qtl.models.checkpoint import load_checkpoint
    from qtl.models.store import list_checkpoints
    from qtl.paths import models_dir

    paths = []
    for p in map(Path, args.load or []):
        paths += [i.path for i in list_checkpoints(p)] if p.is_dir() else [p]
    if args.load and not paths:
        raise ValueError(f"no checkpoints found in {', '.join(args.load)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    directory = Path(args.models_dir) if args.models_dir else models_dir()
    json_path = Path(args.json) if args.json else directory / f"compare-{stamp}.json"
    csv_path = Path(args.csv) if args.csv else directory / f"compare-{stamp}.csv"
    check_outputs({"--json": json_path, "--csv": csv_path}, paths)  # before loading or training
    if args.load:
        rows, repeats = one_per_run([checkpoint_row(load_checkpoint(path)) for path in paths])
        for row in repeats:
            print(f"left out {row['checkpoint']}: another checkpoint of the same run", file=sys.stderr)
    else:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
        root = _dataset(args, bar).root
        runs = _plan(args, args.variants, list(range(args.first_seed, args.first_seed + args.seeds)), root)
        rows = [o.row for o in train_runs(runs, observer=RunsBar(bar))]
    summary = summarise(rows, COMPARE_FIELDS)
    print(format_summary(summary))
    metric = "test_acc" if any(r.get("test_acc") is not None for r in rows) else "val_acc"
    comps = comparisons(rows, metric, effect=args.effect)
    if comps:
        print(f"\non {metric}:\n" + "\n".join(format_comparisons(comps)))
    write_compare(rows, summary, json_path, csv_path)
    print(f"\nwrote {json_path} and {csv_path}")
    return 0


MERGE_OPTIONS = {"command", "argv", "debug", "quiet", "merge", "out", "json", "effect", "models_dir"}
"""What `qtl reproduce --from` uses: it trains and loads nothing, so every other option would be ignored."""


def _check_merge_only(args) -> None:
    """ValueError naming the options `qtl reproduce --from` would ignore (given, so not their defaults)."""
    keys = [k for k in vars(args) if k not in MERGE_OPTIONS]
    _refuse_given(args, "reproduce", keys, "--from merges earlier reports and trains nothing")


def _refuse_given(args, command: str, keys, why: str) -> None:
    """ValueError naming the options of `keys` given to `command` (not at its parser's defaults), which
    `why` leaves without effect."""
    from qtl.cli.parser import build_parser

    parser = build_parser().commands[command]
    given = [k for k in keys if getattr(args, k) != parser.get_default(k)]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{why}, so {names} would do nothing: drop {'it' if len(given) == 1 else 'them'}")


def _paper_report(path: Path) -> dict:
    """An earlier `qtl reproduce --json` report for --from, or ValueError (one line) naming the file and
    what it is instead: another command's JSON (qtl compare's) gave a KeyError traceback."""
    from qtl.experiments.reproduce import REPORT_FORMAT

    want = "reproduce --from takes the JSON reports qtl reproduce writes (--json, or beside --out)"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a JSON file: {want}") from None
    found = report.get("format") if isinstance(report, dict) else None
    if found != REPORT_FORMAT or not isinstance(report.get("runs"), list):
        what = f"a {found!r} document" if isinstance(found, str) else "another JSON document"
        raise ValueError(f"{path} is {what}, not a qtl reproduce report ({REPORT_FORMAT}): {want}")
    return report


def cmd_reproduce(args, bar: ProgressBar) -> int:
    from qtl.experiments.reproduce import loaded_row, markdown, merge_reports, paper_report, paper_row
    from qtl.experiments.runs import train_runs
    from qtl.models.checkpoint import load_checkpoint
    from qtl.paths import models_dir, portable

    command = portable("qtl " + " ".join(map(str, args.argv)))
    directory = Path(args.models_dir) if args.models_dir else models_dir()
    md_path = Path(args.out) if args.out else directory / f"paper-{time.strftime('%Y%m%d-%H%M%S')}.md"
    json_path = Path(args.json) if args.json else md_path.with_suffix(".json")
    # before any training; --from's reports may be rewritten (docs/results.md is made so), checkpoints not
    check_outputs(
        {"--out": md_path, "--json" if args.json else "the JSON beside --out": json_path}, args.load or []
    )
    if args.merge:
        _check_merge_only(args)
        reports = [_paper_report(Path(p)) for p in args.merge]
        report = merge_reports(reports, command=command, effect=args.effect)
    else:
        rows = [loaded_row(load_checkpoint(p)) for p in args.load or []]
        notice = None
        if args.seeds is None:  # not given: 3 seeds, none where checkpoints are loaded instead
            args.seeds = 0 if args.load else 3
        if args.seeds > 0 and args.variants:
            root = _dataset(args, bar).root
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            runs = _plan(args, args.variants, seeds, root)
            notice = _backbone_notice(args)
            notice = notice and portable(notice)
            rows += [paper_row(o) for o in train_runs(runs, observer=RunsBar(bar))]
        if not rows:
            raise ValueError("nothing to report: give --variants and --seeds, --load or --from")
        report = paper_report(rows, command=command, backbone_notice=notice, effect=args.effect)
    text = markdown(report)
    print(text)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    json_path.write_text(json.dumps(report, indent=1))
    print(f"wrote {md_path} and {json_path}")
    return 0


def cmd_noise(args, bar: ProgressBar) -> int:
    from qtl.analysis.inference import named_models
    from qtl.analysis.robustness import head_inputs, noise_grid, noise_sweep, report_paths, write_report
    from qtl.models.checkpoint import load_checkpoint
    from qtl.paths import models_dir

    if any(s < 0 for s in args.shots):
        raise ValueError("shot counts must be positive (0 in --shots means exact)")
    base = _noise_config(args)
    if not args.backends:
        given = ["backend_shots", "backend_minutes"]
        _refuse_given(args, "noise", given, "no --backends names a backend to run on")
    if args.backends:
        from qtl.quantum.hardware.backends import get_backend

        for name in args.backends:
            get_backend(name)  # an unknown name or missing extras fail before any work
    prefix = Path(args.out) if args.out else models_dir() / f"noise-{time.strftime('%Y%m%d-%H%M%S')}"
    outputs = {f"--out's {p.suffix}": p for p in report_paths(prefix)}
    check_outputs(outputs, args.checkpoints)
    models = [load_checkpoint(path) for path in args.checkpoints]
    for m in models:
        if not m.model_config.is_quantum:
            raise ValueError(f"{m.path} is a {m.variant!r} model: only quantum checkpoints have a circuit")
    for m in models:  # its "ideal" row is the exact circuit, not what `qtl evaluate` scores
        if note := _engine_note(m.model_config):
            bar.note(f"qtl: note: {m.path}: {note}")
    root = _scoring_root(args, bar, models)
    images = _image_paths([str(root)])
    check_outputs(outputs, images)  # --out over one of the data's images: its figure replaced it
    folders = {root.resolve(), *(Path(p).resolve().parent for p in images)}
    for what, p in outputs.items():  # beside them, the next arrangement took it for an image of a class
        if folders & set(Path(p).resolve().parents):
            raise ValueError(f"{what} {p} is inside the data it scores ({root.name}): write it elsewhere")
    inputs = [head_inputs(m, root, args.split, progress=bar.hook(f"features of {m.name}")) for m in models]
    grid = noise_grid(args.strengths, [s or None for s in args.shots], base)
    # rows named as predict names its models: two checkpoints of one file name are "q" and "q#2" (their
    # rows could not be told apart); a row takes a model's name, its path's stem, so a copy is renamed
    models = [
        m if m.name == name else dataclasses.replace(m, path=m.path.with_name(name + m.path.suffix))
        for name, m in named_models(models).items()
    ]
    refused: list[tuple[str, str, str]] = []
    from qtl.cli.hardware import ctrl_c_ends_at_once

    with ctrl_c_ends_at_once(bool(args.backends)):  # fake backends simulate in qiskit-aer
        results = noise_sweep(
            models,
            inputs,
            grid,
            backends=args.backends,
            backend_shots=args.backend_shots,
            backend_max_s=args.backend_minutes * 60 or None,  # 0: no limit
            progress=bar.hook("evaluating under noise"),
            refused=refused,
        )
    bar.close()
    if not results:
        raise ValueError("nothing could run: " + "; ".join(f"{name}: {why}" for name, _, why in refused))
    for name, where, reason in refused:
        where = "under noise" if where == "noise" else f"on {where}"
        print(f"skipped {name} {where}: {reason}", file=sys.stderr)
    for m in models:
        trained = m.model_config.noise.label()
        print(f"{m.name}: trained {'ideal' if trained == 'ideal' else 'with ' + trained}")
    print(format_noise_table([r.row() for r in results]))
    paths = write_report(results, prefix)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


def _engine_note(mc: ModelConfig) -> str | None:
    """Why `qtl noise`'s rows of a checkpoint differ from what `qtl evaluate` gives it, where its engine
    does not compute the exact circuit (an MPS truncated by max_bond, a PennyLane device sampling shots):
    `qtl noise` runs every circuit on the native engine. None where they agree."""
    if mc.engine == "mps" and mc.max_bond:
        what = f"mps (max bond {mc.max_bond}: truncated)"
    elif mc.engine not in ("native", "mps") and mc.shots is not None:
        what = f"{mc.engine} with {mc.shots} shots"
    else:
        return None
    return (
        f"its engine is {what}, but qtl noise runs every circuit on the native (density-matrix) engine: "
        "its ideal row is the exact circuit, which may differ from what qtl evaluate gives it"
    )


def cmd_sweep(args, bar: ProgressBar) -> int:
    import signal
    import threading

    from qtl.experiments.spec import load_spec, plan
    from qtl.experiments.stats import format_report
    from qtl.experiments.sweeps import run_sweep, sweep_notes
    from qtl.paths import results_db

    if args.address and args.backend != "ray":  # it was ignored: the runs went to this machine
        raise ValueError(f"--address names a Ray cluster: use it with --backend ray, not {args.backend}")
    if args.backend != "ray":  # each was ignored, as --address was
        _refuse_given(args, "sweep", ["cpus_per_run", "gpus_per_run"], f"--backend {args.backend} is not Ray")
    if args.backend == "local" and args.workers not in (None, 1):  # ignored: one run at a time
        raise ValueError("--workers runs several at once: use it with --backend processes or ray")
    spec = load_spec(args.spec, limit=args.max_runs)
    db = Path(args.db) if args.db else results_db()
    machine = {"device": args.device, "cache_dir": args.cache_dir}
    if args.dry_run:
        from qtl.experiments.database import ResultsDB
        from qtl.experiments.sweeps import changed_data, listing_ids, regime_refusals

        runs = plan(spec, machine=machine, models_dir=args.models_dir, limit=args.max_runs)
        status, earlier, changed = {}, 0, []
        if db.exists():
            with ResultsDB(db, readonly=True) as results:
                status = results.statuses([r.id for r in runs])
                earlier = results.held_beside(spec.name, [r.id for r in runs])
                changed = changed_data(results, runs, listing_ids(runs))
        for r in changed:  # not done: they stop the sweep, or run again with --rerun-changed
            status[r.id] = "changed"
        done = sum(status.get(r.id) == "done" for r in runs)
        held = 0 if args.rerun_changed else len(changed)  # refused unless --rerun-changed: not "to run"
        counts = f"{done} done, " + (f"{held} changed (need --rerun-changed), " if held else "")
        print(
            f"sweep {spec.name}: {len(runs)} runs, {counts}{len(runs) - done - held} to run (database {db})"
        )
        done_runs = [r for r in runs if status.get(r.id) == "done"]
        stops = [] if args.rerun_changed else changed
        for note in sweep_notes(spec, runs, earlier=earlier, done=done_runs, changed=stops):
            print(f"note: {note.text}")
        refused = regime_refusals(runs)
        for r in runs:
            print(f"  {r.id}  {status.get(r.id, 'new'):<11}  {r.name}")  # interrupted: 11
            if r.id in refused:
                print(f"      would fail: {refused[r.id]}")
        return 0
    stop = threading.Event()

    def first_interrupt(signum, frame):  # Ctrl-C: finish cleanly; a second one aborts
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        bar.message("qtl: stopping: the current run(s) end after their batch; Ctrl-C again to abort")

    previous = signal.signal(signal.SIGINT, first_interrupt)
    try:
        report = run_sweep(
            spec,
            db,
            backend=args.backend,
            workers=args.workers,
            machine=machine,
            models_dir=args.models_dir,
            observer=SweepBar(bar, args.backend),
            stop=stop,
            address=args.address,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
            mlflow_uri=args.mlflow,
            limit=args.max_runs,
            rerun_changed=args.rerun_changed,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    bar.close()
    from qtl.experiments.database import ResultsDB

    with ResultsDB(db) as results:
        rows = results.rows(spec.name)
    print(format_report(rows, None))  # each cell on test_acc where its runs have it, else on val_acc
    print(
        f"\nsweep {spec.name}: {report.done} run now, {report.skipped} already done, {report.failed} failed, "
        f"{report.cancelled} stopped, {report.remaining} remaining, {duration(report.seconds)}; database {db}"
    )
    said = {"note": "qtl: note: ", "failed": "  failed: ", "warning": "qtl: warning: ", "stopped": "qtl: "}
    for note in sweep_notes(report=report):  # its plan's notes were said as it planned (SweepBar)
        print(said[note.kind] + note.text, file=sys.stderr)
    if report.stopped:
        return 130
    return 1 if report.failed else 0


def cmd_runs(args, bar: ProgressBar) -> int:
    from qtl.experiments.database import SWEEP_COLUMNS, ResultsDB
    from qtl.experiments.stats import format_report, markdown_report
    from qtl.paths import results_db

    db = Path(args.db) if args.db else results_db()
    if not db.exists():
        raise ValueError(f"no results database at {db}: run 'qtl sweep SPEC.toml' first (or pass --db)")
    check_outputs({"--csv": args.csv, "--json": args.json}, [db])
    with ResultsDB(db, readonly=True) as results:  # reading never changes the file
        if args.sweeps:
            sweeps = results.sweeps()
            for path, kind in ((args.csv, "csv"), (args.json, "json")):
                if path:  # the sweeps' rows, as --csv/--json write runs' (they wrote nothing)
                    write_rows(sweeps, path, kind, columns=SWEEP_COLUMNS)
            if "-" not in (args.csv, args.json):
                print(format_sweeps(sweeps))
            return 0
        _check_sweep(results, args.sweep, db)
        where = {k: getattr(args, k) for k in ("variant", "backbone", "qubits", "depth", "seed")}
        status = None if args.status == "any" else args.status
        rows = results.rows(args.sweep, status=status, **{k: v for k, v in where.items() if v is not None})
    if args.dataset is not None:  # any name qtl shows it by: "ds/five.zip", "five.zip", "five"
        from qtl.experiments.stats import dataset_matches

        rows = [
            r for r in rows if r.get("dataset") is not None and dataset_matches(r["dataset"], args.dataset)
        ]
    done = [r for r in rows if r.get("status") == "done"]  # only finished runs count, whatever is listed
    if args.csv:
        write_rows(rows, args.csv, "csv")
    if args.json:
        write_rows(rows, args.json, "json")
    if args.report or args.markdown:  # a report of nothing says why (the listing asked for is written)
        _check_reportable(done, args, db)
        report = markdown_report if args.markdown else format_report
        out = sys.stderr if "-" in (args.csv, args.json) else sys.stdout  # stdout holds the data alone
        metric = None if args.metric == HELD_OUT_METRIC else args.metric  # stats: None is held-out
        print(report(done, metric, effect=args.effect), file=out)
    elif "-" not in (args.csv, args.json):
        print(format_runs(rows))
        print(f"{len(rows)} run(s)", file=sys.stderr)
    return 0


def _check_reportable(done: list[dict], args, db: Path) -> None:
    """ValueError saying why where `qtl runs --report` would print a header alone: no finished run, or
    none with --metric (test_acc: the runs had no test split, as `qtl study` says)."""
    what = f"of sweep {args.sweep!r}" if args.sweep is not None else f"in {db}"
    filters = ("variant", "backbone", "dataset", "qubits", "depth", "seed")
    filtered = args.status != "done" or any(getattr(args, k) is not None for k in filters)
    what += " matching the filters" if filtered else ""
    if not done:
        raise ValueError(f"no finished run {what}: a report counts finished runs only")
    if args.metric != HELD_OUT_METRIC and all(r.get(args.metric) is None for r in done):
        from qtl.experiments.findings import HOW_TO_TEST

        why = (
            f", a held-out test accuracy: {HOW_TO_TEST} (--metric val_acc reports the val accuracy)"
            if args.metric == "test_acc"
            else ""
        )
        raise ValueError(f"no finished run {what} has {args.metric}{why}")


def _check_sweep(results, sweep: str | None, db: Path) -> None:
    """ValueError naming the sweeps `db` holds where it holds none named `sweep` (None: any)."""
    names = [sw["name"] for sw in results.sweeps()]
    if sweep is not None and sweep not in names:
        raise ValueError(f"no sweep {sweep!r} in {db}; it holds: {', '.join(names) or 'none yet'}")


def cmd_study(args, bar: ProgressBar) -> int:
    from qtl.experiments.database import ResultsDB
    from qtl.experiments.findings import study_markdown
    from qtl.paths import results_db

    db = Path(args.db) if args.db else results_db()
    if not db.is_file():
        raise ValueError(f"no results database at {db}: run 'qtl sweep SPEC.toml' first (or pass --db)")
    check_outputs({"--out": args.out}, [db])
    with ResultsDB(db, readonly=True) as results:
        _check_sweep(results, args.sweep, db)
        text = study_markdown(results, args.sweep, command=args.made_by, effect=args.effect, out=args.out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # as `check_outputs` let it
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_diagnose(args, bar: ProgressBar) -> int:
    from qtl.analysis.plateau import COSTS, figure, scan, summary
    from qtl.quantum.circuit import MAX_DEPTH, MAX_QUBITS

    if min(args.qubits) < 2 or max(args.qubits) > MAX_QUBITS:
        raise ValueError(f"--qubits must lie between 2 and {MAX_QUBITS}")
    if min(args.depths) < 1 or max(args.depths) > MAX_DEPTH:  # 0 has no trainable angle to differentiate
        raise ValueError(f"--depths must lie between 1 and {MAX_DEPTH}")
    # before the scan, which may take minutes
    _figure_path(args.output)
    if args.json:
        _figure_path(args.json, figure=False)
    check_outputs({"--output": args.output, "--json": args.json})
    for flag, name, values in (("--qubits", "qubits", args.qubits), ("--depths", "depths", args.depths)):
        once = list(dict.fromkeys(values))  # a point given twice was scanned (and fitted) twice
        if len(once) < len(values):
            bar.note(f"qtl: note: {flag} repeats a value: scanning {' '.join(map(str, once))} once each")
            setattr(args, name, once)
    rows = scan(
        args.qubits,
        args.depths,
        samples=args.samples,
        seed=args.seed,
        progress=bar.hook("barren-plateau scan"),
    )
    bar.close()
    print("qubits  depth  " + "  ".join(f"Var[{c}]".rjust(12) for c in COSTS))
    for n, d in dict.fromkeys((r["n_qubits"], r["depth"]) for r in rows):
        v = {r["cost"]: r["variance"] for r in rows if (r["n_qubits"], r["depth"]) == (n, d)}
        print(f"{n:>6}  {d:>5}  " + "  ".join(f"{v[c]:12.3e}" for c in COSTS))
    for line in summary(rows):  # each depth once: its decay rates, or that too few widths were scanned
        print(line)
    figure(rows).savefig(args.output, bbox_inches="tight", dpi=110)
    print(f"saved {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_data(args, bar: ProgressBar) -> int:
    from qtl.data.images import ImageFolderDataset

    # hymenoptera is downloaded into the default location only (--path omitted); a --path is a folder, a
    # zip or a named dataset ("digits", "torchvision/..."), and one that is none of them is an error
    # naming it, with nothing created for it
    ds = _dataset(args, bar, download=not args.no_download, report=False)
    unreadable = []
    quiet = logging.getLogger("qtl.data.images")  # its "skipping image" lines: listed below, once
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for split in ds.counts:
            images = ImageFolderDataset(ds.root, split)  # decodes every file once
            ds.counts[split] = {c: images.targets.count(i) for i, c in enumerate(images.classes)}
            for path, reason in images.skipped:  # the reason may name the file too ("cannot identify ...")
                name = _shown_path(ds, path)
                unreadable.append((name, reason.replace(str(path), name)))
    finally:
        quiet.setLevel(level)
    bar.close()
    print(format_dataset(ds))
    if unreadable:  # a block of its own: the skipped block's count is of the files it lists
        print(f"unreadable {len(unreadable)} image file(s), skipped when training:")
        print("\n".join(f"  {name}: {reason}" for name, reason in unreadable))
    print("ok" if not unreadable else f"ok, {len(unreadable)} unreadable file(s) will be skipped")
    return 0


def _shown_path(ds, path: Path) -> str:
    """An image of a prepared dataset named as its user knows it: relative to the folder they gave where
    it is (a folder of class folders is arranged as links to its files), else relative to the dataset
    ("train/ants/x.jpg" of an extracted zip), never by its place in qtl's cache."""
    source = Path(str(ds.source)).expanduser()
    for base, here in ((source, Path(path).resolve()), (Path(ds.root), Path(path))):
        try:
            return here.relative_to(base.resolve() if base is source else base).as_posix()
        except (ValueError, OSError):
            continue
    return str(path)


def cmd_hardware(args, bar: ProgressBar) -> int:
    from qtl.cli.hardware import run

    if args.hardware_command != "jobs":  # its --json, before anything is planned or submitted
        from qtl.paths import results_db

        db = [(Path(args.db) if args.db else results_db())] if hasattr(args, "db") else []
        check_outputs({"--json": args.json}, [getattr(args, "checkpoint", None), *db])
    return run(args, bar, _scoring_root)  # its data resolved as evaluate's and noise's


HANDLERS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "explain": cmd_explain,
    "export": cmd_export,
    "serve": cmd_serve,
    "draw": cmd_draw,
    "compare": cmd_compare,
    "reproduce": cmd_reproduce,
    "noise": cmd_noise,
    "data": cmd_data,
    "sweep": cmd_sweep,
    "runs": cmd_runs,
    "hardware": cmd_hardware,
    "study": cmd_study,
    "diagnose": cmd_diagnose,
}
