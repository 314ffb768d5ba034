"""qtl export: the whole classifier as one ONNX / TorchScript graph, equal to qtl's probabilities.

Parity is checked on real hymenoptera val images against `qtl.analysis.inference.predict`: for every
variant, circuit shape (ry and rot, chain and ring, 2..5 classes, noise) on a tiny random-init timm
backbone, and for every shipped checkpoint (models/*.pt) on all of val (slow). The folded circuit is
checked against the native engines, and an exported file runs in a Python that cannot import qtl,
torch or PennyLane.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

from qtl.analysis.inference import eval_transform, evaluate, predict
from qtl.config import ModelConfig
from qtl.data.images import load_image
from qtl.deploy.export import export_model
from qtl.deploy.portable import ExportRefused, PortableCircuit, check_foldable
from qtl.deploy.runtime import load_exported, predict_exported
from qtl.models.checkpoint import load_checkpoint, save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines import make_engine
from qtl.quantum.noise import NoiseConfig

TOLERANCE = 1e-5
TINY = "timm/test_efficientnet"  # 99k parameters, random init: no download
SHIPPED = sorted((REPO / "models").glob("*.pt"))
NOISE = NoiseConfig(
    depolarizing=0.05, depolarizing_2q=0.1, amplitude_damping=0.02, phase_damping=0.03, readout=0.04
)


def val_paths(root: Path, per_class: int | None = None) -> list[Path]:
    paths = []
    for folder in sorted((root / "val").iterdir()):
        paths += sorted(folder.iterdir())[:per_class]
    return paths


@pytest.fixture(scope="module")
def val_sample(hymenoptera_dir):
    """12 ants and 12 bees from val, decoded."""
    return [load_image(p) for p in val_paths(hymenoptera_dir, 12)]


def tiny_checkpoint(
    path: Path, variant: str, classes: int = 2, seed: int = 0, *, dataset: dict | None = None, **config
) -> Path:
    """A checkpoint with random (seeded) weights on the tiny backbone; circuit angles spread wide
    (q_delta 1) so the circuit's output is far from trivial; `dataset`: the data it records."""
    torch.manual_seed(seed)
    mc = ModelConfig(
        variant,
        TINY,
        pretrained=False,
        class_names=tuple(f"c{i}" for i in range(classes)),
        q_delta=1.0,
        **config,
    )
    return save_checkpoint(path, build_model(mc), mc, dataset=dataset)


# ---- the folded circuit against the engines


@pytest.mark.parametrize(
    "circuit",
    [
        CircuitConfig(),
        CircuitConfig(rotation="rot"),
        CircuitConfig(5, 3, "ring", "rot"),
        CircuitConfig(3, 2, "none", "rot"),
        CircuitConfig(4, 2, hadamard=False),
        CircuitConfig(1, 2),
        CircuitConfig(4, 0),
    ],
    ids=lambda c: f"q{c.n_qubits}d{c.depth}-{c.entangler}-{c.rotation}{'' if c.hadamard else '-noH'}",
)
@pytest.mark.parametrize("noise", [NoiseConfig(), NOISE], ids=["ideal", "noisy"])
def test_folded_circuit_equals_the_engine(circuit, noise):
    gen = torch.Generator().manual_seed(circuit.n_qubits * 10 + circuit.depth)
    weights = torch.randn(circuit.weight_shape, generator=gen, dtype=torch.float64)
    angles = (torch.rand(9, circuit.n_qubits, generator=gen, dtype=torch.float64) * 2 - 1) * 1.5
    reference = make_engine(circuit, "native", noise=noise)(angles, weights)  # float64
    folded = PortableCircuit(circuit, weights, noise)(angles.float())
    assert folded.dtype == torch.float32
    assert (folded.double() - reference).abs().max() < 2e-6


