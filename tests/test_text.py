"""Robocrystallographer text stage: variants, fast == stock robocrys, cache, failures, merge.

Real small MP structures (rocksalt BaTe, perovskite CaFeO3, CsCl-type SiOs, layered Hf2S) plus a
disordered structure robocrys cannot describe, and (slow tests) three 10-16-site ones: molecular
H2CO3, intermetallic Nb4CoSi, ReO3-type TaO3. robocrys runs in the stage's seeded worker
pool (one import, reused by every test); this process never imports it.
"""

from __future__ import annotations

import logging
import re

import pandas as pd
import pytest

from matfuse.config import TextConfig
from matfuse.structures import dump_structure, parse_structure, structure_hash
from matfuse.text.describe import describe_shard, merge_texts, seeded_pool, shard_of, submit_seeded

IDS = ["mp-1000", "mp-1001571", "mp-10015", "mp-10000"]  # BaTe, CaFeO3, SiOs, Hf2S
MORE_IDS = ["mp-1001080", "mp-10003", "mp-1001011"]  # H2CO3 (12 sites), Nb4CoSi (12), TaO3 (16)
BAD_ID = "bad-disordered"


@pytest.fixture(scope="module")
def structures(mp_rows):
    rows = mp_rows.set_index("material_id").loc[IDS]
    return {mid: parse_structure(cif, "cif") for mid, cif in rows["cif"].items()}


@pytest.fixture(scope="module")
def entries_path(structures, tmp_path_factory):
    from pymatgen.core import Lattice, Structure

    bad = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    recs = [
        {"material_id": mid, "structure": dump_structure(s), "structure_hash": structure_hash(s)}
        for mid, s in {**structures, BAD_ID: bad}.items()
    ]
    path = tmp_path_factory.mktemp("entries") / "entries.parquet"
    pd.DataFrame(recs).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def run1(entries_path, tmp_path_factory):
    """First run: one shard, in-process, empty cache."""
    d = tmp_path_factory.mktemp("run1")
    cfg = TextConfig(cache_dir=str(d / "cache"))
    describe_shard(entries_path, d / "shard0.parquet", 0, 1, cfg.cache_dir, cfg)
    return d, pd.read_parquet(d / "shard0.parquet").set_index("material_id")


def test_shard_rows_and_failure_reason(run1):
    _, df = run1
    assert sorted(df.index) == sorted(IDS + [BAD_ID])
    assert list(df.columns) == ["text_all", "text_key", "text_single", "status", "error", "seconds", "cached"]
    assert (df.loc[IDS, "status"] == "ok").all() and df.loc[IDS, "error"].isna().all()
    assert not df["cached"].any()
    bad = df.loc[BAD_ID]
    assert bad["status"] == "failed" and bad["text_all"] is None
    assert "ValueError" in bad["error"] and "majority species" in bad["error"]


def test_variants_nested(run1, structures):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    _, df = run1
    for mid in IDS:
        a, k, s = df.loc[mid, ["text_all", "text_key", "text_single"]]
        spg = SpacegroupAnalyzer(structures[mid], symprec=0.01).get_space_group_symbol()
        # single: exactly one sentence, formula + space group, no bonding detail
        assert s.count(". ") == 0 and s.endswith("space group.") and spg in s
        assert "bond" not in s
        # key = single + bond-length sentences, each of which occurs in all
        assert k.startswith(s) and a.startswith(s)
        bond_part = k[len(s):].strip()
        sentences = re.split(r"(?<=\.) (?=[A-Z])", bond_part)
        assert sentences and sentences[0], f"{mid}: key has no bond-length sentence: {k!r}"
        for sent in sentences:
            assert re.fullmatch(r"(The|All|Both|There) .*bond (length|lengths|distances)\b.*\.", sent), sent
            assert "Å" in sent and sent in a
        assert len(s) < len(k) < len(a)
        assert " is bonded " in a and " is bonded " not in k  # coordination prose only in all


def test_known_minerals_named(run1):
    _, df = run1
    assert "Halite" in df.loc["mp-1000", "text_single"]  # BaTe: rocksalt
    assert "Perovskite" in df.loc["mp-1001571", "text_single"]  # CaFeO3


