"""Crystal graphs for CGCNN-style models.

Two things live here:

* :func:`atom_feature_table` — CGCNN's per-element input features.  The original
  ``atom_init.json`` (Xie & Grossman, PRL 120, 145301, 2018; Table S2 of the SI; MIT-licensed,
  txie-93/cgcnn) is also available, 92-wide, as :func:`cgcnn_atom_init_table` (matminer ships
  the file as ``cgcnn_atom_feature.json``; ``CGCNNConfig.atom_features: cgcnn``, used by
  ``cgcnn_paper``).  The default recomputes the same *recipe* from pymatgen's element data:
  nine properties, each turned into a one-hot over fixed categories/bins (see
  :data:`FEATURE_SPEC`).  Continuous properties are binned uniformly over the paper's ranges
  (values outside the range fall in the first/last bin); a property pymatgen does not know for
  an element leaves that block all zero.  The vector has 91 entries (the published file has
  92; the exact bin edges of the original are not public, so values differ slightly).
* :func:`neighbor_graph` / :func:`build_graphs` — CGCNN neighbour lists: for every atom, the
  ``max_neighbors`` nearest atoms (periodic images included, self-images too) within
  ``radius`` Å, found with one vectorised call to ``Structure.get_neighbor_list`` and a
  numpy per-centre top-k (no Python loop over neighbours).  Unlike the reference CGCNN code,
  atoms with fewer than ``max_neighbors`` neighbours are *not* padded with fake ones; an atom
  with no neighbour at all makes the structure a reject (recorded, never dropped silently).

Edge convention: ``edge_dst`` is the centre atom (it receives the message), ``edge_src`` the
neighbour, so ``edge_index = [edge_src, edge_dst]`` is PyTorch Geometric's
``source_to_target`` flow.  Edges are sorted by centre, then distance.  ``edge_vec`` is the bond
vector of each edge (Cartesian Å, neighbour position *including its periodic image* minus the
centre position; ``|edge_vec| = edge_dist``), stored flat (3 floats per edge) in the table and
as ``(E, 3)`` by :func:`neighbor_graph` / :func:`read_graphs`: ALIGNN's bond angles need it,
CGCNN ignores it.  Tables written before the column existed still read (without the key).
"""

from __future__ import annotations

import logging
import math
import warnings
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pymatgen.core import Element, Structure
from tqdm.auto import tqdm

from matfuse.config import GraphConfig
from matfuse.io import rejects_frame, write_parquet

log = logging.getLogger(__name__)

STAGE = "graphs"
#: Largest atomic number the feature table covers (rows 0..MAX_Z; row 0 is unused / zeros).
MAX_Z = 103

#: (property, kind, categories-or-(low, high, n_bins)).  Ranges follow CGCNN's SI Table S2.
FEATURE_SPEC: list[tuple[str, str, Any]] = [
    ("group", "category", list(range(1, 19))),  # 18
    ("period", "category", list(range(1, 8))),  # 7
    ("electronegativity", "bins", (0.5, 4.0, 10)),  # Pauling
    ("covalent_radius", "bins", (25.0, 250.0, 10)),  # pm
    ("valence_electrons", "category", list(range(1, 13))),  # 12
    ("first_ionization_energy", "bins", (1.3, 3.3, 10)),  # ln(eV)
    ("electron_affinity", "bins", (-3.0, 3.7, 10)),  # eV
    ("block", "category", ["s", "p", "d", "f"]),  # 4
    ("atomic_volume", "bins", (1.5, 4.3, 10)),  # ln(cm^3/mol)
]

GRAPH_SCHEMA = pa.schema(
    [
        ("material_id", pa.string()),
        ("atomic_numbers", pa.list_(pa.int8())),
        ("edge_src", pa.list_(pa.int32())),
        ("edge_dst", pa.list_(pa.int32())),
        ("edge_dist", pa.list_(pa.float32())),
        ("edge_vec", pa.list_(pa.float32())),
    ]
)
#: Columns every graphs table has; ``edge_vec`` was added later (see :func:`read_graphs`).
BASE_COLUMNS = ("atomic_numbers", "edge_src", "edge_dst", "edge_dist")


