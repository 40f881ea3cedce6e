"""Accuracy and speed of PII detection (engramdb.engine.pii).

Accuracy: per-type precision / recall / F1 on the hand-labelled set
(tests/data/pii_labelled.jsonl), sentence level — a sentence is a true positive for a type
when it is labelled with it and `detect` reports it. Printed for the whole set and for its
two splits: "main" (written together with the rules) and "hard" (written afterwards to
probe them, so closer to what unseen text will do).

Speed: CPU time per `detect` call (`time.thread_time`, so other processes on the machine
do not inflate it; wall time is recorded too), on the labelled sentences, on typical
~100-character memories, on a 10,000-character document and on adversarial inputs.

    .venv/bin/python bench/bench_pii.py [--repeat 20] [--out bench/results/pii.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from engramdb.engine.pii import PII_TYPES, detect, redact

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "pii_labelled.jsonl"
OUT = ROOT / "bench" / "results" / "pii.json"

TYPICAL = [  # ~100 characters each, the kind of text agents store
    "Remind me that Sarah Johnson prefers tea, lives in Leeds and wants the quarterly report.",
    "User prefers morning meetings, dislikes long emails, and is allergic to peanuts and fish.",
    "Call me at 415-555-0132 or email jane.doe@example.com; I live at 12 Elm Street, Springfield.",
    "Deploy v2.3.1 to prod on 2024-06-14 at 5 pm; the rollback plan is in ticket ENG-2048 today.",
    "Her birthday is May 5th and she wants a quiet dinner, no surprise party, and no gifts please.",
    "Order 4532-1488-0343-6467 shipped via DHL, tracking 1Z999AA10123456784, arriving Tuesday.",
    "The staging server is at 10.0.12.34; SSH as deploy, and never restart it during office hours.",
    "Prefers replies in British English, short bullet points, and metric units for all distances.",
    "My name is Priya Patel, my SSN is 123-45-6789 and the card on file is 4111 1111 1111 1111.",
    "Budget for Q3 is $12,500, conversion rose 12.5% in June, and Python 3.11.7 is the runtime.",
]
ADVERSARIAL = {
    "a@ x5000": "a@" * 5000,
    "1. x5000": "1." * 5000,
    "digits x10000": "1" * 10000,
    "'1 ' x5000": "1 " * 5000,
    "a: x5000": "a:" * 5000,
    "'A ' x5000": "A " * 5000,
    "'12 Main ' x1250": "12 Main " * 1250,
    "'Sarah ' x1666": "Sarah " * 1666,
    "'born 1/' x1428": "born 1/" * 1428,
}


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def score(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for row in rows:
        expected, got = set(row["types"]), set(detect(row["text"]).fields)
        tp.update(expected & got)
        fp.update(got - expected)
        fn.update(expected - got)
        # "any": does the sentence hold PII at all (what a write-path flag needs).
        e_any, g_any = bool(expected), bool(got)
        tp["any"] += e_any and g_any
        fp["any"] += g_any and not e_any
        fn["any"] += e_any and not g_any
    out: dict[str, dict[str, float]] = {}
    for t in (*PII_TYPES, "any"):
        p = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else 1.0
        r = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else 1.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out[t] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
                  "support": tp[t] + fn[t], "tp": tp[t], "fp": fp[t], "fn": fn[t]}
    return out


def cpu_per_call(fn: Callable[[str], object], texts: list[str], repeat: int) -> dict[str, float]:
    """Mean CPU and wall µs per call over `repeat` passes, plus per-text CPU percentiles."""
    for t in texts:
        fn(t)
    per_text: list[float] = []
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for t in texts:
        c = time.thread_time()
        for _ in range(repeat):
            fn(t)
        per_text.append((time.thread_time() - c) / repeat * 1e6)
    cpu = (time.thread_time() - cpu0) / (repeat * len(texts)) * 1e6
    wall = (time.perf_counter() - wall0) / (repeat * len(texts)) * 1e6
    q = (statistics.quantiles(per_text, n=20, method="inclusive") if len(per_text) > 1
         else per_text * 19)
    return {"cpu_us_mean": round(cpu, 1), "wall_us_mean": round(wall, 1),
            "cpu_us_p50": round(statistics.median(per_text), 1), "cpu_us_p95": round(q[18], 1),
            "cpu_us_max": round(max(per_text), 1)}


def table(scores: dict[str, dict[str, float]], title: str) -> str:
    lines = [title, f"{'type':<15}{'precision':>10}{'recall':>8}{'F1':>7}{'support':>9}"
             f"{'TP':>5}{'FP':>4}{'FN':>4}"]
    for t, s in scores.items():
        lines.append(f"{t:<15}{s['precision']:>10.3f}{s['recall']:>8.3f}{s['f1']:>7.3f}"
                     f"{s['support']:>9}{s['tp']:>5}{s['fp']:>4}{s['fn']:>4}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--repeat", type=int, default=20, help="passes per timing (default 20)")
    args = ap.parse_args()

    rows = load(args.data)
    splits = {"all": rows,
              "main": [r for r in rows if r.get("split", "main") == "main"],
              "hard": [r for r in rows if r.get("split") == "hard"]}
    accuracy = {name: score(part) for name, part in splits.items()}
    for name, part in splits.items():
        n_pos = sum(1 for r in part if r["types"])
        print(table(accuracy[name], f"\n== {name}: {len(part)} sentences "
                                    f"({n_pos} with PII, {len(part) - n_pos} without)"))

    texts = [r["text"] for r in rows]
    avg_chars = sum(map(len, texts)) / len(texts)
    labelled = cpu_per_call(detect, texts, args.repeat)
    labelled["avg_chars"] = round(avg_chars, 1)
    labelled["sentences_per_s_cpu"] = round(1e6 / labelled["cpu_us_mean"])
    labelled["chars_per_s_cpu"] = round(avg_chars * 1e6 / labelled["cpu_us_mean"])
    typical = cpu_per_call(detect, TYPICAL, args.repeat * 5)
    typical["avg_chars"] = round(sum(map(len, TYPICAL)) / len(TYPICAL), 1)
    long_text = ("".join(TYPICAL) * 20)[:10_000]
    long_doc = cpu_per_call(detect, [long_text], max(1, args.repeat // 4))
    long_doc["chars"] = len(long_text)
    long_doc["spans"] = len(detect(long_text).spans)
    redaction = cpu_per_call(redact, TYPICAL, args.repeat * 5)
    adversarial = {}
    for name, text in ADVERSARIAL.items():
        c = time.thread_time()
        detect(text)
        adversarial[name] = round((time.thread_time() - c) * 1e3, 1)

    print("\n== speed (CPU time per call; wall time in the JSON)")
    print(f"labelled set : {labelled['cpu_us_mean']:8.1f} µs mean, p95 {labelled['cpu_us_p95']}"
          f" µs ({avg_chars:.0f} chars avg) -> {labelled['sentences_per_s_cpu']:,} sentences/s,"
          f" {labelled['chars_per_s_cpu']:,} chars/s")
    print(f"typical ~{typical['avg_chars']:.0f}-char memory: {typical['cpu_us_mean']:.1f} µs mean,"
          f" p50 {typical['cpu_us_p50']}, max {typical['cpu_us_max']} µs")
    print(f"redact (typical): {redaction['cpu_us_mean']:.1f} µs mean")
    print(f"10,000-char document: {long_doc['cpu_us_mean'] / 1e3:.1f} ms "
          f"({long_doc['spans']} spans)")
    print("adversarial 10k-char inputs (ms): "
          + ", ".join(f"{k}: {v}" for k, v in adversarial.items()))

    result = {
        "data": str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT) else args.data),
        "accuracy": accuracy,
        "speed": {"labelled": labelled, "typical_100_chars": typical, "redact_typical": redaction,
                  "document_10k": long_doc, "adversarial_ms": adversarial},
        "run": {"python": platform.python_version(), "machine": platform.machine(),
                "phonenumbers": metadata.version("phonenumbers"), "repeat": args.repeat,
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