@pytest.mark.parametrize("engine", ["default.qubit", "mps"])
def test_folded_circuit_equals_other_engines(engine):
    circuit = CircuitConfig(4, 2, "ring", "rot")
    weights = torch.randn(
        circuit.weight_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    angles = torch.linspace(-1.5, 1.5, 12, dtype=torch.float64).reshape(3, 4)
    reference = make_engine(circuit, engine)(angles, weights)
    assert (PortableCircuit(circuit, weights)(angles.float()).double() - reference).abs().max() < 2e-6


def test_folded_circuit_uses_only_real_arithmetic():
    circuit = PortableCircuit(CircuitConfig(rotation="rot"), torch.randn(6, 4, 3))
    assert all(not b.is_complex() for b in circuit.buffers())
    assert circuit.amp_imag is not None  # rot has complex amplitudes: their imaginary part is a real matmul


@pytest.mark.parametrize(
    "config, reason",
    [
        (ModelConfig(noise=NoiseConfig(depolarizing=0.01, shots=100)), "shots"),
        (ModelConfig(engine="default.qubit", shots=1000), "shots"),
        (ModelConfig(engine="mps", max_bond=2), "truncates bonds"),
        (ModelConfig(circuit=CircuitConfig(11, 1)), "over the 1024"),
        (ModelConfig(circuit=CircuitConfig(6, 1), noise=NoiseConfig(depolarizing=0.01)), "with noise"),
        (ModelConfig(circuit=CircuitConfig(4, 2, reupload=True)), "reads inputs after an entangling gate"),
    ],
    ids=["noise-shots", "device-shots", "mps-truncated", "too-wide", "too-wide-noisy", "reupload"],
)
def test_what_cannot_fold_exactly_is_refused_with_the_reason(config, reason):
    with pytest.raises(ExportRefused, match=reason):
        check_foldable(config)


def test_the_width_refusal_reads_as_english():
    """It said "a 11-qubit circuit"."""
    cases = [
        (11, NoiseConfig(), "an 11-qubit circuit folds"),
        (12, NoiseConfig(), "a 12-qubit"),
        (8, NOISE, "an 8-qubit circuit with noise"),
        (6, NOISE, "a 6-qubit"),
    ]
    for qubits, noise, said in cases:
        with pytest.raises(ExportRefused) as refused:
            check_foldable(ModelConfig(circuit=CircuitConfig(qubits, 1), noise=noise))
        assert str(refused.value).startswith(said)


def test_exact_mps_folds():
    check_foldable(ModelConfig(engine="mps", max_bond=4))  # 4 qubits in a chain need bond 4: exact


# ---- whole files on the tiny backbone: every variant, circuit shape and class count

MATRIX = {
    "quantum-ry-chain-2": ("quantum", 2, {}),
    "quantum-rot-ring-3": ("quantum", 3, {"circuit": CircuitConfig(5, 2, "ring", "rot")}),
    "quantum-noisy-rot-chain-4": (
        "quantum",
        4,
        {"circuit": CircuitConfig(3, 2, "chain", "rot"), "noise": NOISE},
    ),
    "hybrid-ry-ring-5": ("hybrid", 5, {"circuit": CircuitConfig(4, 3, "ring", "ry")}),
    "finetuned-2": ("finetuned", 2, {}),
    "linear-4": ("linear", 4, {}),
    "dressed-classical-3": ("dressed-classical", 3, {}),
}


@pytest.fixture(scope="module")
def tiny_pixels(val_sample) -> torch.Tensor:
    """The val sample as the tiny backbone's checkpoints preprocess it: (24, 3, 160, 160)."""
    from qtl.models.backbones import image_transform

    transform = image_transform(TINY, pretrained=False)
    return torch.stack([transform(im) for im in val_sample])


@pytest.mark.parametrize("case", list(MATRIX))
def test_exported_files_give_qtls_probabilities(case, tiny_pixels, tmp_path):
    variant, classes, config = MATRIX[case]
    ckpt = tiny_checkpoint(tmp_path / f"{case}.pt", variant, classes, **config)
    loaded = load_checkpoint(ckpt)
    with torch.no_grad():
        expected = torch.softmax(loaded.model(tiny_pixels), 1).numpy()  # (24, C), as predict computes it
    assert expected.shape == (24, classes)
    for fmt in ("onnx", "torchscript"):
        path, meta = export_model(loaded, tmp_path / f"{case}.{fmt}", fmt)
        model = load_exported(path)
        assert model.runtime == fmt and model.class_names == [f"c{i}" for i in range(classes)]
        assert meta["variant"] == variant and model.metadata == meta
        for rows in (slice(None), slice(0, 1), slice(3, 8)):  # the batch is a dimension of the graph
            got = model.run(tiny_pixels[rows].numpy())
            assert np.abs(got - expected[rows]).max() < TOLERANCE, (fmt, rows)


def test_a_head_on_reduced_features_exports_with_its_projection(tiny_pixels, tmp_path):
    """A quantum head behind a PCA projection (feature_dim): the exported graph keeps the projection and
    gives the checkpoint's probabilities."""
    torch.manual_seed(3)
    mc = ModelConfig(
        "quantum", TINY, pretrained=False, class_names=("a", "b", "c"), q_delta=1.0, feature_dim=6
    )
    model = build_model(mc)
    width = model.head.mean.numel()
    model.head.set_projection(torch.randn(width), torch.linalg.qr(torch.randn(width, 6))[0].T)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "f.pt", model, mc))
    with torch.no_grad():
        expected = torch.softmax(loaded.model(tiny_pixels), 1).numpy()
    path, _ = export_model(loaded, tmp_path / "f.onnx", "onnx")
    assert np.abs(load_exported(path).run(tiny_pixels.numpy()) - expected).max() < TOLERANCE
    assert expected.std(0).max() > 10 * TOLERANCE  # the projection is not trivial: images are told apart