@pytest.mark.slow
def test_fast_paths_equal_stock_robocrys(run1, structures):
    """Our texts (exact fast paths: mineral prefilter, memo, shared offline namer) == untouched
    robocrys defaults, both computed in the seeded worker (same PYTHONHASHSEED, as robocrys'
    wording depends on it). The >= 50-structure identity test is tests/test_text_fastpaths.py."""
    from matfuse.text.robocrys_text import mineral_prefilter_stats, stock_description

    _, df = run1
    pool = seeded_pool(1)
    futures = {mid: submit_seeded(pool, stock_description, structures[mid]) for mid in IDS}
    for mid, fut in futures.items():
        assert df.loc[mid, "text_all"] == fut.result(), mid
    stats = submit_seeded(pool, mineral_prefilter_stats).result()
    assert stats["active"], "fast paths off (version gate): nothing was compared"
    assert stats["pairs"] > 0 and stats["skipped"] > 0 and stats["fallback"] == 0


@pytest.mark.slow
def test_fast_equals_stock_larger_structures(mp_rows, tmp_path):
    """Byte-identical to stock robocrys on 10-16-site structures (molecules, no mineral, mineral),
    with the neighbour memo in use and pymatgen's AFLOW library never loaded in the worker."""
    from matfuse.text.robocrys_text import fast_path_stats, stock_description

    rows = mp_rows.set_index("material_id").loc[MORE_IDS]
    structs = {mid: parse_structure(cif, "cif") for mid, cif in rows["cif"].items()}
    entries = tmp_path / "entries.parquet"
    pd.DataFrame(
        [{"material_id": m, "structure": dump_structure(s), "structure_hash": structure_hash(s)}
         for m, s in structs.items()]
    ).to_parquet(entries)
    cfg = TextConfig(cache_dir=str(tmp_path / "cache"))
    describe_shard(entries, tmp_path / "s.parquet", 0, 1, cfg.cache_dir, cfg)
    ours = pd.read_parquet(tmp_path / "s.parquet").set_index("material_id")
    assert (ours["status"] == "ok").all(), ours["error"].to_dict()
    pool = seeded_pool(1)
    futures = {mid: submit_seeded(pool, stock_description, structs[mid]) for mid in MORE_IDS}
    for mid, fut in futures.items():
        assert ours.loc[mid, "text_all"] == fut.result(), mid
    assert "Rhenium trioxide" in ours.loc["mp-1001011", "text_single"]
    stats = submit_seeded(pool, fast_path_stats).result()
    assert stats["active"], "fast paths off (version gate): nothing was compared"
    # every site's neighbours are reused at least once (bonding graph + fingerprints)
    assert stats["nn_misses"] > 0 and stats["nn_hits"] >= stats["nn_misses"]
    assert stats["aflow_library_lazy"] and not stats["aflow_library_loaded"]


def test_cached_crystalnn_equals_crystalnn(structures):
    """The memoised neighbour finder gives CrystalNN's data, and callers' edits do not leak."""
    from pymatgen.analysis.local_env import CrystalNN

    from matfuse.text.neighbors import CachedCrystalNN, NeighborCache

    s = structures["mp-1001571"]  # CaFeO3, 5 sites
    cache = NeighborCache()
    cached, stock = CachedCrystalNN(cache), CrystalNN()

    def summary(nn):
        def rows(entries):
            return [(e["site_index"], tuple(int(x) for x in e["image"]), e["weight"]) for e in entries]

        return (rows(nn.all_nninfo), nn.cn_weights, {cn: rows(v) for cn, v in nn.cn_nninfo.items()})

    for n in range(len(s)):
        want = summary(stock.get_nn_data(s, n))
        got = cached.get_nn_data(s, n)
        assert summary(got) == want
        for e in got.all_nninfo:  # what CrystalNN.get_nn_info does to the entries
            e["weight"] = 1
        got.cn_weights.clear()
        assert summary(cached.get_nn_data(s, n)) == want  # served from the memo, unchanged
    assert cache.hits == len(s) and cache.misses == len(s)
    assert cached.get_bonded_structure(s) == stock.get_bonded_structure(s)
    # another structure content is another key (no stale hit)
    moved = s.copy()
    moved.translate_sites([0], [0.01, 0, 0])
    assert summary(cached.get_nn_data(moved, 0)) == summary(stock.get_nn_data(moved, 0))
    assert cache.misses == len(s) + 1
    cache.clear()
    assert not cache.nn


