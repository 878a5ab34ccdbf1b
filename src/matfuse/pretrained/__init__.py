"""Models shipped with matfuse (package data), each a folder of seed folders with a model card.

    matfuse models                                  # shipped and locally trained models
    matfuse predict --model mp20-formation-energy-cgcnn --structures my_cifs/

A shipped model is ``<name>/seed<k>/{model.pt, config.json}`` (the workflow's checkpoint format,
loaded with ``torch.load(weights_only=True)``), ``<name>/card.json`` (the facts) and
``<name>/MODEL_CARD.md`` (the same, for people). :func:`export` makes one from a finished
workflow run, using its training split only and its test metrics:

    python -m matfuse.pretrained export --name mp20-formation-energy-cgcnn \\
        --models results/models/mp20/formation_energy_per_atom/cgcnn/none/none \\
        --run-dir . --command "snakemake ... --configfile config/study.yaml"
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

#: Where the shipped models live (inside the installed package).
SHIPPED_DIR = Path(__file__).resolve().parent
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV", "efermi": "eV", "e_above_hull": "eV/atom",
         "exfoliation_energy": "meV/atom"}


def shipped() -> dict[str, Path]:
    """Name -> folder of every shipped model (a folder here with a card.json)."""
    return {p.name: p for p in sorted(SHIPPED_DIR.iterdir()) if p.is_dir() and (p / "card.json").is_file()}


def resolve(model: str | Path) -> Path:
    """A ``--model`` argument: an existing folder as given, else the shipped model of that name."""
    path = Path(model)
    if path.exists():
        return path
    models = shipped()
    if str(model) in models:
        return models[str(model)]
    raise SystemExit(f"matfuse: --model {model}: no such folder and no shipped model of that name "
                     f"(shipped: {', '.join(models) or 'none'}; `matfuse models` lists them)")


def card(name: str) -> dict[str, Any]:
    return json.loads((shipped()[name] / "card.json").read_text())


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def _ensemble_test(members: list[Path], run_dir: Path) -> dict[str, Any]:
    """Test metrics of each seed and of the seed ensemble, from the run's prediction files."""
    from matfuse.evaluate import regression_metrics
    from matfuse.predict import calibration, seed_ensemble

    frames = []
    for m in members:
        rel = m.resolve().relative_to((run_dir / "results" / "models").resolve())
        frames.append(pd.read_parquet(run_dir / "results" / "predictions" / rel.parent / f"{rel.name}.parquet"))
    per_seed = []
    for f in frames:
        t = f[(f["split"] == "test") & f["y_true"].notna() & f["y_pred"].notna()]
        per_seed.append(regression_metrics(t["y_true"].to_numpy(float), t["y_pred"].to_numpy(float)))
    ens = seed_ensemble(frames)
    t = ens[(ens["split"] == "test") & ens["y_true"].notna() & ens["y_pred"].notna()]
    m = regression_metrics(t["y_true"].to_numpy(float), t["y_pred"].to_numpy(float))
    cal = calibration(t["y_true"], t["y_pred"], t["y_std"])
    return {
        "n_test": int(len(t)),
        "per_seed": {f"seed{k}": {kk: round(v, 5) for kk, v in s.items()} for k, s in enumerate(per_seed)},
        "ensemble": {k: round(v, 5) for k, v in m.items()},
        "calibration": {k: cal[k] for k in ("mean_std", "within_1std", "within_2std")},
    }