def test_predict_exported_answers_as_predict(val_sample, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "q.pt", "quantum", 3, circuit=CircuitConfig(4, 2, "ring", "rot"))
    expected = predict(load_checkpoint(ckpt), val_sample[:6])["q"]
    model = load_exported(export_model(ckpt, tmp_path / "q.onnx")[0])
    got = predict_exported([model, model], val_sample[:6])
    assert list(got) == ["q", "q#2"]
    assert got["q"].predicted == expected.predicted and got["q"].class_names == expected.class_names
    assert (got["q"].probs - expected.probs).abs().max() < TOLERANCE
    with pytest.raises(ValueError, match="batch_size must be a positive whole number, got 0"):
        predict_exported(model, val_sample[:2], batch_size=0)  # was range()'s "arg 3 must not be zero"


def test_metadata_records_preprocessing_and_classes(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "q.pt", "quantum", 3, circuit=CircuitConfig(3, 1), noise=NOISE)
    path, meta = export_model(ckpt, tmp_path / "q.onnx")
    import onnx

    stored = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(stored["qtl"]) == meta
    assert meta["preprocessing"] == {
        "resize": 168,
        "crop": 160,
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert meta["input"] == {"name": "images", "shape": ["batch", 3, 160, 160], "dtype": "float32"}
    assert meta["class_names"] == ["c0", "c1", "c2"] and meta["output"]["shape"] == ["batch", 3]
    assert meta["circuit"]["n_qubits"] == 3 and meta["noise"]["readout"] == pytest.approx(0.04)
    graph_ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not graph_ops & {"Loop", "If", "Scan"}  # one straight graph


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".torchscript")])
def test_cli_export_then_predict_with_the_file(fmt, suffix, tmp_path, capsys, hymenoptera_dir):
    ckpt = tiny_checkpoint(tmp_path / "quantum.pt", "quantum", 2)
    images = [str(p) for p in val_paths(hymenoptera_dir, 2)]
    code, out, err = run_cli(capsys, "export", ckpt, "--format", fmt)
    assert code == 0, err
    exported = tmp_path / f"quantum{suffix}"  # the default name: beside the checkpoint
    assert exported.is_file() and f"wrote {exported}" in out and "resize 168 bicubic, crop 160" in out
    code, torch_out, _ = run_cli(capsys, "predict", *images, "-c", ckpt, "--json")
    assert code == 0
    code, file_out, err = run_cli(capsys, "predict", *images, "-c", exported, "--runtime", fmt, "--json")
    assert code == 0, err
    a, b = json.loads(torch_out), json.loads(file_out)
    assert [r["image"] for r in a] == [r["image"] for r in b] == images
    assert _labels(a) == _labels(b) and np.allclose(_probs(a), _probs(b), atol=TOLERANCE, rtol=0)
    code, _, err = run_cli(capsys, "predict", images[0], "-c", exported, "--runtime", fmt, "--engine", "mps")
    assert code == 1 and "--engine applies to checkpoints" in err


