"""Structure inputs beyond CIF/POSCAR: positions + cell + atomic-number records (MatDeepLearn /
matbench-like JSON, the staged matbench_jdft2d file), extxyz and ASE databases through ase.io, and
list-valued targets (``y: [63.6]``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matfuse.config import DatasetConfig, TableSource
from matfuse.ingest import ingest, parse_target
from matfuse.sources.table import fetch
from matfuse.structures import StructureError, parse_structure

JDFT2D = Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench_jdft2d_phonons_matdeeplearn" / "jdft2d_exfoliation_energy.json.gz"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    with gzip.open(JDFT2D, "rt") as fh:
        return json.load(fh)


def _direct(rec: dict) -> Structure:
    return Structure(Lattice(rec["cell"]), rec["atomic_numbers"], rec["positions"], coords_are_cartesian=True)


def _same(a: Structure, b: Structure) -> None:
    np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-6)
    np.testing.assert_allclose(a.cart_coords, b.cart_coords, atol=1e-6)
    assert [s.specie.Z for s in a] == [s.specie.Z for s in b]


def test_positions_records_are_detected_and_list_targets_unpacked(records, tmp_path):
    """The staged jdft2d file as a table source: structure_format auto, target y = [value]."""
    src = TableSource(path=str(JDFT2D), id_column="structure_id", targets={"exfoliation_energy": "y"})
    raw = fetch(src)
    assert len(raw) == len(records) == 636
    assert set(raw["structure_format"]) == {"positions"}
    for k in (0, 100, 635):
        _same(parse_structure(raw["structure"].iloc[k], "auto"), _direct(records[k]))
        assert raw["exfoliation_energy"].iloc[k] == records[k]["y"][0]
    cfg = DatasetConfig(source=src, subset=30, subset_seed=0)
    entries = ingest(cfg, "jdft2d", tmp_path / "entries.parquet", tmp_path / "rejects.parquet")
    assert len(entries) == 30 and entries["exfoliation_energy"].notna().all()
    by_id = {str(r["structure_id"]): r for r in records}
    for mid, y in zip(entries["material_id"], entries["exfoliation_energy"]):
        assert y == pytest.approx(by_id[mid]["y"][0])


def test_element_of_a_list_column_and_long_lists_say_how_to_map_them(records, tmp_path):
    rows = [{**r, "y": [r["y"][0], 2 * r["y"][0]]} for r in records[:12]]
    path = tmp_path / "two_targets.json"
    path.write_text(json.dumps(rows))
    second = fetch(TableSource(path=str(path), id_column="structure_id", targets={"e2": "y[1]"}))
    assert list(second["e2"]) == [2 * r["y"][0] for r in records[:12]]
    value, why = parse_target([1.0, 2.0])
    assert value is None and "a list of 2 values" in why and "column[0]" in why
    assert parse_target([63.6]) == (63.6, None)
    src = TableSource(path=str(path), id_column="structure_id", targets={"e": "y"})
    ingest(DatasetConfig(source=src), "two", tmp_path / "e.parquet", tmp_path / "r.parquet")
    rej = pd.read_parquet(tmp_path / "r.parquet")
    assert len(rej) == 12 and rej["reason"].str.contains("a list of 2 values").all()


@pytest.mark.parametrize("suffix", [".extxyz", ".db"])
def test_extxyz_and_ase_databases_through_ase(records, tmp_path, suffix):
    import ase
    import ase.db
    import ase.io

    chosen = records[:15]
    atoms_list = []
    for r in chosen:
        a = ase.Atoms(numbers=r["atomic_numbers"], positions=r["positions"], cell=r["cell"], pbc=True)
        a.info = {"material_id": f"jdft2d-{r['structure_id']}", "exfoliation_energy": float(r["y"][0])}
        atoms_list.append(a)
    path = tmp_path / f"structures{suffix}"
    if suffix == ".db":
        with ase.db.connect(str(path)) as db:
            for a in atoms_list:
                db.write(a, key_value_pairs=dict(a.info))
    else:
        ase.io.write(str(path), atoms_list, format="extxyz")
    raw = fetch(TableSource(path=str(path), targets={"exfoliation_energy": "exfoliation_energy"}))
    assert list(raw["material_id"]) == [f"jdft2d-{r['structure_id']}" for r in chosen]
    for k, r in enumerate(chosen):
        _same(parse_structure(raw["structure"].iloc[k], raw["structure_format"].iloc[k]), _direct(r))
        assert raw["exfoliation_energy"].iloc[k] == pytest.approx(r["y"][0])


def test_bad_positions_records_say_what_is_wrong(records):
    rec = dict(records[0])
    with pytest.raises(StructureError, match="atomic numbers but"):
        parse_structure({**rec, "atomic_numbers": rec["atomic_numbers"][:-1]})
    with pytest.raises(StructureError, match="cell must be 3 x 3"):
        parse_structure({**rec, "cell": rec["cell"][:2]})
    with pytest.raises(StructureError, match="non-finite"):
        parse_structure({**rec, "positions": [[float("nan"), 0, 0]] + rec["positions"][1:]})
    with pytest.raises(StructureError, match="not an element"):
        parse_structure({**rec, "atomic_numbers": [0] + rec["atomic_numbers"][1:]})
