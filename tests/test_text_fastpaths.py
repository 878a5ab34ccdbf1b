"""The fence around robocrys' exact fast paths (issue 12 item 4).

* byte identity: the fast paths' three variants equal STOCK robocrys texts, byte for byte, on
  >= 50 real MP structures (<= 20 sites, every crystal system, varied chemistry). The stock side is
  ``tests/data/robocrys_stock_texts.json.gz``, made by ``tests/data/make_robocrys_reference.py``
  with stock robocrys only (stock costs ~4 s per structure: too slow to recompute here); it
  records the versions it was made with, which must be the gate's verified versions. Two of its
  structures are recomputed with stock robocrys here (the version-gate test), so the file is
  checked against live stock output too.
* version gate: with any other robocrys/pymatgen/... version nothing is patched or even imported,
  one warning per process, texts still produced (by stock robocrys);
* ``text.fast_paths`` (old name ``fast_mineral_matching`` still accepted, deprecated);
* the text cache key covers robocrys, pymatgen, pymatgen-core, matminer and spglib, not the flag;
* the parent of a shard job never imports robocrys when every entry is cached.

robocrys runs in the stage's seeded worker pool or in subprocesses; this process never imports it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections import Counter
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from matfuse.config import TextConfig, load_config
from matfuse.structures import dump_structure, parse_structure, structure_hash
from matfuse.text import settings
from matfuse.text.cache import TextCache, cache_salt
from matfuse.text.describe import describe_shard, seeded_pool, submit_seeded

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "robocrys_stock_texts.json.gz"
VARIANTS = ("all", "key", "single")
REGENERATE = (
    "regenerate it with stock robocrys (.venv/bin/python tests/data/make_robocrys_reference.py), then set "
    "matfuse.text.settings.VERIFIED_VERSIONS to the versions it records"
)


@pytest.fixture()
def fresh_gate(monkeypatch):
    """Version look-ups and the once-per-process warning reset around the test."""
    settings.installed_versions.cache_clear()
    monkeypatch.setattr(settings, "_warned", False)
    yield monkeypatch
    settings.installed_versions.cache_clear()


def fake_versions(monkeypatch, **override: str | None) -> None:
    """Make the version look-up report other versions (``None`` = not installed)."""
    real = settings._distribution_version
    names = {k.replace("_", "-"): v for k, v in override.items()}
    monkeypatch.setattr(settings, "_distribution_version", lambda n: names[n] if n in names else real(n))
    settings.installed_versions.cache_clear()


# --------------------------------------------------------------------------- reference file
@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(gzip.decompress(REFERENCE.read_bytes()))


def test_reference_made_with_the_verified_versions(reference):
    """The gate's table and the reference must describe the same verification."""
    assert reference["versions"] == settings.VERIFIED_VERSIONS, (
        f"{REFERENCE.name} was made with {reference['versions']} but VERIFIED_VERSIONS is "
        f"{settings.VERIFIED_VERSIONS}: {REGENERATE}"
    )
    assert reference["hash_seed"] == "0"


def test_reference_is_varied_small_real_structures(reference):
    recs = reference["structures"]
    ids = [r["material_id"] for r in recs]
    assert len(recs) >= 50 and len(set(ids)) == len(ids)
    assert all(r["nsites"] <= 20 for r in recs)
    systems = Counter(r["crystal_system"] for r in recs)
    assert set(systems) == {"triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"}
    assert len(Counter(r["chemistry"] for r in recs)) >= 6
    assert len({r["n_elements"] for r in recs}) >= 4
    assert len({r["space_group"] for r in recs}) >= 25
    assert all(set(r["texts"]) == set(VARIANTS) for r in recs if "error" not in r)
    assert not any("cif" in r or "structure" in r for r in recs)  # ids and hashes only, no data


@pytest.fixture(scope="module")
def ref_structures(reference, mp_csv) -> dict:
    """The reference's structures, parsed from the shared CIFs (checked against the recorded SHA-256)."""
    want = {r["material_id"]: r["cif_sha256"] for r in reference["structures"]}
    df = pd.read_csv(mp_csv, usecols=["material_id", "cif"])
    cifs = df[df["material_id"].isin(want)].set_index("material_id")["cif"].to_dict()
    assert set(cifs) == set(want), f"ids missing from {mp_csv}: {sorted(set(want) - set(cifs))}"
    for mid, cif in cifs.items():
        assert hashlib.sha256(cif.encode()).hexdigest() == want[mid], f"{mid}: CIF differs from the reference's"
    return {mid: parse_structure(cifs[mid], "cif") for mid in want}


