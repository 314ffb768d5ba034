"""CircuitConfig validation and the gate list it expands to."""

from __future__ import annotations

import pennylane as qml
import pytest
import torch

from qtl.quantum.circuit import ENTANGLERS, ROTATIONS, CircuitConfig, circuit_summary, gates
from qtl.quantum.engines.pennylane import build_qnode


def _blocks(config: CircuitConfig) -> list[list]:
    """The gates after the embedding, split into `depth` equal blocks."""
    body = gates(config)[config.n_qubits * (2 if config.hadamard else 1) :]
    size = len(body) // config.depth if config.depth else 0
    return [body[k * size : (k + 1) * size] for k in range(config.depth)]


class TestValidation:
    """Bad configs fail at construction with a message that names the field."""

    @pytest.mark.parametrize("n", [0, -1, 129])
    def test_n_qubits_out_of_range(self, n):
        """n_qubits outside 1..128 is a ValueError (statevector engines stop earlier, see test_engine_mps)."""
        with pytest.raises(ValueError, match="n_qubits"):
            CircuitConfig(n_qubits=n)

    @pytest.mark.parametrize("depth", [-1, 101])
    def test_depth_out_of_range(self, depth):
        """depth outside 0..100 is a ValueError."""
        with pytest.raises(ValueError, match="depth"):
            CircuitConfig(depth=depth)

    @pytest.mark.parametrize(
        "field,value", [("n_qubits", 2.0), ("n_qubits", True), ("depth", "3"), ("depth", False)]
    )
    def test_non_int_sizes(self, field, value):
        """Sizes must be real ints, not floats, strings or bools."""
        with pytest.raises(TypeError, match=field):
            CircuitConfig(**{field: value})

    @pytest.mark.parametrize("field,value", [("entangler", "star"), ("rotation", "rx")])
    def test_unknown_layer_choice(self, field, value):
        """An unknown entangler or rotation is a ValueError listing the options."""
        with pytest.raises(ValueError, match=field):
            CircuitConfig(**{field: value})

    def test_bounds_accepted(self):
        """The extreme legal values build."""
        assert CircuitConfig(n_qubits=1, depth=0).n_weights == 0
        assert CircuitConfig(n_qubits=24, depth=100).n_weights == 2400

    def test_from_dict_rejects_unknown_keys(self):
        """from_dict names unknown keys instead of silently dropping them."""
        with pytest.raises(ValueError, match="qubits"):
            CircuitConfig.from_dict({"qubits": 4})


class TestSerialisation:
    """to_dict / from_dict round trip."""

    @pytest.mark.parametrize("entangler", ENTANGLERS)
    @pytest.mark.parametrize("rotation", ROTATIONS)
    def test_round_trip(self, entangler, rotation):
        """from_dict(to_dict(c)) == c for every layer option."""
        c = CircuitConfig(n_qubits=5, depth=3, entangler=entangler, rotation=rotation, hadamard=False)
        d = c.to_dict()
        assert d["n_qubits"] == 5 and d["entangler"] == entangler and d["hadamard"] is False
        assert CircuitConfig.from_dict(d) == c

    def test_default_is_the_paper(self):
        """The default config is the paper's 4 qubits, depth 6, chain of CNOTs, RY layer, Hadamards, inputs
        embedded once."""
        assert CircuitConfig().to_dict() == {
            "n_qubits": 4,
            "depth": 6,
            "entangler": "chain",
            "rotation": "ry",
            "hadamard": True,
            "reupload": False,
        }


class TestCnotPairs:
    """The entangling block of each entangler, for small and odd/even widths."""

    @pytest.mark.parametrize("entangler", ENTANGLERS)
    def test_one_qubit_has_no_cnot(self, entangler):
        """A single wire has nothing to entangle."""
        c = CircuitConfig(n_qubits=1, depth=3, entangler=entangler)
        assert c.cnot_pairs() == []
        assert not any(g.name == "CNOT" for g in gates(c))

    @pytest.mark.parametrize(
        "n,entangler,expected",
        [
            (2, "chain", [(0, 1)]),
            (2, "ring", [(0, 1)]),
            (3, "chain", [(0, 1), (1, 2)]),
            (3, "ring", [(0, 1), (1, 2), (2, 0)]),
            (4, "chain", [(0, 1), (2, 3), (1, 2)]),
            (5, "chain", [(0, 1), (2, 3), (1, 2), (3, 4)]),
            (5, "ring", [(0, 1), (2, 3), (1, 2), (3, 4), (4, 0)]),
            (3, "none", []),
        ],
    )
    def test_pairs(self, n, entangler, expected):
        """Even pairs, then odd pairs, then (ring only, n > 2) the wrap-around CNOT(n-1, 0)."""
        assert CircuitConfig(n_qubits=n, entangler=entangler).cnot_pairs() == expected

    @pytest.mark.parametrize("n", range(2, 10))
    def test_chain_touches_every_neighbour_once(self, n):
        """A chain block holds each neighbour pair (i, i+1) exactly once."""
        pairs = CircuitConfig(n_qubits=n).cnot_pairs()
        assert sorted(pairs) == [(i, i + 1) for i in range(n - 1)]


