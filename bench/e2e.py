"""End-to-end benchmark: the paper's recipe on hymenoptera, qtl against the demo's pipeline.

Measured in one run, on one machine, in this order:

  floor      one feature-extraction pass over train + val through resnet18: plain torchvision ImageFolder
             + DataLoader (batch 32, eval transform, 1 worker), inference mode, channels-last, no cache.
             Nothing that looks at every image can be faster than this pass. Floor and qtl run --repeats
             times, alternated; the best of each is kept, so a burst of load from other processes does
             not decide the ratio.
  qtl        `qtl.training.fit.fit()` for `quantum` with the paper's recipe (4 qubits, depth 6, batch 4, Adam
  4e-4,
             StepLR(10, 0.1), 30 epochs), end to end from a cold feature cache (a fresh temporary folder):
             dataset checks, feature extraction, 30 epochs with validation.
  reference  the PennyLane demo's pipeline, written independently of qtl's training code:
             torchvision ImageFolder + DataLoader (batch 4, shuffled, the demo's transforms), the backbone
             forward on every batch of every epoch, and the dressed circuit as Linear(512, 4), tanh * pi/2,
             a default.qubit QNode called once per sample, Linear(4, 2) (qtl/testing/paper_demo.py, the
             transcription the faithfulness test checks qtl against); Adam 4e-4 + StepLR(10, 0.1), a
             train and a val phase per epoch. It runs --ref-epochs epochs (default 2) and is extrapolated
             linearly to the qtl run's epoch count; the output says so.
  finetuned  one epoch (--finetune-epochs) of `finetuned` through qtl's fit() against the PyTorch
             transfer-learning tutorial's train loop (same data, batch 4, RandomResizedCrop + flip, SGD 1e-3
             momentum 0.9), both with the same DataLoader worker count; alternated --repeats times.

ImageNet weights cannot be downloaded here, so both sides use a random-init resnet18: the arithmetic,
and so the timing, is the same as with the trained weights.

With --backbone efficientnet_lite0 the floor and qtl measure the bundled pretrained pipeline instead:
the floor is one plain pass of timm's tf_efficientnet_lite0 (random init, the same arithmetic) with timm's
own eval transform for it (bicubic resize, crop 0.875, mean = std = 0.5), and qtl is fit() for `quantum` on
the bundled ImageNet weights. The reference and finetuned parts are resnet18's and are skipped; instead,
once and untimed, the same fit() runs on features extracted the exact way (float32, batch norms unfolded,
every image decoded whole: `qtl.data.features` with its fast paths off), and the features and the best
val accuracy of the timed run are compared with it.

    .venv/bin/python bench/e2e.py [--data PATH] [--ref-epochs 2] [--finetune-epochs 1] [--json out.json]
    .venv/bin/python bench/e2e.py --backbone efficientnet_lite0 [--repeats 2] [--threads N] [--json out.json]
    .venv/bin/python bench/e2e.py --quick        # smoke run: 16 images per class and split, few epochs

Targets: qtl / floor <= 1.5 and reference / qtl >= 20 (resnet18); efficientnet_lite0: qtl / floor
<= 0.8 with the best val accuracy of the exact pipeline within one image. Each prints PASS or FAIL. On a
busy machine, --threads 1 runs both sides on one torch thread (two threads wait on each other whenever
another process holds a core). Every side runs with glibc keeping freed memory, as under the `qtl`
program (`qtl.utils.allocator.keep_freed_memory`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from machine import machine
from report import verdict
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from qtl.config import MachineConfig, ModelConfig, recipe
from qtl.training.fit import fit
from qtl.utils.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]
from qtl.testing.paper_demo import DressedQuantumNet, gamma_lr_scheduler, step  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "hymenoptera_data"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TARGET_FLOOR, TARGET_REFERENCE = 1.5, 20.0
TARGET_LITE0_FLOOR = 0.8  # efficientnet_lite0: cold-cache fit() at most 0.8x the plain pass

# ---- the demo's pipeline (PennyLane "Quantum transfer learning", Mari et al.): its dressed circuit and
# settings come from qtl/testing/paper_demo.py, the transcription the faithfulness test checks qtl against


def demo_transforms() -> dict:
    """The demo's transforms: no augmentation (it is commented out there), resize 256, center crop 224."""
    t = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    return {"train": t, "val": t}


