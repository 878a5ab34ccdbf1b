"""Time per material to regrid (pyrho) to 60^3 and to cut the (111) 75x75 slice; peak memory.

Runs over every CHGCAR / AECCAR0 / AECCAR2 in the shared ``chgdens_atomate`` folder.
Usage: .venv/bin/python bench/bench_density.py [--grid 60] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

from matfuse.density.config import SliceConfig
from matfuse.density.io import read_volumetric, scan_vasp_folder
from matfuse.density.regrid import regrid
from matfuse.density.slice import slice_image

KIND = {"CHGCAR": "total", "AECCAR2": "valence", "AECCAR0": "valence"}  # AECCAR0: 'total' block (core)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(os.environ.get("MATFUSE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "chgdens_atomate"))
    ap.add_argument("--grid", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    grid = (args.grid,) * 3
    scfg = SliceConfig()
    rows = []
    print(f"{'material':<20}{'file':<9}{'grid_in':<10}{'read_s':>8}{'regrid_s':>10}{'slice_s':>9}{'peak_MiB':>10}{'N_in':>10}{'N_out':>10}")
    for rec in scan_vasp_folder(args.root).itertuples():
        t0 = time.perf_counter()
        chg = read_volumetric(rec.path)
        t_read = time.perf_counter() - t0
        kind = KIND[rec.kind]
        t_rg, t_sl = [], []
        tracemalloc.start()
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            rg = regrid(chg, kind, grid)
            t_rg.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            img, _ = slice_image(rg.cube, rg.structure, scfg)
            t_sl.append(time.perf_counter() - t0)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        gin = "x".join(map(str, chg.data["total"].shape))
        rows.append((np.median(t_rg), np.median(t_sl), peak))
        print(f"{rec.material_id:<20}{rec.kind:<9}{gin:<10}{t_read:8.3f}{np.median(t_rg):10.3f}{np.median(t_sl):9.4f}{peak:10.1f}{rg.electrons_in:10.3f}{rg.electrons_out:10.3f}")
    arr = np.asarray(rows)
    print(f"\n{len(rows)} files, grid {grid}, slice {scfg.size}: median regrid {np.median(arr[:, 0]):.3f} s, "
          f"median slice {np.median(arr[:, 1]) * 1e3:.1f} ms, max traced peak {arr[:, 2].max():.0f} MiB, "
          f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("(files already on a 60^3 grid skip pyrho's transform: their regrid time is a copy)")


if __name__ == "__main__":
    main()