def _entries(structures: dict, path: Path) -> Path:
    pd.DataFrame(
        [{"material_id": m, "structure": dump_structure(s), "structure_hash": structure_hash(s)} for m, s in structures.items()]
    ).to_parquet(path)
    return path


# --------------------------------------------------------------------------- byte identity
def test_fast_paths_byte_identical_to_stock_robocrys(reference, ref_structures, gate_probe, tmp_path):
    """All three variants of every reference structure, through describe_shard with the fast paths,
    equal stock robocrys byte for byte (failures alike); the fast paths really ran in the worker.
    (``gate_probe`` only starts the version-gate subprocess, to overlap with this run.)"""
    diff = settings.unverified_versions()
    if diff:
        # Not comparable: the version gate is off, so describe_shard runs stock robocrys anyway.
        assert not settings.fast_paths_verified(warn=False)
        pytest.skip(f"fast paths disabled by the version gate (installed != verified: {diff}); {REGENERATE}")
    entries = _entries(ref_structures, tmp_path / "entries.parquet")
    cfg = TextConfig(cache_dir=str(tmp_path / "cache"), fast_paths=True)
    describe_shard(entries, tmp_path / "shard.parquet", 0, 1, cfg.cache_dir, cfg)
    ours = pd.read_parquet(tmp_path / "shard.parquet").set_index("material_id")

    mismatches = []
    for rec in reference["structures"]:
        row = ours.loc[rec["material_id"]]
        if "error" in rec:
            if row["status"] != "failed" or row["error"] != rec["error"]:
                mismatches.append((rec["material_id"], "error", rec["error"], row["error"]))
            continue
        if row["status"] != "ok":
            mismatches.append((rec["material_id"], "status", "ok", row["error"]))
            continue
        for v in VARIANTS:
            got = row[f"text_{v}"]
            if got.encode("utf-8") != rec["texts"][v].encode("utf-8"):
                i = next((k for k, (a, b) in enumerate(zip(got, rec["texts"][v])) if a != b), min(len(got), len(rec["texts"][v])))
                mismatches.append((rec["material_id"], v, rec["texts"][v][max(0, i - 40):i + 40], got[max(0, i - 40):i + 40]))
    assert not mismatches, f"{len(mismatches)} differences from stock robocrys (id, variant, stock, ours): {mismatches[:5]}"

    from matfuse.text.robocrys_text import fast_path_stats  # the worker's, or this process's if in-process

    stats = submit_seeded(seeded_pool(1), fast_path_stats).result() if sys.flags.hash_randomization else fast_path_stats()
    assert stats.get("active"), stats
    assert stats["nn_misses"] > 0 and stats["nn_hits"] >= stats["nn_misses"]
    assert stats["pairs"] > 0 and stats["skipped"] > 0 and stats["fallback"] == 0


