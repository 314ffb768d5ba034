"""qtl.data.archive: hostile zips are refused whole, with one clear line, and nothing is written anywhere."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from qtl.data.archive import ArchiveError, ArchiveLimits, member_path, safe_extract


def make_zip(path: Path, members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tree(root: Path) -> set[str]:
    """Every path under `root`, relative, so a test can see that nothing appeared."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path) -> Path:
    """tmp_path/box/ holds the archive; extraction targets tmp_path/box/out; the test checks tmp_path."""
    box = tmp_path / "box"
    box.mkdir()
    return box


def refused(archive, sandbox: Path, limits: ArchiveLimits | None = None, match: str = "") -> str:
    """Extract, expect an ArchiveError matching `match`, and check that nothing at all was written."""
    root = sandbox.parent
    before = tree(root)
    with pytest.raises(ArchiveError, match=match) as info:
        safe_extract(archive, sandbox / "out", limits or ArchiveLimits())
    assert tree(root) == before, "a refused archive left files behind"
    message = str(info.value)
    assert "\n" not in message
    return message


class TestRefused:
    """Each hostile or broken archive is refused before anything lands on disk."""

    @pytest.mark.parametrize(
        "name",
        [
            "../evil.txt",
            "a/../../evil.txt",
            "/abs/evil.txt",
            "C:/evil.txt",
            "c:evil.txt",
            "..\\evil.txt",
            "\\\\server\\share\\evil.txt",
        ],
    )
    def test_path_escape(self, sandbox, name):
        """Parent references, absolute paths, drive letters and backslash escapes are refused by name."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("cats/1.png", b"x")
            zf.writestr(zipfile.ZipInfo(name), b"owned")
        path = sandbox / "escape.zip"
        path.write_bytes(buf.getvalue())
        message = refused(path, sandbox, match="leaves the target folder")
        assert "escape.zip" in message
        assert not (sandbox.parent / "evil.txt").exists()

    def test_symlink(self, sandbox):
        """A member whose mode says symbolic link is refused, even pointing inside."""
        path = sandbox / "link.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("cats/1.png", b"x")
            info = zipfile.ZipInfo("cats/2.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        refused(path, sandbox, match="symbolic link")

    def test_too_many_files(self, sandbox):
        path = make_zip(sandbox / "many.zip", {f"c/{i}.png": b"x" for i in range(11)})
        refused(path, sandbox, ArchiveLimits(max_files=10), match="11 entries, more than the cap of 10")

    def test_total_size_over_cap(self, sandbox):
        data = bytes(range(256)) * 4096  # 1 MiB, poorly compressible enough to stay under the ratio cap
        path = make_zip(
            sandbox / "big.zip", {"a/1.bin": data, "a/2.bin": data}, compression=zipfile.ZIP_STORED
        )
        refused(path, sandbox, ArchiveLimits(max_bytes=2**21 - 1), match="more than the cap of 2.0 MB")

    def test_zip_bomb_ratio(self, sandbox):
        """16 MB of zeros deflates about 1000x: refused from the header, nothing is inflated."""
        path = make_zip(sandbox / "bomb.zip", {"a/zeros.png": bytes(16 * 2**20)})
        assert path.stat().st_size < 100_000
        refused(path, sandbox, match="zip bomb")

    def test_header_that_understates_the_size(self, sandbox):
        """A member declared 1,000 bytes that inflates to 4 MB: the real bytes give it away."""
        path = make_zip(sandbox / "liar.zip", {"a/small.png": bytes(4 * 2**20)})
        raw = bytearray(path.read_bytes())
        local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
        struct.pack_into("<I", raw, local + 22, 1000)  # local header: uncompressed size
        struct.pack_into("<I", raw, central + 24, 1000)  # central directory: uncompressed size
        path.write_bytes(bytes(raw))
        assert zipfile.ZipFile(path).getinfo("a/small.png").file_size == 1000
        refused(path, sandbox, match="liar.zip")

    def test_encrypted(self, sandbox):
        path = make_zip(sandbox / "enc.zip", {"a/1.png": b"x"})
        raw = bytearray(path.read_bytes())
        for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = raw.find(sig) + offset
            struct.pack_into("<H", raw, at, struct.unpack_from("<H", raw, at)[0] | 1)
        path.write_bytes(bytes(raw))
        refused(path, sandbox, match="encrypted")

    @pytest.mark.parametrize("content", [b"", b"not a zip at all", b"\x89PNG\r\n\x1a\n" + bytes(100)])
    def test_not_a_zip(self, sandbox, content):
        path = sandbox / "fake.zip"
        path.write_bytes(content)
        refused(path, sandbox, match="fake.zip is not a readable zip archive")

    def test_truncated(self, sandbox):
        path = make_zip(sandbox / "cut.zip", {f"a/{i}.bin": bytes(range(256)) * 64 for i in range(5)})
        path.write_bytes(path.read_bytes()[:-200])
        refused(path, sandbox, match="cut.zip")

    def test_corrupt_member_data_after_good_members(self, sandbox):
        """A member that fails its CRC after others were written: the partial folder goes too."""
        path = make_zip(sandbox / "bad.zip", {"a/1.bin": b"good" * 100, "a/2.bin": b"abcd" * 1000})
        raw = bytearray(path.read_bytes())
        second = raw.find(b"PK\x03\x04", raw.find(b"PK\x03\x04") + 4)
        raw[second + 30 + len("a/2.bin") + 5] ^= 0xFF  # flip a byte of the compressed data
        path.write_bytes(bytes(raw))
        refused(path, sandbox, match="bad.zip")

    def test_existing_destination_is_not_touched(self, sandbox):
        path = make_zip(sandbox / "ok.zip", {"a/1.png": b"x"})
        (sandbox / "out").mkdir()
        (sandbox / "out" / "keep.txt").write_text("mine")
        with pytest.raises(FileExistsError):
            safe_extract(path, sandbox / "out")
        assert tree(sandbox / "out") == {"keep.txt"}


class TestAccepted:
    def test_extracts_paths_folders_and_reports_progress(self, sandbox):
        members = {
            "top/": b"",
            "top/cats/1.png": b"one",
            "top/dogs/2.png": b"two" * 1000,
            "./top/x.txt": b"t",
        }
        path = make_zip(sandbox / "ok.zip", members)
        seen = []
        out = safe_extract(path, sandbox / "out", progress=lambda done, total: seen.append((done, total)))
        assert tree(out) == {"top", "top/cats", "top/dogs", "top/cats/1.png", "top/dogs/2.png", "top/x.txt"}
        assert (out / "top/dogs/2.png").read_bytes() == b"two" * 1000
        assert seen[-1] == (3004, 3004)
        assert [p.name for p in sandbox.iterdir() if p.name.startswith(".")] == []

    def test_file_object_and_compressible_small_files(self, sandbox):
        """Small, very compressible files (under 1 MB) are not mistaken for a bomb; file objects work."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("a/blank.bmp", bytes(500_000))
        out = safe_extract(io.BytesIO(buf.getvalue()), sandbox / "out")
        assert (out / "a/blank.bmp").stat().st_size == 500_000

    def test_limits_from_environment(self, monkeypatch):
        monkeypatch.setenv("QTL_ZIP_MAX_FILES", "7")
        monkeypatch.setenv("QTL_ZIP_MAX_MB", "1.5")
        monkeypatch.setenv("QTL_ZIP_MAX_RATIO", "50")
        assert ArchiveLimits.from_env() == ArchiveLimits(7, int(1.5 * 2**20), 50.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b.png", "a/b.png"),
        ("./a//b.png", "a/b.png"),
        ("a\\b.png", "a/b.png"),
        ("../a", None),
        ("/a", None),
        ("D:\\a", None),
        ("a/./../../b", None),
    ],
)
def test_member_path(name, expected):
    got = member_path(name)
    assert (None if got is None else got.as_posix()) == expected