def tutorial_transforms() -> dict:
    """The PyTorch transfer-learning tutorial's transforms (augmented train split)."""
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    return {"train": train, "val": demo_transforms()["val"]}


def train_model(model, criterion, optimizer, scheduler, dataloaders, device, num_epochs) -> list[float]:
    """The demo's / tutorial's loop: a train and a val phase per epoch, best weights kept. Epoch seconds."""
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    sizes = {x: len(dataloaders[x].dataset) for x in ("train", "val")}
    times = []
    for _ in range(num_epochs):
        since = time.perf_counter()
        for phase in ["train", "val"]:
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss = 0.0
            running_corrects = 0
            for inputs, labels in dataloaders[phase]:
                inputs = inputs.to(device)
                labels = labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            if phase == "train":
                scheduler.step()
            epoch_acc = running_corrects.double() / sizes[phase]
            if phase == "val" and epoch_acc > best_acc:
                best_acc = epoch_acc
                best_model_wts = copy.deepcopy(model.state_dict())
        times.append(time.perf_counter() - since)
    model.load_state_dict(best_model_wts)
    return times


def loaders(root: Path, tfs: dict, batch_size: int, workers: int) -> dict:
    image_datasets = {x: datasets.ImageFolder(os.path.join(root, x), tfs[x]) for x in ("train", "val")}
    return {
        x: DataLoader(image_datasets[x], batch_size=batch_size, shuffle=True, num_workers=workers)
        for x in ("train", "val")
    }


def reference_run(root: Path, epochs: int, device: torch.device) -> dict:
    """The demo: frozen resnet18 whose fc is the dressed quantum net, trained with the per-sample QNode."""
    t0 = time.perf_counter()
    model_hybrid = torchvision.models.resnet18(weights=None)  # the demo loads ImageNet weights here
    for param in model_hybrid.parameters():
        param.requires_grad = False
    model_hybrid.fc = DressedQuantumNet(512, device=device)
    model_hybrid = model_hybrid.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer_hybrid = torch.optim.Adam(model_hybrid.fc.parameters(), lr=step)
    exp_lr_scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer_hybrid, step_size=10, gamma=gamma_lr_scheduler
    )
    dataloaders = loaders(root, demo_transforms(), batch_size=4, workers=0)
    setup = time.perf_counter() - t0
    times = train_model(
        model_hybrid, criterion, optimizer_hybrid, exp_lr_scheduler, dataloaders, device, epochs
    )
    return {"setup_s": setup, "epoch_s": times}


def tutorial_finetune(root: Path, epochs: int, workers: int, device: torch.device) -> list[float]:
    """The PyTorch tutorial's finetuning: the whole resnet18 plus a new Linear(512, 2), SGD + StepLR(7)."""
    model_ft = torchvision.models.resnet18(weights=None)
    model_ft.fc = nn.Linear(model_ft.fc.in_features, 2)
    model_ft = model_ft.to(device)
    optimizer_ft = torch.optim.SGD(model_ft.parameters(), lr=0.001, momentum=0.9)
    exp_lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer_ft, step_size=7, gamma=0.1)
    dataloaders = loaders(root, tutorial_transforms(), batch_size=4, workers=workers)
    return train_model(
        model_ft, nn.CrossEntropyLoss(), optimizer_ft, exp_lr_scheduler, dataloaders, device, epochs
    )


# ---- the floor and qtl


def plain_backbone(backbone: str) -> tuple[nn.Module, transforms.Compose]:
    """The floor's model (random init, classifier removed) and eval transform, built without qtl."""
    if backbone == "resnet18":
        model = torchvision.models.resnet18(weights=None)
        model.fc = nn.Identity()
        return model, demo_transforms()["val"]
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    return model, timm.data.create_transform(**timm.data.resolve_model_data_config(model))


