"""Caches never crash a read and never serve a damaged entry (issue 11, items 2, 3 and 10).

* robocrys text cache (:class:`matfuse.text.cache.TextCache`): any file content -- JSON that is
  not an object, foreign records, texts that are not UTF-8 strings, absurd nesting -- is a miss
  with a warning naming the file, and the describe stage describes the entry again.
* embedding cache (:class:`matfuse.embed.cache.EmbeddingCache`): Parquet parts with a foreign
  schema or another embedding width are skipped with a warning; rows with null or non-finite
  vectors are dropped, so their texts are computed again and stored again (the next run is
  clean); freshly computed non-finite vectors become embed rejects and never enter the cache.

Inputs are real: robocrys texts and CIFs of ``text_matmmfuse_robocrys``, vectors computed by the
packaged MiniLM encoder on those texts.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from matfuse.structures import dump_structure, parse_structure, structure_hash
from matfuse.text import describe
from matfuse.text.cache import TextCache

ROBOCRYS = "text_matmmfuse_robocrys/matmmfuse_sample_1000_cif_robocrys.jsonl.gz"


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[dict]:
    """The first 6 real records (id, cif, robocrys_text) of the MatMMFuse sample."""
    out = []
    with gzip.open(shared_data / ROBOCRYS, "rt") as fh:
        for line in fh:
            out.append(json.loads(line))
            if len(out) == 6:
                break
    return out


def _texts(rec: dict) -> dict[str, str]:
    """all / key / single variants cut from a real robocrys description."""
    text = rec["robocrys_text"]
    return {"all": text, "key": text.split(". ")[0] + ".", "single": text[:200]}


@pytest.fixture(scope="module")
def hashed(records) -> list[tuple[dict, str, str]]:
    """(record, structure JSON, structure hash) of the real CIFs."""
    out = []
    for rec in records:
        s = parse_structure(rec["cif"], "cif")
        out.append((rec, dump_structure(s), structure_hash(s)))
    return out


# ============================================================================ item 2: text cache
NOT_OBJECTS = ["null", "[]", '["all", "key", "single"]', "3", "-0.5e3", '"a string"', "true", "[" * 100_000 + "]" * 100_000]


@pytest.mark.parametrize("content", NOT_OBJECTS, ids=["null", "empty-list", "list", "int", "float", "string", "bool", "deep"])
def test_text_cache_valid_json_that_is_not_an_object_is_a_logged_miss(hashed, tmp_path, caplog, content):
    rec, _, h = hashed[0]
    cache = TextCache(tmp_path, salt="salt")
    cache.put(h, _texts(rec), 1.0)
    assert cache.get(h) == _texts(rec)  # a real record reads back
    path = cache.path(h)
    path.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="matfuse.text.cache"):
        assert cache.get(h) is None
    assert str(path) in caplog.text


def _record(h: str, salt: str, texts) -> str:
    return json.dumps({"structure_hash": h, "salt": salt, "texts": texts, "seconds": 1.0})


BAD_RECORDS = {
    "texts-null": lambda t: None,
    "texts-list": lambda t: [t["all"], t["key"], t["single"]],
    "texts-string": lambda t: t["all"],
    "texts-number-value": lambda t: {**t, "key": 3},
    "texts-null-value": lambda t: {**t, "single": None},
    "texts-list-value": lambda t: {**t, "all": [t["all"]]},
    "texts-object-value": lambda t: {**t, "all": {"text": t["all"]}},
    "texts-missing-variant": lambda t: {"all": t["all"], "key": t["key"]},
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_text_cache_record_with_bad_texts_is_a_logged_miss(hashed, tmp_path, caplog, name):
    rec, _, h = hashed[1]
    cache = TextCache(tmp_path, salt="salt")
    path = cache.path(h)
    path.parent.mkdir(parents=True)
    path.write_text(_record(h, "salt", BAD_RECORDS[name](_texts(rec))), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="matfuse.text.cache"):
        assert cache.get(h) is None
    assert str(path) in caplog.text and "texts" in caplog.text


def test_text_cache_lone_surrogate_text_is_a_miss(hashed, tmp_path, caplog):
    """JSON can decode ``\\ud800``, which no Parquet/UTF-8 writer downstream accepts."""
    rec, _, h = hashed[2]
    cache = TextCache(tmp_path, salt="salt")
    path = cache.path(h)
    path.parent.mkdir(parents=True)
    texts = {**_texts(rec), "all": rec["robocrys_text"] + "\ud800"}
    path.write_text(_record(h, "salt", texts), encoding="utf-8")  # json.dumps escapes it as \\ud800
    with caplog.at_level(logging.WARNING, logger="matfuse.text.cache"):
        got = cache.get(h)
    assert got is None, "a text that cannot be encoded as UTF-8 was served from the cache"
    assert str(path) in caplog.text


def test_text_cache_foreign_record_and_garbage_are_logged_misses(hashed, tmp_path, caplog):
    (rec, _, h), (_, _, other) = hashed[0], hashed[1]
    cache = TextCache(tmp_path, salt="salt")
    path = cache.path(h)
    path.parent.mkdir(parents=True)
    for content in (
        _record(other, "salt", _texts(rec)),  # another structure's record
        _record(h, "other-salt", _texts(rec)),  # other robocrys/pymatgen versions
        "{not json",
        b"\xff\xfe\x00garbage".decode("latin-1"),
    ):
        path.write_text(content, encoding="latin-1" if content.startswith("\xff") else "utf-8")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="matfuse.text.cache"):
            assert cache.get(h) is None
        assert str(path) in caplog.text
    path.unlink()
    path.mkdir()  # a directory where the file should be
    assert cache.get(h) is None


def test_describe_shard_describes_entries_whose_cache_files_are_garbage(hashed, tmp_path, caplog, monkeypatch):
    """The describe job runs through: garbage cache files are misses, described again, rewritten."""
    from matfuse.config import TextConfig

    entries = pd.DataFrame(
        [{"material_id": f"robo-{rec['id']}", "structure": sjson, "structure_hash": h} for rec, sjson, h in hashed[:4]]
    )
    entries_path = tmp_path / "entries.parquet"
    entries.to_parquet(entries_path)
    cfg = TextConfig(cache_dir=str(tmp_path / "cache"))
    cache = TextCache(cfg.cache_dir)
    by_hash = {h: rec for rec, _, h in hashed[:4]}
    good, *bad = list(by_hash)
    cache.put(good, _texts(by_hash[good]), 2.0)
    garbage = ["null", '[1, 2, 3]', _record(bad[2], cache.salt, {"all": 1, "key": None, "single": []})]
    for h, content in zip(bad, garbage):
        cache.path(h).parent.mkdir(parents=True, exist_ok=True)
        cache.path(h).write_text(content, encoding="utf-8")

    asked: list[str] = []

    def fake_compute(todo, cfg):  # robocrys itself is tested in test_text.py; here: its real texts
        for h in todo:
            asked.append(h)
            yield h, {"texts": _texts(by_hash[h]), "error": None, "seconds": 0.5}

    monkeypatch.setattr(describe, "_compute", fake_compute)
    with caplog.at_level(logging.WARNING, logger="matfuse.text.cache"):
        describe.describe_shard(entries_path, tmp_path / "shard.parquet", 0, 1, cfg.cache_dir, cfg)
    assert sorted(asked) == sorted(bad)
    for h in bad:
        assert str(cache.path(h)) in caplog.text
    out = pd.read_parquet(tmp_path / "shard.parquet").set_index("material_id")
    for rec, _, h in hashed[:4]:
        row = out.loc[f"robo-{rec['id']}"]
        assert row["status"] == "ok" and row["text_all"] == rec["robocrys_text"]
        assert bool(row["cached"]) == (h == good)
        assert cache.get(h) == _texts(rec)  # the garbage files were replaced by real records


# ============================================================================ embeddings (items 3, 10)
MAX_L = 64


@pytest.fixture(scope="module")
def minilm(records):
    """Real MiniLM vectors of the 6 real texts: (texts, hashes, embeddings, n_tokens, truncated)."""
    pytest.importorskip("torch")
    from matfuse.config import EncoderConfig
    from matfuse.embed.cache import text_sha256
    from matfuse.embed.text import embed_texts

    texts = [r["robocrys_text"] for r in records]
    cfg = EncoderConfig(model="packaged:minilm", max_length=MAX_L, batch_size=4, backend="torch")
    emb, n_tok, trunc = embed_texts(texts, cfg, device="cpu", progress=False)
    assert emb.shape == (6, 384) and np.isfinite(emb).all()
    return texts, [text_sha256(t) for t in texts], emb, n_tok, trunc


def _cache(root: Path):
    from matfuse.embed.cache import EmbeddingCache

    return EmbeddingCache(root, "identity-minilm", "mean", MAX_L, label="ckpt")


def _write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _part(hashes, emb, n_tok, trunc) -> pa.Table:
    from matfuse.embed.cache import embedding_table

    return embedding_table("text_sha256", list(hashes), emb, n_tok, trunc)


def _foreign_parts(hashes: list[str], emb: np.ndarray, n_tok: np.ndarray) -> dict[str, pa.Table]:
    """Readable Parquet tables that are not cache parts, all naming real text hashes."""
    n = len(hashes)
    flat = pa.array(emb.reshape(-1), pa.float32())
    good = _part(hashes, emb, n_tok, np.zeros(n, bool))
    return {
        "other-columns": pa.table({"material_id": hashes, "embedding": pa.FixedSizeListArray.from_arrays(flat, 384)}),
        "no-embedding": good.drop_columns(["embedding"]),
        "int-keys": good.set_column(0, "text_sha256", pa.array(range(n), pa.int64())),
        "variable-lists": good.set_column(1, "embedding", pa.array([list(v) for v in emb], pa.list_(pa.float32()))),
        "float64-vectors": good.set_column(
            1, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1).astype(np.float64)), 384)
        ),
        "string-counts": good.set_column(2, "n_tokens", pa.array([str(x) for x in n_tok])),
        "int-flags": good.set_column(3, "truncated", pa.array(np.zeros(n, np.int8))),
        "duplicate-column": pa.Table.from_arrays(
            [good["text_sha256"], good["text_sha256"], good["embedding"], good["n_tokens"], good["truncated"]],
            names=["text_sha256", "text_sha256", "embedding", "n_tokens", "truncated"],
        ),
    }


FOREIGN = ["other-columns", "no-embedding", "int-keys", "variable-lists", "float64-vectors", "string-counts", "int-flags", "duplicate-column"]


@pytest.mark.parametrize("name", [*FOREIGN, "not-parquet"])
def test_lookup_skips_parts_with_a_foreign_schema(minilm, tmp_path, caplog, name):
    _, hashes, emb, n_tok, trunc = minilm
    cache = _cache(tmp_path)
    cache.append(hashes[:4], emb[:4], n_tok[:4], trunc[:4])
    path = cache.dir / f"part-0000-{name}.parquet"  # sorts before the real part
    if name == "not-parquet":
        path.write_bytes(b"PAR1 this is not parquet")
    else:
        _write(_foreign_parts(hashes, emb * 0 + 7, n_tok)[name], path)
    with caplog.at_level(logging.WARNING, logger="matfuse.embed.cache"):
        rows = cache.lookup(hashes)
    assert sorted(rows.hashes) == sorted(hashes[:4])
    order = [hashes.index(h) for h in rows.hashes]
    np.testing.assert_array_equal(rows.embeddings, emb[order])
    np.testing.assert_array_equal(rows.n_tokens, n_tok[order])
    assert str(path) in caplog.text


def test_lookup_reads_equivalent_types(minilm, tmp_path):
    """large_string keys, int64 counts and extra columns are still a cache part."""
    _, hashes, emb, n_tok, trunc = minilm
    cache = _cache(tmp_path)
    cache.append(hashes[:2], emb[:2], n_tok[:2], trunc[:2])
    alt = _part(hashes[2:4], emb[2:4], n_tok[2:4], trunc[2:4])
    alt = alt.set_column(0, "text_sha256", alt["text_sha256"].cast(pa.large_string()))
    alt = alt.set_column(2, "n_tokens", alt["n_tokens"].cast(pa.int64())).append_column("note", pa.array(["x", "y"]))
    _write(alt, cache.dir / "part-9999-alt.parquet")
    rows = cache.lookup(hashes)
    assert sorted(rows.hashes) == sorted(hashes[:4])
    for h, v in zip(rows.hashes, rows.embeddings):
        np.testing.assert_array_equal(v, emb[hashes.index(h)])


def test_lookup_skips_parts_of_another_width(minilm, tmp_path, caplog):
    _, hashes, emb, n_tok, trunc = minilm
    cache = _cache(tmp_path)
    cache.append(hashes[:3], emb[:3], n_tok[:3], trunc[:3])
    cache.append(hashes[3:], emb[3:], n_tok[3:], trunc[3:])
    narrow = _write(_part(hashes, emb[:, :8], n_tok, trunc), cache.dir / "part-0000-narrow.parquet")  # oldest
    with caplog.at_level(logging.WARNING, logger="matfuse.embed.cache"):
        rows = cache.lookup(hashes)  # 2 parts of width 384 outvote it
    assert sorted(rows.hashes) == sorted(hashes) and rows.embeddings.shape == (6, 384)
    assert str(narrow) in caplog.text and "width 8" in caplog.text
    # with the encoder's width given, one part of another width is skipped even when it is the majority
    _write(_part(hashes, emb[:, :8], n_tok, trunc), cache.dir / "part-0001-narrow.parquet")
    _write(_part(hashes, emb[:, :8], n_tok, trunc), cache.dir / "part-0002-narrow.parquet")
    rows = cache.lookup(hashes, dim=384)
    assert sorted(rows.hashes) == sorted(hashes)
    for h, v in zip(rows.hashes, rows.embeddings):
        np.testing.assert_array_equal(v, emb[hashes.index(h)])


def test_lookup_drops_null_and_non_finite_rows(minilm, tmp_path, caplog):
    _, hashes, emb, n_tok, trunc = minilm
    cache = _cache(tmp_path)
    bad = emb.copy()
    bad[0, 5] = np.nan
    bad[1, 0] = np.inf
    bad[2, 383] = -np.inf
    table = _part(hashes, bad, n_tok, trunc)
    vec = table["embedding"].combine_chunks()
    values = vec.values.to_pylist()
    values[3 * 384 + 7] = None  # a null inside row 3's vector
    row_valid = pa.array([True, True, True, True, False, True])  # row 4: null vector
    vec = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), 384, mask=pc.invert(row_valid))
    table = table.set_column(1, "embedding", vec)
    table = table.set_column(2, "n_tokens", pa.array([1, 2, 3, 4, 5, None], pa.int32()))  # row 5: null count
    path = _write(table, cache.dir / "part-0000-damaged.parquet")
    with caplog.at_level(logging.WARNING, logger="matfuse.embed.cache"):
        rows = cache.lookup(hashes)
    assert rows.hashes == [] and rows.embeddings.shape[0] == 0
    assert str(path) in caplog.text and "6 row(s)" in caplog.text
    # good copies stored later are found: the first *valid* copy wins
    cache.append(hashes, emb, n_tok, trunc)
    rows = cache.lookup(hashes)
    assert sorted(rows.hashes) == sorted(hashes) and np.isfinite(rows.embeddings).all()
    for h, v in zip(rows.hashes, rows.embeddings):
        np.testing.assert_array_equal(v, emb[hashes.index(h)])


def test_append_refuses_non_finite_vectors(minilm, tmp_path):
    _, hashes, emb, n_tok, trunc = minilm
    cache = _cache(tmp_path)
    bad = emb.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=hashes[2]):
        cache.append(hashes, bad, n_tok, trunc)
    assert cache.parts() == []


def _texts_table(records, path: Path) -> Path:
    df = pd.DataFrame({"material_id": [f"robo-{r['id']}" for r in records], "text_all": [r["robocrys_text"] for r in records]})
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def _cfg(tmp_path: Path):
    from matfuse.config import EncoderConfig

    return EncoderConfig(model="packaged:minilm", max_length=MAX_L, batch_size=4, backend="torch", cache_dir=str(tmp_path / "cache"))


def _counting(monkeypatch, poison: set[str] | None = None) -> list[list[str]]:
    """Record the texts embed_texts is asked for; give NaN vectors for texts in ``poison``."""
    from matfuse.embed import text as embed_text

    calls: list[list[str]] = []
    real = embed_text.embed_texts

    def counting(texts, *a, **k):
        calls.append(list(texts))
        emb, n_tok, trunc = real(texts, *a, **k)
        for i, t in enumerate(texts):
            if poison and t in poison:
                emb[i, ::7] = np.nan  # e.g. an fp16 overflow in the encoder
        return emb, n_tok, trunc

    monkeypatch.setattr(embed_text, "embed_texts", counting)
    return calls


def test_embed_dataset_runs_through_foreign_parts(minilm, records, tmp_path, monkeypatch):
    from matfuse.embed.text import embed_dataset, load_embeddings

    texts, hashes, emb, _, _ = minilm
    cfg = _cfg(tmp_path)
    texts_path = _texts_table(records, tmp_path / "texts.parquet")
    first = embed_dataset(texts_path, tmp_path / "e1.parquet", "all", "minilm", cfg, device="cpu", progress=False)
    cache_dir = next((tmp_path / "cache").iterdir())
    for name, table in _foreign_parts(hashes, emb * 0 + 7, np.full(6, 9)).items():
        _write(table, cache_dir / f"part-0000-{name}.parquet")
    _write(_part(hashes, emb[:, :16] * 0 + 7, np.full(6, 9), np.zeros(6, bool)), cache_dir / "part-0000-narrow.parquet")
    calls = _counting(monkeypatch)
    rep = embed_dataset(texts_path, tmp_path / "e2.parquet", "all", "minilm", cfg, device="cpu", progress=False)
    assert calls == [] and rep.cache_hits == 6 and rep.cache_misses == 0 and first.cache_misses == 6
    ids, matrix = load_embeddings(tmp_path / "e2.parquet")
    assert ids == [f"robo-{r['id']}" for r in records]
    assert np.abs(matrix - emb).max() <= 1e-5


def test_damaged_cached_vectors_are_recomputed_and_the_cache_repairs_itself(minilm, records, tmp_path, monkeypatch):
    from matfuse.embed.text import embed_dataset, load_embeddings

    texts, hashes, emb, _, _ = minilm
    cfg = _cfg(tmp_path)
    texts_path = _texts_table(records, tmp_path / "texts.parquet")
    embed_dataset(texts_path, tmp_path / "e1.parquet", "all", "minilm", cfg, device="cpu", progress=False)
    _, good = load_embeddings(tmp_path / "e1.parquet")
    (part,) = sorted((tmp_path / "cache").rglob("part-*.parquet"))
    # damage the only stored copy of texts 1 (NaN) and 4 (inf), as a bad disk or a buggy writer would
    table = pq.read_table(part)
    keys = table["text_sha256"].to_pylist()
    vectors = np.array(table["embedding"].to_pylist(), np.float32)
    vectors[keys.index(hashes[1]), 10] = np.nan
    vectors[keys.index(hashes[4]), 0] = np.inf
    flat = pa.array(vectors.reshape(-1), pa.float32())
    pq.write_table(table.set_column(1, "embedding", pa.FixedSizeListArray.from_arrays(flat, 384)), part)

    calls = _counting(monkeypatch)
    rep = embed_dataset(texts_path, tmp_path / "e2.parquet", "all", "minilm", cfg, device="cpu", progress=False)
    assert rep.cache_misses == 2 and rep.cache_hits == 4
    assert [sorted(c) for c in calls] == [sorted([texts[1], texts[4]])]
    ids, matrix = load_embeddings(tmp_path / "e2.parquet")
    assert np.isfinite(matrix).all() and np.abs(matrix - good).max() <= 1e-5
    # the recomputed rows were stored again: the next run computes nothing
    calls.clear()
    rep3 = embed_dataset(texts_path, tmp_path / "e3.parquet", "all", "minilm", cfg, device="cpu", progress=False)
    assert calls == [] and rep3.cache_misses == 0
    assert np.array_equal(load_embeddings(tmp_path / "e3.parquet")[1], matrix)


def test_non_finite_fresh_vectors_are_rejects_and_never_cached(minilm, records, tmp_path, monkeypatch):
    from matfuse.embed.cache import vectors_of
    from matfuse.embed.text import embed_dataset, load_embeddings

    texts, hashes, emb, _, _ = minilm
    cfg = _cfg(tmp_path)
    texts_path = _texts_table(records, tmp_path / "texts.parquet")
    _counting(monkeypatch, poison={texts[2]})
    rejects_path = tmp_path / "rejects.parquet"
    rep = embed_dataset(
        texts_path, tmp_path / "e1.parquet", "all", "minilm", cfg, device="cpu", progress=False, rejects_path=rejects_path
    )
    bad_id = f"robo-{records[2]['id']}"
    rej = pd.read_parquet(rejects_path)
    assert rej["material_id"].tolist() == [bad_id] and rej["stage"].tolist() == ["embed"]
    assert "non-finite" in rej["reason"].iloc[0] and hashes[2] in rej["reason"].iloc[0]
    assert rep.rejects["material_id"].tolist() == [bad_id]
    ids, matrix = load_embeddings(tmp_path / "e1.parquet")
    assert bad_id not in ids and len(ids) == 5 and np.isfinite(matrix).all()
    stored = [pq.read_table(p) for p in sorted((tmp_path / "cache").rglob("part-*.parquet"))]
    assert hashes[2] not in {h for t in stored for h in t["text_sha256"].to_pylist()}
    assert all(np.isfinite(vectors_of(t["embedding"])).all() for t in stored)
    # a healthy encoder on the next run computes just that text
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    rep2 = embed_dataset(texts_path, tmp_path / "e2.parquet", "all", "minilm", cfg, device="cpu", progress=False)
    assert calls == [[texts[2]]] and rep2.cache_misses == 1 and len(rep2.rejects) == 0
    ids2, matrix2 = load_embeddings(tmp_path / "e2.parquet")
    assert ids2 == [f"robo-{r['id']}" for r in records] and np.abs(matrix2 - emb).max() <= 1e-5
