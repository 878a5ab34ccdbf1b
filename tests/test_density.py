"""Charge-density branch on real VASP files: reading, regridding (pyrho), (111) slices, sources."""

from __future__ import annotations

import gzip
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure

from matfuse.density.config import DensityConfig, LocalDensitySource, MPDensitySource, SelectionConfig, SliceConfig
from matfuse.density.io import NpzWriter, chgcar_from_json, read_manifest, read_volumetric, scan_vasp_folder
from matfuse.density.regrid import KindUnavailable, integrate, regrid
from matfuse.density.slice import conventional_lattice_in_frame, sample_periodic, slice_geometry, slice_image
from matfuse.density.sources import iter_local, iter_mp
from matfuse.density.stage import FCC_SPACEGROUPS, build_density_images, read_slices, select_fcc_stable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_server import Reply, ReplayServer, mp_routes  # noqa: E402

CHG = "chgdens_atomate"


@pytest.fixture(scope="module")
def chg_dir(shared_data: Path) -> Path:
    return shared_data / CHG


@pytest.fixture(scope="module")
def si(chg_dir: Path):
    return read_volumetric(chg_dir / "Si_static" / "CHGCAR.gz")


def _trilinear_periodic(cube: np.ndarray, lattice: np.ndarray, point: np.ndarray) -> float:
    """Independent reference: periodic trilinear interpolation written out by hand."""
    n = np.asarray(cube.shape)
    g = (point @ np.linalg.inv(lattice)) * n
    i0 = np.floor(g).astype(int)
    t = g - i0
    val = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (t[0] if dx else 1 - t[0]) * (t[1] if dy else 1 - t[1]) * (t[2] if dz else 1 - t[2])
                val += w * cube[(i0[0] + dx) % n[0], (i0[1] + dy) % n[1], (i0[2] + dz) % n[2]]
    return float(val)


# ----------------------------------------------------------------------------- regrid
@pytest.mark.parametrize(
    "folder, electrons",
    [("Si_static", 8), ("Al_nscf_uniform", 3), ("Al_SCAN_opt", 3), ("LiH_PBEsol_preopt", 4)],
)
def test_regridded_total_keeps_electron_count(chg_dir: Path, folder: str, electrons: int) -> None:
    chg = read_volumetric(chg_dir / folder / "CHGCAR.gz")
    n_file = chg.data["total"].sum() / chg.data["total"].size
    assert n_file == pytest.approx(electrons, abs=1e-3)  # PAW valence count of the calculation
    for grid in ((60, 60, 60), (64, 72, 80)):  # finer than (or equal to) the file's grid
        rg = regrid(chg, "total", grid)
        assert rg.cube.shape == grid
        # e/Å^3 integrated over the cell gives the electrons of the file
        assert integrate(rg.cube, chg.structure.volume) == pytest.approx(n_file, rel=1e-4)
        assert rg.electrons_out == pytest.approx(rg.electrons_in, rel=1e-4)
    # coarser, incommensurate grids point-sample the sharp peaks: the count drifts, but < 1 %
    coarse = regrid(chg, "total", (37, 41, 43))
    assert coarse.electrons_out == pytest.approx(n_file, rel=1e-2)


def test_regrid_units_are_electrons_per_cubic_angstrom(si) -> None:
    """On the file's own grid the cube is the file data divided by the cell volume."""
    rg = regrid(si, "total", si.data["total"].shape)
    np.testing.assert_allclose(rg.cube, si.data["total"] / si.structure.volume, rtol=1e-12)
    # and a finer grid agrees with it at the shared grid points (0, 2, 4 ... of 120 = 0, 1, 2 ... of 60)
    fine = regrid(si, "total", (120, 120, 120)).cube
    np.testing.assert_allclose(fine[::2, ::2, ::2], rg.cube, atol=2e-3 * np.abs(rg.cube).max())


def test_spin_block(chg_dir: Path, si) -> None:
    assert si.is_spin_polarized
    rg = regrid(si, "spin", (60, 60, 60))
    # Si is non-magnetic: the magnetisation density integrates to ~0 and is tiny everywhere
    assert abs(rg.electrons_out) < 1e-6
    assert np.abs(rg.cube).max() < 1e-3 * regrid(si, "total", (60, 60, 60)).cube.max()
    aec = read_volumetric(chg_dir / "YPO4_static" / "AECCAR2.gz")
    with pytest.raises(KindUnavailable, match="diff"):
        regrid(aec, "spin", (60, 60, 60))