def test_predict_with_an_exported_file_refuses_a_device_it_would_ignore(tmp_path, capsys, monkeypatch):
    """`qtl predict -c x.onnx --runtime onnx --device cuda` ignored --device silently, where `qtl serve
    --device cuda` refuses a device the machine lacks: refused alike, and any device but the CPU named
    as one an exported file does not run on; cpu and auto run."""
    from PIL import Image

    import qtl.cli.commands as commands

    ckpt = tiny_checkpoint(tmp_path / "m.pt", "linear", 2)
    exported = export_model(ckpt, tmp_path / "m.onnx")[0]
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), "red").save(image)
    for device in ("cpu", "auto"):
        code, _, err = run_cli(
            capsys, "predict", image, "-c", exported, "--runtime", "onnx", "--device", device
        )
        assert code == 0, err
    code, out, err = run_cli(
        capsys, "predict", image, "-c", exported, "--runtime", "onnx", "--device", "cuda:7"
    )
    assert (code, out) == (1, "") and err.startswith(
        "qtl: error: device 'cuda:7' is not here: this machine has"
    )
    monkeypatch.setattr(commands, "resolve_device", lambda name: torch.device("cuda"))  # a CUDA machine
    code, out, err = run_cli(
        capsys, "predict", image, "-c", exported, "--runtime", "onnx", "--device", "cuda"
    )
    assert (code, out, err) == (
        1,
        "",
        "qtl: error: --device cuda: --runtime onnx runs exported files on the CPU; give cpu, or leave "
        "--device out\n",
    )


def _labels(document: list) -> list:
    return [m["predicted"] for row in document for m in row["predictions"].values()]


def _probs(document: list) -> list:
    return [list(m["probs"].values()) for row in document for m in row["predictions"].values()]


def test_cli_refuses_shots_in_one_line_and_writes_nothing(tmp_path, capsys):
    ckpt = tiny_checkpoint(
        tmp_path / "shots.pt", "quantum", 2, noise=NoiseConfig(depolarizing=0.01, shots=50)
    )
    code, out, err = run_cli(capsys, "export", ckpt, "-o", tmp_path / "shots.onnx")
    assert code == 1
    assert err.startswith("qtl: error:") and "shots" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "shots.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["shots.pt"]  # no temporary file either
    # what it says to do works: the same model and noise with exact <Z>
    advice = (
        "export it with exact <Z> from Python, export_model(load_checkpoint(path, "
        "noise=dataclasses.replace(noise, shots=None)), out) where noise is its model_config.noise, "
        "or train it without --shots"
    )
    assert err.strip().endswith(advice)
    import dataclasses

    noise = load_checkpoint(ckpt).model_config.noise
    path, meta = export_model(
        load_checkpoint(ckpt, noise=dataclasses.replace(noise, shots=None)), tmp_path / "x.onnx"
    )
    assert meta["noise"]["depolarizing"] == 0.01 and meta["noise"]["shots"] is None


