"""Ingest: real rows from the shared MP table, the table source's formats, every reject reason."""

from __future__ import annotations

import gzip
import json
import math
import zipfile

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure

from matfuse.config import DatasetConfig
from matfuse.ingest import canonicalise, ingest
from matfuse.sources.table import TableError, read_table
from matfuse.structures import (
    StructureError,
    load_structure,
    parse_structure,
    structure_hash,
)

TARGETS = {"formation_energy_per_atom": "formation_energy_per_atom", "band_gap": "band_gap"}


def _cfg(path, **kw):
    return DatasetConfig.model_validate(
        {"source": {"kind": "table", "path": str(path), "targets": TARGETS, **kw.pop("source", {})}, **kw}
    )


def test_parse_every_format_gives_the_same_structure(mp_rows):
    cif = mp_rows.loc[5, "cif"]
    ref = Structure.from_str(cif, fmt="cif")
    poscar = ref.to(fmt="poscar")
    jarvis = {
        "lattice_mat": ref.lattice.matrix.tolist(),
        "coords": ref.frac_coords.tolist(),
        "elements": [s.symbol for s in ref.species],
        "cartesian": False,
    }
    for value in (cif, poscar, ref.as_dict(), json.dumps(ref.as_dict()), jarvis, ref):
        s = parse_structure(value)
        assert s.composition == ref.composition
        assert np.allclose(s.lattice.matrix, ref.lattice.matrix, atol=1e-6)
        assert structure_hash(s) == structure_hash(ref)


def test_hash_ignores_site_order_but_not_geometry(mp_rows):
    s = Structure.from_str(mp_rows.loc[10, "cif"], fmt="cif")
    assert len(s) > 1
    shuffled = Structure.from_sites(list(reversed(s.sites)))
    assert structure_hash(shuffled) == structure_hash(s)
    strained = s.copy()
    strained.apply_strain(0.01)
    assert structure_hash(strained) != structure_hash(s)


@pytest.mark.parametrize("bad", ["", "not a cif at all", "data_x\n_cell_length_a 3\n", None, 3.5])
def test_unparseable_values_raise_with_reason(bad):
    with pytest.raises(StructureError) as err:
        parse_structure(bad)
    assert str(err.value)


def _write_bad_table(mp_rows, tmp_path):
    """Real rows plus one of each kind of bad input."""
    df = mp_rows[["material_id", "cif", "formation_energy_per_atom", "band_gap"]].head(12).copy()
    good = Structure.from_str(df.loc[0, "cif"], fmt="cif")
    disordered = good.copy()
    disordered.replace_species({disordered.species[0]: {disordered.species[0].symbol: 0.5, "Li": 0.5}})
    overlapping = good.copy()
    overlapping.append(overlapping.species[0], overlapping.frac_coords[0] + 0.001)
    big = good.copy()
    big.make_supercell([3, 3, 3])
    bad_rows = pd.DataFrame(
        [
            {"material_id": "bad-cif", "cif": "garbage", "formation_energy_per_atom": 0.1, "band_gap": 0.0},
            {"material_id": "bad-partial", "cif": disordered.to(fmt="cif"), "formation_energy_per_atom": 0.1, "band_gap": 0.0},
            {"material_id": "bad-overlap", "cif": overlapping.to(fmt="cif"), "formation_energy_per_atom": 0.1, "band_gap": 0.0},
            {"material_id": "bad-big", "cif": big.to(fmt="cif"), "formation_energy_per_atom": 0.1, "band_gap": 0.0},
            {"material_id": df.loc[1, "material_id"], "cif": df.loc[1, "cif"], "formation_energy_per_atom": 9.9, "band_gap": 0.0},
            {"material_id": "nan-target", "cif": df.loc[2, "cif"], "formation_energy_per_atom": float("nan"), "band_gap": 1.0},
            {"material_id": "inf-target", "cif": df.loc[3, "cif"], "formation_energy_per_atom": float("inf"), "band_gap": 1.0},
        ]
    )
    out = pd.concat([df, bad_rows], ignore_index=True)
    path = tmp_path / "table.csv"
    out.to_csv(path, index=False)
    return path, df, len(big)


