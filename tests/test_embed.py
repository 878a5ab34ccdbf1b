"""Text embeddings on real robocrys descriptions with the packaged MiniLM encoder (offline).

The model runs on CPU; to stay fast most checks use ``max_length=128`` on 20 real texts chosen
so that some are padded (< 128 tokens) and some are truncated (several > 512 tokens); the
sentence-transformers comparison runs at 512 tokens on texts longer and shorter than that.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from matfuse.config import EncoderConfig  # noqa: E402
from matfuse.embed import text as embed_text  # noqa: E402
from matfuse.embed.encoder import (  # noqa: E402
    EncoderUnavailableError,
    load_encoder,
    packaged_path,
    resolve_encoder,
)
from matfuse.embed.text import (  # noqa: E402
    embed_dataset,
    embed_texts,
    embedding_metadata,
    load_embeddings,
    pool,
    reference_embed_texts,
    tokenize,
)

MODEL = "packaged:minilm"
SHORT_L = 128


@pytest.fixture(scope="module")
def robocrys(shared_data: Path) -> list[tuple[str, str]]:
    """(id, robocrys_text) of the real 1000-sample file."""
    path = shared_data / "text_matmmfuse_robocrys" / "matmmfuse_sample_1000_cif_robocrys.jsonl.gz"
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            rec = json.loads(line)
            rows.append((f"robo-{rec['id']}", rec["robocrys_text"]))
    return rows


@pytest.fixture(scope="module")
def encoder():
    resolved = resolve_encoder(MODEL)
    tokenizer, model = load_encoder(resolved, "cpu")
    return resolved, tokenizer, model


@pytest.fixture(scope="module")
def sample(robocrys, encoder) -> list[tuple[str, str]]:
    """20 real texts: 8 under 128 tokens, 4 between 128 and 512, 8 over 512 (file order)."""
    _, tokenizer, _ = encoder
    head = robocrys[:400]
    full = [len(x) for x in tokenizer([t for _, t in head])["input_ids"]]
    short = [r for r, n in zip(head, full) if n < SHORT_L][:8]
    mid = [r for r, n in zip(head, full) if SHORT_L < n <= 512][:4]
    long = [r for r, n in zip(head, full) if n > 512][:8]
    assert len(short) == 8 and len(mid) == 4 and len(long) == 8
    # interleave so that input order is not length order
    first = [r for trio in zip(long[:4], short[:4], mid) for r in trio]
    return first + [r for pair in zip(long[4:], short[4:]) for r in pair]


def _cfg(tmp_path: Path | None = None, **kw) -> EncoderConfig:
    base = {"model": MODEL, "max_length": SHORT_L, "batch_size": 4}
    if tmp_path is not None:
        base["cache_dir"] = str(tmp_path / "cache")
    base.update(kw)
    return EncoderConfig(**base)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bucketed_equals_naive_padding(sample, pooling, backend):
    texts = [t for _, t in sample]
    cfg = _cfg(pooling=pooling, backend=backend)
    emb, n_tok, trunc = embed_texts(texts, cfg, device="cpu", progress=False)
    ref = reference_embed_texts(texts, cfg, device="cpu")
    assert emb.dtype == np.float32 and emb.shape == (len(texts), 384)
    # the sample really mixes padded and truncated texts at this max_length
    assert trunc.any() and (n_tok < SHORT_L).sum() >= 4
    assert np.isfinite(emb).all()
    assert float(np.abs(emb - ref).max()) <= 1e-5
    # rows are not interchangeable: each text got its own vector back in input order
    assert float(np.abs(emb[0] - emb[1]).max()) > 1e-3


def test_auto_backend_is_openvino_on_cpu_and_torch_elsewhere():
    from matfuse.embed.text import pick_backend

    assert pick_backend("auto", "cpu") == "openvino"
    assert pick_backend("auto", "cuda") == "torch"
    assert pick_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        pick_backend("openvino", "cuda")


def test_token_counts_and_truncation(sample, encoder):
    _, tokenizer, _ = encoder
    texts = [t for _, t in sample]
    tok = tokenize(texts, tokenizer, 512)
    full = [len(tokenizer(t, truncation=False)["input_ids"]) for t in texts]
    assert tok.n_tokens.tolist() == [min(n, 512) for n in full]
    assert tok.truncated.tolist() == [n > 512 for n in full]
    assert tok.truncated.sum() == 8 and (~tok.truncated).sum() == 12
    for t, ids in zip(texts, tok.input_ids):
        assert ids == tokenizer(t, truncation=True, max_length=512)["input_ids"]
        assert len(ids) <= 512
    # coverage: the encoded tokens span that share of the characters of a truncated text
    assert (tok.coverage[~tok.truncated] == 1.0).all()
    for t, cov in zip(np.array(texts, dtype=object)[tok.truncated], tok.coverage[tok.truncated]):
        assert 0 < cov < 1
        head = t[: round(cov * len(t))]
        assert tokenizer(head)["input_ids"] == tokenizer(t, truncation=True, max_length=512)["input_ids"]


@pytest.mark.parametrize("max_length", [512, 128])
def test_prefix_tokenisation_matches_whole_texts_on_all_real_texts(robocrys, encoder, max_length):
    """Long texts are tokenised only as far as the budget (cut at whitespace): ids must equal the
    tokenizer's own truncation of the whole text, for every one of the 987 real descriptions."""
    _, tokenizer, _ = encoder
    texts = [t for _, t in robocrys]
    tok = tokenize(texts, tokenizer, max_length)
    ref = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    assert tok.input_ids == ref
    full = np.array([len(x) for x in tokenizer(texts)["input_ids"]])
    assert tok.truncated.tolist() == (full > max_length).tolist()
    assert tok.n_tokens.tolist() == np.minimum(full, max_length).tolist()


