"""Metrics against brute-force definitions and hand-worked examples."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from qtl.training.metrics import (
    accuracy,
    binary_auc,
    compute_metrics,
    confusion_matrix,
    precision_recall_f1,
    roc_auc,
)


def pairwise_auc(positive, scores):
    """AUC by its definition: P(score of a positive > score of a negative), ties counting 1/2."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def random_probs(rng, n, c):
    p = rng.random((n, c)).round(1) + 1e-3  # rounding makes ties
    return p / p.sum(1, keepdims=True)


class TestCounts:
    def test_accuracy(self):
        """Share of equal entries; works with lists and tensors."""
        assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
        assert accuracy(torch.tensor([2, 2]), torch.tensor([2, 2])) == 1.0

    def test_accuracy_length_mismatch(self):
        """Different lengths are an error, not a silent broadcast."""
        with pytest.raises(ValueError, match="differ in length"):
            accuracy([0, 1], [0])

    def test_confusion_matrix_counts_every_pair(self):
        """Entry [i, j] counts true i predicted j, checked against a loop."""
        rng = np.random.default_rng(0)
        y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        expected = np.zeros((4, 4), dtype=int)
        for a, b in zip(y, p, strict=True):
            expected[a, b] += 1
        np.testing.assert_array_equal(confusion_matrix(y, p, 4), expected)

    def test_confusion_matrix_rejects_out_of_range(self):
        """A label outside [0, C) is an error."""
        with pytest.raises(ValueError, match=r"\[0, 2\)"):
            confusion_matrix([0, 2], [0, 1], 2)

    def test_precision_recall_f1_hand_example(self):
        """labels 0,0,1,1,2 vs preds 0,1,1,1,0: worked out by hand."""
        r = precision_recall_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
        np.testing.assert_allclose(r["precision"], [0.5, 2 / 3, 0.0])
        np.testing.assert_allclose(r["recall"], [0.5, 1.0, 0.0])
        np.testing.assert_allclose(r["f1"], [0.5, 0.8, 0.0])
        np.testing.assert_array_equal(r["support"], [2, 2, 1])


class TestRocAuc:
    @pytest.mark.parametrize("seed", range(5))
    def test_binary_matches_pairwise_definition(self, seed):
        """Rank-based AUC equals the pairwise count, ties included."""
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, 40)
        probs = random_probs(rng, 40, 2)
        assert roc_auc(y, probs) == pytest.approx(pairwise_auc(y == 1, probs[:, 1]))

    @pytest.mark.parametrize("seed", range(3))
    def test_multiclass_is_macro_one_vs_rest(self, seed):
        """C > 2: the mean over classes of each class's one-vs-rest AUC."""
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 4, 60)
        probs = random_probs(rng, 60, 4)
        expected = np.mean([pairwise_auc(y == c, probs[:, c]) for c in range(4)])
        assert roc_auc(y, probs) == pytest.approx(expected)

    def test_perfect_and_reversed(self):
        """Perfect ranking gives 1, reversed ranking 0."""
        assert binary_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
        assert binary_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0

    def test_undefined_when_a_class_is_absent(self):
        """Only one class among the labels: AUC is NaN, and None in compute_metrics."""
        probs = np.array([[0.7, 0.3], [0.4, 0.6]])
        assert math.isnan(roc_auc([1, 1], probs))
        assert compute_metrics([1, 1], probs)["roc_auc"] is None

    def test_multiclass_skips_absent_classes(self):
        """A class with no samples is left out of the macro mean."""
        y = np.array([0, 0, 1, 1])
        probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4]])
        expected = np.mean([pairwise_auc(y == c, probs[:, c]) for c in (0, 1)])
        assert roc_auc(y, probs) == pytest.approx(expected)


class TestComputeMetrics:
    def test_bundle_is_json_and_consistent(self):
        """Everything is plain JSON; accuracy, loss and per-class values match their definitions."""
        y = torch.tensor([0, 1, 1, 0, 1])
        probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
        m = compute_metrics(y, probs, ["ants", "bees"])
        json.dumps(m)
        assert m["n"] == 5
        assert m["accuracy"] == pytest.approx(3 / 5)
        expected_loss = -np.mean(np.log([0.9, 0.8, 0.4, 0.3, 0.9]))
        assert m["loss"] == pytest.approx(expected_loss)
        assert m["confusion_matrix"] == [[1, 1], [1, 2]]
        assert m["per_class"]["bees"] == pytest.approx(
            {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
        )
        assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)

    def test_class_names_must_match_columns(self):
        """Three names for two probability columns is an error."""
        with pytest.raises(ValueError, match="3 class names for 2"):
            compute_metrics([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"])

    def test_probs_must_be_two_dimensional(self):
        """A flat vector of scores is rejected with the expected shape."""
        with pytest.raises(ValueError, match=r"\(N, C\)"):
            compute_metrics([0, 1], [0.2, 0.8])