def test_rejects_record_every_bad_entry_with_its_reason(mp_rows, tmp_path):
    path, df, nbig = _write_bad_table(mp_rows, tmp_path)
    max_sites = nbig - 1
    entries_p, rejects_p = tmp_path / "entries.parquet", tmp_path / "rejects.parquet"
    entries = ingest(_cfg(path, max_sites=max_sites), "t", entries_p, rejects_p)
    rejects = pd.read_parquet(rejects_p)
    reasons = rejects.groupby("material_id")["reason"].agg(" | ".join).to_dict()  # an id may have several rows
    assert "unparseable" in reasons["bad-cif"]
    assert "partial occupancy" in reasons["bad-partial"]
    assert "overlap" in reasons["bad-overlap"]
    assert f"exceeds max_sites={max_sites}" in reasons["bad-big"]
    assert "duplicate material_id" in reasons[df.loc[1, "material_id"]]
    assert "same structure; different formation_energy_per_atom" in reasons[df.loc[1, "material_id"]]
    assert "formation_energy_per_atom: missing" in reasons["nan-target"]
    assert "not finite (inf)" in reasons["inf-target"]
    # Kept: every real row (the duplicate's first occurrence) and the two entries with one bad target.
    kept = set(entries["material_id"])
    assert kept == set(df["material_id"]) | {"nan-target", "inf-target"}
    # Nothing dropped silently: every input id is an entry or a reject.
    all_ids = set(pd.read_csv(path)["material_id"])
    assert all_ids == kept | set(rejects["material_id"])
    row = entries.set_index("material_id").loc["nan-target"]
    assert pd.isna(row["formation_energy_per_atom"]) and row["band_gap"] == 1.0
    # The duplicate kept the first occurrence's value.
    first = entries.set_index("material_id").loc[df.loc[1, "material_id"], "formation_energy_per_atom"]
    assert math.isclose(first, df.loc[1, "formation_energy_per_atom"])
    # Structures round-trip exactly.
    s = load_structure(entries.set_index("material_id").loc[df.loc[0, "material_id"], "structure"])
    assert s == Structure.from_str(df.loc[0, "cif"], fmt="cif")


def test_partial_occupancy_allowed_when_configured(mp_rows, tmp_path):
    path, _, nbig = _write_bad_table(mp_rows, tmp_path)
    entries = ingest(_cfg(path, max_sites=nbig, allow_partial_occupancy=True), "t",
                     tmp_path / "e.parquet", tmp_path / "r.parquet")
    assert "bad-partial" in set(entries["material_id"])
    assert "bad-big" in set(entries["material_id"])


def test_entry_table_columns_and_values(mp_rows, tmp_path):
    path = tmp_path / "rows.parquet"
    mp_rows.to_parquet(path)
    entries = ingest(_cfg(path), "mp", tmp_path / "e.parquet", tmp_path / "r.parquet")
    for col in ["material_id", "source", "formula", "nsites", "spacegroup_number", "spacegroup_symbol",
                "elements", "structure", "structure_hash", "formation_energy_per_atom", "band_gap", "provenance"]:
        assert col in entries.columns
    si = mp_rows.set_index("material_id")
    for _, row in entries.iterrows():
        assert row["nsites"] == si.loc[row["material_id"], "nsites"]
        assert math.isclose(row["band_gap"], si.loc[row["material_id"], "band_gap"])
    assert json.loads(entries["provenance"].iloc[0])["source"] == "table"


@pytest.mark.parametrize("kind", ["csv.gz", "jsonl", "json", "parquet", "zip"])
def test_table_formats(mp_rows, tmp_path, kind):
    df = mp_rows[["material_id", "cif", "formation_energy_per_atom", "band_gap"]].head(5)
    path = tmp_path / f"t.{kind}"
    if kind == "csv.gz":
        df.to_csv(path, index=False, compression="gzip")
    elif kind == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif kind == "json":
        df.to_json(path, orient="records")
    elif kind == "parquet":
        df.to_parquet(path)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("inner.csv", df.to_csv(index=False))
    out = read_table(path)
    assert list(out["material_id"]) == list(df["material_id"])
    entries, rejects = canonicalise(
        __import__("matfuse.sources.table", fromlist=["fetch"]).fetch(_cfg(path).source), _cfg(path), "t"
    )
    assert len(entries) == 5 and len(rejects) == 0


