"""Text as both keyword indexes see it: folded words and the words of a query.

SQLite's FTS5 and PostgreSQL's parser each tokenise on their own; folding first in Python
(no diacritics, lower case, runs of letters and digits) makes both see the same words, and
lets the SQLite store prefix each word with its scope before FTS5 sees it.
"""

from __future__ import annotations

import re
import unicodedata

# Words too common to help a keyword query; dropping them keeps an OR-query from matching
# every row of a large user. Kept if a query has nothing else.
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "did", "for", "from", "has",
    "have", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that",
    "the", "their", "them", "there", "these", "they", "this", "to", "was", "we", "were",
    "what", "when", "where", "which", "who", "why", "will", "with", "you", "your", "about",
    "how", "can", "could", "would", "should", "am", "been", "being",
])
# Words as the keyword indexes take them: runs of letters and digits (both tokenizers
# split at an underscore too).
WORD = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """No diacritics, lower case, words of letters and digits separated by single spaces
    (so either index's tokenizer makes one token of each)."""
    if text.isascii():  # the same result without the per-character pass (~3x faster)
        return " ".join(WORD.findall(text.lower()))
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(WORD.findall(bare.lower()))


def keyword_terms(text: str, max_terms: int = 32) -> list[str]:
    """The words of a free-text query, folded, without stop words (unless the query has
    nothing else), each once, at most `max_terms`."""
    words = fold(text).split()
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))[:max_terms]
