"""Reading VASP volumetric files and manifests; compact storage of cubes; PNG previews."""

from __future__ import annotations

import gzip
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pymatgen.io.vasp import Chgcar

from matfuse.io import atomic_path, id_filename, id_from_filename

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["material_id", "path", "kind"]
FILE_KINDS = ("CHGCAR", "AECCAR0", "AECCAR2")


class DensityReadError(ValueError):
    """A density file is missing or cannot be parsed (message names the file and why)."""


def read_volumetric(path: str | os.PathLike[str]) -> Chgcar:
    """Read a VASP CHGCAR/AECCAR file (plain or .gz) into a pymatgen ``Chgcar``.

    Data are VASP-normalised (value x cell volume), as in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DensityReadError(f"{path}: file not found")
    try:
        chg = Chgcar.from_file(str(path))
    except Exception as exc:  # pymatgen raises many types on corrupt files
        raise DensityReadError(f"{path}: not a readable VASP volumetric file ({type(exc).__name__}: {exc})") from exc
    if "total" not in chg.data or chg.data["total"].ndim != 3 or min(chg.data["total"].shape) < 2:
        raise DensityReadError(f"{path}: no 3-D 'total' block")
    if not np.all(np.isfinite(chg.data["total"])):
        raise DensityReadError(f"{path}: non-finite values in the density")
    return chg


def chgcar_from_json(data: bytes | str | dict[str, Any]) -> Chgcar:
    """Rebuild a ``Chgcar`` from MP's stored form (``Chgcar.as_dict()`` JSON, optionally gzipped)."""
    if isinstance(data, bytes):
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        data = json.loads(data)
    elif isinstance(data, str):
        data = json.loads(data)
    if "data" in data and isinstance(data["data"], dict) and "@class" in data["data"]:
        data = data["data"]  # MP wraps the Chgcar document as {"data": Chgcar.as_dict(), ...}
    from monty.json import MontyDecoder

    obj = MontyDecoder().process_decoded(data)
    if not isinstance(obj, Chgcar):
        raise DensityReadError(f"decoded object is {type(obj).__name__}, not Chgcar")
    return obj


def chgcar_to_json_gz(chg: Chgcar) -> bytes:
    """Serialise a ``Chgcar`` the way MP stores it (``as_dict`` JSON, gzip)."""
    from monty.json import MontyEncoder

    return gzip.compress(json.dumps(chg.as_dict(), cls=MontyEncoder).encode())


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest CSV (material_id, path, kind); paths resolved against its folder.

    Raises ``ValueError`` naming the row for unknown kinds or missing columns.
    """
    path = Path(path)
    df = pd.read_csv(path, dtype=str)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {missing} (needs {MANIFEST_COLUMNS})")
    df = df[MANIFEST_COLUMNS].copy()
    df["kind"] = df["kind"].str.strip().str.upper()
    bad = df[~df["kind"].isin(FILE_KINDS)]
    if len(bad):
        row = bad.iloc[0]
        raise ValueError(f"{path}: material {row.material_id!r} has kind {row.kind!r}; expected one of {FILE_KINDS}")
    dup = df.duplicated(["material_id", "kind"])
    if dup.any():
        row = df[dup].iloc[0]
        raise ValueError(f"{path}: material {row.material_id!r} lists {row.kind} twice")
    base = path.parent
    df["path"] = [str(p if Path(p).is_absolute() else (base / p)) for p in df["path"]]
    return df.reset_index(drop=True)


class NpzWriter:
    """Write arrays one at a time into an ``.npz`` (loadable by ``np.load``), atomically.

    Keeps memory flat for large datasets (``np.savez`` needs every array at once).
    """

    def __init__(self, path: str | os.PathLike[str], compress: bool = True) -> None:
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        self._zf = zipfile.ZipFile(self._tmp, "w", compression=mode, allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` as member ``<id_filename(key)>.npy`` (``np.load(...)["mp-149"]`` works for
        ids that need no encoding; :func:`iter_npz` decodes every key). Raises
        :class:`matfuse.io.UnsafeIdError` for a key no file can name (empty, control characters)."""
        with self._zf.open(f"{id_filename(key)}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)

    def close(self, ok: bool = True) -> None:
        self._zf.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)


def iter_npz(path: str | os.PathLike[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, array) from an npz without loading all of it (no pickles); keys of a
    :class:`NpzWriter` file are decoded back to the ids given to :meth:`NpzWriter.add`."""
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            yield id_from_filename(key), z[key]


def save_preview(image: np.ndarray, path: str | os.PathLike[str], title: str = "", units: str = "e/Å³") -> None:
    """Save a PNG preview of a 2-D slice (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.2, 3.0), dpi=100)
    im = ax.imshow(np.asarray(image, dtype=np.float32), origin="lower", cmap="viridis")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=units)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def scan_vasp_folder(root: str | os.PathLike[str]) -> pd.DataFrame:
    """Manifest rows for every ``<root>/<material_id>/{CHGCAR,AECCAR0,AECCAR2}[.gz]`` (id = folder name)."""
    rows = []
    for sub in sorted(Path(root).iterdir()):
        if not sub.is_dir():
            continue
        for kind in FILE_KINDS:
            for name in (kind, f"{kind}.gz"):
                if (sub / name).is_file():
                    rows.append({"material_id": sub.name, "path": str(sub / name), "kind": kind})
                    break
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
