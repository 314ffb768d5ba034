"""The honest protocol: which images a run trains on, selects its epoch on, and is tested on.

    parts = partition(labels, origin, DataRegime(split="kfold", per_class=5), seed=3)
    parts.train, parts.val, parts.test        index arrays into the pool (test may be empty)
    parts.train_labels                        the training labels, after any label noise

`labels` (N,) are the class indices of every image of the dataset pooled over its splits, `origin` (N,)
the split each came from ("train", "val", "test"). A run selects its best epoch on val and reports
test, which it never looks at before that epoch is chosen.

Splits (`DataRegime.split`):

    given   the dataset's own train/ and val/, and test/ where it has one (else no test accuracy)
    kfold   every image pooled; stratified folds (scikit-learn's StratifiedKFold, shuffled by
            seed // folds); fold seed % folds is test, fold (seed + 1) % folds val, the rest train.
            Seeds 0 .. folds-1 test every image exactly once; the next seeds repeat with new folds.

The regime then narrows the data, in this order, all drawn from the seed (so every variant with the
same seed sees the same images and the same noisy labels):

    classes k       only images of the first k classes, in every part
    per_class m     few-shot: m training images per class (all of a class that has fewer)
    label_noise p   round(p * n_train) training labels, chosen at random, each replaced by another class

Val and test are never subsampled or corrupted: selection and testing see clean, whole splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qtl.config import DataRegime


@dataclass(frozen=True)
class Partition:
    """Indices into the pooled images (sorted), and the training labels the model is given."""

    train: np.ndarray  # (n_train,) int
    val: np.ndarray  # (n_val,) int
    test: np.ndarray  # (n_test,) int, empty when the split has no test part
    train_labels: np.ndarray  # (n_train,) int: labels[train] after label noise
    clean_labels: np.ndarray  # (n_train,) int: labels[train]
    n_classes: int  # classes kept (the first n_classes)

    @property
    def flipped(self) -> int:
        """How many training labels the noise changed."""
        return int(np.count_nonzero(self.train_labels != self.clean_labels))


def partition(labels, origin, regime: DataRegime, seed: int, *, class_names=None) -> Partition:
    """The parts of the pooled images a run with `seed` uses (see the module docstring).

    labels: (N,) class indices; origin: (N,) "train" | "val" | "test" per image.
    Raises ValueError where the regime cannot be met: more classes than the dataset has, a class with
    too few images for the folds or for the few-shot draw (named from `class_names` where given).
    """
    labels, origin = np.asarray(labels, dtype=np.int64), np.asarray(origin)
    n_classes = int(labels.max()) + 1 if regime.classes is None else regime.classes
    if n_classes > int(labels.max()) + 1:
        raise ValueError(f"the regime keeps {n_classes} classes, but the dataset has {int(labels.max()) + 1}")
    kept = np.flatnonzero(labels < n_classes)
    if regime.split == "given":
        train, val, test = (kept[origin[kept] == s] for s in ("train", "val", "test"))
    else:
        train, val, test = _folds(kept, labels[kept], regime.folds, seed, class_names)
    rng = np.random.default_rng([seed, 1])  # the few-shot draw; [seed, 2] draws the noise
    if regime.per_class is not None:
        _check_per_class(labels[train], regime.per_class, n_classes, class_names)
        train = np.sort(
            np.concatenate(
                [
                    rng.permutation(members)[: regime.per_class]
                    for members in (train[labels[train] == c] for c in range(n_classes))
                ]
            )
        )
    clean = labels[train]
    return Partition(train, val, test, _noisy(clean, regime.label_noise, n_classes, seed), clean, n_classes)


def _check_per_class(train_labels: np.ndarray, per_class: int, n_classes: int, names=None) -> None:
    """ValueError where a class has fewer training images than the few-shot draw takes: the run would
    train on fewer than `per_class` and still be labelled with it."""
    name, count = _fewest(np.bincount(train_labels, minlength=n_classes), names)
    if count < per_class:
        raise ValueError(
            f"per_class = {per_class} needs {per_class} training images of every class, but class {name} "
            f"has {count} in this run's training part: choose per_class <= {count}"
        )


def _fewest(counts: np.ndarray, names=None) -> tuple:
    """The class with the fewest images, as a message names it (its name quoted where `names` are given,
    else its index), and its count."""
    short = int(np.argmin(counts))
    return (repr(names[short]) if names is not None else short), int(counts[short])


def _folds(kept: np.ndarray, labels: np.ndarray, folds: int, seed: int, names=None):
    """(train, val, test) indices of `kept` for fold seed % folds of a stratified K-fold split; ValueError
    naming the class (from `names` where given) that has fewer images than folds."""
    from sklearn.model_selection import StratifiedKFold

    name, count = _fewest(np.bincount(labels), names)
    if count < folds:
        raise ValueError(
            f"{folds}-fold splits need at least {folds} images of every class, but class {name} has {count}"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed // folds)
    parts = [kept[test] for _, test in splitter.split(np.zeros(len(labels)), labels)]
    test, val = parts[seed % folds], parts[(seed + 1) % folds]
    train = np.concatenate([p for i, p in enumerate(parts) if i not in (seed % folds, (seed + 1) % folds)])
    return np.sort(train), np.sort(val), np.sort(test)


def _noisy(labels: np.ndarray, share: float, n_classes: int, seed: int) -> np.ndarray:
    """`labels` with round(share * n) of them, chosen with the seed, moved to another class at random."""
    out = labels.copy()
    count = round(share * len(labels))
    if not count:
        return out
    rng = np.random.default_rng([seed, 2])
    chosen = rng.choice(len(labels), size=count, replace=False)
    shift = rng.integers(1, n_classes, size=count)  # never 0: the new class differs from the old one
    out[chosen] = (labels[chosen] + shift) % n_classes
    return out