@pytest.mark.parametrize("folder", ["YPO4_static", "Y2MgPO42_static", "YMgPO4_static", "Y2Mg3PO42_static"])
def test_valence_aeccar2_of_phosphates(chg_dir: Path, folder: str) -> None:
    aec2 = read_volumetric(chg_dir / folder / "AECCAR2.gz")
    rg = regrid(aec2, "valence", (60, 60, 60))
    assert rg.kind == "valence" and rg.cube.shape == (60, 60, 60)
    assert np.isfinite(rg.cube).all()
    # all-electron valence density has sharp core-region peaks: 60^3 keeps the count within 2 %
    assert rg.electrons_out == pytest.approx(rg.electrons_in, rel=0.02)
    # the count is the PAW valence of the composition (Y_sv 11, Mg_pv 8, P 5, O 6) within 5 %
    zval = {"Y": 11, "Mg": 8, "P": 5, "O": 6}
    expected = sum(zval[el.symbol] * n for el, n in aec2.structure.composition.items())
    assert rg.electrons_in == pytest.approx(expected, rel=0.05)


# ----------------------------------------------------------------------------- slice geometry
def test_conventional_lattice_of_si_is_cubic_in_density_frame(si) -> None:
    conv = conventional_lattice_in_frame(si.structure)
    a = np.linalg.norm(conv, axis=1)
    assert np.allclose(a, a[0], rtol=1e-4)
    assert np.allclose(conv @ conv.T, a[0] ** 2 * np.eye(3), atol=1e-3 * a[0] ** 2)
    # 4 primitive cells per FCC conventional cell, and conv vectors are lattice vectors of the input
    assert abs(np.linalg.det(conv)) == pytest.approx(4 * si.structure.volume, rel=1e-5)
    coeffs = conv @ np.linalg.inv(si.structure.lattice.matrix)
    assert np.allclose(coeffs, np.round(coeffs), atol=1e-4)


def test_si_111_plane_through_atom(si) -> None:
    cfg = SliceConfig(size=(75, 75))
    rg = regrid(si, "total", (60, 60, 60))
    img, geom = slice_image(rg.cube, si.structure, cfg)
    assert img.shape == (75, 75)
    conv = geom.conventional
    # normal along [111] of the cubic cell (a+b+c), d_111 = a/sqrt(3)
    n_ref = conv.sum(axis=0) / np.linalg.norm(conv.sum(axis=0))
    assert abs(abs(geom.normal @ n_ref) - 1) < 1e-6
    a = np.linalg.norm(conv[0])
    assert geom.d_hkl == pytest.approx(a / np.sqrt(3), rel=1e-6)
    # every pixel lies on the plane through atom 0; the centre pixel is the atom
    site0 = si.structure[0].coords
    assert np.abs((geom.points - site0) @ geom.normal).max() < 1e-9
    np.testing.assert_allclose(geom.points[37, 37], site0, atol=1e-9)
    # image values = independent periodic trilinear interpolation at the same Cartesian points
    rng = np.random.default_rng(0)
    for _ in range(25):
        i, j = rng.integers(0, 75, 2)
        assert img[i, j] == pytest.approx(_trilinear_periodic(rg.cube, si.structure.lattice.matrix, geom.points[i, j]), abs=1e-10)
    # hexagonal in-plane pattern: neighbouring atoms of the (111) layer sit at a/sqrt(2) from
    # atom 0, 60° apart; all Si sites are equivalent, so the density there equals the centre value
    centre = sample_periodic(rg.cube, si.structure.lattice.matrix, site0[None])[0]
    d_nn = a / np.sqrt(2)
    for k in range(6):
        ang = np.pi / 3 * k
        p = site0 + d_nn * (np.cos(ang) * geom.e1 + np.sin(ang) * geom.e2)
        assert sample_periodic(rg.cube, si.structure.lattice.matrix, p[None])[0] == pytest.approx(centre, abs=1e-6)
    # ... while a 30° direction at the same distance is not an atom (density differs clearly)
    p = site0 + d_nn * (np.cos(np.pi / 6) * geom.e1 + np.sin(np.pi / 6) * geom.e2)
    assert abs(sample_periodic(rg.cube, si.structure.lattice.matrix, p[None])[0] - centre) > 0.02
    # 3-fold axis through the atom: the image is unchanged by a 120° in-plane rotation
    pts = geom.points.reshape(-1, 3) - site0
    u, v = pts @ geom.e1, pts @ geom.e2
    c, s = np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)
    rot = site0 + np.outer(c * u - s * v, geom.e1) + np.outer(s * u + c * v, geom.e2)
    diff = np.abs(sample_periodic(rg.cube, si.structure.lattice.matrix, rot).reshape(75, 75) - img)
    # (trilinear interpolation is not rotation-invariant: small local differences remain)
    assert diff.max() < 0.02 * img.max() and diff.mean() < 1e-3 * img.max()


