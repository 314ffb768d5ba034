"""The README's library example runs as written (on a tiny dataset, one epoch), with one import."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import REPO, make_image_folder
from PIL import Image


def readme_block(heading: str) -> str:
    """The first ```python block of the README section `heading`."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_library_example_needs_one_import():
    code = readme_block("Library")
    imports = [line for line in code.splitlines() if re.match(r"\s*(import|from) ", line)]
    assert imports == ["import qtl"]


@pytest.mark.slow
def test_the_library_example_runs(tmp_path, monkeypatch, capsys):
    """Trains, saves, reloads and predicts as the README says: the paper's recipe cut to one epoch, on a
    tiny two-class dataset as the default data folder, with the bundled efficientnet_lite0 weights."""
    import qtl.config

    monkeypatch.setitem(qtl.config.RECIPES["quantum"], "epochs", 1)
    monkeypatch.setenv("QTL_DATA_DIR", str(make_image_folder(tmp_path / "data" / "tiny")))
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 48), (200, 40, 40)).save(tmp_path / "ant.jpg")

    scope: dict = {"__name__": "readme"}
    exec(compile(readme_block("Library"), "README.md", "exec"), scope)

    assert re.fullmatch(r"1 \{.*'val_acc': .*\}\n", capsys.readouterr().out)  # Log printed the one epoch
    assert (tmp_path / "models" / "my-quantum.pt").is_file()
    model, probs = scope["model"], scope["probs"]
    assert model.class_names == ["cats", "dogs"] and model.model_config.circuit.depth == 6
    assert probs.shape == (1, 2) and torch.allclose(probs.sum(1), torch.ones(1))
    # the checkpoint names its data relative to the data folder, not by this machine's path
    assert (model.meta["dataset"]["root"], model.meta["dataset"]["source"]) == ("tiny", "hymenoptera")
