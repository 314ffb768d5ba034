"""The fused closed-form training step (`qtl.training.closed_form`) against fit()'s autograd `train_step`,
and the units it runs wide circuits on (`qtl.quantum.engines._units`)."""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from qtl.models.heads import DressedClassical, DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.engines import _halves, native
from qtl.quantum.engines import _split as split
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines import _units as units
from qtl.quantum.engines import _wide as wide
from qtl.quantum.engines._compiler import compile_plan
from qtl.quantum.engines._memory import HUGE_PAGE, huge_page_empty
from qtl.training.closed_form import HALVES_MAX_QUBITS, ClosedFormStep, supports_closed_form
from qtl.training.optim import adam
from qtl.training.steps import COMPILE_MIN_STEPS, step_for_run, train_step

CONFIGS = [  # (n_qubits, depth, entangler, hadamard, batch): one folded block up to 6 wires, halves above
    (2, 1, "chain", True, 1),
    (3, 0, "chain", True, 5),
    (4, 6, "chain", True, 4),
    (4, 6, "chain", True, 64),
    (5, 3, "ring", False, 7),
    (6, 8, "chain", True, 9),
    (7, 4, "ring", True, 6),
    (8, 6, "chain", True, 32),
    (9, 0, "none", True, 4),
    (10, 2, "ring", False, 3),
]
WIDE = [  # (n_qubits, depth, entangler, hadamard, batch, samples per chunk): units above 10 wires
    (11, 1, "chain", True, 3, None),
    (11, 0, "chain", False, 2, None),
    (12, 6, "chain", True, 5, 2),  # three chunks, the last one short
    (13, 3, "ring", True, 4, None),  # odd: the ring's control is wire 11 xor wire 12
    (13, 2, "chain", False, 7, 3),
    (14, 5, "ring", False, 3, 1),
    (14, 0, "none", True, 3, None),
    (15, 4, "chain", True, 2, None),
]


def _pair(config: CircuitConfig, dtype=torch.float64, lr: float = 0.05):
    """A head and its optimizer. Autograd's reference builds the full state: wide heads take the adjoint
    path, not the halves the closed-form step shares with the engine (`native.halves_plan`)."""
    torch.manual_seed(0)
    path = "adjoint" if config.n_qubits > HALVES_MAX_QUBITS else "auto"
    head = DressedQuantumCircuit(6, 3, config, q_delta=1.0, path=path).to(dtype)
    return head, adam(head.parameters(), lr)


def _wide_chunks(monkeypatch, n: int, samples: int | None, back_only: bool | None = None) -> None:
    """Simulate `samples` samples of n qubits per chunk (None: the default chunk), with every pass a
    "back" pass or passes alternating (None: as the width decides)."""
    if samples is not None:
        monkeypatch.setattr(wide, "CHUNK_AMPLITUDES", samples * 2**n)
    if back_only is not None:  # the units' passes themselves: no layer on the halves (`_split`)
        monkeypatch.setattr(wide, "BACK_ONLY_MIN_QUBITS", n if back_only else n + 1)
        monkeypatch.setattr(wide, "SPLIT_MAX_RANK", 0)


@pytest.mark.parametrize(
    ("n", "depth", "entangler", "hadamard", "batch", "chunk", "back_only"),
    [(*c, None, None) for c in CONFIGS] + [(*c, b) for c in WIDE for b in (False, True)],
)
def test_fused_gradients_equal_autograd(monkeypatch, n, depth, entangler, hadamard, batch, chunk, back_only):
    """Loss, correct count and the gradient of every parameter agree with autograd to 1e-10 (float64):
    one block, two halves, and above 10 wires the units, a chunk of samples at a time, in passes that
    alternate between "back" and "front" or in "back" passes only."""
    _wide_chunks(monkeypatch, n, chunk, back_only)
    head, opt = _pair(CircuitConfig(n, depth, entangler, hadamard=hadamard))
    assert supports_closed_form(head, opt)
    _assert_step_equals_autograd(head, opt, batch, seed=1)


