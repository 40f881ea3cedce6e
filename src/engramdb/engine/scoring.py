"""How a search result's final score is made (the weights live in settings).

    score = w_semantic · semantic + w_keyword · keyword + w_importance · importance
            + w_relevance · relevance

* semantic: cosine similarity of query and memory, clipped to [0, 1];
* keyword: the memory's BM25 score divided by the best BM25 score among this query's
  candidates (so in [0, 1]; 0 when the memory matched no query word);
* importance: as stored, in [0, 1] (10 % by default, as MemLayer documents);
* relevance: the memory's current relevance in [0, 1].

The weights are normalised to sum to 1, so every score lies in [0, 1]. When the query names
a period ("a week ago", "in March": engine/query.py), the score becomes

    (1 − w_time) · score + w_time · time

with `time` in [0, 1] for how well the memory's creation time fits it (`with_time`). A
coordinated question's memories take their best score over the question's variants.
See docs/retrieval.md for how these choices were measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Weights:
    semantic: float = 0.6
    keyword: float = 0.2
    importance: float = 0.1
    relevance: float = 0.1

    def normalised(self) -> Weights:
        total = self.semantic + self.keyword + self.importance + self.relevance
        if total <= 0:
            raise ValueError("at least one search weight must be positive")
        return Weights(self.semantic / total, self.keyword / total, self.importance / total,
                       self.relevance / total)


def clip01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def weighted(w: Weights, semantic: float, keyword: float, importance: float,
             relevance: float) -> float:
    """The final score alone: what ranking needs of every candidate. `w` must be
    normalised. `combine` gives the same score (the very same float) with its breakdown."""
    return (w.semantic * clip01(semantic) + w.keyword * clip01(keyword)
            + w.importance * clip01(importance) + w.relevance * clip01(relevance))


def weighted_many(w: Weights, semantic: F64, keyword: F64, importance: F64,
                  relevance: F64) -> F64:
    """`weighted` of many candidates at once: the same floats element for element (the
    same clipping, products and sums in the same order)."""

    def clipped(x: F64) -> F64:
        return np.minimum(np.maximum(x, 0.0), 1.0)

    return (w.semantic * clipped(semantic) + w.keyword * clipped(keyword)
            + w.importance * clipped(importance) + w.relevance * clipped(relevance))


def combine(w: Weights, semantic: float, keyword: float, importance: float,
            relevance: float) -> tuple[float, dict[str, float]]:
    """The final score and its breakdown (`explain`). `w` must be normalised."""
    parts = {
        "semantic": clip01(semantic),
        "keyword": clip01(keyword),
        "importance": clip01(importance),
        "relevance": clip01(relevance),
    }
    score = weighted(w, semantic, keyword, importance, relevance)
    explain = dict(parts)
    explain.update({
        "w_semantic": w.semantic, "w_keyword": w.keyword,
        "w_importance": w.importance, "w_relevance": w.relevance,
        "score": score,
    })
    return score, explain


def keyword_scores(raw: dict[str, float]) -> dict[str, float]:
    """BM25 scores scaled by the best one, so the top keyword match counts 1."""
    if not raw:
        return {}
    best = max(raw.values())
    if best <= 0:
        return dict.fromkeys(raw, 0.0)
    return {k: max(0.0, v) / best for k, v in raw.items()}



def timed(score: float, w_time: float, match: float) -> float:
    """The score blended with the time match, as `with_time` computes it."""
    return (1.0 - w_time) * score + w_time * clip01(match)


def with_time(score: float, explain: dict[str, float], w_time: float,
              match: float) -> tuple[float, dict[str, float]]:
    """Blend in how well the memory's time fits a time expression of the query:
    ``(1 − w_time) · score + w_time · match``. The other weights in `explain` are scaled by
    ``1 − w_time`` so that the breakdown still adds up to the score."""
    new = timed(score, w_time, match)
    out = dict(explain)
    for key in ("w_semantic", "w_keyword", "w_importance", "w_relevance"):
        out[key] = explain[key] * (1.0 - w_time)
    out.update({"time": clip01(match), "w_time": w_time, "score": new})
    return new, out
