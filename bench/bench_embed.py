"""Benchmark: naive Hugging Face embedding loop vs matfuse.embed.text.embed_texts.

On the real robocrys descriptions of ``text_matmmfuse_robocrys`` (987 texts), both embed the
first ``--n`` texts with the same encoder/pooling/max_length/batch size:

* naive: fixed batches in input order, each padded to ``max_length``, ``torch.no_grad()``
  (:func:`matfuse.embed.text.reference_embed_texts`);
* ours: :func:`matfuse.embed.text.embed_texts` -- one tokenisation pass, length-sorted batches
  padded to their own longest text, run with each backend of ``--backends``: ``torch``
  (``torch.inference_mode()``, intra-op threads) and ``openvino`` (the workflow's default on a
  CPU: OpenVINO fp32, one single-threaded stream per thread).

Each runs in its own subprocess so that its peak RSS is its own; ``--repeat`` rounds alternate
naive and ours (default 3). Prints per round and as medians: texts/s, the speed ratio, the max
abs difference of the vectors and peak RSS (the largest of the rounds). The load average is printed too:
other jobs on the machine slow both sides.

    .venv/bin/python bench/bench_embed.py --n 64
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(
    os.environ.get("MATFUSE_SHARED", REPO.parent / "shared")
) / "data/text_matmmfuse_robocrys/matmmfuse_sample_1000_cif_robocrys.jsonl.gz"


def read_texts(path: Path, n: int | None, first_sentences: int = 0) -> list[str]:
    """The robocrys texts (optionally only their first sentences, like the short text variants)."""
    texts = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            text = json.loads(line)["robocrys_text"]
            if first_sentences:
                text = ". ".join(text.split(". ")[:first_sentences]).rstrip(".") + "."
            texts.append(text)
            if n is not None and len(texts) >= n:
                break
    return texts


def child(args: argparse.Namespace) -> None:
    """Run one method, save vectors to args.out (npy) and timings to args.out + .json."""
    import torch

    from matfuse.config import EncoderConfig
    from matfuse.embed.encoder import load_encoder, resolve_encoder
    from matfuse.embed.text import embed_texts, reference_embed_texts

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = EncoderConfig(
        model=args.model, pooling=args.pooling, max_length=args.max_length, batch_size=args.batch_size,
        backend=args.backend,
    )
    texts = read_texts(Path(args.data), args.n, args.first_sentences)
    load_encoder(resolve_encoder(cfg.model), "cpu")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.method == "naive":
        reference_embed_texts(texts[:2], cfg, "cpu", threads=args.threads)  # warm-up
        t0 = time.perf_counter()
        emb = reference_embed_texts(texts, cfg, "cpu", threads=args.threads)
    else:
        embed_texts(texts[:2], cfg, "cpu", threads=args.threads, progress=False)  # warm-up
        t0 = time.perf_counter()
        emb, _, _ = embed_texts(texts, cfg, "cpu", threads=args.threads, progress=False)
    dt = time.perf_counter() - t0
    np.save(args.out, emb)
    stats = {
        "seconds": dt,
        "texts_per_s": len(texts) / dt,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": rss_loaded,
        "threads": torch.get_num_threads(),
        "n": len(texts),
    }
    Path(args.out + ".json").write_text(json.dumps(stats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="number of texts (default: all)")
    ap.add_argument("--model", default="packaged:minilm")
    ap.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--first-sentences", type=int, default=0,
                    help="embed only the first K sentences of each text (short-text variants); 0 = full text")
    ap.add_argument("--backends", default="torch,openvino",
                    help="comma-separated backends of matfuse's embed_texts to time (torch, openvino, auto)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of naive + ours, alternating; the ratio printed is the median (default 3)")
    ap.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--method", choices=["naive", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        child(args)
        return

    texts = read_texts(Path(args.data), args.n, args.first_sentences)
    from transformers import AutoTokenizer

    from matfuse.embed.encoder import resolve_encoder

    tok = AutoTokenizer.from_pretrained(str(resolve_encoder(args.model).path), local_files_only=True)
    enc = tok(texts, truncation=True, max_length=args.max_length)
    lengths = np.array([len(x) for x in enc["input_ids"]])
    print(
        f"{len(texts)} robocrys texts, {args.model}, pooling={args.pooling}, max_length={args.max_length}, "
        f"batch={args.batch_size}, first_sentences={args.first_sentences or 'all'}; real tokens / padded tokens = {lengths.sum() / (len(texts) * args.max_length):.3f}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    runs = [("naive", "naive", "torch")] + [(f"ours-{b}", "ours", b) for b in args.backends.split(",") if b]
    # Repeats alternate naive and ours, so that slow phases of a shared machine hit both sides;
    # the ratio quoted is the median of the per-round ratios.
    rounds: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.repeat):
            results: dict[str, dict] = {}
            for label, method, backend in runs:
                out = os.path.join(tmp, f"{label}.npy")
                cmd = [sys.executable, __file__, "--method", method, "--backend", backend, "--out", out,
                       "--data", args.data, "--model", args.model, "--pooling", args.pooling,
                       "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
                       "--first-sentences", str(args.first_sentences)]
                if args.n is not None:
                    cmd += ["--n", str(args.n)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                results[label] = json.loads(Path(out + ".json").read_text())
                results[label]["emb"] = np.load(out)
                print(f"  round {rnd + 1}/{args.repeat} {label}: {results[label]['texts_per_s']:.2f} texts/s "
                      f"(load average {os.getloadavg()[0]:.2f})", flush=True)
            rounds.append(results)
    worst = 0.0
    print(f"{'method':40s} {'texts/s':>8s} {'seconds':>8s} {'ratio':>6s} {'max|diff|':>9s}  peak RSS   (median of {args.repeat} rounds)")
    for label, _, _ in runs:
        per = [r[label] for r in rounds]
        ratios = [r[label]["texts_per_s"] / r["naive"]["texts_per_s"] for r in rounds]
        diff = max(float(np.abs(r["naive"]["emb"] - r[label]["emb"]).max()) for r in rounds)
        worst = max(worst, diff)
        name = "naive HF loop (pad to max_length)" if label == "naive" else f"matfuse embed_texts [{label[5:]}]"
        print(
            f"{name:40s} {np.median([p['texts_per_s'] for p in per]):8.2f} "
            f"{np.median([p['seconds'] for p in per]):8.1f} {np.median(ratios):5.2f}x {diff:9.1e}  "
            f"{max(p['peak_rss_mb'] for p in per):5.0f} MiB (after model load {per[0]['rss_after_load_mb']:.0f} MiB; "
            f"{per[0]['threads']} threads)"
            + ("" if label == "naive" else f"; per round {', '.join(f'{x:.2f}x' for x in ratios)}")
        )
    print("target: ratio >= 1.5x with max |diff| <= 1e-5")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if worst > 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