def export(name: str, models: str | Path, run_dir: str | Path, command: str, out_root: str | Path = SHIPPED_DIR,
           limits: Sequence[str] = ()) -> Path:
    """Copy a trained seed ensemble (checkpoints and configs only) into ``out_root/name`` with its card."""
    from matfuse.cli import ensemble_members
    from matfuse.kit import load_checkpoint

    if not NAME_RE.match(name):
        raise ValueError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    run_dir = Path(run_dir)
    members = ensemble_members(models)
    configs = [json.loads((m / "config.json").read_text()) for m in members]
    for m in members:  # the checkpoint format: loads with weights_only=True
        load_checkpoint(m / "model.pt", "cpu")
    s0 = configs[0]["summary"]
    target = s0["target"]
    splits_path = run_dir / configs[0]["inputs"]["splits"]
    split = json.loads(splits_path.read_text())
    test = _ensemble_test(members, run_dir)
    facts = {
        "name": name,
        "model": s0["model"],
        "target": target,
        "units": UNITS.get(target),
        "data": {"dataset": Path(configs[0]["inputs"]["entries"]).parent.name,
                 "entries": dict(split.get("counts") or {}),
                 "split": split.get("settings"), "grouped_by": (split.get("groups") or {}).get("grouped_by"),
                 "trained_on": "training split only (val: model selection; test: the metrics below)"},
        "n_train": s0["n_train"],
        "seeds": [c["summary"]["seed"] for c in configs],
        "epochs_run": [c["summary"]["epochs_run"] for c in configs],
        "best_epoch": [c["summary"]["best_epoch"] for c in configs],
        "test": test,
        "graph": configs[0].get("graph"),
        "architecture": configs[0]["model"],
        "training": {k: configs[0]["training"].get(k) for k in ("epochs", "batch_size", "lr", "weight_decay", "schedule",
                                                               "warmup", "patience", "loss")},
        "software": {"matfuse": _version("matfuse"), "torch": s0.get("torch_version"),
                     "torch_geometric": _version("torch_geometric"), "pymatgen": _version("pymatgen"),
                     "python": platform.python_version()},
        "command": command,
        "limits": list(limits),
    }
    out = Path(out_root) / name
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for m, c in zip(members, configs):
        (tmp / m.name).mkdir(parents=True)
        shutil.copy2(m / "model.pt", tmp / m.name / "model.pt")
        (tmp / m.name / "config.json").write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    (tmp / "card.json").write_text(json.dumps(facts, indent=2) + "\n")
    (tmp / "MODEL_CARD.md").write_text(model_card(facts))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def model_card(f: dict[str, Any]) -> str:
    """The Markdown model card of a card.json."""
    t, e, cal = f["test"], f["test"]["ensemble"], f["test"]["calibration"]
    u = f["units"] or ""
    seeds = ", ".join(f"{k}: MAE {v['mae']:.4f}" for k, v in t["per_seed"].items())
    lines = [
        f"# {f['name']}", "",
        f"{f['model']} predicting **{f['target']}** ({u}); a seed ensemble of {len(f['seeds'])} "
        "(prediction = mean, uncertainty = standard deviation over the seeds).", "",
        "| | |", "|---|---|",
        f"| data set | {f['data']['dataset']}: {f['data']['entries']} entries per split |",
        f"| split | {json.dumps(f['data']['split'])}, grouped by {f['data']['grouped_by']} |",
        f"| trained on | {f['data']['trained_on']}; {f['n_train']} training entries |",
        f"| test (ensemble, n = {t['n_test']}) | MAE {e['mae']:.4f} {u}, RMSE {e['rmse']:.4f} {u}, R² {e['r2']:.4f} |",
        f"| test (each seed) | {seeds} |",
        f"| uncertainty calibration (test) | mean std {cal['mean_std']:.4f} {u}; {100 * cal['within_1std']:.0f} % of "
        f"errors within 1 std, {100 * cal['within_2std']:.0f} % within 2 |" if cal["mean_std"] is not None else
        "| uncertainty calibration | one seed: no ensemble std |",
        f"| epochs run / selected (per seed) | {f['epochs_run']} / {f['best_epoch']} |",
        f"| training | {json.dumps(f['training'])} |",
        f"| graph | {json.dumps(f['graph'])} |",
        f"| software | {json.dumps(f['software'])} |",
        f"| reproduce | `{f['command']}` |", "",
        "## Known limits", "",
        *[f"- {x}" for x in f["limits"]], "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m matfuse.pretrained", description="Ship a trained seed ensemble.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="copy a trained seed ensemble into the package with its model card")
    e.add_argument("--name", required=True)
    e.add_argument("--models", required=True, help="folder of seed folders (results/models/...)")
    e.add_argument("--run-dir", default=".", help="the workflow's working directory (results/ inside)")
    e.add_argument("--command", required=True, help="the command that trained it (goes into the card)")
    e.add_argument("--limit", action="append", default=[], help="a known limit for the card (repeatable)")
    e.add_argument("--out-root", default=str(SHIPPED_DIR))
    a = p.parse_args(argv)
    out = export(a.name, a.models, a.run_dir, a.command, a.out_root, a.limit)
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