def test_reduction_keeps_mineral_species():
    """Premise of the mineral prefilter's shortcut: the reduction fit_anonymous applies keeps the
    number of species of every robocrys mineral (so it is compared before reducing)."""
    import importlib.util
    from pathlib import Path

    from pymatgen.core import Structure
    from pymatgen.core.structure_matcher import StructureMatcher

    spec = importlib.util.find_spec("robocrys")  # locate the DB without importing robocrys
    db_path = Path(next(iter(spec.submodule_search_locations))) / "condense" / "mineral_db.json.gz"
    minerals = pd.read_json(db_path, compression="gzip", orient="split")  # as robocrys reads it
    assert len(minerals) > 100
    for name, sdict in zip(minerals["mineral"], minerals["structure"]):
        s = Structure.from_dict(sdict)
        red = StructureMatcher._get_reduced_structure(Structure.from_sites(s), True, True)
        assert len(red.elements) == len(s.elements), name
        assert len(red) <= len(s)


@pytest.mark.slow
def test_lazy_aflow_library_same_content():
    """The lazily loaded AFLOW prototype library equals the eager one, also as a DataFrame."""
    import importlib.util
    from pathlib import Path

    from monty.serialization import loadfn

    from matfuse.text.lazy_prototypes import LazyLoadedList

    spec = importlib.util.find_spec("pymatgen")
    prototypes = Path(next(iter(spec.submodule_search_locations))) / "analysis" / "prototypes"
    path = str(prototypes / "aflow_prototypes.json.gz")
    lazy = LazyLoadedList(path)
    assert "not loaded" in repr(lazy)
    eager = loadfn(path)
    frame_lazy, frame_eager = pd.DataFrame(lazy), pd.DataFrame(eager)
    assert "not loaded" not in repr(lazy) and len(lazy) == len(eager) > 100
    assert list(frame_lazy.columns) == list(frame_eager.columns) and frame_lazy.shape == frame_eager.shape
    assert [e["tags"] for e in lazy] == [e["tags"] for e in eager]
    assert [e["snl"].structure for e in lazy[:20]] == [e["snl"].structure for e in eager[:20]]


def test_cache_hit_does_no_robocrys_work(run1, entries_path, caplog):
    d, df1 = run1
    cfg = TextConfig(cache_dir=str(d / "cache"))
    with caplog.at_level(logging.INFO, logger="matfuse.text.describe"):
        describe_shard(entries_path, d / "again.parquet", 0, 1, cfg.cache_dir, cfg)
    df2 = pd.read_parquet(d / "again.parquet").set_index("material_id")
    assert df2.loc[IDS, "cached"].all()
    assert (df2.loc[IDS, "seconds"] < 0.5).all()
    pd.testing.assert_frame_equal(df2.loc[IDS, ["text_all", "text_key", "text_single"]],
                                  df1.loc[IDS, ["text_all", "text_key", "text_single"]])
    # only the failed structure goes back to robocrys (failures are not cached)
    assert f"cache: {len(IDS)} hits, 1 structures to describe" in caplog.text
    assert df2.loc[BAD_ID, "status"] == "failed" and not df2.loc[BAD_ID, "cached"]
    assert len(list((d / "cache").rglob("*.json"))) == len(IDS)


def test_shards_partition_and_merge(run1, entries_path, tmp_path):
    d, df1 = run1
    cfg = TextConfig(cache_dir=str(d / "cache"))
    paths = [tmp_path / f"{i}.parquet" for i in range(3)]
    for i, p in enumerate(paths):
        describe_shard(entries_path, p, i, 3, cfg.cache_dir, cfg)
    parts = [pd.read_parquet(p) for p in paths]
    ids = [m for part in parts for m in part["material_id"]]
    assert sorted(ids) == sorted(IDS + [BAD_ID])  # every entry in exactly one shard
    ent = pd.read_parquet(entries_path)
    for i, part in enumerate(parts):
        hashes = ent.set_index("material_id").loc[list(part["material_id"]), "structure_hash"]
        assert all(shard_of(h, 3) == i for h in hashes)

    texts = merge_texts(paths, tmp_path / "texts.parquet", tmp_path / "rejects.parquet")
    rejects = pd.read_parquet(tmp_path / "rejects.parquet")
    on_disk = pd.read_parquet(tmp_path / "texts.parquet")
    assert list(on_disk.columns) == ["material_id", "text_all", "text_key", "text_single", "text_source"]
    assert set(on_disk["text_source"]) == {"robocrys (local)"}  # no precomputed descriptions configured
    assert sorted(on_disk["material_id"]) == sorted(IDS) and len(texts) == len(IDS)
    assert list(rejects.columns) == ["material_id", "stage", "reason"]
    assert rejects.to_dict("records") == [
        {"material_id": BAD_ID, "stage": "describe", "reason": df1.loc[BAD_ID, "error"]}
    ]
    assert on_disk.set_index("material_id").loc[IDS, "text_all"].equals(df1.loc[IDS, "text_all"])