def test_pymatgen_dict_and_jarvis_columns(mp_rows, tmp_path):
    rows = []
    for _, r in mp_rows.head(4).iterrows():
        s = Structure.from_str(r["cif"], fmt="cif")
        rows.append({"id": r["material_id"], "s": json.dumps(s.as_dict()), "y": r["band_gap"]})
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    cfg = DatasetConfig.model_validate({"source": {"kind": "table", "path": str(path), "id_column": "id",
                                                   "structure_column": "s", "structure_format": "pymatgen",
                                                   "targets": {"band_gap": "y"}}})
    entries = ingest(cfg, "d", tmp_path / "e.parquet", tmp_path / "r.parquet")
    assert list(entries["band_gap"]) == [r["y"] for r in rows]


def test_missing_column_and_file_errors_are_clear(mp_rows, tmp_path):
    path = tmp_path / "t.csv"
    mp_rows.head(3).to_csv(path, index=False)
    with pytest.raises(TableError, match="not_a_column"):
        ingest(_cfg(path, source={"targets": {"band_gap": "not_a_column"}}), "t", tmp_path / "e", tmp_path / "r")
    with pytest.raises(TableError, match="not found"):
        read_table(tmp_path / "nope.csv")


def test_subset_is_seeded_and_collects_valid_entries(mp_csv, tmp_path):
    cfg = _cfg(mp_csv, max_sites=10, subset=25, subset_seed=3)
    a = ingest(cfg, "mp", tmp_path / "a.parquet", tmp_path / "ra.parquet")
    b = ingest(cfg, "mp", tmp_path / "b.parquet", tmp_path / "rb.parquet")
    assert len(a) == 25 and list(a["material_id"]) == list(b["material_id"])
    assert a["nsites"].max() <= 10
    rej = pd.read_parquet(tmp_path / "ra.parquet")
    assert (rej["reason"].str.contains("exceeds max_sites=10")).all()


def test_chemistry_filters(mp_rows, tmp_path):
    path = tmp_path / "rows.parquet"
    mp_rows.to_parquet(path)
    chalc = {"any_of": ["S", "Se", "Te"], "none_of": ["O"]}
    inc = ingest(_cfg(path, include=chalc), "c", tmp_path / "e1", tmp_path / "r1")
    exc = ingest(_cfg(path, exclude=chalc), "x", tmp_path / "e2", tmp_path / "r2")
    for els in inc["elements"]:
        assert set(els) & {"S", "Se", "Te"} and "O" not in els
    assert set(inc["material_id"]).isdisjoint(exc["material_id"])
    assert len(inc) + len(exc) == len(mp_rows)
    assert (pd.read_parquet(tmp_path / "r2")["stage"] == "filter").sum() == len(inc)


def test_zip_members_and_per_atom_targets(shared_data, tmp_path):
    """The real perov_5 archive: several CSV members, heat of formation per 5-atom cell -> per atom."""
    cfg = DatasetConfig.model_validate({
        "source": {"kind": "table", "path": str(shared_data / "perov_5_cdvae/perov_5.zip"),
                   "members": ["perov_5/val.csv", "perov_5/test.csv"], "id_prefix": "perov-",
                   "targets": {"formation_energy_per_atom": "heat_all"}, "per_atom": ["formation_energy_per_atom"]},
        "subset": 30, "subset_seed": 0})
    from matfuse.sources.table import fetch

    raw = fetch(cfg.source)
    assert len(raw) == 3787 + 3785
    entries, rejects = canonicalise(raw, cfg, "perov")
    assert len(entries) == 30 and entries["material_id"].str.startswith("perov-").all()
    by_id = raw.drop_duplicates("material_id").set_index("material_id")["formation_energy_per_atom"]
    for _, row in entries.iterrows():
        assert row["nsites"] == 5
        assert math.isclose(row["formation_energy_per_atom"], by_id[row["material_id"]] / 5)
