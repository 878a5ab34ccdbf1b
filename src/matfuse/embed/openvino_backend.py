"""OpenVINO CPU runtime for text encoders: the same weights, in fp32, ~1.15x torch eager on CPU.

:func:`compile_encoder` converts the loaded ``transformers`` model (its ``last_hidden_state``
for ``input_ids`` + ``attention_mask`` [+ ``token_type_ids``], both axes dynamic) with
``openvino.convert_model`` and compiles it for the CPU with

* ``INFERENCE_PRECISION_HINT=f32`` -- OpenVINO otherwise runs in bf16 on CPUs that have it,
  which would move embeddings by ~1e-2; in f32 they match torch to ~5e-7;
* one single-threaded *stream* per thread: batches run concurrently, one per core, which keeps
  both cores of a small machine busy through the non-GEMM parts of the network that do not
  scale with intra-op threads (measured on 2 cores, 512-token texts: 17-18 texts/s vs 15-16 for
  torch eager with 2 threads; see bench/bench_embed.py);
* ``ENABLE_CPU_PINNING=False`` -- several jobs of a workflow may share a node, and pinned threads
  of two processes would land on the same cores.

:func:`run_batches` feeds batches through an ``AsyncInferQueue`` with one request per stream.
The compiled model is memoised per process (encoder identity, streams).

Used by :func:`matfuse.embed.text.embed_texts` when ``EncoderConfig.backend`` is ``openvino``, or
``auto`` on a CPU with the ``openvino`` package importable.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from matfuse.embed.encoder import ResolvedEncoder

log = logging.getLogger(__name__)

_MEMO: dict[tuple[str, int], "OVEncoder"] = {}
_LOCK = threading.Lock()


class OpenVINOUnavailableError(RuntimeError):
    """The OpenVINO backend was asked for but cannot be used here."""


def available() -> bool:
    """Whether the ``openvino`` package can be imported."""
    return importlib.util.find_spec("openvino") is not None


@dataclass
class OVEncoder:
    """A compiled encoder: ``compiled`` takes int64 ``input_names`` arrays [b, t], returns [b, t, h]."""

    compiled: Any
    input_names: tuple[str, ...]
    streams: int


def _input_names(tokenizer: Any, model: Any) -> tuple[str, ...]:
    names = ["input_ids", "attention_mask"]
    wants_tt = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    if wants_tt and getattr(model.config, "type_vocab_size", 0):
        names.append("token_type_ids")
    return tuple(names)


def compile_encoder(resolved: ResolvedEncoder, tokenizer: Any, model: Any, streams: int) -> OVEncoder:
    """Convert and compile ``model`` (a loaded ``transformers`` encoder) for ``streams`` CPU streams."""
    key = (resolved.identity + "|" + str(resolved.path), int(streams))
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        if not available():
            raise OpenVINOUnavailableError(
                "EncoderConfig.backend is 'openvino' but the 'openvino' package is not installed "
                "(pip install openvino, or set backend: torch)"
            )
        import openvino as ov
        import torch

        names = _input_names(tokenizer, model)

        class _LastHidden(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
                kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
                return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state

        t0 = time.perf_counter()
        example = {n: torch.zeros(2, 8, dtype=torch.long) if n == "token_type_ids" else torch.ones(2, 8, dtype=torch.long) for n in names}
        example["attention_mask"][1, 5:] = 0  # a padded row, so the masked attention path is traced
        try:
            with torch.no_grad():
                converted = ov.convert_model(
                    _LastHidden(model).eval(),
                    example_input=example,
                    input=[(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names],
                )
            compiled = ov.Core().compile_model(
                converted,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": "f32",
                    "PERFORMANCE_HINT": "THROUGHPUT",
                    "NUM_STREAMS": int(streams),
                    "INFERENCE_NUM_THREADS": int(streams),
                    "ENABLE_CPU_PINNING": False,
                },
            )
        except Exception as exc:  # conversion of an unusual architecture
            raise OpenVINOUnavailableError(
                f"cannot convert encoder {resolved.spec!r} ({type(model).__name__}) to OpenVINO: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        dt = time.perf_counter() - t0
        enc = OVEncoder(compiled, names, int(streams))
        log.info(
            "OpenVINO %s: compiled %s for %d CPU stream(s) in %.1f s (f32)",
            ov.get_version(),
            resolved.spec,
            streams,
            dt,
        )
        _MEMO[key] = enc
        return enc


def run_batches(
    enc: OVEncoder,
    batches: Iterable[tuple[Any, dict[str, np.ndarray]]],
    on_result: Callable[[Any, np.ndarray], None],
) -> None:
    """Run every ``(tag, feeds)`` of ``batches`` and call ``on_result(tag, last_hidden_state)``.

    Up to ``enc.streams`` batches are in flight at once; ``on_result`` runs on an OpenVINO
    thread (one at a time per request) and must not keep the array (it is reused). The first
    error raised by ``on_result`` is re-raised here after the queue drains.
    """
    import openvino as ov

    errors: list[BaseException] = []
    lock = threading.Lock()

    def _done(request: Any, tag: Any) -> None:
        try:
            on_result(tag, request.get_output_tensor(0).data)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread below
            with lock:
                errors.append(exc)

    queue = ov.AsyncInferQueue(enc.compiled, enc.streams)
    queue.set_callback(_done)
    for tag, feeds in batches:
        if errors:
            break
        queue.start_async({n: feeds[n] for n in enc.input_names}, tag)
    queue.wait_all()
    if errors:
        raise errors[0]


__all__ = ["OVEncoder", "OpenVINOUnavailableError", "available", "compile_encoder", "run_batches"]
