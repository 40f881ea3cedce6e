"""The paper's session-level retrieval metrics (LongMemEval, src/retrieval/eval_utils.py).

Per question: `ranked` is the retriever's ranking of session ids (best first), `gold` the set
of sessions that hold evidence.

* recall_any@k = 1 if any gold session is among the top k, else 0;
* recall_all@k = 1 if every gold session is among the top k, else 0;
* ndcg_any@k: binary relevance, with the paper's DCG, which does not discount the first two
  positions: ``rel_1 + Σ_{i≥2} rel_i / log2(i)``; the ideal ranking puts every gold session
  first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import fmean

KS = (5, 10)
METRICS = ("recall_all", "recall_any", "ndcg_any")


def recall_any(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    top = set(ranked[:k])
    return float(any(g in top for g in gold))


def recall_all(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    top = set(ranked[:k])
    return float(all(g in top for g in gold))


def dcg(relevances: Sequence[float], k: int) -> float:
    rel = list(relevances)[:k]
    if not rel:
        return 0.0
    return rel[0] + sum(r / math.log2(i) for i, r in enumerate(rel[1:], start=2))


def ndcg_any(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    wanted = set(gold)
    if not wanted:
        return 0.0
    got = dcg([1.0 if sid in wanted else 0.0 for sid in ranked[:k]], k)
    ideal = dcg([1.0] * len(wanted), k)
    return got / ideal


def question_metrics(ranked: Sequence[str], gold: Iterable[str],
                     ks: Sequence[int] = KS) -> dict[str, float]:
    """Every metric at every k for one question, keyed like ``recall_all@5``."""
    g = list(gold)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall_all@{k}"] = recall_all(ranked, g, k)
        out[f"recall_any@{k}"] = recall_any(ranked, g, k)
        out[f"ndcg_any@{k}"] = ndcg_any(ranked, g, k)
    return out


def average(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over questions (empty: no keys)."""
    if not rows:
        return {}
    return {key: fmean(r[key] for r in rows) for key in rows[0]}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