def test_an_export_never_overwrites_a_checkpoint(tmp_path, capsys):
    """`qtl export victim.pt -o victim.pt --format torchscript` overwrote its own source; another qtl
    checkpoint is kept too; a previous export of the same format is overwritten."""
    ckpt = tiny_checkpoint(tmp_path / "victim.pt", "linear", 2)
    other = tiny_checkpoint(tmp_path / "other.pt", "linear", 2, seed=1)
    (tmp_path / "alias.pt").symlink_to(ckpt)
    kept = {p: p.read_bytes() for p in (ckpt, other)}
    same = "is the checkpoint being exported: name another file (-o), or leave -o out for the checkpoint's"
    for output in (ckpt, tmp_path / "alias.pt", tmp_path / "." / "victim.pt"):
        code, out, err = run_cli(capsys, "export", ckpt, "-o", output, "--format", "torchscript")
        assert (code, out) == (1, "") and err.startswith(f"qtl: error: the output {output} {same}"), err
        assert len(err.splitlines()) == 1
    code, out, err = run_cli(capsys, "export", ckpt, "-o", other, "--format", "torchscript")
    assert (code, err) == (
        1,
        f"qtl: error: {other} is a qtl checkpoint: an export never overwrites one, name another file (-o)\n",
    )
    with pytest.raises(ValueError, match="is the checkpoint being exported"):
        export_model(load_checkpoint(ckpt), ckpt, "torchscript")  # a loaded model knows its file
    assert {p: p.read_bytes() for p in (ckpt, other)} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.pt", "other.pt", "victim.pt"]
    for _ in range(2):  # the second overwrites the first
        code, out, err = run_cli(
            capsys, "export", ckpt, "-o", tmp_path / "v.pt.ts", "--format", "torchscript"
        )
        assert code == 0, err
    assert load_exported(tmp_path / "v.pt.ts").class_names == ["c0", "c1"]


def test_without_format_the_output_suffix_decides(tmp_path, capsys):
    """-o m.torchscript writes TorchScript, -o m.onnx ONNX, and the line says which (--format's default,
    onnx, overrode the suffix: -o m.torchscript wrote an ONNX file)."""
    from qtl.models.checkpoint import file_kind

    ckpt = tiny_checkpoint(tmp_path / "quantum.pt", "quantum", 2)
    for name, fmt in (("m.torchscript", "torchscript"), ("m.onnx", "onnx"), ("M.ONNX", "onnx")):
        code, out, err = run_cli(capsys, "export", ckpt, "-o", tmp_path / name)
        assert code == 0, err
        assert out.startswith(f"wrote {tmp_path / name} ({fmt},") and file_kind(tmp_path / name) == fmt


def test_an_export_into_a_folder_is_named_as_the_checkpoint(tmp_path, capsys):
    """-o an existing folder writes the file inside it (it said "[Errno 21] Is a directory" of a
    temporary file)."""
    ckpt = tiny_checkpoint(tmp_path / "quantum.pt", "quantum", 2)
    folder = tmp_path / "out"
    folder.mkdir()
    code, out, err = run_cli(capsys, "export", ckpt, "-o", folder, "--format", "torchscript")
    assert code == 0, err
    assert out.startswith(f"wrote {folder / 'quantum.torchscript'} (torchscript,")
    assert load_exported(folder / "quantum.torchscript").class_names == ["c0", "c1"]
    (folder / "quantum.onnx").mkdir()  # the file's name inside is taken by a folder
    code, out, err = run_cli(capsys, "export", ckpt, "-o", folder)
    assert (code, err) == (
        1,
        f"qtl: error: the output {folder / 'quantum.onnx'} is a folder: name a file, or a folder without "
        "one of that name\n",
    )
    assert sorted(p.name for p in folder.iterdir()) == ["quantum.onnx", "quantum.torchscript"]