def test_slice_offset_and_origin(si) -> None:
    rg = regrid(si, "total", (60, 60, 60))
    base = slice_geometry(si.structure, SliceConfig())
    shifted = slice_geometry(si.structure, SliceConfig(offset=0.5))
    np.testing.assert_allclose(shifted.center - base.center, 0.5 * base.d_hkl * base.normal, atol=1e-12)
    # 3 d_111 = |a+b+c|: a lattice translation (ABC stacking period) gives the same image ...
    img0, _ = slice_image(rg.cube, si.structure, SliceConfig(order=3))
    img3, _ = slice_image(rg.cube, si.structure, SliceConfig(offset=3.0, order=3))
    np.testing.assert_allclose(img3, img0, atol=1e-4)  # (the cell is cubic to ~1e-6 only)
    # ... while 1 d_111 is the next (laterally shifted, B) layer: a different image
    img1, _ = slice_image(rg.cube, si.structure, SliceConfig(offset=1.0, order=3))
    assert np.abs(img1 - img0).max() > 0.1
    org = slice_geometry(si.structure, SliceConfig(through="origin", size=(9, 11)))
    assert org.points.shape == (9, 11, 3)
    with pytest.raises(ValueError, match="site_index"):
        slice_geometry(si.structure, SliceConfig(site_index=5))


# ----------------------------------------------------------------------------- sources / stage
def _manifest(tmp_path: Path, chg_dir: Path) -> Path:
    m = scan_vasp_folder(chg_dir)
    m.loc[len(m)] = {"material_id": "ghost", "path": str(tmp_path / "nope" / "CHGCAR.gz"), "kind": "CHGCAR"}
    bad = tmp_path / "broken_CHGCAR"
    bad.write_text("this is not a CHGCAR\n")
    m.loc[len(m)] = {"material_id": "broken", "path": bad.name, "kind": "CHGCAR"}  # relative path
    path = tmp_path / "manifest.csv"
    m.to_csv(path, index=False)
    return path


