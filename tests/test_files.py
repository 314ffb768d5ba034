"""qtl.files.atomic_write: all or nothing."""

import stat

import pytest

from qtl.files import FILE_MODE, atomic_write


class TestAtomicWrite:
    def test_replaces_the_file_when_the_block_succeeds(self, tmp_path):
        """The new bytes land at the path, with normal file permissions, and no temporary file is left."""
        path = tmp_path / "sub" / "a.bin"
        with atomic_write(path) as f:
            f.write(b"new")
            assert not path.exists()  # invisible until the block ends
        assert path.read_bytes() == b"new"
        assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE
        assert [p.name for p in path.parent.iterdir()] == ["a.bin"]

    def test_keeps_the_old_file_when_the_block_fails(self, tmp_path):
        """An exception inside the block leaves the old contents and removes the temporary file."""
        path = tmp_path / "a.bin"
        path.write_bytes(b"old")
        with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as f:
            f.write(b"half")
            raise RuntimeError("boom")
        assert path.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]

    def test_the_temporary_file_can_be_read_by_path_inside_the_block(self, tmp_path):
        """f.name is the temporary file's path (uploads are validated there before the rename)."""
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"abc")
            f.flush()
            assert open(f.name, "rb").read() == b"abc"
