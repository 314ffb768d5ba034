"""Images augmented on the fly: every training item's random crop and flip come from a seed the run's
generator draws for it each epoch, so neither the DataLoader's worker count nor the batch size changes
what a run learns, and loading items leaves the training process's own random streams alone."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import make_image_folder
from torch.utils.data import DataLoader

from qtl.config import CircuitConfig, MachineConfig, ModelConfig, TrainConfig
from qtl.data.feed import SeededItems, SeededOrder, training_feed
from qtl.models.variants import build_model
from qtl.training.fit import fit

TINY = "timm/test_efficientnet"  # random init: no download, 160-pixel crops
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """2 classes, 4 train and 2 val images each (64 x 48 pixels: many possible crops)."""
    return make_image_folder(tmp_path_factory.mktemp("augment") / "tiny", per_split=(4, 2), size=(64, 48))


def augmenting(variant: str) -> ModelConfig:
    return ModelConfig(variant, backbone=TINY, pretrained=False, circuit=CircuitConfig(2, 1))


def feed_of(folder, workers: int, *, batch_size: int = 4, shuffle: bool = False, seed: int = 0):
    """A finetuned model's training feed with augmentation, as fit() builds it."""
    mc = ModelConfig("finetuned", backbone=TINY, pretrained=False, class_names=("cats", "dogs"))
    tc = TrainConfig(batch_size=batch_size, augment=True, shuffle=shuffle, seed=seed)
    machine = MachineConfig(data_dir=str(folder), num_workers=workers)
    generator = torch.Generator().manual_seed(seed)
    return training_feed(build_model(mc), mc, tc, machine, CPU, generator, root=folder)


def passes(folder, workers: int, epochs: int = 2, **kw) -> list[torch.Tensor]:
    """The training images of each epoch, (N, 3, 160, 160) in the order they were served."""
    feed = feed_of(folder, workers, **kw)
    return [torch.cat([x for x, _ in feed.train]) for _ in range(epochs)]


@pytest.mark.parametrize("variant", ["finetuned", "quantum"])
def test_worker_count_does_not_change_what_a_run_learns(folder, variant):
    """2 epochs with augmentation on the fly (a trainable backbone; a frozen one with no cached views), in
    the training process and in 2 persistent workers: the same history and the same weights, exactly."""
    tc = TrainConfig(epochs=2, batch_size=4, augment=True, views=0, seed=3)
    runs = [fit(augmenting(variant), tc, MachineConfig(data_dir=str(folder), num_workers=w)) for w in (0, 2)]
    a, b = ([{k: v for k, v in row.items() if k != "time_s"} for row in r.history] for r in runs)
    assert a == b
    sa, sb = (r.model.state_dict() for r in runs)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_epochs_draw_new_crops_and_workers_the_same_ones(folder):
    """Every image is cropped anew each epoch (the seeds are drawn per epoch), and the training process
    and 2 workers serve the same crops in both epochs."""
    here, workers = passes(folder, 0), passes(folder, 2)
    for mine, theirs in zip(here, workers, strict=True):
        assert torch.equal(mine, theirs)
    first, second = here
    assert all(not torch.equal(first[i], second[i]) for i in range(len(first)))


def test_batch_size_does_not_change_an_items_crop(folder):
    """Shuffled, in batches of 1 (in the training process), 3 and 8 (in 2 workers): the same order and
    the same crop of every image in both epochs; an item's crop is its seed's, wherever it is loaded."""
    one = passes(folder, 0, batch_size=1, shuffle=True)
    for size in (3, 8):
        for a, b in zip(one, passes(folder, 2, batch_size=size, shuffle=True), strict=True):
            assert torch.equal(a, b)
    items = feed_of(folder, 0).train.loader.dataset
    assert isinstance(items, SeededItems)
    order = SeededOrder(len(items), torch.Generator().manual_seed(7))
    keys = list(order)
    assert sorted(i for i, _ in keys) == list(range(len(items)))  # each image once per epoch
    alone = [items[k][0] for k in keys]
    loader = DataLoader(items, batch_size=3, sampler=keys, num_workers=2)
    assert torch.equal(torch.stack(alone), torch.cat([x for x, _ in loader]))


def test_loading_items_leaves_the_global_random_streams_alone(folder):
    """A training and a val pass in the training process draw nothing from torch's global generator
    (dropout's) nor from Python's `random`."""
    feed = feed_of(folder, 0, shuffle=True)
    torch.manual_seed(11)
    random.seed(11)
    state, py_state = torch.get_rng_state(), random.getstate()
    for _ in feed.train:
        pass
    for _ in feed.val:
        pass
    assert torch.equal(torch.get_rng_state(), state)
    assert random.getstate() == py_state
