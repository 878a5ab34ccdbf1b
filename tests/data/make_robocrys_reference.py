"""Write tests/data/robocrys_stock_texts.json.gz: STOCK robocrys texts of a fixed, varied sample.

The reference of ``tests/test_text_fastpaths.py`` (byte identity of the exact fast paths). Every
text comes from :func:`matfuse.text.robocrys_text.stock_texts`: a fresh stock
``StructureCondenser()`` per structure, ``all`` = ``StructureDescriber().describe(...)``, ``key`` /
``single`` from the same condensed structure; no fast path is used. It runs in spawned workers
with ``PYTHONHASHSEED=0`` (robocrys' phrase order depends on the hash seed), like the text stage.

Sample (from ``mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz``, at most ``--max-sites`` sites): the 7
structures of tests/test_text.py, then a round robin over (crystal system, chemistry class) buckets
of a seeded random pool (within a bucket: the rarest number of elements so far, then an unseen
space group), so every crystal system, anion class and 1-5+ elements are represented. The file holds
only material ids, a SHA-256 of each CIF (to detect a changed data file), derived labels, the
texts, the stock seconds, and the library versions it was made with; no structure data.

    .venv/bin/python tests/data/make_robocrys_reference.py   # ~4 min on 2 idle cores, 13 min under load

After installing other robocrys/pymatgen/matminer/spglib/numpy versions: rerun this, set
``matfuse.text.settings.VERIFIED_VERSIONS`` to the ``versions`` it prints, and run
``pytest tests/test_text_fastpaths.py``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "robocrys_stock_texts.json.gz"
SEED = 20261212
FIXED_IDS = ["mp-1000", "mp-1001571", "mp-10015", "mp-10000", "mp-1001080", "mp-10003", "mp-1001011"]
HALOGENS = {"F", "Cl", "Br", "I"}
CHALCOGENS = {"S", "Se", "Te"}
PNICTOGENS = {"N", "P", "As", "Sb"}


def default_csv() -> Path:
    shared = Path(os.environ.get("MATFUSE_SHARED", REPO.parent / "shared"))
    return shared / "data" / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz"


def cif_sha256(cif: str) -> str:
    return hashlib.sha256(cif.encode("utf-8")).hexdigest()


def chemistry_class(structure) -> str:  # noqa: ANN001
    """Coarse anion class: oxide, halide, chalcogenide, pnictide, hydride, carbide, or intermetallic."""
    els = {el.symbol for el in structure.composition.elements}
    if "O" in els:
        return "oxide"
    if els & HALOGENS:
        return "halide"
    if els & CHALCOGENS:
        return "chalcogenide"
    if els & PNICTOGENS:
        return "pnictide"
    if "H" in els:
        return "hydride"
    if els & {"C", "B", "Si"} and len(els) > 1:
        return "carbide/boride/silicide"
    return "intermetallic/element"


def labels(structure) -> dict:  # noqa: ANN001
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sga = SpacegroupAnalyzer(structure, symprec=0.01)  # robocrys' default symprec
    return {
        "crystal_system": sga.get_crystal_system(),
        "space_group": sga.get_space_group_number(),
        "chemistry": chemistry_class(structure),
        "n_elements": len(structure.composition.elements),
        "nsites": len(structure),
    }


def select(csv: Path, n: int, max_sites: int, pool_size: int) -> list[dict]:
    from matfuse.structures import parse_structure

    df = pd.read_csv(csv, usecols=["material_id", "nsites", "cif"])
    df = df[df["nsites"] <= max_sites].set_index("material_id")
    chosen: list[dict] = []
    for mid in FIXED_IDS:
        cif = df.loc[mid, "cif"]
        chosen.append({"material_id": mid, "cif": cif, **labels(parse_structure(cif, "cif"))})
    buckets: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for mid, cif in df.drop(index=FIXED_IDS).sample(n=pool_size, random_state=SEED)["cif"].items():
        rec = {"material_id": mid, "cif": cif, **labels(parse_structure(cif, "cif"))}
        buckets[(rec["crystal_system"], rec["chemistry"])].append(rec)
    keys = sorted(buckets)
    random.Random(SEED).shuffle(keys)
    n_elements = Counter(min(r["n_elements"], 5) for r in chosen)
    space_groups = {r["space_group"] for r in chosen}
    while len(chosen) < len(FIXED_IDS) + n and any(buckets.values()):
        for key in keys:
            if buckets[key] and len(chosen) < len(FIXED_IDS) + n:
                # within the bucket: the rarest number of elements so far, then an unseen space group
                best = min(buckets[key], key=lambda r: (n_elements[min(r["n_elements"], 5)], r["space_group"] in space_groups))
                buckets[key].remove(best)
                chosen.append(best)
                n_elements[min(best["n_elements"], 5)] += 1
                space_groups.add(best["space_group"])
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=default_csv())
    ap.add_argument("--n", type=int, default=50, help="structures besides the 7 of tests/test_text.py")
    ap.add_argument("--max-sites", type=int, default=20)
    ap.add_argument("--pool", type=int, default=600, help="seeded random candidates to stratify")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from matfuse.structures import parse_structure
    from matfuse.text.describe import seeded_pool, shutdown_workers, submit_seeded
    from matfuse.text.settings import installed_versions

    if "matfuse.text.fastpaths" in sys.modules or "matfuse.text.mineral" in sys.modules:
        raise RuntimeError("fast-path modules imported: the reference must be pure stock robocrys")
    versions = dict(installed_versions())
    chosen = select(args.csv, args.n, args.max_sites, args.pool)
    print(f"{len(chosen)} structures; versions {versions}", flush=True)
    pool = seeded_pool(args.workers)
    t0 = time.perf_counter()
    futures = [(rec, submit_seeded(pool, _timed_stock, parse_structure(rec["cif"], "cif"))) for rec in chosen]
    records = []
    for rec, fut in futures:
        texts, error, seconds, fast_imported = fut.result()
        if fast_imported:
            raise RuntimeError("a worker imported the fast-path modules: the reference must be pure stock")
        out = {k: v for k, v in rec.items() if k != "cif"}
        out["cif_sha256"] = cif_sha256(rec["cif"])
        out["stock_seconds"] = round(seconds, 2)
        if error is not None:
            out["error"] = error
        else:
            out["texts"] = texts
        records.append(out)
        print(f"  {rec['material_id']:>12} {rec['crystal_system']:>12} {rec['chemistry']:>24} "
              f"{rec['nsites']:>3} sites {seconds:6.1f} s {'ERROR ' + error if error else ''}", flush=True)
    shutdown_workers()
    cover = defaultdict(int)
    for r in records:
        cover[r["crystal_system"]] += 1
        cover[r["chemistry"]] += 1
    print("coverage:", dict(cover))
    doc = {
        "what": "stock robocrys texts (matfuse.text.robocrys_text.stock_texts, PYTHONHASHSEED=0) of real MP "
        "structures: the byte-identity reference of the exact fast paths (tests/test_text_fastpaths.py)",
        "generator": "tests/data/make_robocrys_reference.py",
        "source": "mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz (ids and CIF SHA-256 only)",
        "selection": {"seed": SEED, "max_sites": args.max_sites, "pool": args.pool, "fixed_ids": FIXED_IDS},
        "versions": versions,
        "python": sys.version.split()[0],
        "hash_seed": "0",
        "structures": records,
    }
    raw = json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    args.out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.perf_counter() - t0:.0f} s")
    return 0


def _timed_stock(structure) -> tuple[dict | None, str | None, float, bool]:  # noqa: ANN001
    """Stock texts (or the error), seconds, and whether any fast-path module is loaded here."""
    from matfuse.text.robocrys_text import stock_texts

    t = time.perf_counter()
    try:
        texts, error = stock_texts(structure), None
    except Exception as exc:  # recorded: the fast paths must fail alike
        texts, error = None, f"{type(exc).__name__}: {exc}"[:500]
    seconds = time.perf_counter() - t
    fast = any(m in sys.modules for m in ("matfuse.text.fastpaths", "matfuse.text.mineral"))
    return texts, error, seconds, fast


if __name__ == "__main__":
    sys.exit(main())