def floor_pass(root: Path, workers: int, device: torch.device, backbone: str = "resnet18") -> float:
    """Seconds for one plain pass of the backbone over train + val: decode, transform, forward. No cache.

    Tuned as well as a plain loop can be (inference mode, channels-last, a decoding worker): without
    channels-last the same pass is about 3x slower on this CPU, which would flatter qtl.
    """
    t0 = time.perf_counter()
    model, transform = plain_backbone(backbone)
    model = model.to(device, memory_format=torch.channels_last).eval()
    with torch.inference_mode():
        for split in ("train", "val"):
            ds = datasets.ImageFolder(str(root / split), transform)
            for x, _ in DataLoader(ds, batch_size=32, num_workers=workers):
                model(x.to(device).contiguous(memory_format=torch.channels_last))
    return time.perf_counter() - t0


def qtl_run(
    variant: str,
    root: Path,
    epochs: int,
    cache_dir: Path,
    device: str,
    workers: int = 0,
    backbone: str = "resnet18",
) -> dict:
    """fit() end to end from a cold feature cache; total seconds, per-epoch seconds, best val accuracy.

    resnet18 runs random init (no ImageNet weights here); efficientnet_lite0 its bundled ImageNet weights.
    """
    tc = dataclasses.replace(recipe(variant), epochs=epochs)
    machine = MachineConfig(device=device, data_dir=str(root), cache_dir=str(cache_dir), num_workers=workers)
    mc = ModelConfig(variant, backbone=backbone, pretrained=backbone != "resnet18")
    t0 = time.perf_counter()
    result = fit(mc, tc, machine)
    total = time.perf_counter() - t0
    epoch_s = [row["time_s"] for row in result.history]
    return {"total_s": total, "epoch_s": epoch_s, "best_val_acc": result.best["val_acc"]}


# ---- setup helpers


def subset(root: Path, per_class: int, dest: Path) -> Path:
    """Copy the first `per_class` images of every class and split into `dest` (for --quick)."""
    for split in ("train", "val"):
        for cls in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            out = dest / split / cls.name
            out.mkdir(parents=True)
            for f in sorted(cls.iterdir())[:per_class]:
                shutil.copy(f, out / f.name)
    return dest


def warm_up(root: Path, device: torch.device) -> None:
    """Read every file once (page cache) and run resnet18 once, so no measurement pays first-touch costs."""
    for f in root.rglob("*"):
        if f.is_file():
            f.read_bytes()
    model = torchvision.models.resnet18(weights=None).to(device).eval()
    with torch.inference_mode():
        model(torch.zeros(4, 3, 224, 224, device=device))