def test_prefix_too_short_is_retried_longer(sample, encoder, monkeypatch):
    """A first prefix far too short (0.05 characters per token) must be lengthened, not used."""
    _, tokenizer, _ = encoder
    texts = [t for _, t in sample]
    cuts: list[float] = []
    real_prefix = embed_text._prefix

    def spy(text, chars):
        cuts.append(chars)
        return real_prefix(text, chars)

    monkeypatch.setattr(embed_text, "PREFIX_CHARS_PER_TOKEN", 0.05)
    monkeypatch.setattr(embed_text, "_prefix", spy)
    tok = tokenize(texts, tokenizer, 128)
    assert len(cuts) > 2 * len(texts), "the short prefixes were not retried"
    assert tok.input_ids == tokenizer(texts, truncation=True, max_length=128)["input_ids"]


def test_which_tokenizers_may_be_cut_at_whitespace(encoder):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from matfuse.embed.text import _splits_at_whitespace

    _, tokenizer, _ = encoder
    assert _splits_at_whitespace(tokenizer.backend_tokenizer)  # BERT WordPiece

    def backend(pre, norm=None):
        tk = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
        if pre is not None:
            tk.pre_tokenizer = pre
        if norm is not None:
            tk.normalizer = norm
        return tk

    assert _splits_at_whitespace(backend(pre_tokenizers.ByteLevel()))
    assert _splits_at_whitespace(backend(pre_tokenizers.Metaspace()))
    assert _splits_at_whitespace(backend(pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.Whitespace()])))
    assert not _splits_at_whitespace(backend(None))
    assert not _splits_at_whitespace(backend(pre_tokenizers.ByteLevel(use_regex=False)))
    assert not _splits_at_whitespace(backend(pre_tokenizers.Digits()))
    assert not _splits_at_whitespace(backend(pre_tokenizers.Whitespace(), normalizers.Replace(" ", "_")))