class GraphError(ValueError):
    """A structure that cannot be turned into a graph; the message is the reason."""


# --------------------------------------------------------------------------- atom features
def _element_properties(el: Element) -> dict[str, float | int | str | None]:
    """The nine CGCNN properties of one element from pymatgen data (None = unknown)."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    def safe(fn):  # pymatgen warns/raises for missing data
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = fn()
        except Exception:
            return None
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    group = safe(lambda: int(el.group))
    if el.is_lanthanoid or el.is_actinoid:
        group = 3  # CGCNN puts the f-block in group 3
    block = safe(lambda: str(el.block))
    if el.symbol == "He":
        block = "s"
    # Valence electrons: groups 1-12 -> group, 13-18 -> group - 10 (He: 2); f-block -> 3.
    valence = None
    if group is not None:
        valence = group if group <= 12 else group - 10
        if el.symbol == "He":
            valence = 2
    cov = CovalentRadius.radius.get(el.symbol)
    ie = safe(lambda: float(el.ionization_energies[0]))
    mv = safe(lambda: float(el.molar_volume))
    return {
        "group": group,
        "period": safe(lambda: int(el.row)),
        "electronegativity": safe(lambda: float(el.X)),
        "covalent_radius": None if cov is None else 100.0 * float(cov),
        "valence_electrons": valence,
        "first_ionization_energy": math.log(ie) if ie and ie > 0 else None,
        "electron_affinity": safe(lambda: float(el.electron_affinity)),
        "block": block,
        "atomic_volume": math.log(mv) if mv and mv > 0 else None,
    }


def _one_hot(value: Any, kind: str, spec: Any) -> np.ndarray:
    if kind == "category":
        out = np.zeros(len(spec), dtype=np.float32)
        if value in spec:
            out[spec.index(value)] = 1.0
        return out
    low, high, n = spec
    out = np.zeros(n, dtype=np.float32)
    if value is not None:
        idx = int(np.floor((float(value) - low) / (high - low) * n))
        out[min(max(idx, 0), n - 1)] = 1.0
    return out


@lru_cache(maxsize=1)
def cgcnn_atom_init_table() -> np.ndarray:
    """CGCNN's own 92-wide ``atom_init.json`` as ``(MAX_Z + 1, 92)`` (rows of Z 1..100; others zero).

    Read from matminer's copy (``matminer/utils/data_files/cgcnn_atom_feature.json``, keyed by Z).
    """
    import json
    from importlib.resources import files

    data = json.loads(files("matminer.utils.data_files").joinpath("cgcnn_atom_feature.json").read_text())
    width = len(next(iter(data.values())))
    table = np.zeros((MAX_Z + 1, width), dtype=np.float32)
    for z, vec in data.items():
        if int(z) <= MAX_Z:
            table[int(z)] = np.asarray(vec, dtype=np.float32)
    table.setflags(write=False)
    return table


def atom_feature_table() -> np.ndarray:
    """CGCNN-style element features, shape ``(MAX_Z + 1, 91)``; row ``Z`` is element ``Z``.

    Row 0 (no element) is all zeros.  Computed once from pymatgen (cached per process).
    """
    rows = [np.zeros(atom_feature_dim(), dtype=np.float32)]
    for z in range(1, MAX_Z + 1):
        props = _element_properties(Element.from_Z(z))
        rows.append(np.concatenate([_one_hot(props[name], kind, spec) for name, kind, spec in FEATURE_SPEC]))
    table = np.stack(rows)
    table.setflags(write=False)
    return table


def atom_feature_dim() -> int:
    """Length of one atom feature vector (91)."""
    return sum(len(spec) if kind == "category" else spec[2] for _, kind, spec in FEATURE_SPEC)


def gaussian_centers(cfg: GraphConfig) -> np.ndarray:
    """Centres of CGCNN's Gaussian distance expansion: ``0, step, ..., radius`` (41 for 8 Å / 0.2)."""
    n = int(round(cfg.radius / cfg.gaussian_step)) + 1
    return np.arange(n, dtype=np.float64) * cfg.gaussian_step


