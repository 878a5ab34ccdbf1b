"""Bad input, one kind at a time (issue 11), on real MP rows: every bad row is a reject with its
own reason, nothing crashes, and the good rows come out as if the bad ones were not there.

The unit tests cover ingest and split; ``test_campaign_*`` runs the real DAG on a table mixing real
rows with every bad kind (plus tampered caches on a second run) and compares the metrics with
those of the clean rows alone.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pymatgen.core import Structure

from conftest import REPO, shared_dir
from matfuse.config import DatasetConfig, SplitConfig
from matfuse.ingest import canonicalise, ingest
from matfuse.isolation import WorkerCrash, map_isolated, run_alone
from matfuse.split import make_splits, read_splits, write_splits
from matfuse.structures import StructureError, check_declared, parse_structure, validate_structure
from matfuse.sources.table import fetch

TARGETS = {"formation_energy_per_atom": "formation_energy_per_atom", "band_gap": "band_gap"}


@pytest.fixture(scope="module")
def real(mp_csv) -> pd.DataFrame:
    """Real MP rows of at most 8 sites (first 400 of the file), plus HfTc (mp-11460)."""
    df = pd.read_csv(mp_csv, nrows=2000)
    small = df[df.nsites <= 8].head(400)
    return small.reset_index(drop=True)


def _cfg(path, **kw) -> DatasetConfig:
    src = {"kind": "table", "path": str(path), "targets": TARGETS, **kw.pop("source", {})}
    return DatasetConfig.model_validate({"source": src, **kw})


def _reasons(rejects: pd.DataFrame) -> dict[str, str]:
    return rejects.groupby("material_id")["reason"].agg(" | ".join).to_dict()


def _nan_coordinate(cif: str) -> str:
    d = Structure.from_str(cif, fmt="cif").as_dict()
    d["sites"][0]["abc"][0] = float("nan")
    return json.dumps(d)  # NaN is valid in Python's JSON


def _cut_cif(cif: str) -> str:
    """The CIF cut at a line boundary: its last atom line is gone."""
    lines = cif.rstrip("\n").split("\n")
    return "\n".join(lines[:-1]) + "\n"


def _overlapping(cif: str) -> str:
    s = Structure.from_str(cif, fmt="cif")
    s.append(s.species[0], s.frac_coords[0] + 0.001)
    return s.to(fmt="cif")


def _unknown_element(cif: str, symbol: str) -> str:
    return cif.replace(f"  {symbol}  {symbol}0", f"  Qq  Qq0", 1)


# --------------------------------------------------------------------------- item 1
def test_non_finite_numbers_are_rejected_before_any_c_library(real):
    cif = real.loc[3, "cif"]
    s = Structure.from_str(cif, fmt="cif")
    bad_lattice = s.as_dict()
    bad_lattice["lattice"]["matrix"][1][1] = float("inf")
    magmom = s.copy()
    magmom.add_site_property("magmom", [float("nan")] + [0.0] * (len(s) - 1))
    jarvis = {"lattice_mat": s.lattice.matrix.tolist(), "coords": s.frac_coords.tolist(),
              "elements": [sp.symbol for sp in s.species]}
    jarvis["coords"][0][2] = float("nan")
    cases = {
        "coordinate": (_nan_coordinate(cif), "non-finite atomic coordinate"),
        "lattice": (json.dumps(bad_lattice), "non-finite lattice"),
        "site property": (magmom.as_dict(), "non-finite site property 'magmom'"),
        "jarvis": (jarvis, "non-finite atomic coordinate"),
    }
    for name, (value, why) in cases.items():
        with pytest.raises(StructureError, match=why):
            validate_structure(parse_structure(value), max_sites=50)


def test_a_nan_coordinate_among_good_rows_is_one_reject(real, tmp_path):
    df = real.head(20)[["material_id", "cif", *TARGETS]].copy()
    bad = {"material_id": "nan-coord", "cif": _nan_coordinate(real.loc[25, "cif"]),
           "formation_energy_per_atom": 0.1, "band_gap": 0.2}
    table = pd.concat([df.head(10), pd.DataFrame([bad]), df.tail(10)], ignore_index=True)
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    entries = ingest(_cfg(path), "t", tmp_path / "e.parquet", tmp_path / "r.parquet")
    assert sorted(entries.material_id) == sorted(df.material_id)
    assert "non-finite atomic coordinate" in _reasons(pd.read_parquet(tmp_path / "r.parquet"))["nan-coord"]


def spacegroup_of(x: float) -> int:
    """spglib on a NaCl cell whose Cl sits at (x, .5, .5): segfaults for x = NaN (spglib 2.x)."""
    from pymatgen.core import Lattice
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    s = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [x, 0.5, 0.5]])
    return SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number()


def test_a_native_crash_costs_one_item_not_the_rest():
    assert spacegroup_of(0.5) == 221
    crashed = run_alone(spacegroup_of, math.nan)
    assert isinstance(crashed, WorkerCrash) and crashed.exitcode == -11
    assert "SIGSEGV" in crashed.reason
    items = [0.5, 0.25, math.nan, 0.1, 0.5]
    out = list(map_isolated(spacegroup_of, items, chunk_size=2))
    assert [i for i, _ in out] == list(range(len(items)))  # in order, none missing
    assert isinstance(out[2][1], WorkerCrash)
    assert [r for i, r in out if i != 2] == [221, 99, 99, 221]


def test_consumer_may_stop_early():
    it = map_isolated(spacegroup_of, [0.5] * 50, chunk_size=4)
    first = [r for _, r in zip(range(3), it)]
    it.close()
    assert first == [(0, 221), (1, 221), (2, 221)]


# --------------------------------------------------------------------------- item 5
def test_identical_structures_never_straddle_train_and_test(real, tmp_path):
    df = real.head(60)[["material_id", "cif", *TARGETS]].copy()
    clones = df.head(20).copy()
    clones["material_id"] = "clone-" + clones["material_id"]
    table = pd.concat([df, clones], ignore_index=True)
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    entries = ingest(_cfg(path), "t", tmp_path / "e.parquet", tmp_path / "r.parquet")
    assert len(entries) == 80  # both ids kept...
    notes = pd.read_parquet(tmp_path / "r.parquet")
    notes = notes[notes.stage == "ingest:shared-structure"]
    assert len(notes) == 40 and "clone-" + df.material_id[0] in set(notes.material_id)  # ...and noted
    group = dict(zip(entries.material_id, entries.structure_hash))
    for seed in range(10):
        payload_path = tmp_path / f"s{seed}.json"
        write_splits(tmp_path / "e.parquet", payload_path, SplitConfig(seed=seed))
        splits = read_splits(payload_path)
        side = {mid: k for k, ids in splits.items() for mid in ids}
        for mid in df.material_id[:20]:
            assert side[mid] == side["clone-" + mid], (seed, mid)
        assert sorted(side) == sorted(group)
        report = json.loads(payload_path.read_text())["groups"]
        assert report == {"grouped_by": "structure_hash", "n_groups": 60,
                          "groups_with_several_ids": 20, "ids_in_such_groups": 40}


def test_split_without_shared_structures_is_the_plain_seeded_shuffle(real):
    ids = list(real.material_id[:100])
    cfg = SplitConfig(seed=3)
    perm = np.random.default_rng(3).permutation(100)
    shuffled = [sorted(ids)[i] for i in perm]
    s = make_splits(ids, cfg, groups=[f"h{i}" for i in range(100)])
    assert s == {"train": sorted(shuffled[:80]), "val": sorted(shuffled[80:90]), "test": sorted(shuffled[90:])}
    assert make_splits(ids, cfg) == s


# --------------------------------------------------------------------------- item 6
def test_a_cif_cut_at_a_line_boundary_is_a_reject(mp_csv, real, tmp_path):
    full = pd.read_csv(mp_csv)
    hftc = full[full.material_id == "mp-11460"].iloc[0]
    si4 = full[full.material_id == "mp-1001113"].iloc[0]
    assert Structure.from_str(_cut_cif(hftc.cif), fmt="cif").composition.reduced_formula == "Hf"  # the bug
    rows = [
        {"material_id": "cut-HfTc", "cif": _cut_cif(hftc.cif), "formation_energy_per_atom": hftc.formation_energy_per_atom, "band_gap": 0.0},
        {"material_id": "cut-Si4", "cif": _cut_cif(si4.cif), "formation_energy_per_atom": 0.0, "band_gap": 0.5},
    ]
    good = real.head(5)[["material_id", "cif", *TARGETS]]
    path = tmp_path / "t.csv"
    pd.concat([good, pd.DataFrame(rows)], ignore_index=True).to_csv(path, index=False)
    entries = ingest(_cfg(path), "t", tmp_path / "e.parquet", tmp_path / "r.parquet")
    reasons = _reasons(pd.read_parquet(tmp_path / "r.parquet"))
    assert set(entries.material_id) == set(good.material_id)
    assert "parsed formula Hf (1 sites) disagrees with the formula 'Hf1 Tc1' declared in the CIF" in reasons["cut-HfTc"]
    assert "parsed 3 sites, which does not fit the formula 'Si4' with Z=4 declared in the CIF" in reasons["cut-Si4"]


def test_the_tables_formula_and_nsites_columns_are_checked(real, tmp_path):
    df = real.head(8)[["material_id", "cif", "formula", "nsites", *TARGETS]].copy()
    df.loc[2, "formula"] = "NaCl"          # not what the CIF holds
    df.loc[3, "nsites"] = df.loc[3, "nsites"] + 1
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    entries = ingest(_cfg(path), "t", tmp_path / "e.parquet", tmp_path / "r.parquet")
    reasons = _reasons(pd.read_parquet(tmp_path / "r.parquet"))
    assert set(entries.material_id) == set(df.material_id) - {df.material_id[2], df.material_id[3]}
    assert "declared in the table" in reasons[df.material_id[2]] and "'NaCl'" in reasons[df.material_id[2]]
    assert f"declares nsites={df.nsites[3]}" in reasons[df.material_id[3]]
    # switched off: nothing is checked against the columns
    off = ingest(_cfg(path, source={"formula_column": None, "nsites_column": None}), "t",
                 tmp_path / "e2.parquet", tmp_path / "r2.parquet")
    assert set(off.material_id) == set(df.material_id)


def test_every_real_structure_passes_the_declared_checks(real):
    """No false rejects: the 400 real rows agree with their CIFs' and the table's declarations."""
    from matfuse.structures import declared_in_cif

    for row in real.itertuples():
        s = parse_structure(row.cif)
        formula, z = declared_in_cif(row.cif)
        check_declared(s, formula=formula, formula_units_z=z, where="the CIF")
        check_declared(s, formula=row.formula, nsites=row.nsites, where="the table")


# --------------------------------------------------------------------------- item 7
def test_duplicate_ids_keep_the_first_file_row_whatever_the_subset_seed(real, tmp_path):
    df = real.head(30)[["material_id", "cif", *TARGETS]].copy()
    same = df.iloc[[4]].assign(formation_energy_per_atom=9.9)                       # same structure, other target
    other = df.iloc[[5]].assign(cif=df.cif[6])                                       # other structure, same targets
    table = pd.concat([df, same, other], ignore_index=True)
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    for seed in range(6):
        entries, rejects = canonicalise(fetch(_cfg(path).source), _cfg(path, subset=29, subset_seed=seed), "t")
        kept = entries.set_index("material_id")
        reasons = _reasons(rejects)
        for mid in (df.material_id[4], df.material_id[5]):
            if mid in kept.index:
                first = df[df.material_id == mid].iloc[0]
                assert math.isclose(kept.loc[mid, "formation_energy_per_atom"], first.formation_energy_per_atom)
                assert kept.loc[mid, "structure_hash"] == entries.set_index("material_id").loc[mid, "structure_hash"]
        assert "file row 30 repeats row 4, the first file row is kept (same structure; different formation_energy_per_atom)" in reasons[df.material_id[4]]
        assert "file row 31 repeats row 5, the first file row is kept (DIFFERENT structure; same targets)" in reasons[df.material_id[5]]
    full, _ = canonicalise(fetch(_cfg(path).source), _cfg(path), "t")
    s5 = parse_structure(full.set_index("material_id").loc[df.material_id[5], "structure"])
    assert s5 == Structure.from_str(df.cif[5], fmt="cif")


# --------------------------------------------------------------------------- item 8
def test_empty_ids_are_rejects_not_prefix_nan(real, tmp_path):
    df = real.head(6)[["material_id", "cif", *TARGETS]].copy()
    df["num"] = [1, 2, None, 4, 5, 6]
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    cfg = _cfg(path, source={"id_column": "num", "id_prefix": "p-"})
    entries = ingest(cfg, "t", tmp_path / "e.parquet", tmp_path / "r.parquet")
    assert sorted(entries.material_id) == ["p-1", "p-2", "p-4", "p-5", "p-6"]  # not p-1.0, never p-nan
    rejects = pd.read_parquet(tmp_path / "r.parquet")
    assert rejects.set_index("material_id").loc["<row 2>", "reason"] == "missing material_id (empty cell)"


# --------------------------------------------------------------------------- item 11
def test_unknown_elements_and_non_numbers_say_what_they_are(real, tmp_path):
    df = real.head(6)[["material_id", "cif", *TARGETS]].copy()
    symbol = Structure.from_str(df.cif[1], fmt="cif").species[0].symbol
    df.loc[1, "cif"] = _unknown_element(df.cif[1], symbol)
    assert "Qq" in df.cif[1]
    df["band_gap"] = df["band_gap"].astype(object)
    df.loc[2, "band_gap"] = "abc"
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    entries = ingest(_cfg(path), "t", tmp_path / "e.parquet", tmp_path / "r.parquet")
    reasons = _reasons(pd.read_parquet(tmp_path / "r.parquet"))
    assert "unknown element 'Qq'" in reasons[df.material_id[1]]
    assert reasons[df.material_id[2]] == "band_gap: not a number: 'abc'; entry kept for other targets"
    assert df.material_id[2] in set(entries.material_id)


def test_no_valid_rows_names_the_reasons_in_the_error(real, tmp_path):
    df = real.head(3)[["material_id", "cif", *TARGETS]].copy()
    df["cif"] = ["garbage", _nan_coordinate(real.cif[0]), _cut_cif(real.cif[7])]
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        ingest(_cfg(path), "t", tmp_path / "e.parquet", tmp_path / "r.parquet")
    msg = str(err.value)
    assert "no valid entries among 3 rows" in msg
    assert "unparseable" in msg and "non-finite atomic coordinate" in msg
    assert "in this job's log" in msg and "r.parquet" not in msg  # no pointer to a file that is never written


# --------------------------------------------------------------------------- campaign (DAG)
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _snakemake(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _campaign_tables(mp_csv: Path, work: Path) -> dict[str, str]:
    full = pd.read_csv(mp_csv, nrows=3000)
    small = full[full.nsites <= 6].reset_index(drop=True)
    good = small.head(24)[["material_id", "cif", "formula", "nsites", *TARGETS]].copy()
    spare = small.iloc[30:40].reset_index(drop=True)
    hftc = pd.read_csv(mp_csv)
    hftc = hftc[hftc.material_id == "mp-11460"].iloc[0]
    sym = Structure.from_str(spare.cif[2], fmt="cif").species[0].symbol

    def row(mid, cif, **kw):
        base = {"material_id": mid, "cif": cif, "formula": None, "nsites": None,
                "formation_energy_per_atom": -0.5, "band_gap": 0.5}
        return {**base, **kw}

    bad = [
        row("bad-nan-coordinate", _nan_coordinate(spare.cif[0])),
        row("bad-cut-cif", _cut_cif(hftc.cif)),
        row("bad-unknown-element", _unknown_element(spare.cif[2], sym)),
        row(None, spare.cif[3]),                                           # empty id
        row(good.material_id[5], spare.cif[4]),                            # duplicate id, other structure
        row("bad-empty-structure", None),
        row("bad-garbage", "this is not a structure"),
        row("bad-formula-column", spare.cif[5], formula="NaCl"),
        row("bad-overlap", _overlapping(spare.cif[6])),
    ]
    mixed = pd.concat([good.head(12), pd.DataFrame(bad), good.tail(12)], ignore_index=True)
    zs = spare.head(8)[["material_id", "cif", *TARGETS]].copy().astype({"band_gap": object})
    zs.loc[1, "band_gap"] = "abc"
    zs.loc[2, "formation_energy_per_atom"] = None
    zs.loc[3, "material_id"] = None
    zs = pd.concat([zs, zs.iloc[[0]].assign(material_id="twin")], ignore_index=True)  # same structure, 2 ids
    paths = {"clean": work / "clean.csv", "mixed": work / "mixed.csv", "zs": work / "zs.csv"}
    good.to_csv(paths["clean"], index=False)
    mixed.to_csv(paths["mixed"], index=False)
    zs.to_csv(paths["zs"], index=False)
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, mp_csv):
    work = tmp_path_factory.mktemp("campaign")
    paths = _campaign_tables(mp_csv, work)
    table = lambda p, **kw: {"source": {"kind": "table", "path": p, "targets": TARGETS, **kw}, "max_sites": 8}
    cfg = {
        "datasets": {"clean": table(paths["clean"]), "mixed": table(paths["mixed"]),
                     "zs": {**table(paths["zs"], id_prefix="zs-"), "train": False}},
        "text": {"n_shards": 1},
        "embeddings": {"minilm": {"model": "packaged:minilm", "pooling": "mean", "max_length": 128}},
        "training": {"models": ["cgcnn", "matmmfuse_frozen"], "targets": ["formation_energy_per_atom"],
                     "datasets": ["clean", "mixed"], "seeds": [0], "epochs": 3, "batch_size": 8, "patience": 3,
                     "device": "cpu"},
        "evaluation": {"zero_shot": {"zs": "mixed"}, "parity_plots": False},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    _snakemake(["results/metrics.csv", "--cores", "2", "--configfile", "config.yaml"], work)
    first = pd.read_csv(work / "results/metrics.csv")
    return work, cfg, first


@pytest.mark.slow
def test_campaign_every_bad_row_is_a_reject_with_its_reason(campaign):
    work, _, _ = campaign
    rej = pd.read_csv(work / "results/rejects.csv")
    mixed = _reasons(rej[rej.dataset == "mixed"]) if "dataset" in rej.columns else _reasons(rej)
    good_dup = pd.read_csv(work / "clean.csv").material_id[5]
    expected = {
        "bad-nan-coordinate": "non-finite atomic coordinate",
        "bad-cut-cif": "disagrees with the formula 'Hf1 Tc1' declared in the CIF",
        "bad-unknown-element": "unknown element 'Qq'",
        "<row 15>": "missing material_id (empty cell)",
        good_dup: "DIFFERENT structure",
        "bad-empty-structure": "structure is missing",
        "bad-garbage": "unparseable",
        "bad-formula-column": "'NaCl' declared in the table",
        "bad-overlap": "atoms overlap",
    }
    for mid, why in expected.items():
        assert why in mixed.get(mid, ""), (mid, mixed.get(mid))
    zs = _reasons(rej[rej.dataset == "zs"]) if "dataset" in rej.columns else {}
    assert any("band_gap: not a number: 'abc'" in r for r in zs.values()), zs
    assert any("formation_energy_per_atom: missing" in r for r in zs.values()), zs
    assert zs.get("<row 3>") == "missing material_id (empty cell)"
    assert any(r.startswith("same structure as zs-twin") for r in zs.values()), zs


@pytest.mark.slow
def test_campaign_good_rows_score_as_if_the_bad_ones_were_absent(campaign):
    _, _, m = campaign
    cols = ["target", "model", "split", "n", "mae", "rmse", "r2"]
    clean = m[m.dataset == "clean"][cols].sort_values(cols[:3]).reset_index(drop=True)
    mixed = m[(m.dataset == "mixed") & (m.split != "zeroshot")][cols].sort_values(cols[:3]).reset_index(drop=True)
    assert len(clean) == 2 * 3  # 2 models x 3 splits
    pd.testing.assert_frame_equal(clean, mixed)
    zs = m[m.split == "zeroshot"]
    assert set(zs.dataset) == {"zs"} and (zs.n > 0).all()


@pytest.mark.slow
def test_campaign_tampered_caches_are_recomputed_with_the_same_metrics(campaign):
    """A `null` robocrys cache file, a foreign Parquet part and NaN vectors in the embedding cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    work, _, first = campaign
    texts = sorted((work / "results/cache/robocrys").rglob("*.json"))
    assert texts
    texts[0].write_text("null")
    texts[1].write_text("[1, 2, 3]")
    emb_dir = next(p for p in (work / "results/cache/embeddings").iterdir() if p.is_dir())
    pq.write_table(pa.table({"something": [1, 2], "else": ["a", "b"]}), emb_dir / "part-0-foreign.parquet")
    for part in sorted(emb_dir.glob("part-*.parquet")):
        t = pq.read_table(part)
        if "embedding" in t.column_names and len(t):
            d = t.schema.field("embedding").type.list_size
            flat = np.full(len(t) * d, np.nan, dtype=np.float32)
            t = t.set_column(t.column_names.index("embedding"), "embedding",
                             pa.FixedSizeListArray.from_arrays(pa.array(flat), d))
            pq.write_table(t, part)
    import shutil

    for sub in ("text", "embeddings", "models", "predictions"):  # entries, splits and graphs are kept
        shutil.rmtree(work / "results" / sub, ignore_errors=True)
    (work / "results/metrics.csv").unlink()
    _snakemake(["results/metrics.csv", "--cores", "2", "--configfile", "config.yaml"], work)
    again = pd.read_csv(work / "results/metrics.csv")
    cols = ["dataset", "target", "model", "split", "n", "mae", "rmse", "r2"]
    key = cols[:4]
    a = first[cols].sort_values(key).reset_index(drop=True)
    b = again[cols].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5, rtol=1e-5)


