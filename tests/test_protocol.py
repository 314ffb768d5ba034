"""The honest protocol (qtl.data.protocol, qtl.data.feed): which images train, select and test a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_image_folder, run_cli

from qtl.config import DataRegime
from qtl.data.features import FeatureSet
from qtl.data.feed import check_regime, labels_listed, regime_features
from qtl.data.protocol import partition

LABELS = np.repeat(np.arange(3), [40, 30, 25])  # 95 images of 3 unequal classes
ORIGIN = np.array(["train"] * 60 + ["val"] * 20 + ["test"] * 15)


class TestPartition:
    def test_kfold_tests_every_image_once_per_round_and_never_trains_on_it(self):
        """Seeds 0-4 test each image exactly once; in every seed train, val and test are disjoint and
        cover the pool; each test fold keeps the class proportions (stratified)."""
        tested = []
        for seed in range(5):
            p = partition(LABELS, ORIGIN, DataRegime(split="kfold"), seed)
            parts = [set(p.train), set(p.val), set(p.test)]
            assert sum(map(len, parts)) == 95 and set.union(*parts) == set(range(95))
            assert np.bincount(LABELS[p.test]).tolist() == [8, 6, 5]
            tested += list(p.test)
        assert sorted(tested) == list(range(95))
        again = partition(LABELS, ORIGIN, DataRegime(split="kfold"), 7)  # the next round: new folds
        assert set(again.test) != set(partition(LABELS, ORIGIN, DataRegime(split="kfold"), 2).test)

    def test_given_split_keeps_the_dataset_splits(self):
        p = partition(LABELS, ORIGIN, DataRegime(), seed=3)
        assert (ORIGIN[p.train] == "train").all() and len(p.train) == 60
        assert (ORIGIN[p.test] == "test").all() and len(p.val) == 20

    def test_few_shot_noise_and_classes_touch_only_training_data(self):
        """per_class draws that many training images per class; label noise moves exactly round(p n) of
        their labels to another class; classes keeps the first k everywhere; val and test stay whole."""
        regime = DataRegime(split="kfold", per_class=5, label_noise=0.4, classes=2)
        p = partition(LABELS, ORIGIN, regime, seed=1)
        assert np.bincount(p.clean_labels).tolist() == [5, 5] and (p.clean_labels == LABELS[p.train]).all()
        assert p.flipped == 4 and set(p.train_labels) <= {0, 1}
        whole = partition(LABELS, ORIGIN, DataRegime(split="kfold", classes=2), seed=1)
        assert (p.val == whole.val).all() and (p.test == whole.test).all() and LABELS[p.test].max() == 1
        assert set(p.train) <= set(whole.train)
        same = partition(LABELS, ORIGIN, regime, seed=1)  # every variant with this seed sees the same
        assert (same.train == p.train).all() and (same.train_labels == p.train_labels).all()

    def test_folds_need_enough_images_per_class(self):
        """Refused naming the short class, from `class_names` where given (as per_class's refusal does)."""
        labels, origin = np.array([1, 1, 1, 1, 1, 0, 0, 0]), np.array(["train"] * 8)
        with pytest.raises(ValueError, match="at least 5 images of every class, but class 'b' has 3$"):
            partition(np.array([0] * 5 + [1] * 3), origin, DataRegime("kfold"), 0, class_names=["a", "b"])
        with pytest.raises(ValueError, match="at least 5 images of every class, but class 0 has 3$"):
            partition(labels, origin, DataRegime("kfold"), 0)

    def test_few_shot_needs_that_many_training_images_of_every_class(self):
        """A draw of more images than a class has in the training part would train on fewer and be
        labelled with the larger number: refused, naming the class. At the limit it takes them all."""
        given = DataRegime(per_class=26)  # the given split's train part: 40, 20 and 0 images of classes 0-2
        with pytest.raises(ValueError, match="per_class = 26 needs 26 .* class 'c' has 0 .* per_class <= 0"):
            partition(LABELS, ORIGIN, given, 0, class_names=["a", "b", "c"])
        fold = partition(LABELS, ORIGIN, DataRegime("kfold"), 0)  # 15 images of class 2 train in fold 0
        assert np.bincount(LABELS[fold.train]).tolist() == [24, 18, 15]
        assert len(partition(LABELS, ORIGIN, DataRegime("kfold", per_class=15), 0).train) == 45
        with pytest.raises(ValueError, match="class 2 has 15 in this run's training part"):
            partition(LABELS, ORIGIN, DataRegime("kfold", per_class=16), 0)


class TestEarlyChecks:
    """A regime the dataset cannot serve is refused from the file listing, before features are extracted."""

    def test_check_regime_reads_the_listing(self, tmp_path):
        root = make_image_folder(tmp_path / "d", per_split=(6, 4))  # 2 classes, 6 train and 4 val each
        check_regime(root, DataRegime(per_class=6), 0)
        check_regime(root, DataRegime("kfold", folds=10), 0)
        with pytest.raises(ValueError, match="keeps 3 classes, but the dataset has 2"):
            check_regime(root, DataRegime(classes=3), 0)
        with pytest.raises(ValueError, match="class 'cats' has 6"):
            check_regime(root, DataRegime(per_class=7), 0)
        with pytest.raises(ValueError, match="11-fold splits need at least 11 images .* class 'cats' has 10"):
            check_regime(root, DataRegime("kfold", folds=11), 0)

    def test_train_refuses_before_extracting(self, tmp_path, capsys, monkeypatch):
        import qtl.data.feed

        def extract(*a, **k):
            raise AssertionError("features were extracted before the regime was checked")

        monkeypatch.setattr(qtl.data.feed, "extract_features", extract)
        root = make_image_folder(tmp_path / "d")
        argv = ["-q", "train", "linear", "--data", root, "--random-init", "--models-dir", tmp_path / "m"]
        code, _, err = run_cli(capsys, *argv, "--classes", "3")
        assert code == 1 and err.strip() == "qtl: error: the regime keeps 3 classes, but the dataset has 2"
        code, _, err = run_cli(capsys, *argv, "--per-class", "9")
        assert code == 1 and err.count("\n") == 1 and "per_class = 9 needs 9 training images" in err
        assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())

    def test_sweep_dry_run_names_the_runs_that_would_fail(self, tmp_path, capsys, monkeypatch):
        """Each run that would fail is named with its reason; the dataset is listed once for them all."""
        import qtl.experiments.sweeps as sweeps

        listed = []
        monkeypatch.setattr(sweeps, "labels_listed", lambda root: listed.append(root) or labels_listed(root))
        root = make_image_folder(tmp_path / "tiny")
        spec = tmp_path / "spec.toml"
        spec.write_text(
            f'name = "few"\ndataset = "{root.as_posix()}"\nbackbone = "resnet18"\npretrained = false\n'
            'variant = "linear"\nepochs = 1\nper_class = [2, 7]\n'
        )
        code, out, _ = run_cli(capsys, "sweep", spec, "--db", tmp_path / "r.db", "--dry-run")
        lines = out.splitlines()
        assert code == 0 and "2 runs, 0 done, 2 to run" in lines[0]
        assert lines[1].endswith("linear on tiny seed 0 (given, 2 per class)")
        assert lines[2].endswith("linear on tiny seed 0 (given, 7 per class)")
        assert lines[3].strip() == (
            "would fail: per_class = 7 needs 7 training images of every class, but class 'cats' has 6 in "
            "this run's training part: choose per_class <= 6"
        )
        assert len(lines) == 4 and not (tmp_path / "r.db").exists()
        assert len(listed) == 1