def test_an_export_replaces_only_an_earlier_export_of_its_own_checkpoint(tmp_path, capsys):
    """`qtl export a.pt -o out.onnx; qtl export b.pt -o out.onnx` replaced a's export silently: the file
    records its checkpoint (name and SHA-256), another checkpoint's export is refused in one line naming
    it, and the same checkpoint's is replaced, said so."""
    a = tiny_checkpoint(tmp_path / "a.pt", "linear", 2, seed=1)
    (tmp_path / "b").mkdir()
    b = tiny_checkpoint(tmp_path / "b" / "a.pt", "linear", 2, seed=2)  # the same name and variant
    out = tmp_path / "out.onnx"
    code, said, err = run_cli(capsys, "export", a, "-o", out)
    assert code == 0 and said.startswith(f"wrote {out} (onnx,"), err
    kept = out.read_bytes()
    import onnx

    source = json.loads(next(p.value for p in onnx.load(str(out)).metadata_props))["source"]
    assert source["file"] == "a.pt" and len(source["sha256"]) == 64
    code, said, err = run_cli(capsys, "export", b, "-o", out)
    assert (code, said) == (1, "") and len(err.splitlines()) == 1
    assert err.startswith(
        f"qtl: error: {out} is a qtl ONNX export of a.pt (sha256 {source['sha256'][:12]}), not "
    )
    assert "(a.pt has changed since, or is another a.pt): an export replaces only" in err
    assert err.strip().endswith("name another file (-o) or remove it first")
    assert out.read_bytes() == kept
    with pytest.raises(ValueError, match="is a qtl TorchScript export of a.pt"):
        export_model(b, export_model(a, tmp_path / "a.ts")[0])
    code, said, err = run_cli(capsys, "export", a, "-o", out)  # its own earlier export: replaced
    assert code == 0 and said.startswith(f"wrote {out} (onnx,"), err
    assert err == f"qtl: note: replaced {out}, an earlier export of the same checkpoint (a.pt)\n"


def test_the_default_name_keeps_a_checkpoints_whole_name(tmp_path, capsys):
    """model.v1 and model.v2 both exported to model.onnx (with_suffix dropped .v1 and .v2), the second
    over the first: the default name drops only .pt or .pth."""
    from qtl.deploy.export import default_output

    first = tiny_checkpoint(tmp_path / "model.v1", "linear", 2, seed=1)
    second = tiny_checkpoint(tmp_path / "model.v2", "quantum", 2, seed=2)
    for ckpt in (first, second):
        code, out, err = run_cli(capsys, "export", ckpt)
        assert code == 0 and out.startswith(f"wrote {ckpt}.onnx (onnx,"), err
    assert load_exported(tmp_path / "model.v1.onnx").variant == "linear"
    assert load_exported(tmp_path / "model.v2.onnx").variant == "quantum"
    assert default_output(tmp_path / "q.pt", "onnx") == tmp_path / "q.onnx"
    assert default_output(tmp_path / "q.PTH", "torchscript") == tmp_path / "q.torchscript"
    folder = tmp_path / "out"
    folder.mkdir()
    assert export_model(first, folder, "torchscript")[0] == folder / "model.v1.torchscript"


def test_an_export_without_a_recorded_source_is_told_by_name_and_variant():
    """Exports written before qtl recorded the checkpoint (or of a model without a file) are the same
    checkpoint's where name and variant agree."""
    from qtl.deploy.export import same_source

    digest = {"source": {"file": "q.pt", "sha256": "1" * 64}, "name": "q", "variant": "quantum"}
    older = {"name": "q", "variant": "quantum"}
    assert same_source(older, digest) and same_source(digest, dict(digest))
    assert not same_source({"name": "q", "variant": "linear"}, digest)
    assert not same_source({**digest, "source": {"file": "q.pt", "sha256": "2" * 64}}, digest)


