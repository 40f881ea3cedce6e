"""BERT's tokenization of plain ASCII text from a cache of its words' pieces.

A lone query's tokenizing cost ~125–150 µs when it followed a model run (the tokenizer's
code and tables evicted), against ~35 µs for this path (docs/architecture.md, "Embeddings").
For ASCII text without control characters, BERT's uncased pipeline (BertNormalizer,
BertPreTokenizer, WordPiece, [CLS] … [SEP]) comes down to: lower-case, split into runs of
letters and digits and single punctuation characters (every other printable ASCII character
is punctuation to BERT), and the WordPiece of each word, which does not depend on its
neighbours. The pieces of a word are asked of the tokenizer itself the first time it is seen,
so the ids are the tokenizer's own; any other text goes to the tokenizer whole.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer

# runs of letters and digits, or one character that is neither nor whitespace
_WORDS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# BertNormalizer deletes control characters (\t, \n and \r are whitespace to it) where a
# regex would split at them; text holding one goes to the tokenizer
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class WordPieceCache:
    """`ids(text)`: the tokenizer's ids of text, [CLS] and [SEP] included, cut to
    `max_tokens` as its truncation cuts them; plain ASCII text is read from cached words."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, max_words: int = 50_000) -> None:
        self._tokenizer = tokenizer
        self._max_pieces = max_tokens - 2  # room for [CLS] and [SEP]
        self._max_words = max_words
        self._pieces: dict[str, tuple[int, ...]] = {}
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        if cls is None or sep is None:
            raise ValueError("the tokenizer lacks BERT's [CLS] and [SEP] tokens")
        self._cls, self._sep = cls, sep

    def ids(self, text: str) -> list[int]:
        if not text.isascii() or _CONTROL.search(text) is not None:
            return list(self._tokenizer.encode(text).ids)
        pieces = self._pieces
        ids = [self._cls]
        for word in _WORDS.findall(text.lower()):
            known = pieces.get(word)
            if known is None:
                known = tuple(self._tokenizer.encode(word, add_special_tokens=False).ids)
                if len(pieces) >= self._max_words:
                    pieces.clear()  # rare; the common words come back at once
                pieces[word] = known
            ids += known
            if len(ids) > self._max_pieces:
                del ids[self._max_pieces + 1:]
                break
        ids.append(self._sep)
        return ids
