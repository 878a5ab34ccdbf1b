"""Text embeddings: a Hugging Face encoder over the robocrys descriptions of each material.

Stage: :func:`embed_dataset` reads ``results/text/{dataset}/texts.parquet``, embeds the column
``text_{variant}`` and writes ``results/embeddings/{dataset}/{encoder}/{variant}-{pooling}.parquet``
(``material_id``, ``embedding`` fixed_size_list<float32>[d], ``n_tokens`` int32 -- tokens
encoded, at most ``max_length`` --, ``truncated`` bool -- the text had more --, plus key-value
metadata naming the encoder). Vectors are cached per text (see
:mod:`matfuse.embed.cache`), so reruns, other variants and other datasets only compute new texts.

Encoders: see :mod:`matfuse.embed.encoder` (``packaged:minilm`` offline default; the MatMMFuse
paper uses ``allenai/scibert_scivocab_uncased`` with ``cls`` pooling and 512 tokens).

Speed (:func:`embed_texts`): texts are tokenised once, long ones only as far as the encoder
reads them (a prefix cut at whitespace, see :func:`tokenize`), sorted by length and cut into batches that are padded only to their own
longest member (not to ``max_length``). On a CPU with the ``openvino`` package (``backend: auto``,
the default) the encoder runs in OpenVINO in fp32, one single-threaded stream per thread with a
batch of up to :data:`OPENVINO_BATCH` texts per stream (:mod:`matfuse.embed.openvino_backend`);
otherwise (GPU, ``backend: torch``) in torch under ``torch.inference_mode()`` with a bounded
number of threads, full batches without an attention mask. Either way the result equals the naive
loop (:func:`reference_embed_texts`: fixed batches padded to ``max_length``) to ~1e-6; see
``bench/bench_embed.py``.

Pooling: ``cls`` = hidden state of the first token; ``mean`` = mean of the hidden states of the
real tokens (padding masked out; this is sentence-transformers' mean pooling, before any
normalisation).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from matfuse.config import EncoderConfig
from matfuse.embed.cache import EmbeddingCache, bad_vector_rows, embedding_table, text_sha256, vectors_of
from matfuse.embed.encoder import ResolvedEncoder, load_encoder, resolve_encoder
from matfuse.io import rejects_frame, write_parquet

log = logging.getLogger(__name__)

STAGE = "embed"


def _device(device: str) -> str:
    """The kit's one device rule (``auto`` -> CUDA when present; ``cuda`` without a GPU is an error)."""
    from matfuse.kit import resolve_device

    return str(resolve_device(device))


