"""Accuracy of the supersession rules (engramdb.engine.supersession) on the labelled pairs.

    .venv/bin/python bench/bench_supersession.py              # all, development, holdout
    .venv/bin/python bench/bench_supersession.py --errors dev  # also list the dev misses
    .venv/bin/python bench/bench_supersession.py --floor 0.5   # try another candidate floor

Cosines come from the real embedding model (all-MiniLM-L6-v2), computed here, never stored
with the pairs. Prints a confusion matrix, per-class precision/recall/F1 and accuracy for
the whole set and for its development and holdout parts, plus the time per decision, and
writes everything to bench/results/supersession.json (--out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from engramdb import Settings
from engramdb.embeddings import load_default_embedder
from engramdb.engine.supersession import RELATIONS, Thresholds, decide

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "tests" / "data" / "supersession_pairs.jsonl"


def load_pairs(path: Path = PAIRS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def cosines(pairs: list[dict[str, Any]]) -> list[float]:
    emb = load_default_embedder(Settings())
    try:
        new = emb.embed([p["new"] for p in pairs]).vectors
        old = emb.embed([p["old"] for p in pairs]).vectors
    finally:
        emb.close()
    return [float(np.dot(a, b)) for a, b in zip(new, old, strict=True)]


def metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Confusion matrix (rows = expected, columns = predicted), per-class P/R/F1, accuracy."""
    matrix: dict[str, dict[str, int]] = {g: dict.fromkeys(RELATIONS, 0) for g in RELATIONS}
    for g, p in zip(gold, pred, strict=True):
        matrix[g][p] += 1
    per_class: dict[str, dict[str, float]] = {}
    for c in RELATIONS:
        tp = matrix[c][c]
        predicted = sum(matrix[g][c] for g in RELATIONS)
        actual = sum(matrix[c].values())
        prec = tp / predicted if predicted else 0.0
        rec = tp / actual if actual else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[c] = {"precision": round(prec, 4), "recall": round(rec, 4),
                        "f1": round(f1, 4), "support": actual}
    correct = sum(g == p for g, p in zip(gold, pred, strict=True))
    return {"n": len(gold), "accuracy": round(correct / len(gold), 4) if gold else 0.0,
            "macro_f1": round(sum(v["f1"] for v in per_class.values()) / 3, 4),
            "per_class": per_class, "confusion": matrix}


def print_report(name: str, m: dict[str, Any]) -> None:
    print(f"\n== {name}: {m['n']} pairs, accuracy {m['accuracy']:.3f}, "
          f"macro-F1 {m['macro_f1']:.3f}")
    print(f"{'expected / predicted':>22} " + " ".join(f"{c:>9}" for c in RELATIONS))
    for g in RELATIONS:
        print(f"{g:>22} " + " ".join(f"{m['confusion'][g][p]:>9}" for p in RELATIONS))
    print(f"{'':>22} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>9}")
    for c, v in m["per_class"].items():
        print(f"{c:>22} {v['precision']:>9.3f} {v['recall']:>9.3f} {v['f1']:>9.3f} "
              f"{v['support']:>9}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "supersession.json")
    ap.add_argument("--errors", choices=["none", "dev", "holdout", "all"], default="none",
                    help="list the misclassified pairs of this part")
    ap.add_argument("--floor", type=float, default=None, help="override candidate_floor")
    ap.add_argument("--dev-only", action="store_true",
                    help="print only the development part (for tuning without peeking)")
    args = ap.parse_args(argv)

    th = Thresholds()
    if args.floor is not None:
        th = replace(th, candidate_floor=args.floor)
    pairs = load_pairs(args.pairs)
    t0 = time.perf_counter()
    sims = cosines(pairs)
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decisions = [decide(p["new"], p["old"], s, th) for p, s in zip(pairs, sims, strict=True)]
    decide_s = time.perf_counter() - t0

    parts = {
        "all": [True] * len(pairs),
        "dev": [not p.get("holdout", False) for p in pairs],
        "holdout": [bool(p.get("holdout", False)) for p in pairs],
    }
    results: dict[str, Any] = {}
    for name, mask in parts.items():
        gold = [p["label"] for p, k in zip(pairs, mask, strict=True) if k]
        pred = [d.relation for d, k in zip(decisions, mask, strict=True) if k]
        results[name] = metrics(gold, pred)
        if not args.dev_only or name == "dev":
            print_report(name, results[name])

    rules: dict[str, dict[str, int]] = {}
    for p, d in zip(pairs, decisions, strict=True):
        if args.dev_only and p.get("holdout"):
            continue
        r = rules.setdefault(d.rule, {"fired": 0, "correct": 0})
        r["fired"] += 1
        r["correct"] += int(d.relation == p["label"])
    print("\nrule                 fired  correct")
    for name, r in sorted(rules.items(), key=lambda kv: -kv[1]["fired"]):
        print(f"{name:<20} {r['fired']:>5}  {r['correct']:>7}")
    near_dup = Settings().near_duplicate_threshold
    above = [(p["id"], round(sim, 3), d.relation) for p, sim, d
             in zip(pairs, sims, decisions, strict=True) if sim >= near_dup]
    print(f"\n{len(above)} pairs at or above near_duplicate_threshold {near_dup}: "
          + ", ".join(f"{i} {s} ({r})" for i, s, r in above)
          + " - a write path that drops near-duplicates first would never ask about them")
    per_decision_us = decide_s / len(pairs) * 1e6
    print(f"\nrules: {per_decision_us:.0f} µs per decision ({len(pairs)} pairs); "
          f"embedding both sides took {embed_s:.1f} s")

    errors = []
    for p, s, d in zip(pairs, sims, decisions, strict=True):
        if d.relation != p["label"]:
            part = "holdout" if p.get("holdout") else "dev"
            errors.append({"id": p["id"], "part": part, "expected": p["label"],
                           "got": d.relation, "similarity": round(s, 3), "new": p["new"],
                           "old": p["old"], "reason": d.reason})
    if args.errors != "none":
        shown = [e for e in errors if args.errors in ("all", e["part"])]
        print(f"\n{len(shown)} misclassified ({args.errors}):")
        for e in shown:
            print(f"  {e['id']} [{e['similarity']:.2f}] expected {e['expected']}, got "
                  f"{e['got']}\n      NEW {e['new']}\n      OLD {e['old']}\n"
                  f"      {e['reason']}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "supersession", "pairs_file": str(args.pairs.relative_to(ROOT))
        if args.pairs.is_relative_to(ROOT) else str(args.pairs),
        "thresholds": asdict(th), "model": "all-MiniLM-L6-v2",
        "python": platform.python_version(), "results": results, "rules": rules,
        "micros_per_decision": round(per_decision_us, 1),
        "near_duplicate_threshold": near_dup,
        "pairs_at_or_above_near_duplicate_threshold": [
            {"id": i, "similarity": s, "decided": r} for i, s, r in above],
        "misclassified": errors,
    }
    args.out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
