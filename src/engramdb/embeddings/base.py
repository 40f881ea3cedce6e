"""The embedder port: what the core needs from any embedding model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Vectors in input order, L2-normalised float32 of shape (n, dimension), and the
    number of tokens each text used (special tokens included, padding excluded)."""

    vectors: Vectors
    tokens: list[int]

    @property
    def tokens_used(self) -> int:
        return sum(self.tokens)


@runtime_checkable
class Embedder(Protocol):
    #: A stable name recorded next to every vector, e.g. "all-MiniLM-L6-v2".
    model_name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> EmbedResult:
        """Embed texts; thread-safe."""
        ...

    def close(self) -> None: ...
