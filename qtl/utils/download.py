"""Streamed, checked, atomic downloads that never hang.

`download(url, dest)` streams into a temporary file beside `dest`, reports `progress(done, total)` per
chunk, checks the size and SHA-256, and only then renames the file into place. Name resolution, the
connection and every read are bounded by `timeout`, so an offline machine fails in seconds with
`OfflineError` instead of waiting on the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from qtl.utils.atomic import WriteError, atomic_write

Progress = Callable[[int, int], None]

DEFAULT_TIMEOUT_S = 10.0
CHUNK_BYTES = 1 << 20
OFFLINE_ENV = "QTL_OFFLINE"  # set to 1 to never try a download (weights, datasets, anything)


def offline() -> bool:
    """True when $QTL_OFFLINE is set (to anything but "" or "0"): qtl never tries a download."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


class DownloadError(RuntimeError):
    """A download failed: bad HTTP status, wrong size or wrong hash."""


class OfflineError(DownloadError):
    """The server could not be reached (no network, DNS failure, refused connection or timeout)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected size or SHA-256."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _in_thread(work: Callable[[], object], timeout: float) -> tuple[bool, OSError | None]:
    """Run `work()` in a daemon thread for at most `timeout` s: socket look-ups have no timeout of their own.

    Returns (finished in time, the OSError it raised or None).
    """
    outcome: dict[str, OSError] = {}

    def target() -> None:
        try:
            work()
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), outcome.get("error")


def _host_port(url: str) -> tuple[str | None, int]:
    parsed = urlparse(url)
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def _resolve(url: str, timeout: float) -> None:
    """Resolve the URL's host within `timeout` seconds, else OfflineError (a proxy resolves it for us)."""
    host, port = _host_port(url)
    if not host or urlparse(url).scheme in urllib.request.getproxies():
        return
    finished, error = _in_thread(lambda: socket.getaddrinfo(host, port), timeout)
    if not finished:
        raise OfflineError(f"could not resolve {host} within {timeout:g} s")
    if error is not None:
        raise OfflineError(f"could not resolve {host}: {error}")


def reachable(url: str, timeout: float = 2.0) -> bool:
    """True when a TCP connection to `url`'s host and port opens within `timeout` s (look-up included)."""
    host, port = _host_port(url)
    if not host:
        raise ValueError(f"not a URL with a host: {url!r}")
    connect = lambda: socket.create_connection((host, port), timeout=timeout).close()
    finished, error = _in_thread(connect, timeout)
    return finished and error is None


def download(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: Progress | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download `url` to `dest` atomically and return `dest`.

    Args:
        size: expected number of bytes, checked when given.
        sha256: expected full hex digest, checked when given.
        sha256_prefix: expected leading hex digits of the digest (torch.hub's file-name convention).
        progress: called as progress(done_bytes, total_bytes) after every chunk; total is 0 when unknown.
        timeout: seconds allowed for name resolution, the connection and each read.

    Raises:
        OfflineError: $QTL_OFFLINE is set (no connection is tried), or the server cannot be reached or
            stops answering.
        ChecksumError: size or hash mismatch (nothing is left at `dest`).
        DownloadError: the server answered with an HTTP error.
        files.WriteError: the disk refused the file (full, read-only); nothing is left at `dest`.
    """
    if offline():
        raise OfflineError(f"{OFFLINE_ENV} is set, so {url} is not downloaded")
    try:
        _resolve(url, timeout)
        digest = hashlib.sha256()
        done = 0
        with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or (size or 0)
            while chunk := response.read(CHUNK_BYTES):
                if size is not None and done + len(chunk) > size:
                    raise ChecksumError(f"{url}: more than the expected {size} bytes")
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            _check(url, done, digest.hexdigest(), size, sha256, sha256_prefix)
    except WriteError:  # the disk, not the network: its message says which file and why
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise OfflineError(f"could not download {url}: {reason}") from exc
    return Path(dest)


def _check(
    url: str, done: int, hexdigest: str, size: int | None, sha256: str | None, prefix: str | None
) -> None:
    if size is not None and done != size:
        raise ChecksumError(f"{url}: got {done} bytes, expected {size}")
    if sha256 is not None and hexdigest != sha256.lower():
        raise ChecksumError(f"{url}: SHA-256 {hexdigest} does not match the expected {sha256}")
    if prefix is not None and not hexdigest.startswith(prefix.lower()):
        raise ChecksumError(f"{url}: SHA-256 {hexdigest} does not start with {prefix}")