def _assert_step_equals_autograd(head, opt, batch: int, seed: int) -> None:
    """The closed-form step's loss, correct count and every gradient on a random batch equal autograd's
    (to 1e-12 and 1e-10)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(batch, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (batch,), generator=g)
    with torch.no_grad():
        loss, correct, grads = ClosedFormStep(head, opt).loss_and_grads(x, y)
    logits = head(x)
    want = torch.nn.functional.cross_entropy(logits, y)
    params = [head.pre_net.weight, head.pre_net.bias, head.q_params, head.post_net.weight, head.post_net.bias]
    want_grads = torch.autograd.grad(want, params, allow_unused=True, materialize_grads=True)  # depth 0
    torch.testing.assert_close(loss, want, atol=1e-12, rtol=0)
    assert correct == (logits.argmax(1) == y).sum()
    for got, expected in zip(grads, want_grads, strict=True):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("workers", "back_only"), [(1, False), (3, False), (3, True)])
def test_wide_chunks_shared_among_threads_give_autograds_gradients(monkeypatch, workers, back_only):
    """The chunks of a wide step shared among worker threads (three here, over four chunks) give
    autograd's loss and gradients as one thread does, and torch's thread count is restored after."""
    _wide_chunks(monkeypatch, 12, 2, back_only)
    monkeypatch.setattr(wide, "WIDE_WORKERS", workers)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        head, opt = _pair(CircuitConfig(12, 3, "ring"))
        g = torch.Generator().manual_seed(2)
        x, y = torch.randn(7, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g)
        with torch.no_grad():
            loss, _, grads = ClosedFormStep(head, opt).loss_and_grads(x, y)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    want = torch.nn.functional.cross_entropy(head(x), y)
    params = [head.pre_net.weight, head.pre_net.bias, head.q_params, head.post_net.weight, head.post_net.bias]
    torch.testing.assert_close(loss, want, atol=1e-12, rtol=0)
    for got, expected in zip(grads, torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


SPLIT = [  # (n_qubits, depth, hadamard, batch, samples per chunk or part, SPLIT_MAX_RANK, layers, Gram, cut)
    (12, 6, True, 5, 2, 128, 6, False, 6),  # every layer, the state built per chunk (no units left)
    (13, 4, False, 3, None, 128, 4, True, 6),  # every layer, <Z> from the halves; halves of 6 and 7 wires
    (16, 5, True, 4, 3, 128, 5, True, 8),  # two parts of the batch, three samples and one
    (14, 8, True, 4, 1, 128, 6, False, 8),  # 2**6 products at most (the smaller half's), two unit layers
    (15, 5, True, 3, None, 8, 3, False, 8),  # three layers up to the rank limit, then the units
    (16, 3, False, 2, 1, 2, 1, False, 8),  # the first layer only
    (14, 6, True, 4, 3, 128, 6, True, 8),  # halves of 8 and 6 wires, where they take fewer flops
    (15, 5, False, 3, None, 128, 5, True, 8),  # halves of 8 and 7 wires
]


@pytest.mark.parametrize(
    ("n", "depth", "hadamard", "batch", "chunk", "max_rank", "layers", "gram", "cut"), SPLIT
)
def test_split_layers_equal_autograd(
    monkeypatch, n, depth, hadamard, batch, chunk, max_rank, layers, gram, cut
):
    """A chain's leading layers simulated as its two halves' states (`_split`), then <Z> from them or
    the full state built per chunk and the remaining layers as units: autograd's loss and gradients to
    1e-10."""
    _wide_chunks(monkeypatch, n, chunk)
    monkeypatch.setattr(wide, "SPLIT_MAX_RANK", max_rank)
    if chunk is not None:
        monkeypatch.setattr(split, "PART_SAMPLES", chunk)
    head, opt = _pair(CircuitConfig(n, depth, hadamard=hadamard))
    sp = wide.split_plan(head.engine.plan)
    assert sp.cut == cut
    assert (sp.layers, sp.rank) == (layers, min(max_rank, 2 ** min(cut, n - cut), 2**layers))
    assert (sp.layers == depth and sp.gram) == gram  # no units left, and fewer flops than the state
    _assert_step_equals_autograd(head, opt, batch, seed=5)


@pytest.mark.parametrize(
    ("n", "depth", "max_rank", "taken"), [(13, 4, 8, True), (20, 8, 128, True), (16, 8, 128, False)]
)
def test_the_last_crossing_folded_past_the_rank_cap(monkeypatch, n, depth, max_rank, taken):
    """Where <Z> comes from the products before the last crossing, the halves hold half the products, so
    every layer may go to them with twice SPLIT_MAX_RANK products, where their Gram matrices pay
    (`_split.whole_plan`): 13 qubits at depth 4 with the cap at 8 (16 products, 8 held), 20 qubits at
    depth 8 (256, 128 held), not 16 qubits at depth 8 (the state built after 7 layers takes fewer
    flops). Autograd's loss and gradients to 1e-10."""
    monkeypatch.setattr(wide, "SPLIT_MAX_RANK", max_rank)
    monkeypatch.setattr(split, "PART_SAMPLES", 2)
    head, opt = _pair(CircuitConfig(n, depth))
    sp = wide.split_plan(head.engine.plan)
    if taken:
        assert (sp.layers, sp.rank, sp.held, sp.folds, sp.gram) == (depth, 2 * max_rank, max_rank, True, True)
    else:
        assert (sp.layers, sp.rank, sp.held) == (depth - 1, max_rank, max_rank)
    _assert_step_equals_autograd(head, opt, batch=3, seed=8)


