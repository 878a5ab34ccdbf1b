"""Published numbers of the papers matfuse reproduces, each with its source and comparability.

Every value is copied from ``../shared/papers/published.md`` (which names where it was read);
"comparable" says why a number can or cannot be set against ours one to one (data, split,
selection). Used by the study report (:mod:`matfuse.study`) and the paper tables
(:mod:`matfuse.tables`). Never add a number without its source.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """One published number (copied from ../shared/papers/published.md with its source)."""

    paper: str
    model: str
    target: str
    value: str
    data: str
    source: str
    comparable: str


#: Published numbers beside ours. Copied from ``../shared/papers/published.md`` (rows and sources
#: as given there); "comparable" says why a number cannot be set against ours one to one.
PUBLISHED: list[Published] = [
    Published("CGCNN (Xie & Grossman 2018)", "cgcnn", "formation_energy_per_atom", "0.039 eV/atom",
              "MP 2017, 46,744 entries, 60/20/20, test", "alignn README ('as given in corresponding papers')",
              "no: other MP snapshot and sizes (all cell sizes, 2.6x our training set), 1,000 epochs"),
    Published("CGCNN (Xie & Grossman 2018)", "cgcnn", "band_gap", "0.388 eV (Eg > 0 only)",
              "MP 2017, 27,430 semiconductors", "alignn README; data set txie-93/cgcnn data/material-data",
              "no: Eg > 0 entries only (compare our 'y>0' row), other snapshot, 1,000 epochs"),
    Published("CGCNN (Xie & Grossman 2018)", "cgcnn", "efermi", "0.355 eV (best validation MAE)",
              "MP 2017", "txie-93/cgcnn pre-trained/*.pth.tar",
              "no: validation, not test; other snapshot"),
    Published("CGCNN (Xie & Grossman 2018)", "cgcnn", "formation_energy_per_atom", "0.0397 eV/atom (best validation MAE)",
              "MP 2017", "txie-93/cgcnn pre-trained/*.pth.tar", "no: validation, not test; other snapshot"),
    Published("CGCNN (Xie & Grossman 2018)", "cgcnn", "band_gap", "0.369 eV (best validation MAE)",
              "MP 2017", "txie-93/cgcnn pre-trained/*.pth.tar", "no: validation, not test; other snapshot"),
    Published("MatMMFuse (Bhattacharya & Cloutier 2025)", "matmmfuse", "formation_energy_per_atom",
              "40 % lower error than vanilla CGCNN", "MP", "arXiv 2505.04634 abstract",
              "partly: a relative claim (compare our 'vs cgcnn' column); the released split trains on 20 % and "
              "tests on 80 % with no validation set, SmoothL1 reported, SciBERT fine-tuned end to end"),
    Published("MatMMFuse (Bhattacharya & Cloutier 2025)", "matmmfuse", "formation_energy_per_atom",
              "68 % lower error than SciBERT", "MP", "arXiv 2505.04634 abstract",
              "partly: relative claim (compare 'vs text'); their text model is fine-tuned SciBERT, ours a frozen MiniLM + MLP"),
    Published("MatMMFuse (Bhattacharya & Cloutier 2025)", "matmmfuse", "all four",
              "better than CGCNN and SciBERT on Ef, Eg, E_above_hull, E_fermi", "MP", "arXiv 2505.04634 abstract",
              "partly: sign of the effect only; per-property MAEs not found"),
    Published("CrysMMNet (Das & Goyal 2023)", "crysmmnet", "all",
              "consistent improvement over each vanilla GNN", "MP 2018.6.1, JARVIS", "arXiv 2307.05390 abstract",
              "partly: sign only; ALIGNN backbone + frozen MatSciBERT, 1,000 epochs, 'Best_mae' selected on test; MAE tables not found"),
    Published("ALIGNN", "alignn", "formation_energy_per_atom", "0.022 eV/atom", "MP 2018.6.1 (60,000 / 5,000 / 4,239)",
              "alignn README", "no: other model, 3.4x our training set, all cell sizes"),
    Published("ALIGNN", "alignn", "band_gap", "0.218 eV", "MP 2018.6.1", "alignn README", "no: other model and data"),
    Published("MEGNet", "megnet", "formation_energy_per_atom", "0.028 eV/atom", "MP 2018.6.1", "alignn README; matgl model card",
              "no: other model and data"),
    Published("MEGNet", "megnet", "band_gap", "0.33 eV", "MP 2018.6.1", "alignn README", "no: other model and data"),
    Published("matbench v0.1", "cgcnn", "formation_energy_per_atom", "0.0337 eV/atom",
              "matbench_mp_e_form (132,752, 5-fold)", "matbench leaderboard", "no: 7.5x more data, 5-fold CV"),
    Published("matbench v0.1", "cgcnn", "band_gap", "0.2972 eV", "matbench_mp_gap (106,113, 5-fold)",
              "matbench leaderboard", "no: other data, 5-fold CV"),
    Published("LLM-Prop (TextEdge)", "cgcnn", "band_gap", "0.293 eV", "TextEdge (MP 2022)", "LLM-Prop paper table",
              "no: other data"),
    Published("LLM-Prop (TextEdge)", "text", "band_gap", "0.231 eV (LLM-Prop)", "TextEdge (MP 2022)",
              "LLM-Prop paper table", "no: other data; a fine-tuned language model, ours a frozen MiniLM + MLP"),
    Published("ALIGNN / CGCNN (JARVIS)", "cgcnn", "e_above_hull", "0.17 eV (CGCNN), 0.076 eV (ALIGNN)",
              "JARVIS-DFT 2021 (80/10/10)", "alignn README", "no: JARVIS energies and hull, not MP's"),
]


def published_for(paper_prefix: str | None = None, target: str | None = None) -> list[Published]:
    """Rows of one paper (by name prefix) and/or target ("all"/"all four" rows match every target)."""
    return [p for p in PUBLISHED
            if (paper_prefix is None or p.paper.startswith(paper_prefix))
            and (target is None or p.target in (target, "all", "all four"))]


def markdown(rows: list[Published]) -> list[str]:
    """A Markdown table of published rows (empty list when there are none)."""
    if not rows:
        return []
    return ["| paper | model | target | value | data | source | comparable? |", "|---|---|---|---|---|---|---|"] + [
        f"| {p.paper} | {p.model} | {p.target} | {p.value} | {p.data} | {p.source} | {p.comparable} |" for p in rows]


#: Massa, Papanikolaou & Sankowski (arXiv 2401.09301) Table 6, InceptionV3 + RoBERTa (roberta-base),
#: 785 stable FCC MP crystals, as printed (the targets appear scaled): (target, variant) ->
#: {split: (RMSE, R²)} for the paper's train / test / holdout. Source: ../shared/papers/published.md.
MASSA_TABLE6: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("band_gap", "single"): {"train": (0.06, 0.73), "test": (0.09, 0.50), "holdout": (0.09, 0.45)},
    ("band_gap", "key"): {"train": (0.02, 0.96), "test": (0.07, 0.71), "holdout": (0.07, 0.68)},
    ("band_gap", "all"): {"train": (0.03, 0.90), "test": (0.08, 0.60), "holdout": (0.08, 0.54)},
    ("formation_energy_per_atom", "single"): {"train": (0.06, 0.87), "test": (0.07, 0.82), "holdout": (0.07, 0.81)},
    ("formation_energy_per_atom", "key"): {"train": (0.04, 0.95), "test": (0.05, 0.88), "holdout": (0.06, 0.86)},
    ("formation_energy_per_atom", "all"): {"train": (0.03, 0.97), "test": (0.05, 0.89), "holdout": (0.07, 0.83)},
    ("total_magnetization", "single"): {"train": (0.02, 0.94), "test": (0.04, 0.75), "holdout": (0.09, 0.57)},
    ("total_magnetization", "key"): {"train": (0.02, 0.92), "test": (0.04, 0.79), "holdout": (0.10, 0.52)},
    ("total_magnetization", "all"): {"train": (0.02, 0.94), "test": (0.04, 0.80), "holdout": (0.10, 0.50)},
    ("k_vrh", "single"): {"train": (0.03, 0.96), "test": (0.05, 0.86), "holdout": (0.05, 0.88)},
    ("k_vrh", "key"): {"train": (0.04, 0.92), "test": (0.04, 0.92), "holdout": (0.04, 0.91)},
    ("k_vrh", "all"): {"train": (0.04, 0.93), "test": (0.05, 0.88), "holdout": (0.04, 0.91)},
}


#: Matbench v0.1 leaderboard of matbench_jdft2d (5-fold, mean ± std of the fold MAEs, meV/atom),
#: copied from ../shared/papers/published.md ("Matbench v0.1 leaderboard for matbench_jdft2d").
MATBENCH_JDFT2D: list[tuple[str, str]] = [
    ("MODNet v0.1.12", "33.19 ± 7.34"), ("coNGN", "36.17 ± 11.60"), ("coGN", "37.17 ± 13.68"),
    ("SchNet (kgcnn)", "42.66 ± 13.72"), ("ALIGNN", "43.42 ± 8.95"), ("CrabNet", "45.61 ± 12.25"),
    ("CGCNN v2019", "49.24 ± 11.59"), ("RF-SCM/Magpie", "50.04 ± 8.63"), ("MegNet (kgcnn)", "54.17 ± 11.43"),
    ("Dummy (predicts the mean)", "67.29 ± 10.18"),
]
#: Leaderboards by matbench task (source: ../shared/papers/published.md).
MATBENCH_LEADERBOARDS: dict[str, list[tuple[str, str]]] = {"matbench_jdft2d": MATBENCH_JDFT2D}