def exact_features_run(root: Path, epochs: int, cache_dir: Path) -> tuple[dict, dict]:
    """fit() on efficientnet_lite0 features extracted the exact way (float32, batch norms as they are,
    every image decoded whole), and how far the fast features of `cache_dir`'s sibling run are from them:
    (run, {"relative_median", "relative_max", "cosine_min"})."""
    from unittest import mock

    from qtl.data import features

    exact_dir = cache_dir.with_name(cache_dir.name + "-exact")
    with (
        mock.patch.object(features, "extraction_dtype", lambda device: torch.float32),
        mock.patch.object(features, "fold_batchnorm", lambda model, probe: model),
        mock.patch.object(features, "DRAFT_MARGIN", 10**6),
    ):
        run = qtl_run("quantum", root, epochs, exact_dir, "cpu", backbone="efficientnet_lite0")
        exact = [
            features.extract_features("efficientnet_lite0", True, root, s, cache_dir=exact_dir)
            for s in ("train", "val")
        ]
    fast = [
        features.extract_features("efficientnet_lite0", True, root, s, cache_dir=cache_dir)
        for s in ("train", "val")
    ]
    a, b = torch.cat([f.features for f in exact]), torch.cat([f.features for f in fast])
    relative = (b - a).norm(dim=1) / a.norm(dim=1)
    closeness = {
        "relative_median": float(relative.median()),
        "relative_max": float(relative.max()),
        "cosine_min": float(torch.nn.functional.cosine_similarity(a, b).min()),
    }
    return run, closeness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED, help="hymenoptera root (train/ and val/)")
    parser.add_argument("--epochs", type=int, default=30, help="qtl epochs (the paper's 30)")
    parser.add_argument("--ref-epochs", type=int, default=2, help="reference epochs run, then extrapolated")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="finetuned epochs on each side")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of both finetuned loops")
    parser.add_argument("--repeats", type=int, default=2, help="floor and qtl runs, alternated; best is kept")
    parser.add_argument("--device", default="cpu", help="torch device for every side")
    parser.add_argument(
        "--backbone",
        choices=("resnet18", "efficientnet_lite0"),
        default="resnet18",
        help="pipeline of floor and qtl; efficientnet_lite0 skips the resnet18 reference and finetuned parts",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 images per class, 3 qtl epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every side")
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    args = parser.parse_args()
    keep_freed_memory()  # every side runs as under the `qtl` program (bench/allocator.py)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    floor_workers = 1 if (os.cpu_count() or 1) > 1 else 0  # what qtl's extraction uses too
    info = machine()
    with tempfile.TemporaryDirectory(prefix="qtl-e2e-") as tmp:
        root = args.data
        if args.quick:
            root = subset(args.data, 16, Path(tmp) / "data")
            args.epochs, args.ref_epochs, args.repeats = 3, 1, 1
        n_images = sum(1 for f in root.rglob("*") if f.is_file())
        print(f"data: {root} ({n_images} files); device {device}; {info['torch_threads']} torch threads")
        lite0 = args.backbone == "efficientnet_lite0"
        print(
            "backbone: efficientnet_lite0, bundled ImageNet weights for qtl, random init for the floor"
            if lite0
            else "backbone: resnet18 RANDOM INIT on every side (no ImageNet weights here; same timing)"
        )
        warm_up(root, device)

        floors, qs = [], []
        for r in range(args.repeats):  # alternate, so a burst of load on the machine hits both sides
            floors.append(floor_pass(root, floor_workers, device, args.backbone))
            cache = Path(tmp) / f"cache-q{r}"
            qs.append(qtl_run("quantum", root, args.epochs, cache, str(device), backbone=args.backbone))
            print(f"  repeat {r + 1}/{args.repeats}: floor {floors[-1]:.1f} s, qtl {qs[-1]['total_s']:.1f} s")
        floor = min(floors)
        q = min(qs, key=lambda run: run["total_s"])
        q_epochs = sum(q["epoch_s"])
        print(
            f"floor      one {args.backbone} pass over train+val (DataLoader, {floor_workers} worker): "
            f"{floor:.1f} s"
            f" (best of {args.repeats})"
        )
        print(
            f"qtl        fit() quantum, {args.epochs} epochs from a cold cache: {q['total_s']:.1f} s "
            f"(best of {args.repeats}; epochs {q_epochs:.2f} s, preparation + extraction "
            f"{q['total_s'] - q_epochs:.1f} s; best val acc {q['best_val_acc']:.3f})"
        )

        if lite0:
            r_floor = q["total_s"] / floor
            exact, closeness = exact_features_run(root, args.epochs, Path(tmp) / "cache-q0")
            n_val = sum(1 for f in (root / "val").rglob("*") if f.is_file())
            apart = round(abs(q["best_val_acc"] - exact["best_val_acc"]) * n_val)
            print(
                f"exact      the same fit() on exactly extracted features (untimed): best val acc "
                f"{exact['best_val_acc']:.3f}; fast features against them: relative difference median "
                f"{closeness['relative_median']:.4f}, max {closeness['relative_max']:.4f}, cosine >= "
                f"{closeness['cosine_min']:.5f}"
            )
            print()
            floor_text = f"qtl / floor = {r_floor:.2f}   (target <= {TARGET_LITE0_FLOOR})"
            verdict(r_floor <= TARGET_LITE0_FLOOR, floor_text)
            verdict(
                apart <= 1,
                f"best val accuracy {q['best_val_acc']:.3f} against the exact pipeline's "
                f"{exact['best_val_acc']:.3f}: {apart} image(s) apart (target <= 1)",
            )
            if args.json:
                results = {
                    "machine": info,
                    "backbone": args.backbone,
                    "n_files": n_images,
                    "epochs": args.epochs,
                }
                results.update(
                    floor_s=floor,
                    floor_runs_s=floors,
                    qtl=q,
                    qtl_runs_s=[x["total_s"] for x in qs],
                    exact=exact,
                    feature_closeness=closeness,
                )
                args.json.write_text(json.dumps({**results, "ratios": {"qtl_over_floor": r_floor}}, indent=2))
            return

        ref = reference_run(root, args.ref_epochs, device)
        ref_epoch = sum(ref["epoch_s"]) / len(ref["epoch_s"])
        ref_total = ref["setup_s"] + ref_epoch * args.epochs
        print(
            f"reference  demo pipeline: {args.ref_epochs} epoch(s) MEASURED at {ref_epoch:.1f} s each, "
            f"EXTRAPOLATED to {args.epochs} epochs: {ref_total:.0f} s"
        )

        fts, plains = [], []
        for r in range(args.repeats):  # alternated too: each side's best epoch time is kept
            cache = Path(tmp) / f"cache-f{r}"
            fts.append(
                qtl_run("finetuned", root, args.finetune_epochs, cache, str(device), workers=args.workers)
            )
            plains.append(tutorial_finetune(root, args.finetune_epochs, args.workers, device))
        ft_epoch = min(sum(run["epoch_s"]) / len(run["epoch_s"]) for run in fts)
        plain_epoch = min(sum(times) / len(times) for times in plains)
        ft = min(fts, key=lambda run: run["total_s"])
        print(
            f"finetuned  epoch (train + val, batch 4, augmented, {args.workers} workers): qtl fit() "
            f"{ft_epoch:.1f} s vs plain PyTorch loop {plain_epoch:.1f} s (best of {args.repeats}; "
            f"fit() total {ft['total_s']:.1f} s)"
        )

    r_floor, r_ref, r_ft = q["total_s"] / floor, ref_total / q["total_s"], ft_epoch / plain_epoch
    print()
    ok_floor, ok_ref = r_floor <= TARGET_FLOOR, r_ref >= TARGET_REFERENCE
    print(f"qtl / floor        = {r_floor:.2f}   (target <= {TARGET_FLOOR}) {'OK' if ok_floor else 'MISSED'}")
    print(
        f"reference / qtl    = {r_ref:.1f}   (target >= {TARGET_REFERENCE:g}) {'OK' if ok_ref else 'MISSED'}"
        f"  [reference extrapolated from {args.ref_epochs} epoch(s)]"
    )
    print(f"finetuned qtl / plain epoch = {r_ft:.2f}")
    if args.quick:
        print("--quick is a smoke run (few images and epochs): the targets apply to the full run only")
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average: start {info['load_avg_at_start']}, end {load_end}")

    if args.json:
        results = {
            "machine": {**info, "load_avg_at_end": load_end},
            "quick": args.quick,
            "n_files": n_images,
            "epochs": args.epochs,
            "floor_s": floor,
            "floor_runs_s": floors,
            "qtl": q,
            "qtl_runs_s": [run["total_s"] for run in qs],
            "reference": {**ref, "measured_epochs": args.ref_epochs, "extrapolated_total_s": ref_total},
            "finetuned": {
                "qtl_runs": fts,
                "plain_epoch_s": plains,
                "qtl_epoch_s_best": ft_epoch,
                "plain_epoch_s_best": plain_epoch,
                "workers": args.workers,
            },
            "ratios": {
                "qtl_over_floor": r_floor,
                "reference_over_qtl": r_ref,
                "finetuned_qtl_over_plain": r_ft,
            },
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
