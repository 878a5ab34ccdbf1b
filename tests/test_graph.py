"""Graph featurisation on real MP structures: neighbour lists vs a brute-force reference."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pymatgen.core import Element, Structure

from matfuse.config import GraphConfig
from matfuse.graphs.build import (
    FEATURE_SPEC,
    GraphError,
    atom_feature_dim,
    atom_feature_table,
    build_graphs,
    gaussian_centers,
    neighbor_graph,
    read_graphs,
)
from matfuse.io import write_parquet


def _structures(mp_rows: pd.DataFrame, n: int | None = None) -> list[tuple[str, Structure]]:
    rows = mp_rows if n is None else mp_rows.head(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(mid, Structure.from_str(cif, fmt="cif")) for mid, cif in zip(rows["material_id"], rows["cif"])]


def _entries(pairs: list[tuple[str, Structure]], path) -> None:
    write_parquet(
        pd.DataFrame(
            {"material_id": [m for m, _ in pairs], "structure": [json.dumps(s.as_dict()) for _, s in pairs]}
        ),
        path,
    )


def test_neighbor_lists_match_bruteforce(mp_rows):
    cfg = GraphConfig()
    pairs = _structures(mp_rows)
    # a few structures of different sizes, including the largest of the sample
    chosen = sorted(pairs, key=lambda p: len(p[1]))
    chosen = [chosen[0], chosen[len(chosen) // 2], chosen[-1], pairs[1], pairs[7]]
    for material_id, s in chosen:
        g = neighbor_graph(s, cfg)
        assert g["atomic_numbers"].tolist() == [site.specie.Z for site in s]
        for i, site in enumerate(s):
            ref = sorted(s.get_neighbors(site, cfg.radius), key=lambda n: n.nn_distance)
            ref = [n for n in ref if n.nn_distance > 1e-8][: cfg.max_neighbors]
            mine = g["edge_dst"] == i
            d_mine = g["edge_dist"][mine]
            d_ref = np.array([n.nn_distance for n in ref])
            assert len(d_mine) == len(d_ref), (material_id, i)
            np.testing.assert_allclose(d_mine, d_ref, rtol=0, atol=1e-4, err_msg=material_id)
            # neighbour identity: exact for every neighbour strictly closer than the cut-off distance
            cut = d_ref[-1] - 1e-4
            idx_mine = sorted(g["edge_src"][mine][d_mine < cut].tolist())
            idx_ref = sorted(n.index for n in ref if n.nn_distance < cut)
            assert idx_mine == idx_ref, (material_id, i)
            # bond vectors: neighbour image minus centre, the same vectors as pymatgen's neighbours
            v_mine = g["edge_vec"][mine]
            np.testing.assert_allclose(np.linalg.norm(v_mine, axis=1), d_mine, rtol=0, atol=1e-4)
            v_ref = np.array([n.coords - site.coords for n in ref if n.nn_distance < cut])
            v_in = v_mine[d_mine < cut]
            assert len(v_in) == len(v_ref)
            for v in v_ref:  # each reference vector is one of ours (order within a distance tie differs)
                assert np.abs(v_in - v).max(axis=1).min() < 1e-4, (material_id, i)
        assert (np.diff(g["edge_dst"]) >= 0).all()  # sorted by centre
        assert g["edge_dist"].max() <= cfg.radius + 1e-6


def test_fewer_neighbours_with_small_radius(mp_rows):
    cfg = GraphConfig(radius=3.0, max_neighbors=4)
    for material_id, s in _structures(mp_rows, 10):
        try:
            g = neighbor_graph(s, cfg)
        except GraphError as exc:
            assert "isolated atom" in str(exc)
            continue
        counts = np.bincount(g["edge_dst"], minlength=len(s))
        assert counts.max() <= 4 and counts.min() >= 1
        full = s.get_neighbor_list(3.0)[0]
        np.testing.assert_array_equal(counts, np.minimum(np.bincount(full, minlength=len(s)), 4))


def test_build_graphs_records_isolated_atom(mp_rows, tmp_path):
    pairs = _structures(mp_rows, 6)
    # a real structure blown up so that every interatomic distance exceeds the radius
    mid, s = pairs[2]
    sparse = s.copy()
    sparse.scale_lattice(s.volume * (9.0 / min(s.lattice.abc)) ** 3 * 8)
    pairs = pairs + [("sparse-" + mid, sparse)]
    entries = tmp_path / "entries.parquet"
    _entries(pairs, entries)
    out, rej_path = tmp_path / "graphs.parquet", tmp_path / "rejects.parquet"
    table, rejects = build_graphs(entries, out, GraphConfig(), rejects_path=rej_path)
    assert rejects["material_id"].tolist() == ["sparse-" + mid]
    assert rejects["stage"].tolist() == ["graphs"]
    assert "isolated atom" in rejects["reason"].iloc[0]
    assert pq.read_table(rej_path).num_rows == 1
    schema = pq.read_schema(out)
    assert str(schema.field("atomic_numbers").type) == "list<element: int8>"
    assert str(schema.field("edge_src").type) == "list<element: int32>"
    assert str(schema.field("edge_dst").type) == "list<element: int32>"
    assert str(schema.field("edge_dist").type) == "list<element: float>"
    assert str(schema.field("edge_vec").type) == "list<element: float>"
    # a process pool gives the same table
    table2, rejects2 = build_graphs(entries, tmp_path / "graphs2.parquet", GraphConfig(), workers=2)
    assert table2.equals(table) and rejects2.equals(rejects)
    graphs = read_graphs(out)
    assert list(graphs) == [m for m, _ in pairs[:-1]]  # order kept, nothing else dropped
    for m, s in pairs[:-1]:
        ref = neighbor_graph(s, GraphConfig())
        for k in ref:
            np.testing.assert_array_equal(graphs[m][k], ref[k])


def test_graph_tables_without_bond_vectors_still_read(mp_rows, tmp_path):
    """A graphs table written before edge_vec existed reads as before (no edge_vec key)."""
    pairs = _structures(mp_rows, 3)
    entries = tmp_path / "entries.parquet"
    _entries(pairs, entries)
    table, _ = build_graphs(entries, tmp_path / "graphs.parquet", GraphConfig())
    old = tmp_path / "old.parquet"
    pq.write_table(table.drop_columns(["edge_vec"]), old)
    new, before = read_graphs(tmp_path / "graphs.parquet"), read_graphs(old)
    for m, _ in pairs:
        assert "edge_vec" not in before[m] and new[m]["edge_vec"].shape == (len(new[m]["edge_src"]), 3)
        for k in before[m]:
            np.testing.assert_array_equal(before[m][k], new[m][k])


def test_atom_features_follow_pymatgen():
    table = atom_feature_table()
    assert table.shape == (104, atom_feature_dim()) == (104, 91)
    assert not table[0].any()
    groups = table[:, :18]
    periods = table[:, 18:25]
    for z in range(1, 87):
        el = Element.from_Z(z)
        if not (el.is_lanthanoid or el.is_actinoid):
            assert groups[z].argmax() + 1 == el.group, el
        assert periods[z].argmax() + 1 == el.row, el
        # every block is a one-hot or (unknown property) all zero
        start = 0
        for _, kind, spec in FEATURE_SPEC:
            width = len(spec) if kind == "category" else spec[2]
            assert table[z, start : start + width].sum() in (0.0, 1.0)
            start += width
    # different elements get different features (lanthanoids may share bins, as in CGCNN)
    main = [z for z in range(1, 87) if not Element.from_Z(z).is_lanthanoid]
    assert len({table[z].tobytes() for z in main}) == len(main)
    np.testing.assert_allclose(gaussian_centers(GraphConfig())[[0, -1]], [0.0, 8.0])
    assert len(gaussian_centers(GraphConfig())) == 41


def test_disordered_structure_is_rejected(mp_rows):
    _, s = _structures(mp_rows, 1)[0]
    s = s.copy()
    s.replace(0, {s[0].specie: 0.5, "Li": 0.5})
    with pytest.raises(GraphError, match="partial occupancy"):
        neighbor_graph(s, GraphConfig())