def test_a_format_the_suffix_contradicts_is_refused(tmp_path, capsys):
    """`-o x.onnx --format torchscript` wrote TorchScript under .onnx: refused before any work."""
    ckpt = tiny_checkpoint(tmp_path / "m.pt", "linear", 2)
    for name, fmt, said in (
        ("x.onnx", "torchscript", "x.onnx names an ONNX file by its suffix, but the format asked for is "
         "torchscript: name it .torchscript (or .ts), or drop the format (--format) to write ONNX"),
        ("x.TS", "onnx", "x.TS names a TorchScript file by its suffix, but the format asked for is onnx: "
         "name it .onnx, or drop the format (--format) to write TorchScript"),
    ):  # fmt: skip
        code, out, err = run_cli(capsys, "export", ckpt, "-o", tmp_path / name, "--format", fmt)
        assert (code, out, err) == (1, "", f"qtl: error: {said}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_the_outputs_folder_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """-o into a missing folder made it (nodir/sub/), into a file said "[Errno 17] File exists", into a
    folder that takes no file named the writer's temporary file: one line each, nothing written."""
    import qtl.deploy.export as export

    ckpt = tiny_checkpoint(tmp_path / "m.pt", "linear", 2)
    (tmp_path / "bee.png").write_bytes(b"png")
    monkeypatch.setattr(export, "load_checkpoint", lambda *a: pytest.fail("loaded before the check"))
    for output, said in (
        (
            tmp_path / "nodir" / "sub" / "x.onnx",
            f"no folder {tmp_path / 'nodir' / 'sub'} to write x.onnx into",
        ),
        (tmp_path / "bee.png" / "x.onnx", f"no folder {tmp_path / 'bee.png'} (a file) to write x.onnx into"),
        (Path("/proc/y.onnx"), "cannot write y.onnx into /proc: "),  # the reason: root's, or a user's
    ):
        code, out, err = run_cli(capsys, "export", ckpt, "-o", output)
        assert (code, out) == (1, "") and err.startswith(f"qtl: error: {said}") and len(err.splitlines()) == 1
        assert ".part" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bee.png", "m.pt"]


def test_a_foreign_file_is_one_clear_line(tmp_path, capsys):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bogus.onnx cannot be opened as onnx"):
        load_exported(bogus)


def test_a_file_of_the_other_kind_says_which_it_is(tmp_path):
    """A checkpoint, or the other runtime's export, given to a runtime: named for what it is, with the
    way that runs it, before the runtime's own parse error."""
    ckpt = tiny_checkpoint(tmp_path / "m.pt", "linear", 2)
    scripted, onnx = (export_model(ckpt, tmp_path / f"m.{fmt}", fmt)[0] for fmt in ("torchscript", "onnx"))
    renamed = tmp_path / "m2.torchscript"  # an ONNX file under TorchScript's suffix: told by its bytes
    renamed.write_bytes(onnx.read_bytes())
    said = {
        (ckpt, "onnx"): "m.pt is not an ONNX file but a qtl checkpoint: qtl checkpoints run without "
        "--runtime",
        (ckpt, "torchscript"): "m.pt is not a TorchScript file but a qtl checkpoint",
        (scripted, "onnx"): "m.torchscript is not an ONNX file but a TorchScript file: --runtime torchscript",
        (onnx, "torchscript"): "m.onnx is not a TorchScript file but an ONNX file: --runtime onnx runs it",
        (renamed, "torchscript"): "m2.torchscript is not a TorchScript file but an ONNX file: --runtime onnx",
    }
    for (path, runtime), message in said.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            load_exported(path, runtime)
    assert load_exported(scripted).runtime == "torchscript" and load_exported(onnx).runtime == "onnx"


# ---- every shipped checkpoint, all of val (slow: six exports of efficientnet_lite0)


@pytest.fixture(scope="module")
def shipped_exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {
        (ckpt.stem, fmt): export_model(ckpt, out / f"{ckpt.stem}.{fmt}", fmt)[0]
        for ckpt in SHIPPED
        for fmt in ("onnx", "torchscript")
    }


@pytest.fixture(scope="module")
def shipped_reference(hymenoptera_dir):
    """qtl's probabilities of every shipped checkpoint on all of val (`evaluate`: cached features for
    the frozen ones), the val paths in that order and their normalised pixels."""
    loaded = [load_checkpoint(p) for p in SHIPPED]
    assert all(m.transform == loaded[0].transform for m in loaded)  # all on efficientnet_lite0
    runs = {m.name: evaluate(m, hymenoptera_dir, "val").samples for m in loaded}
    paths = [s.path for s in next(iter(runs.values()))]
    assert all([s.path for s in samples] == paths for samples in runs.values())
    transform = eval_transform(loaded[0])
    pixels = torch.stack([transform(load_image(p)) for p in paths]).numpy()
    probs = {name: np.array([s.probs for s in samples]) for name, samples in runs.items()}
    return probs, paths, pixels


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("checkpoint", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_checkpoint_exports_exactly(checkpoint, fmt, shipped_exports, shipped_reference):
    """ONNX on all 153 val images; TorchScript (which runs at eager torch's speed) on every 4th."""
    expected, _, pixels = shipped_reference
    assert len(pixels) == 153
    rows = slice(None) if fmt == "onnx" else slice(None, None, 4)
    model = load_exported(shipped_exports[(checkpoint.stem, fmt)])
    x = pixels[rows]
    got = np.concatenate([model.run(x[i : i + 32]) for i in range(0, len(x), 32)])
    assert np.abs(got - expected[checkpoint.stem][rows]).max() < TOLERANCE


def test_shipped_checkpoints_include_every_kind():
    variants = {load_checkpoint_info(p) for p in SHIPPED}
    assert {"quantum", "linear", "dressed-classical", "finetuned", "quantum-noisy"} <= variants


def load_checkpoint_info(path: Path) -> str:
    from qtl.models.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(path)
    return info.variant + ("-noisy" if not info.model_config.noise.is_ideal else "")


# ---- an exported file where qtl, torch and PennyLane cannot be imported


STANDALONE_PACKAGES = ("onnxruntime", "numpy", "pillow")


@pytest.fixture(scope="module")
def bare_site(tmp_path_factory) -> Path:
    """A folder holding only onnxruntime, numpy and Pillow: the files of the versions installed here, as
    each distribution's record lists them (its scripts outside site-packages and bytecode left out)."""
    site = tmp_path_factory.mktemp("bare-site")
    for name in STANDALONE_PACKAGES:
        dist = importlib.metadata.distribution(name)
        assert dist.files, f"{name} is installed without a record of its files"
        for file in dist.files:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dist.locate_file(file)), target)
    return site


