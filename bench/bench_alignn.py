#!/usr/bin/env python
"""Benchmark: what ALIGNN costs next to CGCNN on a CPU (per-epoch training time, peak RSS).

Both models train through the workflow's one training path (``matfuse.train.train_model``) on the
same ``--n`` real MP structures of at most ``--max-sites`` sites (drawn with ``--seed`` from
``mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz``, target ``formation_energy_per_atom``, split 80/10/10) and
the same graphs (``matfuse.graphs.build_graphs``: 12 nearest neighbours within 8 Å, with bond
vectors), ``torch.set_num_threads(--threads)`` (default 1), batch 64, ``--epochs`` epochs:

* ``alignn`` with its registry recipe (AdamW lr 1e-3, weight decay 1e-5, OneCycle, batch 64;
  hidden 256, 4 ALIGNN + 4 edge-gated layers);
* ``cgcnn`` with the config defaults (AdamW lr 1e-3, batch 64; 64/3/128).

Each model runs in its own subprocess (so peak RSS is its own), one after the other.  Printed per
model: parameters, mean per-epoch time (training pass alone, from ``train_structures_per_s``, and
training + validation, from ``history.csv``), process CPU time per epoch (the whole
``train_model`` call over the epochs run: less sensitive to other jobs on a shared machine), peak RSS (``ru_maxrss``) of the training process, the
validation MAE after the last epoch, the load average before/after; then the ratios.

Usage::

    .venv/bin/python bench/bench_alignn.py --n 1000 --epochs 2        # ~8 min on 1 core

Measured 2026-12-02 on the shared 2-core development machine, 1 thread, load average ~7 from other
sessions (so wall times are ~1.8x the CPU times): ``--n 1000 --epochs 2`` (800 training structures,
median 8 sites, 144 line-graph edges per atom, batch 64): ALIGNN 153 s wall / 88 s CPU per epoch
(train + validation: 162 s wall), 5.2 structures/s wall, about 9/s on an idle core; CGCNN 1.0 s wall /
0.7 s CPU; ratio 158x wall, 127x CPU; peak RSS 4.3 GiB vs 0.6 GiB (a first run under load 5-9: 187 s
vs 0.9 s per epoch, peak RSS 4.3 GiB vs 0.6 GiB; validation MAE after 2 epochs 0.623 in both runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

DATA = (Path(os.environ.get("MATFUSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
        / "data" / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz")
TARGET = "formation_energy_per_atom"


def _prepare(workdir: Path, n: int, max_sites: int, seed: int) -> dict:
    """Entries, splits and graphs of ``n`` real structures in ``workdir``; returns their sizes."""
    import numpy as np
    import pandas as pd
    from pymatgen.core import Structure

    from matfuse.config import GraphConfig
    from matfuse.graphs import build_graphs
    from matfuse.io import write_json, write_parquet

    df = pd.read_csv(DATA, usecols=["material_id", "nsites", "cif", TARGET])
    df = df[(df["nsites"] <= max_sites) & df[TARGET].notna()].sample(n=n, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [json.dumps(Structure.from_str(c, fmt="cif").as_dict()) for c in df["cif"]]
    ids = df["material_id"].astype(str).tolist()
    write_parquet(pd.DataFrame({"material_id": ids, "structure": structures, TARGET: df[TARGET].to_numpy()}),
                  workdir / "entries.parquet")
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(0.8 * n), int(0.9 * n)
    write_json({"train": [ids[k] for k in perm[:a]], "val": [ids[k] for k in perm[a:b]],
                "test": [ids[k] for k in perm[b:]]}, workdir / "splits.json")
    table, rejects = build_graphs(workdir / "entries.parquet", workdir / "graphs.parquet", GraphConfig())
    deg = [np.bincount(np.asarray(d), minlength=len(z)) for d, z in
           zip(table.column("edge_dst").to_pylist(), table.column("atomic_numbers").to_pylist())]
    atoms = sum(len(d) for d in deg)
    return {"n": n, "graphs": table.num_rows, "rejects": len(rejects), "median_sites": float(df["nsites"].median()),
            "atoms": atoms, "edges_per_atom": sum(int(d.sum()) for d in deg) / atoms,
            "line_graph_edges_per_atom": sum(int((d**2).sum()) for d in deg) / atoms}


def _child(workdir: Path, model: str, epochs: int, threads: int) -> None:
    """One model's training run; prints a JSON line."""
    import pandas as pd

    from matfuse.config import GraphConfig, TrainingConfig
    from matfuse.train import train_model

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    training = TrainingConfig(epochs=epochs, patience=epochs, batch_size=64, device="cpu").for_model(model, TARGET)
    out = workdir / model
    cpu0 = time.process_time()
    summary = train_model(workdir / "entries.parquet", workdir / "splits.json", workdir / "graphs.parquet", None,
                          out, model, TARGET, 0, training, GraphConfig(), threads=threads)
    cpu = time.process_time() - cpu0
    hist = pd.read_csv(out / "history.csv")
    print(json.dumps({
        "cpu_epoch_s": cpu / len(hist),
        "model": model, "parameters": summary["n_parameters"], "n_train": summary["n_train"],
        "train_epoch_s": summary["n_train"] / summary["train_structures_per_s"],
        "epoch_s": float(hist["seconds"].mean()), "epochs_s": hist["seconds"].round(2).tolist(),
        "val_mae_last": float(hist["val_mae"].iloc[-1]), "optimizer": training.optimizer,
        "schedule": training.schedule, "batch_size": training.batch_size,
        "rss_after_imports_mb": rss0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-sites", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="alignn,cgcnn")
    ap.add_argument("--workdir", type=Path, default=None, help="keep inputs/outputs here (default: a temp dir)")
    ap.add_argument("--child", nargs=2, metavar=("WORKDIR", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(Path(args.child[0]), args.child[1], args.epochs, args.threads)
        return
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench_alignn_")
    workdir = args.workdir or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = _prepare(workdir, args.n, args.max_sites, args.seed)
    data["prepare_s"] = time.perf_counter() - t0
    print(json.dumps(data))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    results = {}
    for model in args.models.split(","):
        load0 = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, __file__, "--child", str(workdir), model, "--epochs", str(args.epochs),
                               "--threads", str(args.threads)], env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"{model}: training failed (exit {proc.returncode})")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["load_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        results[model] = r
        print(json.dumps(r))
    print(f"\n{args.n} MP structures (<= {args.max_sites} sites, median {data['median_sites']:.0f}; "
          f"{data['edges_per_atom']:.1f} edges, {data['line_graph_edges_per_atom']:.0f} line-graph edges per atom), "
          f"{args.epochs} epochs, {args.threads} thread(s), batch 64\n")
    print("| model | parameters | train s/epoch | train+val s/epoch | CPU s/epoch | structures/s | peak RSS | val MAE | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, r in results.items():
        print(f"| {m} | {r['parameters']:,} | {r['train_epoch_s']:.1f} | {r['epoch_s']:.1f} | {r['cpu_epoch_s']:.1f} | "
              f"{r['n_train'] / r['train_epoch_s']:.1f} | {r['peak_rss_mb']:.0f} MiB | {r['val_mae_last']:.3f} | "
              f"{r['load_before_after'][0]} -> {r['load_before_after'][1]} |")
    if {"alignn", "cgcnn"} <= set(results):
        a, c = results["alignn"], results["cgcnn"]
        print(f"\nalignn / cgcnn: {a['train_epoch_s'] / c['train_epoch_s']:.1f}x training time per epoch "
              f"({a['cpu_epoch_s'] / c['cpu_epoch_s']:.1f}x CPU time), {a['peak_rss_mb'] / c['peak_rss_mb']:.1f}x peak RSS")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
