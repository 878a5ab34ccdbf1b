"""Rebuild the recorded-format Materials Project fixtures from the shared real data.

    .venv/bin/python tests/fixtures_mp/build_fixtures.py [/path/to/shared/data]

Takes real rows of ``mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz`` (the first 29 with at most 16 sites,
plus mp-10810, whose Fermi energy is missing in the source) and writes them as the documents
``GET /materials/summary/`` returns: emmet-core ``SummaryDoc`` fields, validated by
``SummaryDoc.model_validate`` and serialised with ``model_dump(mode="json")``. The structure is
the CIF parsed by pymatgen (``Structure.as_dict()``); targets are the source's values; the other
fields are derived from the structure exactly as emmet derives them (composition, formula,
chemsys, volume, density, ``SymmetryData.from_structure``). Nothing is invented: fields the
source lacks (e.g. ``energy_above_hull``) are absent, as in a real document without them.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import pandas as pd
from emmet.core.summary import SummaryDoc
from emmet.core.symmetry import SymmetryData
from pymatgen.core import Structure

HERE = Path(__file__).resolve().parent
TARGETS = ["formation_energy_per_atom", "band_gap", "efermi", "total_magnetization"]
#: Date of the source snapshot (mt-cgcnn commit bdfaf10, 2020-09-22); used as last_updated.
SNAPSHOT = "2020-09-22T00:00:00Z"


def summary_doc(row: pd.Series) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = Structure.from_str(row["cif"], fmt="cif")
    comp = s.composition
    doc = {
        "material_id": row["material_id"],
        "structure": s.as_dict(),
        "nsites": len(s),
        "elements": sorted({e.symbol for e in comp.elements}),
        "nelements": len(comp.elements),
        "composition": comp.as_dict(),
        "composition_reduced": comp.reduced_composition.as_dict(),
        "formula_pretty": comp.reduced_formula,
        "formula_anonymous": comp.anonymized_formula,
        "chemsys": comp.chemical_system,
        "volume": s.volume,
        "density": float(s.density),
        "density_atomic": s.volume / len(s),
        "symmetry": SymmetryData.from_structure(s).model_dump(mode="json"),
        "deprecated": False,
        "last_updated": SNAPSHOT,
    }
    for t in TARGETS:
        v = row[t]
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            doc[t] = float(v)
    model = SummaryDoc.model_validate(doc)
    out = model.model_dump(mode="json", include=set(doc))
    out["material_id"] = row["material_id"]  # the public API still answers legacy ids (mp-149)
    return out


def main(shared: Path) -> None:
    df = pd.read_csv(shared / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz")
    rows = df[df["nsites"] <= 16].head(29)
    rows = pd.concat([rows, df[df["material_id"] == "mp-10810"]])
    docs = [summary_doc(r) for _, r in rows.iterrows()]
    (HERE / "summary_docs.json").write_text("[\n" + ",\n".join(json.dumps(d) for d in docs) + "\n]\n")
    import emmet.core

    heartbeat = {
        "status": "OK",
        "version": emmet.core.__version__,  # emmet-api version; MPRester warns if below its minimum
        "pymatgen": __import__("pymatgen.core").core.__version__,
        "db_version": "2020.09.22.replay",
        "suffix": "replay",
        "access_controlled_batch_ids": [],
    }
    (HERE / "heartbeat.json").write_text(json.dumps(heartbeat, indent=1) + "\n")
    print(f"wrote {len(docs)} summary docs and heartbeat.json to {HERE}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