def run_bare(site: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python -I -S` (no site-packages, no environment) with only `site` on the path."""
    boot = f"import sys, runpy; sys.path.insert(0, {str(site)!r}); sys.argv = {list(argv)!r}; "
    boot += "runpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", boot], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_onnx_file_runs_without_qtl_torch_or_pennylane(
    bare_site, shipped_exports, shipped_reference, tmp_path
):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib.util, json\n"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
        "('qtl', 'torch', 'torchvision', 'pennylane', 'onnxruntime', 'numpy', 'PIL')}))\n"
    )
    found = json.loads(run_bare(bare_site, str(probe)).stdout)
    assert found == {
        "qtl": False,
        "torch": False,
        "torchvision": False,
        "pennylane": False,
        "onnxruntime": True,
        "numpy": True,
        "PIL": True,
    }

    name = "quantum-efficientnet_lite0-imagenet-q4d6-s0"
    script = REPO / "qtl" / "deploy" / "standalone.py"
    probs, paths, _ = shipped_reference
    picked = paths[::8]  # 20 images, both classes, decoded and preprocessed by Pillow and numpy alone
    result = run_bare(bare_site, str(script), str(shipped_exports[(name, "onnx")]), *picked)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    expected = probs[name][::8]
    got = np.array([list(a["probabilities"].values()) for a in answers])
    assert [a["image"] for a in answers] == picked
    assert np.abs(got - expected).max() < TOLERANCE
    assert [a["label"] for a in answers] == [["ants", "bees"][i] for i in expected.argmax(1)]