def test_timeout_recorded(run1, entries_path, tmp_path):
    """A tiny time limit fails every structure with a recorded reason and caches nothing."""
    cfg = TextConfig(cache_dir=str(tmp_path / "c1"), timeout_s=1e-4)
    describe_shard(entries_path, tmp_path / "t.parquet", 0, 1, cfg.cache_dir, cfg)
    t = pd.read_parquet(tmp_path / "t.parquet").set_index("material_id")
    assert (t.loc[IDS, "status"] == "failed").all()
    assert t.loc[IDS, "error"].str.startswith("timeout").all()
    assert not any((tmp_path / "c1").rglob("*.json"))


@pytest.mark.slow
def test_worker_pool_same_texts(run1, entries_path, tmp_path):
    _, df1 = run1
    cfg = TextConfig(cache_dir=str(tmp_path / "c2"), workers_per_shard=2)
    describe_shard(entries_path, tmp_path / "p.parquet", 0, 1, cfg.cache_dir, cfg)
    p = pd.read_parquet(tmp_path / "p.parquet").set_index("material_id")
    cols = ["text_all", "text_key", "text_single"]
    assert p.loc[IDS, cols].equals(df1.loc[IDS, cols])
    assert p.loc[BAD_ID, "status"] == "failed"
    assert len(list((tmp_path / "c2").rglob("*.json"))) == len(IDS)


def test_fast_numpy_bit_identical():
    """The short paths give numpy's exact bits (and types); other calls are numpy's own."""
    import numpy as np

    from matfuse.text.fastnumpy import NUMPY_VIEW, fast_cross, fast_norm

    rng = np.random.default_rng(0)
    vecs = list(rng.normal(size=(400, 3)) * 10.0 ** rng.integers(-8, 8, size=(400, 1)))
    vecs += [np.zeros(3), np.array([1e-300, 1e300, -0.0]), np.array([np.inf, 1.0, np.nan])]
    for a, b in zip(vecs, vecs[1:] + vecs[:1]):
        with np.errstate(all="ignore"):
            want, got = np.cross(a, b), fast_cross(a, b)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.int64), want.view(np.int64))  # same bits (NaN too)
        n_want, n_got = np.linalg.norm(a), fast_norm(a)
        assert type(n_got) is type(n_want) and np.float64(n_got).tobytes() == np.float64(n_want).tobytes()
    # outside the short path: numpy's result (ints, strided, 2-D, other ord/axis)
    m = rng.normal(size=(5, 3))
    assert np.array_equal(fast_cross(np.array([1, 2, 3]), np.array([4, 5, 6])), [-3, 6, -3])
    assert fast_cross(np.array([1, 2, 3]), np.array([4, 5, 6])).dtype == np.cross([1, 2, 3], [4, 5, 6]).dtype
    assert np.array_equal(fast_cross(m, m[::-1]), np.cross(m, m[::-1]))
    assert fast_norm(m[:, 0]) == np.linalg.norm(m[:, 0]) and fast_norm(m, axis=1).shape == (5,)
    assert fast_norm(m, ord=1) == np.linalg.norm(m, ord=1) and fast_norm([3, 4]) == 5.0
    # the module view is numpy except for the two functions
    assert NUMPY_VIEW.inner is np.inner and NUMPY_VIEW.linalg.det is np.linalg.det
    assert NUMPY_VIEW.cross is fast_cross and NUMPY_VIEW.linalg.norm is fast_norm
    assert NUMPY_VIEW.testing is np.testing  # lazily loaded numpy attribute
