"""Safe zip extraction: a hostile archive is refused whole, and nothing is left behind.

    safe_extract("upload.zip", dest)          # dest appears complete, or not at all
    safe_extract(f, dest, ArchiveLimits(max_files=500))

Before a byte is written, every member's header is checked: its path must stay inside `dest` (no `..`,
no absolute path, no drive letter, no backslash tricks), it must be a plain file or folder (no symlink,
device or FIFO), unencrypted, and the archive must stay under the caps on files, total uncompressed size
and compression ratio (a zip bomb's signature). Headers can lie, so extraction then streams each member in
chunks (memory stays bounded whatever the archive's size), counts the real bytes against the declared
size and the caps, and lets zipfile's CRC check catch a member that decompresses to something else.
Everything is written into a hidden temporary folder beside `dest` that is renamed into place at the end
and removed on any failure. Errors are `ArchiveError`, one line naming the archive and the member.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

CHUNK = 1 << 20  # bytes per read while extracting: the memory bound
RATIO_FLOOR = 1 << 20  # members (and archives) smaller than this are never refused for their ratio
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(ValueError):
    """The archive is refused (hostile, over a cap, corrupt, or not a zip); the message says why."""


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what one archive may unpack to. `from_env()` reads QTL_ZIP_MAX_FILES, QTL_ZIP_MAX_MB and
    QTL_ZIP_MAX_RATIO; the app's demo mode passes smaller ones."""

    max_files: int = 50_000  # members (files and folders)
    max_bytes: int = 4 * 2**30  # total uncompressed bytes
    max_ratio: float = 200.0  # uncompressed / compressed, per member and overall (JPEG/PNG are ~1)

    @classmethod
    def from_env(cls) -> ArchiveLimits:
        d = cls()
        return cls(
            max_files=int(_env_number("QTL_ZIP_MAX_FILES", d.max_files)),
            max_bytes=int(_env_number("QTL_ZIP_MAX_MB", d.max_bytes / 2**20) * 2**20),
            max_ratio=_env_number("QTL_ZIP_MAX_RATIO", d.max_ratio),
        )


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def member_path(name: str) -> PurePosixPath | None:
    """The relative path a member name stands for, or None when it would escape the target folder.

    Backslashes count as separators (archives made on Windows), so `..\\x` is caught as well.
    """
    if "\x00" in name:
        return None
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or any(p == ".." for p in parts):
        return None
    parts = [p for p in parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _kind(info: zipfile.ZipInfo) -> str:
    """ "dir", "file", or the name of a refused type, from the Unix mode bits."""
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver recorded no file type
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    return "dir" if info.is_dir() else "file"


def check_members(infos: list[zipfile.ZipInfo], limits: ArchiveLimits, label: str) -> None:
    """Refuse the archive from its headers alone (paths, types, counts, declared sizes, ratios)."""
    if len(infos) > limits.max_files:
        raise ArchiveError(f"{label} has {len(infos)} entries, more than the cap of {limits.max_files}")
    total = compressed = 0
    for info in infos:
        if member_path(info.filename) is None:
            raise ArchiveError(
                f"{label}: refusing member {info.filename!r}: its path leaves the target folder"
            )
        kind = _kind(info)
        if kind not in ("dir", "file"):
            raise ArchiveError(f"{label}: refusing member {info.filename!r}: it is a {kind}")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{label}: member {info.filename!r} is encrypted; qtl reads plain zips only")
        total += info.file_size
        compressed += info.compress_size
        if info.file_size >= RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise ArchiveError(
                f"{label}: member {info.filename!r} expands {ratio:.0f}x ({_mb(info.file_size)}), over the "
                f"{limits.max_ratio:g}x cap: this looks like a zip bomb"
            )
    if total > limits.max_bytes:
        raise ArchiveError(f"{label} unpacks to {_mb(total)}, more than the cap of {_mb(limits.max_bytes)}")
    if total >= RATIO_FLOOR and total > limits.max_ratio * max(compressed, 1):
        raise ArchiveError(
            f"{label} expands {total / max(compressed, 1):.0f}x overall, over the {limits.max_ratio:g}x cap: "
            "this looks like a zip bomb"
        )


def safe_extract(
    archive: str | Path | BinaryIO,
    dest: str | Path,
    limits: ArchiveLimits | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Extract the zip `archive` (a path or a seekable binary file) into the new folder `dest`.

    progress(done_bytes, total_declared_bytes) after every chunk. Returns `dest`.

    Raises:
        ArchiveError: refused or unreadable (nothing is written: `dest` does not appear and no temporary
            folder is left); FileExistsError: `dest` already exists.
    """
    limits = limits or ArchiveLimits.from_env()
    dest = Path(dest)
    label = (
        Path(archive).name if isinstance(archive, (str, Path)) else getattr(archive, "name", "the archive")
    )
    label = Path(str(label)).name or "the archive"
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                check_members(infos, limits, label)
                _stream(zf, infos, tmp, limits, label, progress)
        except zipfile.BadZipFile as exc:
            raise ArchiveError(f"{label} is not a readable zip archive ({exc})") from None
        except (zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ArchiveError(f"{label} is damaged or uses an unsupported zip feature ({exc})") from None
        except OSError as exc:
            raise ArchiveError(f"cannot extract {label}: {exc.strerror or exc}") from None
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _stream(zf, infos, out: Path, limits: ArchiveLimits, label: str, progress) -> None:
    """Write every member under `out` in bounded chunks, counting real bytes against the caps."""
    declared = sum(i.file_size for i in infos)
    done = 0
    made: set[Path] = set()  # folders already created
    for info in infos:
        target = out / member_path(info.filename)
        folder = target if info.is_dir() else target.parent
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        if info.is_dir():
            continue
        written = 0
        with zf.open(info) as src, open(target, "xb") as dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                done += len(chunk)
                if written > info.file_size:
                    raise ArchiveError(
                        f"{label}: member {info.filename!r} is larger than its header declares"
                    )
                if done > limits.max_bytes:
                    raise ArchiveError(f"{label} unpacks to more than the cap of {_mb(limits.max_bytes)}")
                dst.write(chunk)
                if progress is not None:
                    progress(done, declared)
        if written != info.file_size:
            raise ArchiveError(f"{label}: member {info.filename!r} is shorter than its header declares")