# --------------------------------------------------------------------------- neighbour lists
def neighbor_graph(structure: Structure, cfg: GraphConfig) -> dict[str, np.ndarray]:
    """CGCNN neighbour list of one structure.

    Returns ``atomic_numbers`` (int8, n), ``edge_src`` / ``edge_dst`` (int32),
    ``edge_dist`` (float32, Å) and ``edge_vec`` (float32, ``(E, 3)``, Å: neighbour image minus
    centre): for each centre ``i`` the (up to) ``cfg.max_neighbors`` nearest neighbours within
    ``cfg.radius``, sorted by distance (ties by neighbour index).

    Raises :class:`GraphError` for disordered sites, unknown elements or an isolated atom.
    """
    n = len(structure)
    if n == 0:
        raise GraphError("structure has no sites")
    if not structure.is_ordered:
        raise GraphError("partial occupancy: graph featurisation needs one element per site")
    z = np.array([getattr(site.specie, "Z", 0) for site in structure], dtype=np.int64)
    bad = (z < 1) | (z > MAX_Z)
    if bad.any():
        raise GraphError(f"site {int(np.argmax(bad))} has no supported element (Z={int(z[bad][0])})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        center, neighbor, images, dist = structure.get_neighbor_list(cfg.radius)
    center = np.asarray(center, dtype=np.int64)
    neighbor = np.asarray(neighbor, dtype=np.int64)
    dist = np.asarray(dist, dtype=np.float64)
    images = np.asarray(images, dtype=np.float64).reshape(-1, 3)
    keep = dist > 1e-8  # self at distance 0 is never a neighbour
    center, neighbor, dist, images = center[keep], neighbor[keep], dist[keep], images[keep]
    counts = np.bincount(center, minlength=n)
    if (counts == 0).any():
        i = int(np.argmin(counts))
        raise GraphError(
            f"isolated atom: site {i} ({structure[i].specie}) has no neighbour within {cfg.radius} Å"
        )
    order = np.lexsort((neighbor, dist, center))
    center, neighbor, dist, images = center[order], neighbor[order], dist[order], images[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(center)) - starts[center]
    sel = rank < cfg.max_neighbors
    center, neighbor, images = center[sel], neighbor[sel], images[sel]
    cart = structure.cart_coords
    vec = cart[neighbor] + images @ structure.lattice.matrix - cart[center]
    return {
        "atomic_numbers": z.astype(np.int8),
        "edge_src": neighbor.astype(np.int32),
        "edge_dst": center.astype(np.int32),
        "edge_dist": dist[sel].astype(np.float32),
        "edge_vec": vec.astype(np.float32),
    }


def _graph_row(args: tuple[str, str, GraphConfig]) -> tuple[str, dict[str, np.ndarray] | None, str | None]:
    """Worker: (material_id, structure JSON, cfg) -> (id, graph or None, reason or None)."""
    from matfuse.structures import load_structure

    material_id, text, cfg = args
    try:
        structure = load_structure(text)
    except Exception as exc:  # a broken structure string is a reject with its reason
        return material_id, None, f"unparseable structure: {type(exc).__name__}: {exc}"
    try:
        return material_id, neighbor_graph(structure, cfg), None
    except GraphError as exc:
        return material_id, None, str(exc)


def _iter_graphs(
    ids: list[str], structures: list[str], cfg: GraphConfig, workers: int
) -> Iterator[tuple[str, dict[str, np.ndarray] | None, str | None]]:
    jobs: Iterable[tuple[str, str, GraphConfig]] = ((i, s, cfg) for i, s in zip(ids, structures))
    if workers <= 1:
        yield from map(_graph_row, jobs)
        return
    with get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_graph_row, jobs, chunksize=32)


