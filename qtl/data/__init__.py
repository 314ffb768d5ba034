"""Data: where images come from and how they reach a model.

folders     the one rule for image class folders (which files are images, which layouts are datasets)
sources     the built-in hymenoptera set (found on disk or downloaded once, checked), digits, torchvision
            datasets by name
archive     safe zip extraction (hostile archives refused whole)
datasets    `open_dataset`: hymenoptera, a folder, a zip or a named dataset becomes a train/val(/test) root
protocol    `partition`: which images a run trains, selects and tests on (own splits or k folds, regimes)
images      `load_image` and `ImageFolderDataset` (decode once, skip bad files)
features    frozen-backbone features, extracted once and cached on disk
feed        the batches `fit()` and evaluation read: cached features or images
"""