def test_workers_never_rerun_an_unguarded_main_script(tmp_path):
    """Snakemake runs adapters as scripts without a ``__main__`` guard: workers must not re-run them."""
    script = tmp_path / "adapter.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from matfuse.isolation import map_isolated\n"
        "from test_bad_inputs import spacegroup_of\n"
        "print('RESULT', [r for _, r in map_isolated(spacegroup_of, [0.5, 0.25], chunk_size=1)])\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RESULT") == 1 and "RESULT [221, 99]" in proc.stdout


def test_large_structure_groups_still_fill_every_split():
    """6 ids in 4 structure groups (the ECD tiny set: 3 Al densities of one structure, ...)."""
    ids = ["si", "al1", "al2", "al3", "lih1", "lih2"]
    groups = ["h-si", "h-al", "h-al", "h-al", "h-lih", "h-lih"]
    for seed in range(20):
        s = make_splits(ids, SplitConfig(seed=seed), groups)
        assert all(s[k] for k in ("train", "val", "test")), (seed, s)
        side = {m: k for k, v in s.items() for m in v}
        assert side["al1"] == side["al2"] == side["al3"] and side["lih1"] == side["lih2"]
    with pytest.raises(ValueError, match="would be empty: 4 entries in 2 structure groups"):
        make_splits(["a", "b", "c", "d"], SplitConfig(), ["x", "x", "y", "y"])
