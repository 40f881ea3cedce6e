"""WordPieceCache gives the tokenizer's own ids, whichever path a text takes."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from engramdb.embeddings.onnx_minilm import MiniLMEmbedder
from engramdb.embeddings.word_cache import WordPieceCache

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return MiniLMEmbedder._load_tokenizer(256)


def want(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text).ids)


# ASCII with every kind of character BERT treats apart: letters of both cases, digits,
# punctuation, the whitespace it keeps (\t \n \r) and the control characters it deletes
# (\x0b, \x0c and \x1c-\x1f are whitespace to Python's regex, not to BERT).
ASCII = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + string.punctuation
                             + " \t\n\r\x00\x07\x0b\x0c\x1c\x1f\x7f"),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(text=ASCII)
def test_ascii_text_gets_the_tokenizers_ids(tokenizer: Tokenizer, text: str) -> None:
    assert WordPieceCache(tokenizer, 256).ids(text) == want(tokenizer, text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_any_text_gets_the_tokenizers_ids(tokenizer: Tokenizer, text: str) -> None:
    assert WordPieceCache(tokenizer, 256).ids(text) == want(tokenizer, text)


def test_words_are_cached_and_the_cache_is_bounded(tokenizer: Tokenizer) -> None:
    cache = WordPieceCache(tokenizer, 256, max_words=3)
    texts = ["Unbelievable tokenization, friend!", "tokenization again", "x" * 101,
             "café au lait", "a b c d e"]
    for text in texts * 2:
        assert cache.ids(text) == want(tokenizer, text)
        assert len(cache._pieces) <= 3
    # the cached pieces are the tokenizer's, continuation pieces included
    one = WordPieceCache(tokenizer, 256)
    one.ids("tokenization")
    assert one._pieces == {"tokenization": tuple(
        tokenizer.encode("tokenization", add_special_tokens=False).ids)}
    assert len(one._pieces["tokenization"]) > 1


def test_reference_texts(tokenizer: Tokenizer) -> None:
    texts = json.loads(FIXTURE.read_text(encoding="utf-8"))["texts"]
    cache = WordPieceCache(tokenizer, 256)
    for text in texts:
        assert cache.ids(text) == want(tokenizer, text)


@pytest.mark.parametrize("max_tokens", [2, 3, 16, 256])
@pytest.mark.parametrize("text", ["word " * 300, "unbelievably " * 40, "a, b. " * 100, "",
                                  "short one"])
def test_truncation_cuts_where_the_tokenizers_does(max_tokens: int, text: str) -> None:
    tokenizer = MiniLMEmbedder._load_tokenizer(max_tokens)
    got = WordPieceCache(tokenizer, max_tokens).ids(text)
    assert got == want(tokenizer, text)
    assert len(got) <= max_tokens