def test_manifest_validation(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    pd.DataFrame({"material_id": ["a"], "path": ["x"], "kind": ["WAVECAR"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="'a'.*WAVECAR"):
        read_manifest(p)
    pd.DataFrame({"material_id": ["a"], "path": ["x"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="kind"):
        read_manifest(p)


def test_build_density_images_local(tmp_path: Path, chg_dir: Path) -> None:
    manifest = _manifest(tmp_path, chg_dir)
    src = LocalDensitySource(manifest=str(manifest))
    cfg = DensityConfig(datasets={"atomate": src}, grid=(40, 40, 40), slice=SliceConfig(size=(32, 32)))
    ids = ["Si_static", "LiH_SCAN_opt", "YPO4_static", "ghost", "broken"]
    out = tmp_path / "out"
    summary = build_density_images(
        ids, src, "total", cfg, out / "slices.parquet", out / "rejects.parquet", out / "cubes.npz", out / "previews"
    )
    assert summary["n_ok"] == 2 and summary["n_rejected"] == 3
    rej = pd.read_parquet(out / "rejects.parquet").set_index("material_id")
    assert set(rej["stage"]) == {"density"}
    assert "no CHGCAR" in rej.loc["YPO4_static", "reason"] and "AECCAR2" in rej.loc["YPO4_static", "reason"]
    assert "not found" in rej.loc["ghost", "reason"]
    assert "not a readable" in rej.loc["broken", "reason"]
    meta, imgs = read_slices(out / "slices.parquet")
    assert list(meta["material_id"]) == ["Si_static", "LiH_SCAN_opt"]
    assert imgs.shape == (2, 32, 32) and imgs.dtype == np.float32
    assert set(meta["kind"]) == {"total"} and set(meta["file_kind"]) == {"CHGCAR"}
    np.testing.assert_allclose(meta["electrons_out"], [8.0, 4.0], rtol=1e-3)
    with np.load(out / "cubes.npz") as z:
        assert sorted(z.files) == ["LiH_SCAN_opt", "Si_static"]
        cube = z["Si_static"]
    assert cube.shape == (40, 40, 40) and cube.dtype == np.float16
    assert integrate(cube.astype(np.float64), Structure.from_str(meta["structure"][0], fmt="json").volume) == pytest.approx(8.0, rel=2e-3)
    pngs = sorted(p.name for p in (out / "previews").iterdir())
    assert pngs == ["LiH_SCAN_opt.png", "Si_static.png"]
    assert (out / "previews" / "Si_static.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_valence_kind_reads_aeccar2(tmp_path: Path, chg_dir: Path) -> None:
    src = LocalDensitySource(manifest=str(_manifest(tmp_path, chg_dir)))
    items = {i.material_id: i for i in iter_local(["YMgPO4_static", "Al_SCAN_opt"], src, "valence")}
    assert items["YMgPO4_static"].file_kind == "AECCAR2" and items["YMgPO4_static"].chgcar is not None
    assert items["YMgPO4_static"].origin.endswith("AECCAR2.gz")
    assert items["Al_SCAN_opt"].chgcar is None and "AECCAR2" in items["Al_SCAN_opt"].reason


def test_npz_writer_is_atomic(tmp_path: Path) -> None:
    p = tmp_path / "c.npz"
    with pytest.raises(RuntimeError):
        with NpzWriter(p) as w:
            w.add("a", np.ones(3))
            raise RuntimeError("crash")
    assert not p.exists() and not list(tmp_path.iterdir())
    with NpzWriter(p) as w:
        w.add("mp-1", np.arange(4.0))
    with np.load(p) as z:
        np.testing.assert_array_equal(z["mp-1"], np.arange(4.0))


# ----------------------------------------------------------------------------- MP source (offline)
def _s3_handler(objects: dict[str, bytes]):
    """Path-style S3 GetObject/HeadObject (with Range) for bucket materialsproject-parsed."""

    def handle(req):
        key = "chgcars/" + req.path_params["name"]
        if key not in objects:
            body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code><Message>no key</Message></Error>"
            return Reply(404, body, content_type="application/xml")
        data = objects[key]
        hdr = {"ETag": '"replay"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT", "Accept-Ranges": "bytes"}
        rng = req.headers.get("range")
        if rng and req.method == "GET":
            a, b = rng.split("=")[1].split("-")
            a, b = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            hdr["Content-Range"] = f"bytes {a}-{b}/{len(data)}"
            return Reply(206, data[a : b + 1], content_type="binary/octet-stream", headers=hdr)
        return Reply(200, data, content_type="binary/octet-stream", headers=hdr)

    return handle


@pytest.mark.slow
def test_mp_source_through_mp_api(tmp_path: Path, si, monkeypatch: pytest.MonkeyPatch) -> None:
    """mp-api's real get_charge_density_from_material_id against a local REST + S3 replay."""
    task_id = "mp-1791788"
    # MP's stored form: a document whose "data" is Chgcar.as_dict() (mp-api reads [0]["data"])
    from monty.json import MontyEncoder

    doc = {"task_id": task_id, "last_updated": "2024-01-01T00:00:00", "data": si.as_dict()}
    objects = {f"chgcars/{task_id}.json.gz": gzip.compress(json.dumps(doc, cls=MontyEncoder).encode())}
    now = datetime.now(timezone.utc).isoformat()
    calc_types = {"mp-149": {task_id: "GGA Static", "mp-2": "GGA Structure Optimization"}, "mp-nostatic": {"mp-3": "GGA Structure Optimization"}}

    def core(req):
        ids = req.params.get("material_ids", "").split(",")
        data = [{"material_id": m, "calc_types": calc_types[m]} for m in ids if m in calc_types]
        return {"data": data, "meta": {"total_doc": len(data), "time_stamp": now}}

    def tasks(req):
        ids = req.params.get("task_ids", "").split(",")
        data = [{"task_id": t, "last_updated": "2024-01-01T00:00:00"} for t in ids if t == task_id]
        return {"data": data, "meta": {"total_doc": len(data), "time_stamp": now}}

    routes = mp_routes()
    routes["/materials/core"] = core
    routes["/materials/tasks"] = tasks
    routes["/materialsproject-parsed/chgcars/{name}"] = _s3_handler(objects)
    monkeypatch.setenv("MP_API_KEY", "x" * 32)
    with ReplayServer(routes) as server:
        src = MPDensitySource(endpoint=server.url, s3_endpoint_url=server.url.rstrip("/"), cache_dir=str(tmp_path / "cache"))
        items = {i.material_id: i for i in iter_mp(["mp-149", "mp-nostatic", "mp-404"], src, "total")}
        assert not server.unknown, [r.path for r in server.unknown]
        s3_gets = [r for r in server.requests if r.path.startswith("/materialsproject-parsed/")]
        assert s3_gets and all(r.path == f"/materialsproject-parsed/chgcars/{task_id}.json.gz" for r in s3_gets)
        assert "authorization" not in {k.lower() for r in s3_gets for k in r.headers}  # unsigned, as mp-api does
    got = items["mp-149"].chgcar
    assert got is not None and items["mp-149"].file_kind == "CHGCAR"
    np.testing.assert_array_equal(got.data["total"], si.data["total"])
    assert got.structure == si.structure
    assert items["mp-nostatic"].chgcar is None and "static" in items["mp-nostatic"].reason
    assert items["mp-404"].chgcar is None and items["mp-404"].reason
    # cached copy is used without any network (no server now) and decodes to the same density
    cached = tmp_path / "cache" / "mp-149.json.gz"
    np.testing.assert_array_equal(chgcar_from_json(cached.read_bytes()).data["total"], si.data["total"])
    again = list(iter_mp(["mp-149"], src, "total"))
    assert again[0].chgcar is not None and again[0].origin == str(cached)
    # AECCAR2 is not served by MP: recorded reason, no request
    assert "does not serve" in next(iter_mp(["mp-149"], src, "valence")).reason


def test_mp_source_without_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    item = next(iter_mp(["mp-149"], MPDensitySource(cache_dir=str(tmp_path)), "total"))
    assert item.chgcar is None and "MP_API_KEY" in item.reason


# ----------------------------------------------------------------------------- selection
def test_select_fcc_stable(mp_rows: pd.DataFrame) -> None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    df = mp_rows.head(40).copy()
    structures = [Structure.from_str(c, fmt="cif") for c in df["cif"]]
    df["spacegroup_number"] = [SpacegroupAnalyzer(s).get_space_group_number() for s in structures]
    rng = np.random.default_rng(1)
    df["e_above_hull"] = np.where(rng.random(len(df)) < 0.5, 0.0, 0.1)
    df["k_vrh"] = np.nan
    kept, rej = select_fcc_stable(df, SelectionConfig())
    # reference: lattice type from pymatgen + "F" centring symbol
    ref = [
        SpacegroupAnalyzer(s).get_crystal_system() == "cubic" and SpacegroupAnalyzer(s).get_space_group_symbol().startswith("F")
        for s in structures
    ]
    expect = set(df.loc[np.asarray(ref) & (df["e_above_hull"] == 0).to_numpy(), "material_id"])
    assert set(kept["material_id"]) == expect
    assert 0 < len(kept) < len(df)  # the sample holds both FCC (Fm-3m, Fd-3m, F-43m) and others
    assert len(kept) + len(rej) == len(df)
    assert all(df.loc[df.material_id.isin(kept.material_id), "spacegroup_number"].isin(FCC_SPACEGROUPS))
    reasons = dict(zip(rej["material_id"], rej["reason"]))
    for mid, is_fcc in zip(df["material_id"], ref):
        if mid in reasons and not is_fcc:
            assert "F-centred" in reasons[mid]
    with pytest.raises(KeyError, match="e_above_hull"):
        select_fcc_stable(df.drop(columns=["e_above_hull"]), SelectionConfig())
    kept_all, _ = select_fcc_stable(df, SelectionConfig(require_all_targets=True))
    assert kept_all.empty  # k_vrh is unknown everywhere
