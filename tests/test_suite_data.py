"""The suite finds the real dataset as qtl does, so it runs on a machine with no copy beside the checkout:
each case runs one hymenoptera test in a fresh pytest process with that copy hidden."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA_ENV

TARGET = "tests/test_data.py::TestHymenoptera::test_shared_copy"  # counts every real image


def run_suite(tmp_path, **env) -> subprocess.CompletedProcess:
    """Run TARGET offline, with no shared copy, qtl's cache in tmp_path/cache and `env` on top."""
    base = {k: v for k, v in os.environ.items() if k != "QTL_DATA_DIR"}
    base.update({SHARED_DATA_ENV: str(tmp_path / "no-shared"), "QTL_CACHE_DIR": str(tmp_path / "cache")})
    base["QTL_OFFLINE"] = "1"  # the cases that find a copy never need the network; the last must not try
    return subprocess.run(
        [sys.executable, "-m", "pytest", TARGET, "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("where", ["QTL_DATA_DIR", "qtl cache"])
def test_found_where_qtl_looks(hymenoptera_dir, tmp_path, where):
    if where == "QTL_DATA_DIR":
        done = run_suite(tmp_path, QTL_DATA_DIR=str(hymenoptera_dir))
    else:
        (tmp_path / "cache" / "data").mkdir(parents=True)
        (tmp_path / "cache" / "data" / "hymenoptera_data").symlink_to(hymenoptera_dir)
        done = run_suite(tmp_path)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_offline_with_no_copy_fails_in_one_line(tmp_path):
    """Nothing found and no download allowed: the fixture fails with one line that says what to do."""
    done = run_suite(tmp_path)
    assert done.returncode != 0
    said = [line for line in done.stdout.splitlines() if line.startswith("hymenoptera not found")]
    assert len(said) == 1, done.stdout
    assert "QTL_OFFLINE is set" in said[0] and "QTL_DATA_DIR" in said[0] and "qtl data" in said[0]
    assert str(tmp_path / "no-shared") in said[0] and "Traceback" not in done.stdout
    assert not (tmp_path / "cache" / "data").exists()  # no download was attempted