@pytest.mark.parametrize(
    ("n", "depth", "dropped", "crossing", "gram"),
    [
        (12, 3, {1}, (True, False, True), True),
        (13, 4, {0, 3}, (False, True, True, False), True),
        (12, 7, {2}, (True, True, False, True, True, True, True), False),
    ],
)
def test_split_layers_without_the_crossing_pair(monkeypatch, n, depth, dropped, crossing, gram):
    """A layer whose CNOTs leave out the pair across the cut keeps its sum of products as it is (no
    branches). No `CircuitConfig` makes one, so the gate list is edited here, and the engine's plan, which
    autograd's forward simulates too, compiled from it: loss and gradients still equal autograd's, on
    both routes (<Z> from the halves, and the state built)."""
    _wide_chunks(monkeypatch, n, 2)
    config = CircuitConfig(n, depth)
    head, opt = _pair(config)
    cut, layer, kept = 2 * (n // 4), -1, []
    for gate in gates(config):
        if gate.name == "CNOT" and gate.wires == (cut - 1, cut):
            layer += 1
            if layer in dropped:
                continue
        kept.append(gate)
    head.engine.plan = compile_plan(kept, n, config.weight_shape)
    sp = wide.split_plan(head.engine.plan)
    assert (sp.cut, sp.crossing, sp.gram) == (cut, crossing, gram)
    _assert_step_equals_autograd(head, opt, batch=5, seed=7)


@pytest.mark.parametrize(("n", "depth"), [(13, 4), (14, 8)])
def test_split_layers_in_float32(monkeypatch, n, depth):
    """The halves' layers in float32, as training runs them: <Z> from the Gram matrices (13 qubits) or
    the state built and two unit layers after them (14 qubits), against autograd in float64."""
    monkeypatch.setattr(split, "PART_SAMPLES", 3)
    head, opt = _pair(CircuitConfig(n, depth), torch.float32)
    reference = copy.deepcopy(head).double()
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(5, 6, generator=g), torch.randint(0, 3, (5,), generator=g)
    loss, _, grads = ClosedFormStep(head, opt).loss_and_grads(x, y)
    want = torch.nn.functional.cross_entropy(reference(x.double()), y)
    params = [reference.pre_net.weight, reference.pre_net.bias, reference.q_params]
    params += [reference.post_net.weight, reference.post_net.bias]
    torch.testing.assert_close(loss.double(), want, atol=1e-5, rtol=0)
    for got, expected in zip(grads, torch.autograd.grad(want, params), strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("n", "depth", "samples", "part_bytes", "sizes"),
    [
        (13, 4, 2, None, [2, 2, 1]),
        (14, 8, 2, None, [2, 2, 1]),
        (13, 4, 64, 3, [2, 2, 1]),  # a byte short of 3 samples' final states: at most 2 a part
        (13, 4, 4, None, [3, 2]),  # two parts of equal size, not 4 and 1
    ],
)
def test_halves_take_a_part_of_the_batch_at_a_time(monkeypatch, n, depth, samples, part_bytes, sizes):
    """The halves are simulated a part of the batch at a time on both paths (<Z> from them, or the state
    built from them), so their memory does not grow with the batch: as few parts as _split.PART_SAMPLES
    and PART_BYTES allow, of equal size (a batch of 5 here)."""
    monkeypatch.setattr(split, "PART_SAMPLES", samples)
    if part_bytes is not None:
        sp = wide.split_plan(_pair(CircuitConfig(n, depth))[0].engine.plan)
        per_sample = sp.rank * (2**sp.cut + 2 ** (n - sp.cut)) * 8
        monkeypatch.setattr(split, "PART_BYTES", per_sample * part_bytes - 1)
    seen = []
    halves = _halves.halves

    def recording(sp, t, a, b, q, **options):
        seen.append(a.shape[0])
        return halves(sp, t, a, b, q, **options)

    monkeypatch.setattr(_halves, "halves", recording)
    built = []
    matrices = _halves._matrices
    monkeypatch.setattr(_halves, "_matrices", lambda *a: built.append(1) or matrices(*a))
    head, opt = _pair(CircuitConfig(n, depth))
    ClosedFormStep(head, opt).loss_and_grads(
        torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    )
    assert seen == sizes
    assert len(built) == 1  # the halves' matrices once a step, not once a part (`shared_matrices`)


def test_loss_and_grads_under_grad_mode():
    """Called with autograd on, the step still computes plain tensors: no graph is built or kept."""
    for config in (CircuitConfig(14, 8), CircuitConfig(13, 4), CircuitConfig(12, 3, "ring")):
        head, opt = _pair(config)
        with torch.enable_grad():
            loss, _, grads = ClosedFormStep(head, opt).loss_and_grads(
                torch.randn(3, 6, dtype=torch.float64), torch.tensor([0, 1, 2])
            )
        assert not loss.requires_grad and not any(g.requires_grad for g in grads)


@pytest.mark.parametrize(("h", "m1", "m2"), [(1, 2, 3), (4, 3, 3), (8, 5, 4)])
def test_the_last_crossing_folded_into_the_expectations(h, m1, m2):
    """`crossed_expectations` of h products before the last layer's CNOT across the cut and its rotations
    of the two wires beside it equals `expectations` of the 2h products after both, built here as 2**m x
    2**m matrices: the projectors P_s on a's last wire and X on b's first, then RY on each: values and
    gradients (of both halves and both angles)."""
    g = torch.Generator().manual_seed(h)
    a = torch.randn(3, h, 2**m1, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, h, 2**m2, generator=g, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    signs = [sv.sign_table(m).double() for m in (m1, m2)]

    def folded():
        u_a, u_b = sv.rotation_matrices("RY", angles, torch.float64).unbind(0)
        c = a.view(3, h, 2 ** (m1 - 1), 2).permute(0, 3, 1, 2).contiguous()  # by wire cut - 1's value
        return split.crossed_expectations(c, b, u_a, u_b, *signs)

    def doubled():
        u_a, u_b = sv.rotation_matrices("RY", angles, torch.float64).unbind(0)
        ry_a = torch.kron(torch.eye(2 ** (m1 - 1), dtype=torch.float64), u_a)
        ry_b = torch.kron(u_b, torch.eye(2 ** (m2 - 1), dtype=torch.float64))
        on_a = [
            ry_a @ torch.kron(torch.eye(2 ** (m1 - 1), dtype=torch.float64), torch.diag(e))
            for e in torch.eye(2)
        ]
        on_b = [ry_b, ry_b @ torch.kron(x, torch.eye(2 ** (m2 - 1), dtype=torch.float64))]
        big_a = torch.cat([a @ p.T for p in on_a], 1)  # new products after the old, as `halves` has them
        big_b = torch.cat([b @ p.T for p in on_b], 1)
        return split.expectations(big_a, big_b, *signs)

    got, want = folded(), doubled()
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-13)
    weights = torch.randn(want.shape, generator=g, dtype=torch.float64)
    pairs = zip(
        torch.autograd.grad((got * weights).sum(), (a, b, angles)),
        torch.autograd.grad((want * weights).sum(), (a, b, angles)),
        strict=True,
    )
    for gg, gw in pairs:
        torch.testing.assert_close(gg, gw, atol=1e-11, rtol=1e-13)


@pytest.mark.parametrize(
    ("n", "crossed", "firsts"),
    [(16, False, None), (16, True, (4, 4)), (18, False, None), (19, True, None), (20, True, None)],
)
def test_the_halves_flops_are_the_products_they_run(n, crossed, firsts):
    """`HalvesRun.flops`, the roofline's count of the halves' work, equals the flops torch counts in their
    forward and backward (within 1%: building the matrices takes a few more), where the pair across a
    half's Kronecker factors' boundary is even on half a and odd on half b (16 qubits: 3 + 5 and 4 + 4
    wires), odd on both (16, split 4 + 4 on both), even on both (20), the halves unequal (18) and a
    half's factors unequal (19: 4 and 5 wires on half b); `flops_per_sample`, from the products' shapes
    alone, is the same count."""
    from torch.utils.flop_counter import FlopCounterMode

    plan = compile_plan(gates(CircuitConfig(n, 6)), n, CircuitConfig(n, 6).weight_shape)
    sp = wide.split_plan(plan)
    sp = sp if firsts is None else dataclasses.replace(sp, firsts=firsts)
    tables = _halves.halves_tables(sp, torch.device("cpu"), torch.float64)
    g = torch.Generator().manual_seed(n)
    a, b = (torch.randn(3, 2**m, generator=g, dtype=torch.float64) for m in (sp.cut, n - sp.cut))
    q = torch.randn(sp.layers, n, generator=g, dtype=torch.float64, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        out = _halves.halves(sp, tables, a.requires_grad_(), b.requires_grad_(), q, crossed=crossed)
        torch.autograd.backward(out, [torch.ones_like(x) for x in out])
    want = tables.runs[crossed].flops(3)
    assert want <= counter.get_total_flops() <= 1.01 * want
    assert 3 * _halves.flops_per_sample(sp, crossed) == want


@pytest.mark.parametrize(
    ("n", "cut"),
    [(14, 8), (15, 8), (16, 8), (17, 8), (18, 10), (19, 10), (20, 10), (21, 10), (22, 12), (23, 12)],
)
def test_whole_plans_cut_where_they_take_fewer_flops(n, cut):
    """Of the cuts at 2 (n // 4) and two wires past it, a plan the halves take whole (`_split.whole_plan`:
    depth 6 here) takes the one whose halves and Gram matrices need fewer flops (`whole_flops`: 18 qubits
    1.03 GFLOP a step of 32 cut at 10, against 1.69 at 8); the halves path and the product state's
    halves (`_units.compile_units`) meet there."""
    plan = compile_plan(gates(CircuitConfig(n, 6)), n, CircuitConfig(n, 6).weight_shape)
    sp = wide.split_plan(plan)
    assert sp.cut == native.halves_plan(plan).cut == cut
    assert wide.wide_units(plan, 4)[0].halves == (cut, n - cut)
    default = 2 * (n // 4)
    other = split._whole_at(plan, wide.SPLIT_MAX_RANK, default + 2 if cut == default else default)
    assert other is None or split.whole_flops(sp) < split.whole_flops(other)
    with pytest.raises(ValueError, match="even wire inside the circuit"):
        units.compile_units(plan, True, 6, cut + 1)


@pytest.mark.parametrize(
    ("n", "depth", "layers", "firsts"),
    [
        (14, 6, 6, (3, 3)),
        (16, 6, 6, (3, 4)),
        (18, 6, 6, (5, 4)),
        (20, 6, 6, (5, 5)),
        (22, 6, 6, (5, 5)),
        (22, 8, 8, (5, 5)),  # folded past the rank cap (`_split._whole_at`'s second plan)
        (16, 9, 7, None),
        (22, 9, 7, None),
    ],
)
def test_the_halves_factors_split_where_they_take_fewer_flops(n, depth, layers, firsts):
    """In a plan the halves take whole (depth 6 and 8), each half's two Kronecker factors split in the
    middle or a wire either side of it, where the halves' products, without the last crossing where it
    folds, take the fewest flops (`_split._factored`): in the middle at 18 and 20 qubits; no other of
    those splits takes fewer, the middle more where it is not taken. Where units follow (depth 9), in
    the middle (`firsts` None)."""
    config = CircuitConfig(n, depth)
    plan = compile_plan(gates(config), n, config.weight_shape)
    sp = wide.split_plan(plan, gram=depth < 9)
    assert sp.layers == layers
    assert sp.firsts == firsts
    if firsts is None:
        return
    crossed = not sp.folds
    middle = tuple(m // 2 for m in sp.widths)
    near = [
        (fa, fb)
        for fa in range(middle[0] - 1, middle[0] + 2)
        for fb in range(middle[1] - 1, middle[1] + 2)
        if 2 <= fa <= sp.cut - 2 and 2 <= fb <= n - sp.cut - 2
    ]
    counts = {f: _halves.flops_per_sample(dataclasses.replace(sp, firsts=f), crossed) for f in near}
    assert counts[firsts] == min(counts.values())
    assert firsts == middle or counts[middle] > counts[firsts]


@pytest.mark.parametrize(
    ("n", "cut", "layers"), [(14, 8, 6), (16, 8, 7), (18, 10, 7), (19, 10, 7), (20, 10, 7), (22, 12, 7)]
)
def test_leading_plans_take_the_most_layers_then_fewer_flops(n, cut, layers):
    """Where units follow the halves (depth 9 here), `_split.leading_plan` takes the cut whose halves take
    the most layers (16 qubits: 7 at wire 8, 6 at wire 10, whose smaller half holds 64 products), and of
    those the one whose halves take fewer flops; the units' product state is built there."""
    config = CircuitConfig(n, 9)
    plan = compile_plan(gates(config), n, config.weight_shape)
    sp = wide.split_plan(plan, gram=False)
    assert (sp.cut, sp.layers) == (cut, layers)
    assert wide.wide_units(plan, 4, gram=False)[0].halves == (cut, n - cut)
    for other in split._cuts(n):
        alt = split.leading_plan(plan, wide.SPLIT_MAX_RANK, other)
        if other != cut and alt is not None:
            costs = [_halves.flops_per_sample(p, True) for p in (alt, sp)]
            assert alt.layers < layers or (alt.layers == layers and costs[0] > costs[1])


def test_which_layers_the_halves_take(monkeypatch):
    """Chains only (a ring's pair crosses the cut too), from SPLIT_MIN_QUBITS wires, up to the rank limit;
    below BACK_ONLY_MIN_QUBITS only where no layer is left to the units; never with SPLIT_MAX_RANK 0."""

    def plan(n, depth, entangler="chain"):
        return DressedQuantumCircuit(4, 2, CircuitConfig(n, depth, entangler)).engine.plan

    assert wide.split_plan(plan(20, 6, "ring")) is None
    assert wide.split_plan(plan(wide.SPLIT_MIN_QUBITS - 1, 3)) is None
    assert wide.split_plan(plan(12, 6)).layers == 6
    assert wide.split_plan(plan(12, 7)) is None  # 2**7 products > 2**6 states: units would remain
    assert wide.split_plan(plan(20, 9)).layers == 7  # 128 products
    monkeypatch.setattr(wide, "SPLIT_MAX_RANK", 0)
    assert wide.split_plan(plan(20, 6)) is None
    with pytest.raises(ValueError, match="even wire"):
        split.plan_split(plan(20, 6), 9, 64)
    assert split.plan_split(plan(20, 0), 10, 64) is None  # no layer
    sp = split.plan_split(plan(20, 3), 10, 64)  # the pair (9, 10) crosses in every layer
    assert sp.crossing == (True, True, True) and sp.rank == 8


@pytest.mark.parametrize("n", [4, 8, 12])
def test_fused_steps_take_the_eager_trajectory(n):
    """Five fused steps leave the parameters and Adam's state of five eager steps, across a learning-rate
    change (a scheduler's) and an optimizer state loaded anew (a resumed run); eager steps continue it."""
    config = CircuitConfig(n, 3)
    eager_head, eager_opt = _pair(config)
    head, opt = _pair(config)
    step = step_for_run(train_step, head, opt, n_steps=5, batch_size=4)
    assert isinstance(step, ClosedFormStep)
    g = torch.Generator().manual_seed(3)
    for i in range(6):
        if i == 2:
            for o in (opt, eager_opt):
                o.param_groups[0]["lr"] = 0.01
        if i == 3:
            for o in (opt, eager_opt):
                o.load_state_dict(copy.deepcopy(o.state_dict()))
        x, y = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g)
        want = train_step(eager_head, eager_opt, x, y)
        got = (train_step if i == 5 else step)(head, opt, x, y)  # the last step eager on the fused state
        torch.testing.assert_close(got[0], want[0], atol=1e-10, rtol=0)
        assert got[1] == want[1]
    for p, q in zip(eager_head.parameters(), head.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-9, rtol=0)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[q][key], eager_opt.state[p][key], atol=1e-10, rtol=0)


def test_fused_float32_matches_eager():
    head, opt = _pair(CircuitConfig(4, 6), torch.float32)
    eager_head, eager_opt = _pair(CircuitConfig(4, 6), torch.float32)
    step = ClosedFormStep(head, opt)
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(2)), torch.arange(16) % 3
    for _ in range(3):
        got, want = step(head, opt, x, y), train_step(eager_head, eager_opt, x, y)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    for p, q in zip(eager_head.parameters(), head.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=0)


def test_what_the_closed_form_step_does_not_take():
    """Complex circuits, PennyLane engines, wide circuits, other optimizers, frozen parameters and the
    classical control keep the autograd step (or the compiled one, for long runs)."""
    assert not supports_closed_form(*_pair(CircuitConfig(4, 2, rotation="rot")))
    assert not supports_closed_form(*_pair(CircuitConfig(HALVES_MAX_QUBITS + 1, 2, rotation="rot")))
    assert not supports_closed_form(*_pair(CircuitConfig(HALVES_MAX_QUBITS + 2, 2, entangler="none")))
    torch.manual_seed(0)
    pl = DressedQuantumCircuit(6, 3, CircuitConfig(2, 1), engine="default.qubit")
    assert not supports_closed_form(pl, adam(pl.parameters(), 0.1))
    head, _ = _pair(CircuitConfig(4, 2))
    assert not supports_closed_form(head, torch.optim.SGD(head.parameters(), lr=0.1))
    assert not supports_closed_form(
        head, torch.optim.Adam(head.parameters(), lr=0.1, weight_decay=0.1, fused=True)
    )
    assert not supports_closed_form(
        head, torch.optim.Adam(head.parameters(), lr=0.1)
    )  # not fused: another state layout
    assert not supports_closed_form(head, adam([head.q_params], 0.1))  # the linear layers would not train
    classical = DressedClassical(6, 3)
    assert not supports_closed_form(classical, adam(classical.parameters(), 0.1))
    rot, rot_opt = _pair(CircuitConfig(4, 2, rotation="rot"))
    assert step_for_run(train_step, rot, rot_opt, COMPILE_MIN_STEPS - 1, 4) is train_step
    with pytest.raises(ValueError, match="closed-form step takes"):
        ClosedFormStep(head, torch.optim.SGD(head.parameters(), lr=0.1))


def test_compiled_fused_step_for_long_runs_of_tiny_steps():
    """A long run of a tiny head compiles the fused step for its batch size (the last, short batch runs
    it eagerly), on the same trajectory as the eager step; larger steps are never compiled."""
    config = CircuitConfig(2, 2)
    eager_head, eager_opt = _pair(config)
    head, opt = _pair(config)
    step = step_for_run(train_step, head, opt, n_steps=COMPILE_MIN_STEPS, batch_size=4)
    assert isinstance(step, ClosedFormStep) and step.compile_batch == 4
    g = torch.Generator().manual_seed(5)
    for batch in (4, 4, 3):
        x, y = (
            torch.randn(batch, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (batch,), generator=g),
        )
        want, got = train_step(eager_head, eager_opt, x, y), step(head, opt, x, y)
        torch.testing.assert_close(got[0], want[0], atol=1e-10, rtol=0)
    assert step.compile_seconds > 0
    for p, q in zip(eager_head.parameters(), head.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-9, rtol=0)
    wide, wide_opt = _pair(CircuitConfig(8, 2))
    assert step_for_run(train_step, wide, wide_opt, COMPILE_MIN_STEPS, 32).compile_batch is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("n", "entangler", "depth"),
    [(4, "chain", 4), (8, "chain", 4), (12, "ring", 4), (14, "ring", 4), (14, "chain", 4), (14, "chain", 8)],
)
def test_fused_step_on_cuda_matches_autograd(n, entangler, depth):
    """The fused step on CUDA (float64) takes the autograd step's trajectory: one block, two halves, and
    above 10 wires the units (alternating passes at 12, back passes only at 14) or, for a chain, the
    halves' layers (`_split`): <Z> from them at depth 4, the state built and two unit layers at 8."""
    config = CircuitConfig(n, depth, entangler)
    eager_head, eager_opt = _pair(config)
    head, opt = _pair(config)
    eager_head.cuda()
    head.cuda()
    eager_opt, opt = adam(eager_head.parameters(), 0.05), adam(head.parameters(), 0.05)
    step = ClosedFormStep(head, opt)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x, y = torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)
        x, y = x.cuda(), y.cuda()
        want, got = train_step(eager_head, eager_opt, x, y), step(head, opt, x, y)
        torch.testing.assert_close(got[0], want[0], atol=1e-10, rtol=0)
    for p, q in zip(eager_head.parameters(), head.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-9, rtol=0)