def graphs_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Arrow table in the graphs schema from rows of (material_id + neighbor_graph output)."""
    return pa.Table.from_pylist(
        [
            {
                "material_id": r["material_id"],
                "atomic_numbers": r["atomic_numbers"].tolist(),
                "edge_src": r["edge_src"].tolist(),
                "edge_dst": r["edge_dst"].tolist(),
                "edge_dist": r["edge_dist"].tolist(),
                "edge_vec": np.asarray(r["edge_vec"], dtype=np.float32).ravel().tolist(),
            }
            for r in rows
        ],
        schema=GRAPH_SCHEMA,
    )


def build_graphs(
    entries_path: str | Path,
    out_path: str | Path,
    cfg: GraphConfig,
    rejects_path: str | Path | None = None,
    workers: int = 1,
) -> tuple[pa.Table, pd.DataFrame]:
    """Stage: entries Parquet -> ``graphs.parquet`` (one row per material) + rejects.

    Columns: material_id, atomic_numbers list<int8>, edge_src / edge_dst list<int32>,
    edge_dist list<float32> (Å), edge_vec list<float32> (3 per edge, Å).  Structures that cannot be featurised (isolated atom,
    disorder, unparseable) are written to ``rejects_path`` (material_id, stage, reason) and
    logged.  ``workers > 1`` uses a process pool.  Returns (graphs table, rejects frame).
    """
    entries = pq.read_table(entries_path, columns=["material_id", "structure"]).to_pandas()
    ids = entries["material_id"].astype(str).tolist()
    structures = entries["structure"].tolist()
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    it = _iter_graphs(ids, structures, cfg, workers)
    for material_id, graph, reason in tqdm(it, total=len(ids), desc="graphs", mininterval=5):
        if graph is None:
            rejects.append({"material_id": material_id, "stage": STAGE, "reason": reason})
        else:
            rows.append({"material_id": material_id, **graph})
    table = graphs_table(rows)
    rej = rejects_frame(rejects)
    write_parquet(table, out_path)
    if rejects_path is not None:
        write_parquet(rej, rejects_path)
    n_edges = sum(len(r["edge_src"]) for r in rows)
    log.info(
        "graphs: %d structures -> %d graphs (%d edges, radius %.2f Å, max %d neighbours), %d rejected",
        len(ids), len(rows), n_edges, cfg.radius, cfg.max_neighbors, len(rej),
    )
    for r in rejects[:20]:
        log.warning("graph reject %s: %s", r["material_id"], r["reason"])
    return table, rej


def read_graphs(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read ``graphs.parquet`` into ``{material_id: {atomic_numbers, edge_src, edge_dst, edge_dist, edge_vec}}``.

    ``edge_vec`` comes back as ``(E, 3)``; a table written before bond vectors were stored has
    no ``edge_vec`` column and its graphs no ``edge_vec`` key (the models that need it say so).
    Uses the Arrow list offsets directly (one slice per material, no per-edge Python work).
    """
    table = pq.read_table(path)
    ids = table.column("material_id").to_pylist()
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names = BASE_COLUMNS + (("edge_vec",) if "edge_vec" in table.column_names else ())
    for name in names:
        arr = table.column(name).combine_chunks()
        offsets = arr.offsets.to_numpy()
        values = arr.flatten().to_numpy(zero_copy_only=False)
        base = offsets[0]
        cols[name] = (offsets - base, values)
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, material_id in enumerate(ids):
        g = {name: values[offsets[k] : offsets[k + 1]] for name, (offsets, values) in cols.items()}
        if "edge_vec" in g:
            g["edge_vec"] = g["edge_vec"].reshape(-1, 3)
        out[material_id] = g
    return out
