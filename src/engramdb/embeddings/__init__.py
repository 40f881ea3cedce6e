"""Embedding models: the Embedder port, the default MiniLM adapter and the micro-batcher."""

from engramdb.embeddings.base import Embedder, EmbedResult
from engramdb.embeddings.batching import BatcherStats, MicroBatcher
from engramdb.embeddings.onnx_minilm import (
    MiniLMEmbedder,
    ModelIntegrityError,
    load_default_embedder,
    minilm_from_settings,
)

__all__ = [
    "BatcherStats",
    "EmbedResult",
    "Embedder",
    "MicroBatcher",
    "MiniLMEmbedder",
    "ModelIntegrityError",
    "load_default_embedder",
    "minilm_from_settings",
]