def feature_set(n: int, start: int, views: int = 0) -> FeatureSet:
    labels = torch.tensor(LABELS[start : start + n])
    x = torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, 4)  # feature = image index
    x = x.expand(views, n, 4).clone() if views else x
    return FeatureSet(x, labels, [f"img{start + i}" for i in range(n)], ["a", "b", "c"])


class TestRegimeFeatures:
    def test_parts_are_the_partitioned_images_with_their_labels(self):
        """The selected FeatureSets hold exactly the partition's images (by their features and paths),
        with the noisy training labels and the clean val/test labels."""
        sets = {"train": feature_set(60, 0), "val": feature_set(20, 60), "test": feature_set(15, 80)}
        regime = DataRegime(split="kfold", label_noise=0.5)
        out = regime_features(sets, regime, seed=2)
        p = partition(LABELS, ORIGIN, regime, seed=2)
        for name, idx in (("train", p.train), ("val", p.val), ("test", p.test)):
            assert out[name].features[:, 0].long().tolist() == idx.tolist()
            assert out[name].paths == [f"img{i}" for i in idx]
        assert out["train"].labels.tolist() == p.train_labels.tolist() != LABELS[p.train].tolist()
        assert out["test"].labels.tolist() == LABELS[p.test].tolist()
        assert regime_features(sets, DataRegime(), seed=2) is sets  # the default: the dataset as it is

    def test_augmented_views_train_and_single_features_select_and_test(self):
        """Folds over augmented data: the training part takes its images' views from every split, val and
        test the plain features; views of the train split alone cannot serve folds."""
        plain = {"train": feature_set(60, 0), "val": feature_set(20, 60), "test": feature_set(15, 80)}
        views = {
            "train": feature_set(60, 0, views=3),
            "val": feature_set(20, 60, 3),
            "test": feature_set(15, 80, 3),
        }
        out = regime_features(plain, DataRegime(split="kfold"), seed=4, train_from=views)
        p = partition(LABELS, ORIGIN, DataRegime(split="kfold"), seed=4)
        assert out["train"].features.shape == (3, len(p.train), 4) and out["test"].features.dim() == 2
        assert out["train"].features[2, :, 0].long().tolist() == p.train.tolist()
        only_train = {"train": feature_set(60, 0, views=3), "val": feature_set(20, 60)}
        few = regime_features(only_train, DataRegime(classes=2, per_class=2), seed=0)  # class c: val only
        assert few["train"].features.shape == (3, 4, 4)  # every view of 2 images of each class in train
        with pytest.raises(ValueError, match="augment = false"):
            regime_features(only_train, DataRegime(split="kfold"), seed=0)
