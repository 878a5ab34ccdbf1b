"""Benchmark: stock robocrys vs matfuse's text stage (fast mineral matching + worker pool).

Draws ``--n`` real MP structures (fixed seed) from mp_mtcgcnn_33064.csv.gz and describes them

* stock: ``StructureDescriber().describe(StructureCondenser().condense_structure(s))`` with
  robocrys defaults, one fresh process per batch of ``--batch`` structures (import included),
  each structure limited to ``--timeout`` s (recorded as a timeout, not a stall), run with
  ``PYTHONHASHSEED=0`` like our workers (robocrys' phrase order depends on the hash seed);
* ours: :func:`matfuse.text.describe.describe_shard` with ``fast_paths=True`` (the
  exact fast paths: neighbour/fingerprint memo, prefiltered mineral matching, shared offline
  molecule namer, lazy AFLOW library), ``workers_per_shard=--workers`` and an empty cache, in a
  fresh process (imports included).

Prints throughput of each (wall, imports included; and compute-only), the ratio, the share of
byte-identical ``all`` texts (differing ids with the first difference), and the peak RSS of each
side (``resource.getrusage``: max over the process and its children).

    .venv/bin/python bench/bench_robocrys.py --n 300
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz"


def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0  # ru_maxrss is KiB on Linux


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise _Timeout()


def stock_batch(items: list[tuple[str, str]], timeout: float) -> tuple[list[dict], float, float]:
    """Fresh process: import robocrys, describe each structure with stock defaults."""
    t0 = time.perf_counter()
    warnings.simplefilter("ignore")
    from pymatgen.core import Structure
    from robocrys import StructureCondenser, StructureDescriber

    condenser, describer = StructureCondenser(), StructureDescriber()
    signal.signal(signal.SIGALRM, _alarm)
    out = []
    for mid, sjson in items:
        t = time.perf_counter()
        rec = {"material_id": mid, "text": None, "error": None}
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                rec["text"] = describer.describe(condenser.condense_structure(Structure.from_str(sjson, fmt="json")))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            rec["error"] = f"timeout: over {timeout:g} s"
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["seconds"] = time.perf_counter() - t
        out.append(rec)
    return out, time.perf_counter() - t0, _peak_rss_mib()


def ours_run(entries_path: str, workdir: str, workers: int) -> tuple[list[dict], float, float]:
    """Fresh process: matfuse describe_shard (fast matching, worker pool, empty cache)."""
    t0 = time.perf_counter()
    from matfuse.config import TextConfig
    from matfuse.text.describe import describe_shard, shutdown_workers

    cfg = TextConfig(cache_dir=str(Path(workdir) / "cache"), workers_per_shard=workers, fast_paths=True)
    out = Path(workdir) / "shard.parquet"
    describe_shard(entries_path, out, 0, 1, cfg.cache_dir, cfg)
    shutdown_workers()  # else this (multiprocessing child) process waits on idle workers at exit
    df = pd.read_parquet(out)
    return df.to_dict("records"), time.perf_counter() - t0, _peak_rss_mib()


def _first_diff(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at char {i}: stock {a[max(0, i - 30):i + 40]!r} vs ours {b[max(0, i - 30):i + 40]!r}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=100, help="stock structures per process")
    ap.add_argument("--timeout", type=float, default=400.0, help="per-structure limit (s) for the stock run")
    ap.add_argument("--csv", type=Path, default=CSV)
    args = ap.parse_args()

    from matfuse.structures import dump_structure, parse_structure, structure_hash

    df = pd.read_csv(args.csv, usecols=["material_id", "nsites", "cif"]).sample(n=args.n, random_state=args.seed)
    structs = {mid: parse_structure(cif, "cif") for mid, cif in zip(df["material_id"], df["cif"])}
    items = [(mid, s.to_json()) for mid, s in structs.items()]
    print(f"{args.n} MP structures (seed {args.seed}), nsites median {int(df['nsites'].median())}, "
          f"max {int(df['nsites'].max())}", flush=True)

    from matfuse.text.settings import unverified_versions

    diff = unverified_versions()
    print("fast paths: " + (f"OFF (version gate; unverified {diff}): 'ours' runs stock robocrys" if diff
                            else "on (installed versions are the verified ones)"), flush=True)

    # robocrys orders some phrases by iterating sets of strings: compare both sides under the same
    # hash seed (our workers always use 0; the spawned children below inherit this).
    os.environ["PYTHONHASHSEED"] = "0"
    spawn = multiprocessing.get_context("spawn")
    # ---- stock: one fresh process per batch
    stock: dict[str, dict] = {}
    stock_wall, stock_rss = 0.0, 0.0
    for i in range(0, len(items), args.batch):
        with cf.ProcessPoolExecutor(1, mp_context=spawn) as ex:
            recs, wall, rss = ex.submit(stock_batch, items[i:i + args.batch], args.timeout).result()
        stock.update({r["material_id"]: r for r in recs})
        stock_wall += wall
        stock_rss = max(stock_rss, rss)
        print(f"  stock batch {i // args.batch}: {len(recs)} in {wall:.1f} s", flush=True)

    # ---- ours
    with tempfile.TemporaryDirectory() as tmp:
        entries = Path(tmp) / "entries.parquet"
        pd.DataFrame(
            [{"material_id": m, "structure": dump_structure(s), "structure_hash": structure_hash(s)}
             for m, s in structs.items()]
        ).to_parquet(entries)
        with cf.ProcessPoolExecutor(1, mp_context=spawn) as ex:
            recs, ours_wall, ours_rss = ex.submit(ours_run, str(entries), tmp, args.workers).result()
    ours = {r["material_id"]: r for r in recs}

    # ---- report
    n = len(items)
    s_secs = [r["seconds"] for r in stock.values()]
    o_secs = [r["seconds"] for r in ours.values()]
    s_tp, o_tp = n / stock_wall, n / ours_wall
    print(f"\nstock : {n} structures, wall {stock_wall:.1f} s (imports incl.) -> {s_tp * 3600:.0f} /h; "
          f"per structure median {statistics.median(s_secs):.2f} s, max {max(s_secs):.1f} s, "
          f"sum {sum(s_secs):.1f} s; failures {sum(r['error'] is not None for r in stock.values())}; "
          f"peak RSS {stock_rss:.0f} MiB")
    print(f"ours  : {n} structures, wall {ours_wall:.1f} s (imports incl., {args.workers} workers) -> "
          f"{o_tp * 3600:.0f} /h; per structure median {statistics.median(o_secs):.2f} s, "
          f"max {max(o_secs):.1f} s, sum {sum(o_secs):.1f} s; "
          f"failures {sum(r['status'] != 'ok' for r in ours.values())}; peak RSS {ours_rss:.0f} MiB")
    print(f"throughput ratio (wall, ours/stock): {o_tp / s_tp:.2f}x   (target >= 6x)")
    print(f"compute ratio (sum of per-structure seconds, stock/ours): {sum(s_secs) / max(sum(o_secs), 1e-9):.2f}x "
          f"(single process, no pool)")

    timeouts = [m for m, r in stock.items() if r["error"] and r["error"].startswith("timeout")]
    both = [m for m in stock if stock[m]["text"] is not None and ours[m]["status"] == "ok"]
    same = [m for m in both if stock[m]["text"] == ours[m]["text_all"]]
    print(f"byte-identical 'all' texts: {len(same)}/{len(both)} = {100 * len(same) / max(len(both), 1):.1f} % "
          f"(target >= 99 %); stock timeouts (excluded): {timeouts}")
    for m in both:
        if m not in same:
            print(f"  DIFF {m}: {_first_diff(stock[m]['text'], ours[m]['text_all'])}")
    for m in stock:
        if (stock[m]["text"] is None) != (ours[m]["status"] != "ok"):
            print(f"  STATUS {m}: stock {stock[m]['error']!r} vs ours {ours[m]['error']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
