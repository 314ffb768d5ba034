"""qtl.models.store: a folder of checkpoints; uploads are validated, names made safe, deletes guarded."""

from __future__ import annotations

import pytest

from qtl.models.checkpoint import CheckpointError
from qtl.models.store import delete_checkpoint, import_checkpoint, safe_name


class TestStore:
    def test_safe_name(self):
        assert safe_name("../../etc/a b.pt") == "a_b.pt"
        assert safe_name(".hidden") == "hidden.pt"
        assert safe_name("///") == "checkpoint.pt"

    def test_garbage_is_rejected_and_nothing_is_left(self, tmp_path):
        with pytest.raises(CheckpointError, match="x.pt"):
            import_checkpoint(b"definitely not a checkpoint", "x.pt", tmp_path)
        assert list(tmp_path.iterdir()) == []

    def test_delete_only_inside_allowed_folders(self, tmp_path):
        inside, outside = tmp_path / "mine", tmp_path / "shipped"
        inside.mkdir(), outside.mkdir()
        (inside / "a.pt").write_bytes(b"x")
        (outside / "b.pt").write_bytes(b"x")
        with pytest.raises(PermissionError):
            delete_checkpoint(outside / "b.pt", [inside])
        delete_checkpoint(inside / "a.pt", [inside])
        assert not (inside / "a.pt").exists() and (outside / "b.pt").exists()


def test_scan_names_every_file_that_is_not_a_checkpoint(tmp_path):
    """scan_checkpoints lists the valid checkpoints and, apart, each other *.pt file with why."""
    from qtl.config import ModelConfig
    from qtl.models.checkpoint import save_checkpoint
    from qtl.models.store import list_checkpoints, scan_checkpoints
    from qtl.models.variants import build_model

    mc = ModelConfig("linear", pretrained=False, class_names=("a", "b"))
    good = save_checkpoint(tmp_path / "good.pt", build_model(mc), mc)
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 half a zip")
    (tmp_path / "notes.txt").write_text("not a checkpoint name")
    infos, bad = scan_checkpoints(tmp_path)
    assert [i.path for i in infos] == [good] == [i.path for i in list_checkpoints(tmp_path)]
    assert [(p.name, "not a readable qtl checkpoint" in why) for p, why in bad] == [("broken.pt", True)]