@pytest.mark.parametrize("n", range(11, 25))
def test_unit_groups_keep_every_cnot_foldable(n):
    """ "back" passes start their groups at even wires and "front" passes at odd ones (the first at 0), and
    every group but the last has an even (odd, for a "front" pass's first) number of wires: so each even
    pair lies inside a group of a "back" pass, each odd pair inside a group of a "front" pass."""
    for front in (False, True):
        parts = units.groups(n, front=front)
        assert parts[0][0] == 0 and sum(size for _, size in parts) == n
        assert all(s + z == t for (s, z), (t, _) in zip(parts, parts[1:], strict=False))
        assert all(start % 2 == int(front) for start, _ in parts[1:])
        assert all(size > 1 for _, size in parts)
    config = CircuitConfig(n, 3, "ring")
    plan = DressedQuantumCircuit(4, 2, config).engine.plan
    for uplan in (units.compile_units(plan), units.compile_units(plan, back_only=True)):
        assert [u.layer for u in uplan.units] == sorted(u.layer for u in uplan.units)
        assert sum(isinstance(s, units.Ring) for s in uplan.steps) == 3
    assert all(u.to_back for u in units.compile_units(plan, back_only=True).units)


def test_units_refuse_other_cnot_runs():
    """A run that is not even pairs, then odd pairs, then (n-1, 0) is not expressible as units."""
    assert units._run(((0, 1), (2, 3), (1, 2)), 4) == ({(0, 1), (2, 3)}, {(1, 2)}, False)
    assert units._run(((1, 2), (0, 1)), 4) is None  # an even pair after an odd one
    assert units._run(((0, 2),), 4) is None  # not neighbours
    assert units._run(((0, 1), (0, 1)), 4) is None  # twice
    assert units._run(((3, 0), (0, 1)), 4) is None  # the ring's pair before the others


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge pages are asked of Linux only")
def test_wide_step_keeps_its_large_buffers_on_huge_page_boundaries(monkeypatch):
    """The wide step's state buffers of 2 MiB or more start on huge-page boundaries (asked for
    transparent huge pages) and are the same buffers from step to step; smaller ones are plain."""
    _wide_chunks(monkeypatch, 14, 32, back_only=True)  # 32 samples x 2**14 x 4 bytes: 2 MiB per buffer
    torch.manual_seed(0)
    head = DressedQuantumCircuit(6, 2, CircuitConfig(14, 2, "ring"))  # a ring: units, not halves
    step = ClosedFormStep(head, adam(head.parameters(), 0.01))
    x, y = torch.randn(32, 6), torch.randint(0, 2, (32,))
    step(head, step.optimizer, x, y)
    first = {key: sorted(b.data_ptr() for b in kept) for key, kept in step._pool._free.items()}
    step(head, step.optimizer, x, y)
    assert {key: sorted(b.data_ptr() for b in kept) for key, kept in step._pool._free.items()} == first
    large = [b for kept in step._pool._free.values() for b in kept if b.nbytes >= HUGE_PAGE]
    assert len(large) == 3 and all(b.data_ptr() % HUGE_PAGE == 0 for b in large)
    small = huge_page_empty((1000,), torch.float32, torch.device("cpu"))
    big = huge_page_empty((3, HUGE_PAGE // 8), torch.float64, torch.device("cpu"))
    assert small.shape == (1000,) and big.shape == (3, HUGE_PAGE // 8) and big.dtype == torch.float64
    big.fill_(1.5)
    assert big.data_ptr() % HUGE_PAGE == 0 and float(big.sum()) == 1.5 * big.numel()
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if setting.exists() and "[never]" not in setting.read_text():  # the kernel gives them on request
        assert all(_thp_eligible(b.data_ptr()) for b in [*large, big])


def _thp_eligible(address: int) -> bool:
    """Whether the kernel may back the mapping that holds `address` with transparent huge pages (its
    THPeligible line in /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("THPeligible:"):
            return line.split()[1] == "1"
    return False