class TestGates:
    """Structure of the expanded gate list."""

    @pytest.mark.parametrize("n", [1, 2, 3, 6])
    def test_embedding(self, n):
        """Hadamard on every wire, then RY(input i) on wire i."""
        g = gates(CircuitConfig(n_qubits=n, depth=2))
        assert [(x.name, x.wires) for x in g[:n]] == [("Hadamard", (i,)) for i in range(n)]
        assert [(x.name, x.wires, x.param) for x in g[n : 2 * n]] == [
            ("RY", (i,), ("input", i)) for i in range(n)
        ]

    def test_no_hadamard(self):
        """hadamard=False drops the Hadamards and nothing else."""
        with_h = gates(CircuitConfig(n_qubits=3, depth=2))
        without = gates(CircuitConfig(n_qubits=3, depth=2, hadamard=False))
        assert not any(g.name == "Hadamard" for g in without)
        assert without == with_h[3:]

    @pytest.mark.parametrize("n", [1, 2, 3, 4])
    def test_depth_zero_is_embedding_only(self, n):
        """depth 0: embedding only, and an empty weight tensor."""
        c = CircuitConfig(n_qubits=n, depth=0)
        assert len(gates(c)) == 2 * n
        assert c.weight_shape == (0, n) and c.n_weights == 0

    @pytest.mark.parametrize("entangler", ENTANGLERS)
    @pytest.mark.parametrize("n", [1, 2, 3, 5])
    def test_ry_blocks(self, entangler, n):
        """Each block: the entangler's CNOTs, then RY(theta[k, i]) on every wire i."""
        c = CircuitConfig(n_qubits=n, depth=3, entangler=entangler)
        for k, block in enumerate(_blocks(c)):
            pairs = c.cnot_pairs()
            assert [(g.name, g.wires) for g in block[: len(pairs)]] == [("CNOT", p) for p in pairs]
            assert [(g.name, g.wires, g.param) for g in block[len(pairs) :]] == [
                ("RY", (i,), ("weight", (k, i))) for i in range(n)
            ]

    @pytest.mark.parametrize("n", [1, 3])
    def test_rot_blocks(self, n):
        """rot: RZ(phi) RY(theta) RZ(omega) on each wire, reading weights[k, i, 0..2] (qml.Rot's order)."""
        c = CircuitConfig(n_qubits=n, depth=2, entangler="chain", rotation="rot")
        assert c.weight_shape == (2, n, 3)
        for k, block in enumerate(_blocks(c)):
            rot = [g for g in block if g.name != "CNOT"]
            assert [(g.name, g.wires, g.param) for g in rot] == [
                (name, (i,), ("weight", (k, i, j)))
                for i in range(n)
                for j, name in enumerate(("RZ", "RY", "RZ"))
            ]

    @pytest.mark.parametrize("rotation", ROTATIONS)
    @pytest.mark.parametrize("n,depth", [(1, 1), (3, 4), (4, 6)])
    def test_every_weight_used_once(self, rotation, n, depth):
        """Weight gates cover every index of weight_shape exactly once."""
        c = CircuitConfig(n_qubits=n, depth=depth, rotation=rotation)
        used = [g.param[1] for g in gates(c) if g.param and g.param[0] == "weight"]
        all_indices = [tuple(int(v) for v in idx) for idx in torch.ones(c.weight_shape).nonzero()]
        assert sorted(used) == sorted(all_indices)
        assert len(used) == c.n_weights

    def test_is_real(self):
        """RY circuits are real; rot brings RZ and complex amplitudes."""
        assert CircuitConfig(rotation="ry", entangler="ring").is_real
        assert not CircuitConfig(rotation="rot").is_real
        assert CircuitConfig(rotation="rot", depth=0).is_real


class TestSummary:
    """circuit_summary agrees with PennyLane's own resource count of the QNode."""

    @pytest.mark.parametrize(
        "config",
        [
            CircuitConfig(),
            CircuitConfig(n_qubits=1, depth=0),
            CircuitConfig(n_qubits=5, depth=3, entangler="ring", rotation="rot"),
            CircuitConfig(n_qubits=3, depth=2, entangler="none", hadamard=False),
        ],
        ids=str,
    )
    def test_matches_qml_specs(self, config):
        """Gate counts, total and depth equal qml.specs of the replayed QNode."""
        qnode, _ = build_qnode(config, qml.device("default.qubit", wires=config.n_qubits))
        x = torch.zeros(config.n_qubits, dtype=torch.float64)
        w = torch.zeros(config.weight_shape, dtype=torch.float64)
        resources = qml.specs(qnode)(x, w)["resources"]
        s = circuit_summary(config)
        assert s["gate_counts"] == dict(resources.gate_types)
        assert s["n_gates"] == resources.num_gates
        assert s["circuit_depth"] == resources.depth
        assert s["n_weights"] == config.n_weights
