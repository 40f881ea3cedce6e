"""Content and value normalisation, and the canonical form the integrity hash covers.

Rules for `value_json` per MemoryScope scope (also in docs/normalisation.md):

* Every scope: strings are NFC-normalised, inner runs of whitespace collapsed to one space and
  trimmed; object keys likewise, and keys that collide after normalisation merge (the later value
  wins); arrays are de-duplicated keeping the first occurrence (items compared after
  normalisation); `null` members of objects are dropped; empty strings stay (they can mean
  "explicitly none").
* Case folding (strings compared and stored lower-cased) for the scopes whose values are
  vocabulary rather than names: preferences, constraints, communication, accessibility,
  attention. Object keys are case-folded in every scope.
* schedule keeps the case of string values: time-zone names ("Europe/Berlin"), weekday and
  event names are case-significant or shown back to the user as given.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

from ..models import Scope

CASEFOLD_SCOPES = frozenset(
    {Scope.PREFERENCES, Scope.CONSTRAINTS, Scope.COMMUNICATION, Scope.ACCESSIBILITY,
     Scope.ATTENTION}
)

_WS = re.compile(r"\s+")
# C0/C1 control characters except tab and newline: invisible, and a way to smuggle
# look-alike duplicates past the hash.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINE_SPACES = re.compile(r"[ \t\f\v]+")


def normalize_content(text: str) -> str:
    """NFC, no control or zero-width characters, \\r\\n → \\n, runs of spaces collapsed
    per line, at most one blank line in a row, stripped."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_LINE_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _norm_str(value: str, fold: bool) -> str:
    value = _WS.sub(" ", _CONTROL.sub("", unicodedata.normalize("NFC", value))).strip()
    return value.casefold() if fold else value


def normalize_value(value: Any, scope: Scope | None) -> Any:
    """Normalise a value_json tree by the rules of `scope` (None: the general rules)."""
    fold = scope in CASEFOLD_SCOPES
    return _norm(value, fold)


def _norm(value: Any, fold: bool) -> Any:
    if isinstance(value, str):
        return _norm_str(value, fold)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        # 1.0 and 1 are the same value to a user; keep JSON canonical.
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, list | tuple):
        out: list[Any] = []
        seen: set[str] = set()
        for item in value:
            n = _norm(item, fold)
            key = canonical_json(n)
            if key not in seen:
                seen.add(key)
                out.append(n)
        return out
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for k, v in value.items():
            if v is None:
                continue
            result[_norm_str(str(k), True)] = _norm(v, fold)
        return result
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_from_value(value: Any, scope: Scope | None, domain: str | None) -> str:
    """A readable sentence-like text for a structured value, so that it can be embedded and
    found by keyword search: "preferences / food: dislikes: broccoli; likes: pizza, sushi"."""
    head = " / ".join(p for p in (scope.value if scope else None, domain) if p)
    body = _render(value)
    return f"{head}: {body}" if head else body


def _render(value: Any) -> str:
    if isinstance(value, dict):
        # sorted, so that the same value always reads (and hashes) the same
        return "; ".join(f"{k.replace('_', ' ')}: {_render(v)}"
                         for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ", ".join(_render(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def integrity_hash(content: str, value_json: Any = None) -> str:
    """sha256 over the canonical content: the normalised text, and the canonical JSON of the
    structured value when there is one."""
    h = hashlib.sha256(content.encode("utf-8"))
    if value_json is not None:
        h.update(b"\x00")
        h.update(canonical_json(value_json).encode("utf-8"))
    return h.hexdigest()
