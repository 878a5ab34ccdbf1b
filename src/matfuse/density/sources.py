"""Where densities come from: a local manifest of VASP files, or the Materials Project.

``iter_densities`` yields one :class:`DensityItem` per requested material: either a ``Chgcar``
or the reason it could not be had (turned into a rejects row by the stage).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pymatgen.io.vasp import Chgcar

from matfuse.density.config import KIND_FILE, DensitySource, LocalDensitySource, MPDensitySource
from matfuse.density.io import DensityReadError, chgcar_from_json, chgcar_to_json_gz, read_manifest, read_volumetric
from matfuse.io import UnsafeIdError, atomic_path, id_filename

log = logging.getLogger(__name__)

MP_BUCKET = "materialsproject-parsed"


@dataclass
class DensityItem:
    material_id: str
    chgcar: Chgcar | None
    file_kind: str  # CHGCAR / AECCAR2 ...
    origin: str  # file path or s3 URI ('' when unavailable)
    reason: str = ""  # why chgcar is None


def iter_local(material_ids: list[str] | None, src: LocalDensitySource, kind: str) -> Iterator[DensityItem]:
    """Densities of ``kind`` from the manifest (``material_ids`` None = every id it lists)."""
    manifest = read_manifest(src.manifest)
    want = KIND_FILE[kind]
    rows = manifest[manifest["kind"] == want].set_index("material_id")["path"].to_dict()
    ids = list(dict.fromkeys(manifest["material_id"])) if material_ids is None else list(material_ids)
    for mid in ids:
        path = rows.get(mid)
        if path is None:
            have = sorted(manifest.loc[manifest["material_id"] == mid, "kind"])
            why = f"no {want} file for kind {kind!r} in manifest" + (f" (has {have})" if have else "")
            yield DensityItem(mid, None, want, "", why)
            continue
        try:
            yield DensityItem(mid, read_volumetric(path), want, str(path))
        except DensityReadError as exc:
            yield DensityItem(mid, None, want, str(path), str(exc))


@contextlib.contextmanager
def _s3_endpoint(url: str | None) -> Iterator[None]:
    """Point boto3's S3 clients at ``url`` (botocore's ``AWS_ENDPOINT_URL_S3``) for the block."""
    if url is None:
        yield
        return
    old = os.environ.get("AWS_ENDPOINT_URL_S3")
    os.environ["AWS_ENDPOINT_URL_S3"] = url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        else:
            os.environ["AWS_ENDPOINT_URL_S3"] = old


def iter_mp(material_ids: list[str], src: MPDensitySource, kind: str) -> Iterator[DensityItem]:
    """CHGCARs through ``MPRester.get_charge_density_from_material_id`` (cached as JSON.gz).

    Cache files are ``<cache_dir>/<id_filename(id)>.json.gz`` (:func:`matfuse.io.id_filename`:
    ``mp-149`` stays ``mp-149``, an id like ``../x`` cannot leave ``cache_dir``); an id that cannot
    name a file (empty, control characters) gets an item with the reason. Only CHGCAR blocks exist
    there, so ``valence`` (AECCAR2) is rejected for every id.
    """
    want = KIND_FILE[kind]
    if want != "CHGCAR":
        for mid in material_ids:
            yield DensityItem(mid, None, want, "", f"kind {kind!r} needs {want}, which the MP source does not serve")
        return
    cache = Path(src.cache_dir) if src.cache_dir else None
    todo: list[str] = []
    names: dict[str, str] = {}
    for mid in material_ids:
        try:
            names[mid] = id_filename(mid)
        except UnsafeIdError as exc:  # never a file name, nor sent to the API
            yield DensityItem(mid, None, "CHGCAR", "", str(exc))
            continue
        cached = cache / f"{names[mid]}.json.gz" if cache else None
        if cached is not None and cached.is_file():
            try:
                yield DensityItem(mid, chgcar_from_json(cached.read_bytes()), "CHGCAR", str(cached))
                continue
            except Exception as exc:  # corrupt cache entry: fetch again
                log.warning("%s: unreadable cache %s (%s); fetching again", mid, cached, exc)
        todo.append(mid)
    if not todo:
        return
    api_key = os.environ.get(src.api_key_env)
    if not api_key:
        for mid in todo:
            yield DensityItem(mid, None, "CHGCAR", "", f"environment variable {src.api_key_env} is not set")
        return
    from mp_api.client import MPRester

    with _s3_endpoint(src.s3_endpoint_url):
        kwargs = {"api_key": api_key, "mute_progress_bars": True}
        if src.endpoint:
            kwargs["endpoint"] = src.endpoint
        with MPRester(**kwargs) as mpr:
            for mid in todo:
                try:
                    chg = mpr.get_charge_density_from_material_id(mid)
                except Exception as exc:  # network / missing object / decode errors
                    yield DensityItem(mid, None, "CHGCAR", "", f"MP charge density unavailable: {type(exc).__name__}: {exc}")
                    continue
                if chg is None:
                    yield DensityItem(mid, None, "CHGCAR", "", "MP lists no GGA/GGA+U static task for this material")
                    continue
                if isinstance(chg, tuple):
                    chg = chg[0]
                if cache is not None:
                    with atomic_path(cache / f"{names[mid]}.json.gz") as tmp:
                        tmp.write_bytes(chgcar_to_json_gz(chg))
                yield DensityItem(mid, chg, "CHGCAR", f"mp:{mid}")


def iter_densities(material_ids: list[str] | None, src: DensitySource, kind: str) -> Iterator[DensityItem]:
    """Dispatch on the source type (see :func:`iter_local`, :func:`iter_mp`)."""
    if isinstance(src, LocalDensitySource):
        return iter_local(material_ids, src, kind)
    if material_ids is None:
        raise ValueError("the MP density source needs explicit material ids (from the entries table)")
    return iter_mp(material_ids, src, kind)


__all__ = ["DensityItem", "iter_densities", "iter_local", "iter_mp", "MP_BUCKET"]
