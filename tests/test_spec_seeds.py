"""`seed` and `seeds` in a spec: `seed = 3` is seed 3 (it meant seeds 0, 1, 2), `seeds = 3` the count, a
list of either those seeds; a huge count is refused by its size, never built (a MemoryError traceback)."""

from __future__ import annotations

import tracemalloc

import pytest

from qtl.experiments.spec import SpecError, load_spec, parse_spec


def seeds_of(doc: dict) -> list[int]:
    return [p["seed"] for p in parse_spec(doc).points()]


@pytest.mark.parametrize(
    "doc, seeds",
    [
        ({"seed": 3}, [3]),
        ({"seed": [3, 5]}, [3, 5]),
        ({"seed": 0}, [0]),
        ({"seeds": 3}, [0, 1, 2]),
        ({"seeds": [2, 1, 0]}, [2, 1, 0]),
        ({}, [0]),
        ({"grid": [{"seed": 7}, {"seeds": 2}]}, [7, 0, 1]),
    ],
)
def test_seed_is_a_seed_and_seeds_a_count(doc, seeds):
    assert seeds_of({"variant": "linear", **doc}) == seeds


def test_a_huge_seed_count_is_refused_at_once(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('variant = "linear"\nseeds = 99999999999\n')
    tracemalloc.start()
    with pytest.raises(SpecError, match="plans 99,999,999,999 runs, over the limit"):
        load_spec(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20  # counted, not built: the list of its seeds would take about 3 TB


def test_a_huge_seed_is_one_seed(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text('variant = "linear"\nseed = 99999999999\n')
    spec = load_spec(path)
    assert spec.size() == 1 and [p["seed"] for p in spec.points()] == [99999999999]


def test_seed_and_seeds_together_are_refused():
    with pytest.raises(SpecError, match="sets 'seed' twice"):
        parse_spec({"seed": 1, "seeds": 2})


def test_a_count_below_one_is_refused():
    with pytest.raises(SpecError, match="a number of seeds must be at least 1, got 0"):
        parse_spec({"seeds": 0})