def test_masked_mean_ignores_padding(sample, encoder):
    _, tokenizer, model = encoder
    short = min((t for _, t in sample), key=len)
    longer = max((t for _, t in sample if len(tokenizer(t)["input_ids"]) < SHORT_L), key=len)
    enc = tokenizer([short, longer], padding=True, return_tensors="pt")
    mask = enc["attention_mask"]
    assert (mask[0] == 0).any(), "the short text must be padded in this batch"
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
        alone = tokenizer([short], return_tensors="pt")
        h_alone = model(**alone).last_hidden_state
    masked = pool(hidden, mask, "mean")[0]
    unmasked = hidden[0].mean(dim=0)
    reference = h_alone[0].mean(dim=0)  # no padding at all
    assert torch.allclose(masked, reference, atol=1e-5)
    assert float((unmasked - masked).abs().max()) > 1e-3
    cls = pool(hidden, mask, "cls")[0]
    assert torch.allclose(cls, h_alone[0, 0], atol=1e-5)


def test_mean_pooling_matches_sentence_transformers(sample):
    st_mod = pytest.importorskip("sentence_transformers")
    texts = [t for _, t in sample][:4]  # 2 over 512 tokens, 2 under
    st = st_mod.SentenceTransformer(str(packaged_path("minilm")), device="cpu")
    st.max_seq_length = 512
    unnormalised = st_mod.SentenceTransformer(modules=[st[0], st[1]], device="cpu")
    expected = unnormalised.encode(texts, batch_size=2, convert_to_numpy=True, normalize_embeddings=False)
    emb, n_tok, trunc = embed_texts(texts, _cfg(max_length=512, pooling="mean"), device="cpu", progress=False)
    assert trunc.tolist() == [True, False, False, True]
    assert np.abs(emb - expected).max() <= 1e-5


