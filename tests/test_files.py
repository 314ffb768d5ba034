"""qtl.utils.atomic.atomic_write: all or nothing."""

import errno
import os
import stat
import subprocess
import sys

import pytest

from qtl.utils import atomic as files
from qtl.utils.atomic import FILE_MODE, WriteError, atomic_write


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

    def test_no_replace_refuses_a_taken_name(self, tmp_path):
        """replace=False: FileExistsError when the name is taken by the end of the block; both files kept."""
        path = tmp_path / "a.bin"
        with pytest.raises(FileExistsError), atomic_write(path, replace=False) as f:
            f.write(b"mine")
            path.write_bytes(b"theirs")  # another writer finishes first
        assert path.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["a.bin"]
        with atomic_write(tmp_path / "b.bin", replace=False) as f:
            f.write(b"new")
        assert (tmp_path / "b.bin").read_bytes() == b"new" and len(os.listdir(tmp_path)) == 2


class TestFaults:
    def test_a_dead_writers_temporary_file_is_removed_by_the_next_write(self, tmp_path):
        """Temporary files of exited writers on this host go; a live writer's, another host's and any
        other file stay."""
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        host = files._host()
        orphan = tmp_path / f".a.pt.{host}-{int(dead.stdout)}.x1y2.part"
        live = tmp_path / f".a.pt.{host}-{os.getpid()}.x1y2.part"
        elsewhere = tmp_path / f".a.pt.{host}other-{int(dead.stdout)}.x1y2.part"
        other = tmp_path / ".hidden.part"
        for p in (orphan, live, elsewhere, other):
            p.write_bytes(b"half")
        with atomic_write(tmp_path / "b.pt") as f:
            f.write(b"whole")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["b.pt", live.name, elsewhere.name, other.name]
        )

    def test_a_refusing_disk_raises_write_error_and_keeps_the_old_file(self, tmp_path, monkeypatch):
        """ENOSPC while writing: WriteError (an OSError) naming the file; old bytes and folder intact."""
        path = tmp_path / "a.bin"
        path.write_bytes(b"old")

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(
            WriteError, match=r"^cannot write .*a\.bin: No space left on device; any previous"
        ):
            with atomic_write(path) as f:
                f.write(b"new")
        assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]

    def test_other_errors_pass_through(self, tmp_path):
        """An OSError that is not about the disk's room (here: a missing file read in the block) keeps
        its type and message."""
        with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "a.bin") as f:
            f.write((tmp_path / "missing").read_bytes())
        assert os.listdir(tmp_path) == []

    def test_atomic_save_failing_disk_is_a_write_error_not_torchs_runtime_error(self, tmp_path):
        """torch.save streaming into a file reports a failed write as "unexpected pos" (RuntimeError);
        atomic_save, under a real file size limit in a child process, raises WriteError."""
        code = (
            "import resource, signal, sys, torch\n"
            "from qtl.utils.atomic import WriteError, atomic_save\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n"
            f"    atomic_save({{'w': torch.zeros(10_000)}}, {str(tmp_path / 'w.pt')!r})\n"
            "except WriteError as exc:\n"
            "    print(exc)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert (
            done.stdout.strip()
            == f"cannot write {tmp_path / 'w.pt'}: File too large; any previous w.pt is kept"
        )
        assert os.listdir(tmp_path) == []
