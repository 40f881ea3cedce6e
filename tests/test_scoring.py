"""Scoring: the final score formula and its explain breakdown (property-based)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engramdb.engine import lifecycle
from engramdb.engine.scoring import Weights, combine, keyword_scores, weighted, weighted_many

unit = st.floats(0, 1)
anyf = st.floats(-2, 2, allow_nan=False)
weights = st.tuples(unit, unit, unit, unit).filter(lambda w: sum(w) > 0.01)


@given(weights, anyf, anyf, unit, unit)
def test_score_is_bounded_and_explained(w: tuple[float, ...], sem: float, kw: float,
                                        imp: float, rel: float) -> None:
    nw = Weights(*w).normalised()
    score, explain = combine(nw, sem, kw, imp, rel)
    assert 0.0 <= score <= 1.0 + 1e-9
    recomputed = sum(explain[f"w_{k}"] * explain[k]
                     for k in ("semantic", "keyword", "importance", "relevance"))
    assert math.isclose(recomputed, score, abs_tol=1e-9)
    assert explain["score"] == score


@given(unit, unit, unit, st.floats(0, 0.5), st.floats(0.01, 0.5))
def test_score_is_monotone_in_each_component(sem: float, kw: float, rel: float,
                                             imp: float, bump: float) -> None:
    w = Weights().normalised()
    low, _ = combine(w, sem, kw, imp, rel)
    high, _ = combine(w, sem, kw, imp + bump, rel)
    assert high > low
    assert combine(w, min(1, sem + bump), kw, imp, rel)[0] >= low


def test_importance_weighs_ten_percent_by_default() -> None:
    w = Weights().normalised()
    assert w.importance == pytest.approx(0.10)
    a, _ = combine(w, 0.5, 0.5, 1.0, 1.0)
    b, _ = combine(w, 0.5, 0.5, 0.0, 1.0)
    assert a - b == pytest.approx(0.10)


@given(st.dictionaries(st.text(max_size=4), st.floats(0, 100), max_size=10))
def test_keyword_scores_scale_to_unit(raw: dict[str, float]) -> None:
    out = keyword_scores(raw)
    assert set(out) == set(raw)
    assert all(0.0 <= v <= 1.0 for v in out.values())
    if raw and max(raw.values()) > 0:
        assert max(out.values()) == pytest.approx(1.0)


def test_weights_must_not_all_be_zero() -> None:
    with pytest.raises(ValueError):
        Weights(0, 0, 0, 0).normalised()


@given(weights, st.lists(st.tuples(anyf, anyf, anyf, anyf), max_size=40))
def test_weighted_many_is_weighted_to_the_bit(w: tuple[float, ...],
                                             rows: list[tuple[float, ...]]) -> None:
    """A search scores its candidates with numpy; explain recomputes each with `weighted`:
    they must agree exactly, or a hit's score would not be its explain's."""
    nw = Weights(*w).normalised()
    columns = [np.array([r[i] for r in rows], dtype=np.float64) for i in range(4)]
    assert weighted_many(nw, *columns).tolist() == [weighted(nw, *r) for r in rows]


hours = st.floats(-1e4, 1e6, allow_nan=False)


@given(st.lists(st.tuples(unit, st.floats(0, 2), st.booleans(), hours,
                          st.none() | hours), max_size=40), hours)
def test_relevance_at_many_is_relevance_at_to_the_bit(
        rows: list[tuple[float, float, bool, float, float | None]], now_h: float) -> None:
    """Search decays its candidates with numpy, get and list each record with
    `relevance_at`: a memory must show one relevance whichever way it is read."""
    now = 1.7e9 + now_h * 3600

    def col(i: int, dtype: type = np.float64) -> np.ndarray:
        return np.array([r[i] for r in rows], dtype=dtype)

    created = np.array([1.7e9 + r[3] * 3600 for r in rows], dtype=np.float64)
    accessed = np.array([np.nan if r[4] is None else 1.7e9 + r[4] * 3600 for r in rows],
                        dtype=np.float64)
    got = lifecycle.relevance_at_many(col(0), col(1), col(2, bool), created, accessed, now)
    assert got.tolist() == [
        lifecycle.relevance_at(rel, decay, pinned, 1.7e9 + c * 3600,
                               None if a is None else 1.7e9 + a * 3600, now)
        for rel, decay, pinned, c, a in rows]
