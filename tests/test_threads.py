"""One loaded model, many threads: the app keeps loaded checkpoints in `st.cache_resource`, so every
session's script thread runs the same model object at once. Concurrent forwards must give each caller
the answer a lone forward gives."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from qtl.analysis.inference import predict
from qtl.config import ModelConfig
from qtl.models.checkpoint import backbone_fingerprint, load_checkpoint, save_checkpoint
from qtl.models.variants import build_head, build_model
from qtl.quantum.circuit import CircuitConfig

THREADS, ROUNDS = 8, 10


def concurrently(work, n: int = THREADS) -> list:
    """Run work(i) for i < n in n threads released together; return what each returned (or raised), in
    order."""
    start_line, out = threading.Barrier(n), [None] * n

    def run(i):
        start_line.wait()
        try:
            out[i] = work(i)
        except Exception as exc:  # a wrong answer in another form: the test reports it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("engine", ["native", "default.qubit", "lightning.qubit"])
def test_concurrent_forwards_of_one_quantum_head_match_serial_ones(engine):
    """8 threads x 10 forwards of one quantum model (4 qubits, depth 3), each on its own batch of
    features: every output equals that batch's output computed alone."""
    mc = ModelConfig(
        "quantum", pretrained=False, class_names=("a", "b"), circuit=CircuitConfig(4, 3), engine=engine
    )
    torch.manual_seed(0)
    head = build_head(mc, 512).eval()  # what a loaded model runs after its backbone
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(5, 512, generator=g) for _ in range(THREADS)]  # (B, F) features, one batch per thread
    with torch.no_grad():
        alone = [head(x) for x in xs]

    def work(i):
        with torch.no_grad():
            return [(head(xs[i]) - alone[i]).abs().max().item() for _ in range(ROUNDS)]

    results = concurrently(work)
    raised = [r for r in results if isinstance(r, Exception)]
    assert not raised, f"{len(raised)} threads raised, e.g. {raised[0]!r}"
    assert max(max(errors) for errors in results) < 1e-6


def test_concurrent_predictions_of_one_loaded_checkpoint_match_serial_ones(tmp_path):
    """What the Classify page does from many sessions: `predict` with one shared LoadedModel (resnet18
    backbone + quantum head) on different images in 4 threads gives the lone answers."""
    n = 4
    mc = ModelConfig("quantum", pretrained=False, class_names=("a", "b"), circuit=CircuitConfig(3, 2))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "q.pt", build_model(mc), mc))
    g = torch.Generator().manual_seed(2)
    images = [
        Image.fromarray(torch.randint(0, 256, (48, 64, 3), generator=g, dtype=torch.uint8).numpy())
        for _ in range(n)
    ]
    alone = [predict(loaded, im)[loaded.name].probs for im in images]

    def work(i):
        return [
            (predict(loaded, images[i])[loaded.name].probs - alone[i]).abs().max().item() for _ in range(2)
        ]

    results = concurrently(work, n)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert max(max(errors) for errors in results) < 1e-6
    assert len({tuple(p[0].tolist()) for p in alone}) == n  # the images do get different answers


def test_concurrent_random_init_backbones_are_the_one_seeded_backbone():
    """Sessions loading random-init checkpoints and a job training build backbones at once: every thread
    gets the seeded random-init weights a lone build gets (their draws from torch's one global RNG used
    to interleave, and each thread got other weights: "trained on different resnet18 weights")."""
    from qtl.models.backbones import common, load_backbone

    def fingerprint(_=None):
        return backbone_fingerprint(load_backbone("resnet18", pretrained=False)[0])

    common._RANDOM_STATES.clear()  # a fresh process: the first builds draw the weights
    together = concurrently(fingerprint, 4)
    common._RANDOM_STATES.clear()
    assert together == [fingerprint()] * 4