# --------------------------------------------------------------------------- tokenisation
@dataclass
class Tokenized:
    """The token ids the encoder sees per text (truncated to ``max_length``, special tokens added).

    ``n_tokens``: their number; ``truncated``: the text has more tokens than fit; ``coverage``:
    fraction of the text's characters those tokens cover (1.0 when not truncated, NaN where the
    tokenizer gives no offsets).
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    n_tokens: np.ndarray
    truncated: np.ndarray
    coverage: np.ndarray


#: Texts tokenised per call: bounds the memory of the tokenizer's per-token bookkeeping.
TOKENIZE_CHUNK = 256
#: First prefix tried per text, in characters per token of the budget (robocrys text has ~2.7,
#: English prose ~4-5); a prefix that turns out too short is retried 4x longer.
PREFIX_CHARS_PER_TOKEN = 4
#: Tokens a prefix must give beyond the budget before its first ``max_length`` tokens are used.
PREFIX_MARGIN = 16

_WHITESPACE = re.compile(r"\s")
#: Pre-tokenizers that split at every whitespace character (no token spans one).
_SPLITTING_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}


def _splits_at_whitespace(backend: Any) -> bool:
    """Whether no token of this fast tokenizer spans whitespace, so that tokenising a prefix of a
    text cut at whitespace gives the same leading tokens as tokenising the whole text.

    True for BERT/WordPiece, byte-level BPE (RoBERTa, GPT-2) and Metaspace (SentencePiece)
    pre-tokenizers, unless a ``Replace`` normaliser could rewrite whitespace first.
    """

    def splits(state: dict[str, Any]) -> bool:
        kind = state.get("type")
        if kind in _SPLITTING_PRE_TOKENIZERS:
            return True
        if kind == "ByteLevel":
            return bool(state.get("use_regex", True))
        if kind == "Metaspace":
            return bool(state.get("split", True))
        if kind == "Sequence":  # members only ever split further
            return any(splits(s) for s in state.get("pretokenizers", []))
        return False

    try:
        pre = backend.pre_tokenizer
        norm = backend.normalizer
        if pre is None or (norm is not None and '"Replace"' in norm.__getstate__().decode()):
            return False
        return splits(json.loads(pre.__getstate__()))
    except Exception:  # noqa: BLE001 -- an unknown tokenizer: tokenise whole texts
        return False


def _prefix(text: str, chars: float) -> str:
    """``text`` cut at the first whitespace at or after ``chars`` characters (all of it if none)."""
    if len(text) <= chars:
        return text
    m = _WHITESPACE.search(text, int(chars))
    return text[: m.start()] if m else text


def _encode_prefixes(texts: list[str], tokenizer: Any, budget: int, first: float) -> list[Any]:
    """Encodings (no special tokens, untruncated) of a prefix of each text (see :func:`_prefix`),
    starting at ``first`` characters and 4x longer until it is the whole text or gives more than
    ``budget`` + :data:`PREFIX_MARGIN` tokens."""
    encodings: list[Any] = [None] * len(texts)
    window = [first] * len(texts)
    pending = list(range(len(texts)))
    while pending:
        prefixes = [_prefix(texts[j], window[j]) for j in pending]
        batch = tokenizer(
            prefixes,
            add_special_tokens=False,
            truncation=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        ).encodings
        retry = []
        for j, p, e in zip(pending, prefixes, batch):
            if len(p) == len(texts[j]) or len(e) > budget + PREFIX_MARGIN:
                encodings[j] = e
            else:  # too few tokens in this prefix to trust its first `budget`
                window[j] *= 4
                retry.append(j)
        pending = retry
    return encodings


def tokenize(texts: list[str], tokenizer: Any, max_length: int) -> Tokenized:
    """Tokenise with truncation to ``max_length``: ids equal ``tokenizer(text, truncation=True,
    max_length=max_length)["input_ids"]``.

    Fast tokenizers whose tokens never span whitespace (:func:`_splits_at_whitespace`) only
    tokenise a prefix of each long text, cut at whitespace, long enough to give
    :data:`PREFIX_MARGIN` tokens beyond the budget (most robocrys texts have 3x more tokens
    than fit in 512: tokenising them whole is 3/4 wasted work). Each encoding is then truncated and
    post-processed by the tokenizer's own ``Encoding.truncate`` + ``post_process``, the steps its
    ``truncation=True`` call runs. Other fast tokenizers encode whole texts the same way; slow
    ones take two passes.
    """
    n = len(texts)
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length <= n_special:
        raise ValueError(f"max_length={max_length} leaves no room next to {n_special} special tokens")
    budget = max_length - n_special
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    want_tt = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    truncated = np.zeros(n, dtype=bool)
    coverage = np.ones(n, dtype=np.float64)
    if backend is not None and n:
        ids: list[list[int]] = []
        tt: list[list[int]] | None = [] if want_tt else None
        first = (budget + PREFIX_MARGIN) * PREFIX_CHARS_PER_TOKEN if _splits_at_whitespace(backend) else np.inf
        for start in range(0, n, TOKENIZE_CHUNK):
            chunk = list(texts[start : start + TOKENIZE_CHUNK])
            encodings = _encode_prefixes(chunk, tokenizer, budget, first)
            for j, e in enumerate(encodings):
                i = start + j
                if len(e) > budget:
                    truncated[i] = True
                    e.truncate(budget)
                    coverage[i] = e.offsets[-1][1] / max(len(chunk[j]), 1)
                final = backend.post_process(e, None, add_special_tokens=True)
                ids.append(final.ids)
                if tt is not None:
                    tt.append(final.type_ids)
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False)
        full = tokenizer(texts, truncation=False, return_attention_mask=False, return_token_type_ids=False)
        truncated = np.fromiter((len(x) > max_length for x in full["input_ids"]), dtype=bool, count=n)
        coverage[truncated] = np.nan
        ids = list(enc["input_ids"])
        tt = list(enc["token_type_ids"]) if "token_type_ids" in enc else None
    n_tokens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    return Tokenized(ids, tt, n_tokens, truncated, coverage)


# --------------------------------------------------------------------------- pooling
def pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """Pool token states ``hidden`` [b, t, h] with attention ``mask`` [b, t] into [b, h].

    ``cls``: first token. ``mean``: average over positions where ``mask`` is 1 (padding excluded).
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown pooling {pooling!r} (expected 'cls' or 'mean')")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run torch with ``threads`` intra-op threads (default: the CPUs this process may use,
    capped by torch's own default), restoring the previous setting afterwards."""
    import torch

    prev = torch.get_num_threads()
    if threads is None:
        try:
            avail = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            avail = os.cpu_count() or 1
        threads = prev if os.environ.get("OMP_NUM_THREADS") else max(1, min(prev, avail))
    if threads != prev:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if threads != prev:
            torch.set_num_threads(prev)