def _texts_table(rows: list[tuple[str, str]], path: Path) -> Path:
    df = pd.DataFrame(
        {
            "material_id": [m for m, _ in rows],
            "text_all": [t for _, t in rows],
            "text_key": [t.split(". ")[0] + "." for _, t in rows],
            "text_single": [t.split(". ")[0] + "." for _, t in rows],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def test_embed_dataset_writes_table_and_reuses_cache(sample, tmp_path, monkeypatch):
    rows = sample[:10]
    rows_with_blank = rows + [("robo-blank", "   ")]
    texts_a = _texts_table(rows_with_blank, tmp_path / "text" / "a" / "texts.parquet")
    cfg = _cfg(tmp_path, max_length=64, pooling="mean")
    out1 = tmp_path / "emb" / "a" / "minilm" / "all-mean.parquet"

    rep1 = embed_dataset(texts_a, out1, "all", "minilm", cfg, device="cpu", progress=False)
    assert rep1.cache_misses == 10 and rep1.cache_hits == 0
    assert rep1.rejects["material_id"].tolist() == ["robo-blank"]
    assert "empty text_all" in rep1.rejects["reason"].iloc[0]

    schema = pq.read_schema(out1)
    assert schema.field("material_id").type == pa.string()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert schema.field("n_tokens").type == pa.int32()
    assert schema.field("truncated").type == pa.bool_()
    meta = embedding_metadata(out1)
    assert meta["encoder_model"] == MODEL and meta["pooling"] == "mean"
    assert meta["max_length"] == 64 and meta["dim"] == 384

    ids, matrix = load_embeddings(out1)
    assert ids == [m for m, _ in rows]
    direct, n_tok, trunc = embed_texts([t for _, t in rows], cfg, device="cpu", progress=False)
    assert np.abs(matrix - direct).max() <= 1e-5
    table = pq.read_table(out1)
    assert table["n_tokens"].to_pylist() == n_tok.tolist()
    assert table["truncated"].to_pylist() == trunc.tolist()

    parts = sorted((tmp_path / "cache").rglob("part-*.parquet"))
    assert len(parts) == 1
    first_part = parts[0].read_bytes()

    # rerun (and 'packaged:minilm' given as its folder path): nothing is computed
    def forbidden(*a, **k):
        raise AssertionError("embed_texts called although every text is cached")

    monkeypatch.setattr(embed_text, "embed_texts", forbidden)
    cfg_path = _cfg(tmp_path, max_length=64, pooling="mean", model=str(packaged_path("minilm")))
    out2 = tmp_path / "emb" / "a" / "minilm" / "rerun.parquet"
    rep2 = embed_dataset(texts_a, out2, "all", "minilm", cfg_path, device="cpu", progress=False)
    assert rep2.cache_misses == 0 and rep2.cache_hits == 10
    ids2, matrix2 = load_embeddings(out2)
    assert ids2 == ids and np.array_equal(matrix2, matrix)
    monkeypatch.undo()

    # another dataset sharing 3 texts plus 1 new one: only the new one is computed, in a new part
    calls: list[int] = []
    real = embed_text.embed_texts

    def counting(texts, *a, **k):
        calls.append(len(texts))
        return real(texts, *a, **k)

    monkeypatch.setattr(embed_text, "embed_texts", counting)
    texts_b = _texts_table(rows[:3] + [sample[12]], tmp_path / "text" / "b" / "texts.parquet")
    out3 = tmp_path / "emb" / "b" / "minilm" / "all-mean.parquet"
    rep3 = embed_dataset(texts_b, out3, "all", "minilm", cfg, device="cpu", progress=False)
    assert calls == [1] and rep3.cache_hits == 3 and rep3.cache_misses == 1
    parts = sorted((tmp_path / "cache").rglob("part-*.parquet"))
    assert len(parts) == 2 and first_part in [p.read_bytes() for p in parts]
    ids3, matrix3 = load_embeddings(out3)
    assert np.array_equal(matrix3[:3], matrix[:3])

    # a different pooling is a different cache entry
    cfg_cls = _cfg(tmp_path, max_length=64, pooling="cls")
    rep4 = embed_dataset(texts_b, tmp_path / "cls.parquet", "all", "minilm", cfg_cls, device="cpu", progress=False)
    assert rep4.cache_misses == 4


def test_embed_dataset_bad_column(sample, tmp_path):
    texts = _texts_table(sample[:2], tmp_path / "texts.parquet")
    with pytest.raises(KeyError, match="text_nope"):
        embed_dataset(texts, tmp_path / "o.parquet", "nope", "minilm", _cfg(tmp_path), device="cpu")


def test_unknown_hub_name_fails_fast_offline(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(EncoderUnavailableError, match="no hub access") as err:
        resolve_encoder("matfuse-test-nonexistent-org/no-such-encoder")
    assert time.perf_counter() - t0 < 15
    assert "local checkpoint folder" in str(err.value) and "snapshot_download" in str(err.value)
    with pytest.raises(EncoderUnavailableError, match="no hub access"):
        embed_texts(["NaCl"], _cfg(model="matfuse-test-nonexistent-org/no-such-encoder"), device="cpu")
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        resolve_encoder(str(tmp_path / "missing" / "checkpoint"))
    with pytest.raises(EncoderUnavailableError, match="unknown packaged encoder"):
        resolve_encoder("packaged:nope")


def test_max_length_beyond_model_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        embed_texts(["NaCl crystallizes in the cubic Fm-3m space group."], _cfg(max_length=1024), device="cpu")


def test_cache_parts_with_untruncated_counts_read_as_tokens_encoded(tmp_path):
    """Cache parts written before n_tokens meant 'tokens encoded' hold the whole text's count;
    reading them must give at most max_length, like freshly computed rows."""
    from matfuse.embed.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path, "identity-x", "mean", 512, label="ckpt")
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)
    cache.append(["a", "b", "c"], emb, np.array([900, 512, 40]), np.array([True, False, False]))
    rows = cache.lookup(["a", "b", "c"])
    got = dict(zip(rows.hashes, rows.n_tokens.tolist()))
    assert got == {"a": 512, "b": 512, "c": 40}
    assert dict(zip(rows.hashes, rows.truncated.tolist())) == {"a": True, "b": False, "c": False}
    assert np.array_equal(rows.embeddings[rows.hashes.index("c")], emb[2])