# --------------------------------------------------------------------------- version gate
def test_gate_names_each_difference_and_warns_once_per_process(fresh_gate):
    fake_versions(fresh_gate, robocrys="0.2.14", spglib=None)
    assert settings.unverified_versions() == {"robocrys": ("0.2.14", "0.2.13"), "spglib": (None, "2.8.0")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert settings.fast_paths_verified(warn=False) is False  # silent
        assert settings.fast_paths_verified() is False
        assert settings.fast_paths_verified() is False
    gate = [w for w in caught if issubclass(w.category, settings.UnverifiedVersionsWarning)]
    assert len(gate) == 1, [str(w.message) for w in caught]
    msg = str(gate[0].message)
    assert "robocrys 0.2.14 (verified: 0.2.13)" in msg and "spglib not installed (verified: 2.8.0)" in msg
    assert "stock (slower) robocrys" in msg


def test_gate_verdict_matches_installed_versions(fresh_gate):
    installed = settings.installed_versions()
    same = all(installed.get(k) == v for k, v in settings.VERIFIED_VERSIONS.items())
    assert settings.fast_paths_verified(warn=False) is same
    fake_versions(fresh_gate, numpy="0.0.1")
    assert settings.fast_paths_verified(warn=False) is False


def test_lazy_prototypes_not_installed_for_unverified_versions(fresh_gate):
    """The gate is asked before pymatgen's source is even located."""
    import importlib.util

    from matfuse.text import lazy_prototypes

    fake_versions(fresh_gate, pymatgen="2099.1.1")

    def no_lookup(*a, **k):
        raise AssertionError("pymatgen source looked up despite the version gate")

    fresh_gate.setattr(importlib.util, "find_spec", no_lookup)
    before = sys.modules.get(lazy_prototypes._NAME)
    assert lazy_prototypes.install() is False
    assert sys.modules.get(lazy_prototypes._NAME) is before


_GATE_PROBE = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy
    import pandas as pd
    from matfuse.text import settings
    real = settings._distribution_version
    settings._distribution_version = lambda n: "0.2.14" if n == "robocrys" else real(n)  # the look-up
    warnings.simplefilter("always")
    from matfuse.config import TextConfig
    from matfuse.text.describe import describe_one, describe_shard
    entries, out, cache = sys.argv[1:4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = TextConfig(cache_dir=cache, workers_per_shard=1, fast_paths=True)
        describe_shard(entries, out, 0, 1, cache, cfg)  # in-process: PYTHONHASHSEED=0
        sjson = pd.read_parquet(entries)["structure"].iloc[0]
        direct = describe_one(sjson, True, None)  # asks for the fast paths directly
        from matfuse.text.robocrys_text import get_robocrys_texts
        active = get_robocrys_texts(True).fast_paths_active
    import pymatgen.core.local_env as le
    lib = sys.modules["pymatgen.analysis.prototypes._data"].AFLOW_PROTOTYPE_LIBRARY
    report = {
        "warnings": [str(w.message) for w in caught if w.category is settings.UnverifiedVersionsWarning],
        "fast_modules": [m for m in ("matfuse.text.fastpaths", "matfuse.text.mineral") if m in sys.modules],
        "np_is_numpy": le.np is numpy,
        "aflow_library": type(lib).__name__,
        "active": active,
        "direct": direct["texts"],
    }
    from matfuse.text.fastpaths import FastFingerprints, NeighborCache, fast_paths
    try:
        with fast_paths(FastFingerprints(NeighborCache())):
            report["ctx"] = "patched"
    except RuntimeError as exc:
        report["ctx"] = "refused: " + str(exc)
    report["np_is_numpy_after"] = le.np is numpy
    print("REPORT " + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def gate_probe(reference, ref_structures, tmp_path_factory):
    """Start :data:`_GATE_PROBE` on the two smallest reference structures in a fresh process
    (``PYTHONHASHSEED=0``); yields ``(records, shard path, wait)``, ``wait()`` -> (rc, stdout, stderr).
    Started by the first test that asks, so its robocrys import overlaps the byte-identity run."""
    cheap = sorted((r for r in reference["structures"] if "error" not in r), key=lambda r: (r["nsites"], r["stock_seconds"]))[:2]
    d = tmp_path_factory.mktemp("gate")
    entries = _entries({r["material_id"]: ref_structures[r["material_id"]] for r in cheap}, d / "e.parquet")
    proc = subprocess.Popen(
        [sys.executable, "-c", _GATE_PROBE, str(entries), str(d / "s.parquet"), str(d / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    done: list[tuple[int, str, str]] = []

    def wait() -> tuple[int, str, str]:
        if not done:
            out, err = proc.communicate(timeout=300)
            done.append((proc.returncode, out, err))
        return done[0]

    yield cheap, d / "s.parquet", wait
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_version_gate_end_to_end_stock_texts_nothing_patched(gate_probe):
    """A fresh process told robocrys is 0.2.14: describe_shard and describe_one (fast paths asked
    for) give texts, from stock robocrys (equal to the reference's stock texts), with one warning;
    no fast-path module is imported, nothing patched, and ``fast_paths`` refuses to patch."""
    cheap, shard_path, wait = gate_probe
    rc, out, err = wait()
    assert rc == 0, err[-3000:]
    report = json.loads(next(line for line in out.splitlines() if line.startswith("REPORT "))[7:])
    assert len(report["warnings"]) == 1, report["warnings"]
    assert "robocrys 0.2.14 (verified: 0.2.13)" in report["warnings"][0] and "stock" in report["warnings"][0]
    assert report["fast_modules"] == [] and report["np_is_numpy"] and report["np_is_numpy_after"]
    assert report["aflow_library"] == "list" and report["active"] is False
    assert report["ctx"].startswith("refused")
    shard = pd.read_parquet(shard_path).set_index("material_id")
    assert (shard["status"] == "ok").all(), shard["error"].to_dict()
    if settings.unverified_versions():
        pytest.skip("installed versions differ from the reference's: stock texts not comparable")
    for r in cheap:  # live stock robocrys == the reference file
        assert {v: shard.loc[r["material_id"], f"text_{v}"] for v in VARIANTS} == r["texts"], r["material_id"]
    assert report["direct"] == cheap[0]["texts"]


# --------------------------------------------------------------------------- cache key
def test_text_cache_key_covers_every_text_library_not_the_flag(fresh_gate):
    versions = settings.text_versions()
    assert set(versions) == {"robocrys", "pymatgen", "pymatgen-core", "matminer", "spglib"}
    assert all(versions.values())
    salt = cache_salt()
    key = TextCache("unused", salt).key("h")
    for dist in versions:
        fake_versions(fresh_gate, **{dist: "9.9.9"})
        assert cache_salt() != salt and TextCache("unused").key("h") != key, dist
        fresh_gate.undo()
        settings.installed_versions.cache_clear()
    assert cache_salt() == salt
    assert "fast" not in salt  # exact fast paths: texts shared with stock robocrys


def test_cached_shard_never_imports_robocrys(tmp_path):
    """Every entry cached: the shard job reads the cache only (no robocrys, no fast-path module, no
    worker), even set up to describe in-process (one worker, PYTHONHASHSEED=0), where a miss would
    import robocrys right there."""
    from pymatgen.core import Lattice, Structure

    structs = {"a": Structure(Lattice.cubic(4.1), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
               "b": Structure(Lattice.cubic(3.0), ["Fe"], [[0, 0, 0]])}
    entries = _entries(structs, tmp_path / "e.parquet")
    cache = TextCache(tmp_path / "cache")
    for s in structs.values():
        cache.put(structure_hash(s), {v: f"{v} text" for v in VARIANTS}, 1.0)
    probe = textwrap.dedent(
        """
        import sys
        from matfuse.config import TextConfig
        from matfuse.text import describe
        e, out, cache = sys.argv[1:4]
        describe.describe_shard(e, out, 0, 1, cache, TextConfig(cache_dir=cache, workers_per_shard=1))
        bad = [m for m in sys.modules if m.split(".")[0] == "robocrys" or m in
               ("matfuse.text.robocrys_text", "matfuse.text.fastpaths", "matfuse.text.mineral")]
        print("IMPORTED", bad, "POOLS", len(describe._POOLS))
        """
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(entries), str(tmp_path / "s.parquet"), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORTED [] POOLS 0" in proc.stdout, proc.stdout
    assert pd.read_parquet(tmp_path / "s.parquet")["cached"].all()


# --------------------------------------------------------------------------- the flag
def test_fast_paths_flag_and_deprecated_alias():
    assert TextConfig().fast_paths is True
    assert TextConfig(fast_paths=False).fast_paths is False
    assert "fast_paths" in TextConfig().model_dump() and "fast_mineral_matching" not in TextConfig().model_dump()
    for old in (True, False):
        with pytest.warns(FutureWarning, match="fast_mineral_matching is deprecated"):
            cfg = TextConfig.model_validate({"fast_mineral_matching": old})
        assert cfg.fast_paths is old
        with pytest.warns(FutureWarning):
            assert TextConfig(fast_paths=old, fast_mineral_matching=old).fast_paths is old
        with pytest.warns(FutureWarning):
            assert cfg.fast_mineral_matching is old  # read-only alias
    with pytest.raises(ValidationError, match="contradicts"):
        TextConfig(fast_paths=True, fast_mineral_matching=False)
    with pytest.raises(ValidationError, match="fast_pathz"):
        TextConfig.model_validate({"fast_pathz": True})  # extra="forbid" still holds


def test_old_config_key_still_validates_in_both_validators():
    """An old config (``text.fast_mineral_matching``) passes Snakemake's JSON-schema check and
    load_config; shipped configs use the new name."""
    schema = json.loads((REPO / "workflow/schemas/config.schema.json").read_text())
    raw = yaml.safe_load((REPO / "config/tiny.yaml").read_text())
    old = json.loads(json.dumps(raw))
    old["text"]["fast_mineral_matching"] = False
    jsonschema.validate(old, schema)
    with pytest.warns(FutureWarning):
        assert load_config(old).text.fast_paths is False
    new = json.loads(json.dumps(raw))
    new["text"]["fast_paths"] = False
    jsonschema.validate(new, schema)
    assert load_config(new).text.fast_paths is False
    typo = json.loads(json.dumps(raw))
    typo["text"]["fast_path"] = False
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    for name in ["config.yaml", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "config").glob("*.yaml"))]:
        assert "fast_mineral_matching" not in (REPO / name).read_text(), name