def check_max_length(cfg: EncoderConfig, tokenizer: Any, model: Any) -> None:
    """Refuse a ``max_length`` beyond what the encoder's position embeddings can take."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limit = min((int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000), default=None)
    if limit is not None and cfg.max_length > limit:
        raise ValueError(f"max_length={cfg.max_length} exceeds what encoder {cfg.model!r} accepts ({limit} tokens)")


def _pad(seqs: list[list[int]], length: int, value: int) -> np.ndarray:
    out = np.full((len(seqs), length), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


# --------------------------------------------------------------------------- embedding
#: Texts per OpenVINO request (one request per stream is in flight).
OPENVINO_BATCH = 8


def pick_backend(backend: str, device: str) -> str:
    """``auto`` -> ``openvino`` on a CPU where the package is installed, else ``torch``."""
    from matfuse.embed import openvino_backend

    if backend == "auto":
        return "openvino" if device == "cpu" and openvino_backend.available() else "torch"
    if backend == "openvino" and device != "cpu":
        raise ValueError(f"EncoderConfig.backend 'openvino' runs on the CPU only, not on {device!r}")
    return backend


def embed_texts(
    texts: list[str],
    cfg: EncoderConfig,
    device: str = "auto",
    *,
    threads: int | None = None,
    progress: bool = True,
    resolved: ResolvedEncoder | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed ``texts`` with the encoder of ``cfg``.

    Returns ``(embeddings float32 [n, d], n_tokens int64 [n], truncated bool [n])`` in input
    order; ``n_tokens`` counts the tokens encoded, special tokens included (at most
    ``cfg.max_length``); ``truncated`` marks texts that had more (only their first
    ``max_length`` tokens were encoded; the log says what share of their characters that was).
    """
    import torch

    resolved = resolved or resolve_encoder(cfg.model, cfg.allow_download)
    dev = _device(device)
    tokenizer, model = load_encoder(resolved, dev)
    dim = int(model.config.hidden_size)
    check_max_length(cfg, tokenizer, model)
    n = len(texts)
    if n == 0:
        return np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)

    t0 = time.perf_counter()
    tok = tokenize(list(texts), tokenizer, cfg.max_length)
    t_tok = time.perf_counter() - t0
    lengths = np.fromiter((len(x) for x in tok.input_ids), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")  # longest first: peak memory shows up at once
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.empty((n, dim), dtype=np.float32)

    backend = pick_backend(cfg.backend, dev)

    def batches(size: int) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        for start in range(0, n, size):
            idx = order[start : start + size]
            blen = lengths[idx]
            width = int(blen.max())
            mask = (np.arange(width)[None, :] < blen[:, None]).astype(np.int64)
            feeds = {"input_ids": _pad([tok.input_ids[i] for i in idx], width, pad_id), "attention_mask": mask}
            if tok.token_type_ids is not None:
                feeds["token_type_ids"] = _pad([tok.token_type_ids[i] for i in idx], width, 0)
            yield idx, mask, feeds

    bar = tqdm(total=n, unit="text", desc=f"embed {cfg.model}", disable=not progress, leave=False)
    with torch_threads(threads) as nthreads, torch.inference_mode():
        if backend == "openvino":
            from matfuse.embed import openvino_backend

            try:
                enc = openvino_backend.compile_encoder(resolved, tokenizer, model, streams=nthreads)
            except openvino_backend.OpenVINOUnavailableError as exc:
                if cfg.backend != "auto":
                    raise
                log.warning("%s; embedding with torch instead", exc)
                backend = "torch"
        if backend == "openvino":

            def on_result(tag: tuple[np.ndarray, np.ndarray], hidden: np.ndarray) -> None:
                idx, mask = tag
                out[idx] = pool(torch.from_numpy(hidden), torch.from_numpy(mask), cfg.pooling).numpy()
                bar.update(len(idx))

            # Small requests, one per stream in flight: both cores stay busy to the last batch.
            openvino_backend.run_batches(
                enc,
                (((idx, mask), feeds) for idx, mask, feeds in batches(min(cfg.batch_size, OPENVINO_BATCH))),
                on_result,
            )
        else:
            for idx, mask, feeds in batches(cfg.batch_size):
                inputs = {k: torch.from_numpy(v).to(dev) for k, v in feeds.items()}
                if bool(mask.all()):
                    del inputs["attention_mask"]  # full batch: no mask needed
                hidden = model(**inputs).last_hidden_state
                out[idx] = pool(hidden.float(), torch.from_numpy(mask).to(dev), cfg.pooling).cpu().numpy()
                bar.update(len(idx))
    bar.close()
    dt = time.perf_counter() - t0
    log.info(
        "embedded %d texts in %.1f s (%.1f texts/s; tokenising %.1f s; %d truncated at %d tokens, "
        "keeping %s of their characters on average; %s backend, %d threads on %s)",
        n,
        dt,
        n / dt if dt else float("inf"),
        t_tok,
        int(tok.truncated.sum()),
        cfg.max_length,
        _share(tok.coverage[tok.truncated]),
        backend,
        nthreads,
        dev,
    )
    return out, tok.n_tokens, tok.truncated


def _share(fractions: np.ndarray) -> str:
    """Mean of ``fractions`` as a percentage ('n/a' when empty or unknown)."""
    known = fractions[np.isfinite(fractions)]
    return f"{100 * known.mean():.0f} %" if len(known) else "n/a"


def reference_embed_texts(
    texts: list[str], cfg: EncoderConfig, device: str = "cpu", *, threads: int | None = None
) -> np.ndarray:
    """Naive reference: fixed batches in input order, each padded to ``max_length``, ``no_grad``.

    Used by the tests and the benchmark to check :func:`embed_texts`.
    """
    import torch

    resolved = resolve_encoder(cfg.model, cfg.allow_download)
    dev = _device(device)
    tokenizer, model = load_encoder(resolved, dev)
    chunks = []
    with torch_threads(threads), torch.no_grad():
        for start in range(0, len(texts), cfg.batch_size):
            enc = tokenizer(
                list(texts[start : start + cfg.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=cfg.max_length,
                return_tensors="pt",
            ).to(dev)
            hidden = model(**enc).last_hidden_state
            chunks.append(pool(hidden.float(), enc["attention_mask"], cfg.pooling).cpu().numpy())
    dim = int(model.config.hidden_size)
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)


# --------------------------------------------------------------------------- stage
@dataclass
class EmbedReport:
    """What :func:`embed_dataset` did."""

    n_rows: int
    n_unique_texts: int
    cache_hits: int
    cache_misses: int
    seconds: float
    out_path: Path
    rejects: pd.DataFrame = field(default_factory=rejects_frame)


def embed_dataset(
    texts_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    variant: str,
    encoder_name: str,
    cfg: EncoderConfig,
    device: str = "auto",
    *,
    threads: int | None = None,
    rejects_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> EmbedReport:
    """Embed column ``text_{variant}`` of ``texts_path`` and write the embedding table ``out_path``.

    Rows whose text is missing or blank are not embedded: they are logged and returned (and
    written to ``rejects_path`` when given) as rejects with stage ``embed``; so are rows whose text
    the encoder turns into a non-finite vector (never cached). Vectors come from the cache under
    ``cfg.cache_dir`` when present (damaged cached rows count as misses, see
    :meth:`EmbeddingCache.lookup`); new ones are computed and appended to it.
    """
    t0 = time.perf_counter()
    column = f"text_{variant}"
    schema = pq.read_schema(texts_path)
    if "material_id" not in schema.names or column not in schema.names:
        raise KeyError(f"{texts_path}: needs columns 'material_id' and {column!r}; found {schema.names}")
    df = pq.read_table(texts_path, columns=["material_id", column]).to_pandas()
    if df["material_id"].isna().any():
        raise ValueError(f"{texts_path}: {int(df['material_id'].isna().sum())} rows have no material_id")
    ids = df["material_id"].astype(str)
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise ValueError(f"{texts_path}: duplicated material_id {list(dup[:5])} ({len(dup)} in all)")

    texts = df[column]
    blank = texts.isna() | texts.astype(str).str.strip().eq("")
    rejects = rejects_frame(
        [{"material_id": m, "stage": STAGE, "reason": f"empty {column}"} for m in ids[blank]]
    )
    if len(rejects):
        log.warning(
            "%d of %d entries have no %s and are left out: %s",
            len(rejects),
            len(df),
            column,
            ", ".join(rejects["material_id"].head(20)),
        )
    keep = ~blank.to_numpy()
    ids_kept = ids[keep].tolist()
    texts_kept = texts[keep].astype(str).tolist()
    hashes = [text_sha256(t) for t in texts_kept]

    resolved = resolve_encoder(cfg.model, cfg.allow_download)
    # Hub snapshots are named after the repo; local checkpoints only by content, so that
    # 'packaged:minilm' and the same folder given as a path share one cache.
    label = resolved.spec if resolved.source == "hub" else "ckpt"
    cache = EmbeddingCache(cfg.cache_dir, resolved.identity, cfg.pooling, cfg.max_length, label=label)
    unique: dict[str, str] = {}
    for h, t in zip(hashes, texts_kept):
        unique.setdefault(h, t)
    cached = cache.lookup(unique, dim=encoder_width(resolved))
    vec: dict[str, tuple[np.ndarray, int, bool]] = {
        h: (cached.embeddings[i], int(cached.n_tokens[i]), bool(cached.truncated[i]))
        for i, h in enumerate(cached.hashes)
    }
    missing = [h for h in unique if h not in vec]
    log.info(
        "%s/%s %s: %d rows, %d distinct texts, cache hits %d, misses %d (cache %s)",
        encoder_name,
        variant,
        cfg.pooling,
        len(ids_kept),
        len(unique),
        len(unique) - len(missing),
        len(missing),
        cache.dir,
    )
    if missing:
        emb, n_tok, trunc = embed_texts(
            [unique[h] for h in missing], cfg, device, threads=threads, progress=progress, resolved=resolved
        )
        bad = bad_vector_rows(emb)
        good = np.flatnonzero(~bad)
        nonfinite = {missing[i] for i in np.flatnonzero(bad)}
        cache.append([missing[i] for i in good], emb[good], n_tok[good], trunc[good])
        for i in good:
            vec[missing[i]] = (emb[i], int(n_tok[i]), bool(trunc[i]))
        if nonfinite:
            rejects = _reject_nonfinite(rejects, ids_kept, hashes, nonfinite, column)
            kept = [h not in nonfinite for h in hashes]
            ids_kept = [m for m, k in zip(ids_kept, kept) if k]
            hashes = [h for h, k in zip(hashes, kept) if k]

    dims = {v[0].shape[0] for v in vec.values()}
    if len(dims) > 1:
        raise RuntimeError(f"cache {cache.dir} mixes embedding sizes {sorted(dims)}; delete it and rerun")
    if hashes:
        dim = dims.pop()
        matrix = np.stack([vec[h][0] for h in hashes]).astype(np.float32, copy=False)
    else:
        dim = encoder_width(resolved) or int(load_encoder(resolved, _device(device))[1].config.hidden_size)
        matrix = np.zeros((0, dim), np.float32)
    table = embedding_table(
        "material_id",
        ids_kept,
        matrix,
        np.array([vec[h][1] for h in hashes], dtype=np.int32),
        np.array([vec[h][2] for h in hashes], dtype=bool),
    )
    meta = {
        "encoder_name": encoder_name,
        "encoder_model": cfg.model,
        "encoder_identity": resolved.identity,
        "pooling": cfg.pooling,
        "max_length": str(cfg.max_length),
        "dim": str(dim),
        "variant": variant,
        "text_column": column,
    }
    table = table.replace_schema_metadata({k: str(v) for k, v in meta.items()})
    write_parquet(table, out_path)
    if rejects_path is not None:
        write_parquet(rejects, rejects_path)
    dt = time.perf_counter() - t0
    log.info("wrote %s (%d x %d) in %.1f s", out_path, len(ids_kept), dim, dt)
    return EmbedReport(
        n_rows=len(ids_kept),
        n_unique_texts=len(unique),
        cache_hits=len(unique) - len(missing),
        cache_misses=len(missing),
        seconds=dt,
        out_path=Path(out_path),
        rejects=rejects,
    )


def encoder_width(resolved: ResolvedEncoder) -> int | None:
    """``hidden_size`` of the encoder's ``config.json`` (the width of its pooled vectors), or None
    when the config does not say; lets the cache skip parts of another width before any compute."""
    try:
        width = json.loads((Path(resolved.path) / "config.json").read_text(encoding="utf-8")).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return None
    return width if isinstance(width, int) and width > 0 else None


def _reject_nonfinite(
    rejects: pd.DataFrame, ids: list[str], hashes: list[str], nonfinite: set[str], column: str
) -> pd.DataFrame:
    """``rejects`` plus one row per entry whose text the encoder turned into NaN/inf (logged)."""
    rows = [
        {"material_id": m, "stage": STAGE, "reason": f"encoder gave non-finite values (NaN/inf) for {column} (text_sha256 {h})"}
        for m, h in zip(ids, hashes)
        if h in nonfinite
    ]
    log.warning(
        "%d entries are left out: the encoder gave non-finite vectors for their %s (not cached): %s",
        len(rows),
        column,
        ", ".join(r["material_id"] for r in rows[:20]),
    )
    return rejects_frame(rejects.to_dict("records") + rows)


def load_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read an embedding table: (material ids, float32 matrix [n, d]) in file order."""
    table = pq.read_table(path, columns=["material_id", "embedding"])
    return [str(x) for x in table["material_id"].to_pylist()], vectors_of(table["embedding"])


def embedding_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Key-value metadata of an embedding table (encoder_model, pooling, max_length, dim, ...)."""
    raw = pq.read_schema(path).metadata or {}
    meta: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for key in ("max_length", "dim"):
        if key in meta:
            meta[key] = int(meta[key])
    return meta


__all__ = [
    "EmbedReport",
    "Tokenized",
    "embed_dataset",
    "embed_texts",
    "embedding_metadata",
    "load_embeddings",
    "pool",
    "reference_embed_texts",
    "tokenize",
    "torch_threads",
]
