"""Typed configuration of the whole workflow.

``config.yaml`` is validated twice: by Snakemake against ``workflow/schemas/config.schema.json``
(generated from these models by ``python -m matfuse.config --schema``; a test keeps the two in
step) and by :func:`load_config`, which gives every script typed objects. Unknown keys are
errors (``extra="forbid"``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from matfuse import registry
from matfuse.density.config import DensityConfig, match_file
from matfuse.generate.evaluate import EvalConfig

#: Name pattern shared by datasets, encoders and other path components (wildcard-safe).
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.]*$"

TextVariant = Literal["all", "key", "single"]
#: Models ``training.models`` may name (the crystal family of :mod:`matfuse.registry`).
ModelName = Literal[registry.names("crystal")]  # type: ignore[valid-type]
#: Models that fine-tune a text encoder on token ids of the robocrys texts (crystal family).
TOKEN_MODELS = frozenset(registry.names(uses="tokens"))
#: Models that read text, as a cached embedding or as tokens (any family): they have the
#: encoder / variant wildcards.
TEXT_MODELS = frozenset(registry.names(uses="text")) | TOKEN_MODELS
#: Models whose input includes a crystal graph (crystal family: CroMEL builds its own graphs).
GRAPH_MODELS = frozenset(registry.names("crystal", uses="graph"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


# --------------------------------------------------------------------------- sources
class TableSource(_Strict):
    """A user file (CSV, JSON, JSON-lines or Parquet; ``.gz``/``.zip`` accepted)."""

    kind: Literal["table"] = "table"
    path: str = Field(description="File to read; relative paths are relative to the working directory.")
    format: Literal["auto", "csv", "json", "jsonl", "parquet", "ase"] = Field(
        "auto",
        description="'ase': an extxyz / ASE database / trajectory file read with ase.io (auto for .extxyz, .xyz, "
        ".db, .traj): one row per structure, columns from atoms.info / the database's key-value pairs "
        "(+ 'energy' where a calculator result is stored), id = info[id_column] or the 0-based index.",
    )
    id_column: str = "material_id"
    structure_column: str = Field(
        "cif",
        description="Column with the structure. Absent, with columns positions / cell / atomic_numbers "
        "(MatDeepLearn / matbench-like records, Cartesian Å): those make the structure (structure_format auto or positions).",
    )
    structure_format: Literal["auto", "cif", "poscar", "pymatgen", "jarvis", "positions"] = "auto"
    targets: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical target name -> column of the file holding it; 'column[i]' takes element i of a "
        "list-valued column (a one-element list is unpacked by itself).",
    )
    id_prefix: str = Field("", description="Prefix added to ids (e.g. when they are bare integers).")
    members: list[str] | None = Field(
        None, description="Files inside a .zip archive to read and concatenate (glob patterns allowed)."
    )
    per_atom: list[str] = Field(
        default_factory=list,
        description="Canonical targets given per cell in the file: divided by the cell's number of sites.",
    )
    formula_column: str | None = Field(
        "auto",
        description="Column declaring each structure's formula (reduced or per cell); a parsed structure "
        "whose composition disagrees is a reject. 'auto' = a column named formula, pretty_formula, "
        "formula_pretty or reduced_formula if present; null = no check.",
    )
    nsites_column: str | None = Field(
        "auto",
        description="Column declaring each structure's number of sites; a parsed structure with another "
        "count is a reject. 'auto' = a column named nsites or num_sites if present; null = no check.",
    )


class MPSource(_Strict):
    """Materials Project through mp-api ``MPRester().materials.summary.search``."""

    kind: Literal["mp"] = "mp"
    criteria: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of summary.search (e.g. elements, num_sites, is_stable).",
    )
    targets: list[str] = Field(
        default_factory=lambda: ["formation_energy_per_atom", "band_gap", "efermi"],
        description="Target names kept (MP summary field names, or names mapped in target_fields).",
    )
    target_fields: dict[str, str] = Field(
        default_factory=lambda: {"k_vrh": "bulk_modulus.vrh", "g_vrh": "shear_modulus.vrh"},
        description="Target name -> dotted summary field path, for targets nested in documents.",
    )
    endpoint: str | None = Field(None, description="API endpoint; default is mp-api's own.")
    api_key_env: str = "MP_API_KEY"
    chunk_size: int = Field(1000, ge=1)
    num_chunks: int | None = Field(None, ge=1, description="Stop after this many chunks (None = all).")

    @field_validator("criteria")
    @classmethod
    def _criteria_not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(value) & {"fields", "all_fields", "chunk_size", "num_chunks"})
        if reserved:
            raise ValueError(
                f"criteria {reserved} are set by matfuse; use source.targets / source.chunk_size / "
                f"source.num_chunks instead"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                f"api_key_env must be the NAME of an environment variable (e.g. MP_API_KEY), "
                f"not {len(value)} characters of something else: never put the key itself in the config"
            )
        return value


class JarvisSource(_Strict):
    """JARVIS-DFT through ``jarvis.db.figshare.data(dataset, store_dir=...)``."""

    kind: Literal["jarvis"] = "jarvis"
    dataset: str = "dft_3d"
    store_dir: str = Field(
        "results/cache/jarvis",
        description="Folder holding (or receiving) the figshare zip; read offline when present.",
    )
    targets: dict[str, str] = Field(
        default_factory=lambda: {
            "formation_energy_per_atom": "formation_energy_peratom",
            "band_gap": "optb88vdw_bandgap",
            "e_above_hull": "ehull",
        },
        description="Canonical target name -> JARVIS key.",
    )
    local_subset: str | None = Field(
        None,
        description="A JSON(.gz) list of JARVIS records (e.g. ../shared/data/jarvis_dft3d/...): the "
        "workflow packs it into <store_dir> in the figshare format, so no download is needed.",
    )


Source = Annotated[Union[TableSource, MPSource, JarvisSource], Field(discriminator="kind")]


class ChemistryFilter(_Strict):
    """Selects entries by chemistry (used for the zero-shot chalcogenide set)."""

    any_of: list[str] = Field(default_factory=list, description="Keep entries containing any of these elements.")
    none_of: list[str] = Field(default_factory=list, description="...and none of these.")


class DescriptionsTable(_Strict):
    """Precomputed Robocrystallographer descriptions in a table (id -> text), e.g. a released data set."""

    kind: Literal["table"] = "table"
    path: str = Field(description="CSV/JSON/JSON-lines/Parquet file (.gz/.zip accepted).")
    format: Literal["auto", "csv", "json", "jsonl", "parquet"] = "auto"
    id_column: str = "material_id"
    text_column: str = Field("description", description="Column holding the full ('all') description.")
    id_prefix: str = Field("", description="Prefix added to ids (as in the dataset's source).")


class DescriptionsMP(_Strict):
    """Materials Project's served descriptions (mp-api ``MPRester().materials.robocrys``)."""

    kind: Literal["mp"] = "mp"
    endpoint: str | None = Field(None, description="API endpoint; default is mp-api's own.")
    api_key_env: str = "MP_API_KEY"
    chunk_size: int = Field(500, ge=1, description="Ids per request.")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        return MPSource._env_name(value)


Descriptions = Annotated[Union[DescriptionsTable, DescriptionsMP], Field(discriminator="kind")]


class HullConfig(_Strict):
    """Energy above the convex hull of the source's whole collection, as an extra target.

    Built from the formation energies of *every* row of the table (all sizes, before any
    filter or subset) + each element at 0 eV/atom, with pymatgen's PatchedPhaseDiagram: "the
    hull of this collection" (for MT-CGCNN: legacy MP energies), not MP's current value.
    """

    energy: str = Field("formation_energy_per_atom", description="Target (key of source.targets) with the formation energy per atom.")
    target: str = Field("e_above_hull", description="Name of the target this adds.")
    check: list[str] = Field(
        default_factory=list,
        description="CSV files with material_id and MP's own e_above_hull to compare against (MAE, share within 0.05 eV/atom).",
    )


class DatasetConfig(_Strict):
    source: Source
    hull: HullConfig | None = Field(None, description="Add e_above_hull of the collection's convex hull (table sources).")
    descriptions: Descriptions | None = Field(
        None,
        description="Precomputed 'all' descriptions (a table of id -> text, or MP's robocrys endpoint), used "
        "where present; robocrys describes the rest, and key/single are always derived locally. The source "
        "of each text is recorded (texts.parquet column text_source).",
    )
    max_sites: int = Field(200, ge=1, description="Larger structures are rejected (recorded).")
    allow_partial_occupancy: bool = False
    subset: int | None = Field(
        None, ge=1, description="Keep a seeded random subset of this many valid entries (None = all)."
    )
    subset_seed: int = 0
    include: ChemistryFilter | None = Field(None, description="Keep only entries matching this filter.")
    exclude: ChemistryFilter | None = Field(
        None, description="Drop entries matching this filter (recorded in rejects as 'excluded')."
    )
    train: bool = Field(True, description="False: evaluation-only (zero-shot) dataset; no split, no training.")

    def target_names(self) -> list[str]:
        """Canonical target names this dataset provides."""
        src = self.source
        names = list(src.targets) if isinstance(src.targets, dict) else list(src.targets)
        return names + ([self.hull.target] if self.hull is not None else [])

    @model_validator(mode="after")
    def _hull_from_a_table(self) -> "DatasetConfig":
        h = self.hull
        if h is None:
            return self
        if self.source.kind != "table":
            raise ValueError(f"hull: only table sources give a whole collection to build a hull from (this is {self.source.kind!r})")
        if h.energy not in self.source.targets:
            raise ValueError(f"hull.energy {h.energy!r} is not a key of source.targets {sorted(self.source.targets)}")
        if h.target in self.source.targets:
            raise ValueError(f"hull.target {h.target!r} is already a target of the source")
        return self


# --------------------------------------------------------------------------- stages
class SplitConfig(_Strict):
    """How a training dataset is split (``results/splits/<dataset>/splits.json``; see :mod:`matfuse.split`).

    ``random``: one seeded train/val/test cut by fractions. ``kfold``: ``n_folds`` folds (scikit-learn
    ``KFold(n_folds, shuffle, random_state)`` over the entries in table order; matbench's own is
    5, shuffle, 18012019): every fold is a train/test run of its own (path segment ``fold<k>-``).
    ``column``: a column of the source names each entry's split (``{target}`` in its name is replaced
    by each target's source column, e.g. JARVIS leaderboard ``split__{target}``). ``file``: a JSON
    ``{"train": [ids], "val": [...], "test": [...]}`` or a CSV with columns ``material_id, split``.
    For ``kfold``, ``column`` and ``file``, when a split gives no validation ids, ``val`` of the
    training part is held out for early stopping and model selection (seeded with ``seed``): the
    test part is never looked at.
    """

    kind: Literal["random", "kfold", "column", "file"] = "random"
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 42
    n_folds: int = Field(5, ge=2, description="kfold: number of folds.")
    shuffle: bool = Field(True, description="kfold: shuffle before cutting folds (scikit-learn KFold).")
    random_state: int | None = Field(None, description="kfold: KFold's random_state (None: seed).")
    group: bool = Field(
        True, description="random/kfold: keep entries with the same structure_hash on one side of every cut "
        "(set false to reproduce a benchmark's published folds exactly, e.g. matbench).",
    )
    column: str | None = Field(
        None, description="column: source column (table column or JARVIS key) whose values name the split "
        "(train / val / valid / validation / test; other values leave the entry out, counted in splits.json). "
        "'{target}' is replaced by the target name as the source spells it (e.g. split__{target}).",
    )
    path: str | None = Field(None, description="file: JSON or CSV file with the ids of each split.")

    @model_validator(mode="after")
    def _kind_settings(self) -> "SplitConfig":
        if self.kind == "random":
            total = self.train + self.val + self.test
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"split fractions must sum to 1, got {total}")
        if self.kind == "column" and not self.column:
            raise ValueError("split kind 'column' needs `column` (the source column naming each entry's split)")
        if self.kind == "file" and not self.path:
            raise ValueError("split kind 'file' needs `path` (a JSON or CSV file of ids per split)")
        return self

    def folds(self) -> list[int | None]:
        """The fold indices of this split: ``[None]`` (one split) unless ``kind`` is kfold."""
        return list(range(self.n_folds)) if self.kind == "kfold" else [None]

    def params(self) -> dict[str, Any]:
        """What changes the split file (the split rule's params): for ``random`` exactly the
        fractions and seed, as before the other kinds existed (so existing splits are not redone)."""
        if self.kind == "random":
            return {**self.fractions(), **({"group": False} if not self.group else {})}
        return self.model_dump()

    def fractions(self) -> dict[str, Any]:
        """The seeded random cut alone (the ECD branch splits its own selection with it)."""
        return self.model_dump(include={"train", "val", "test", "seed"})


class TextConfig(_Strict):
    """Robocrystallographer text stage (see :mod:`matfuse.text`).

    ``fast_mineral_matching`` (its old name) is accepted as a deprecated alias of ``fast_paths``
    (with a ``FutureWarning``); the schema lists it as deprecated so old configs still validate.
    """

    model_config = ConfigDict(
        json_schema_extra=lambda schema: schema["properties"].update(
            fast_mineral_matching={
                "type": "boolean",
                "deprecated": True,
                "description": "Deprecated alias of fast_paths (it switches all exact fast paths, not only "
                "mineral matching).",
            },
            variants={
                "type": "array",
                "deprecated": True,
                "description": "Removed (read by nothing): every shard holds all three variants; "
                "training.text_variants and density.text_variants choose which are used.",
            },
        )
    )

    n_shards: int = Field(2, ge=1, description="Robocrys jobs per dataset (run in parallel).")
    workers_per_shard: int = Field(1, ge=1)
    cache_dir: str = Field("results/cache/robocrys", description="Per-structure text cache (shareable).")
    fast_paths: bool = Field(
        True,
        description="Exact robocrys fast paths (neighbour/fingerprint memo, mineral-matching prefilter, one "
        "offline molecule namer per process, lazy AFLOW library, numpy short paths): byte-identical texts, "
        "~5-20x less compute. Applied only with the verified robocrys/pymatgen/matminer/spglib/numpy "
        "versions (matfuse.text.settings.VERIFIED_VERSIONS), else stock robocrys with a warning; "
        "false = stock robocrys.",
    )
    timeout_s: float | None = Field(
        None, description="Per-structure time limit; a structure over it is recorded as a failure."
    )

    @model_validator(mode="before")
    @classmethod
    def _deprecated_fast_mineral_matching(cls, data: Any) -> Any:
        import warnings

        if isinstance(data, dict) and "variants" in data:
            data = {k: v for k, v in data.items() if k != "variants"}
            warnings.warn(
                "text.variants is ignored (and will be refused in a later version): every shard holds all "
                "three variants; choose the ones used with training.text_variants / density.text_variants",
                FutureWarning, stacklevel=2,
            )
        if not isinstance(data, dict) or "fast_mineral_matching" not in data:
            return data

        data = dict(data)
        old = data.pop("fast_mineral_matching")
        if "fast_paths" in data and data["fast_paths"] != old:
            raise ValueError(
                "text.fast_mineral_matching (deprecated alias of text.fast_paths) contradicts text.fast_paths; "
                "keep only fast_paths"
            )
        data.setdefault("fast_paths", old)
        warnings.warn(
            "text.fast_mineral_matching is deprecated (it switches all exact robocrys fast paths): "
            "use text.fast_paths",
            FutureWarning,
            stacklevel=2,
        )
        return data

    @property
    def fast_mineral_matching(self) -> bool:
        """Deprecated read-only alias of :attr:`fast_paths`."""
        import warnings

        warnings.warn("TextConfig.fast_mineral_matching is deprecated: use fast_paths", FutureWarning, stacklevel=2)
        return self.fast_paths


class EncoderConfig(_Strict):
    """A text encoder (see :mod:`matfuse.embed.text`).

    Paper setting: ``model: allenai/scibert_scivocab_uncased`` with ``pooling: cls``,
    ``max_length: 512`` (needs the checkpoint in the local HF cache or a local path). Offline
    default: ``packaged:minilm`` with masked ``mean`` pooling.
    """

    model: str = Field(description="Hugging Face name, local path, or 'packaged:minilm' (offline default).")
    pooling: Literal["cls", "mean"] = "mean"
    max_length: int = Field(512, ge=8)
    batch_size: int = Field(16, ge=1)
    backend: Literal["auto", "torch", "openvino"] = Field(
        "auto",
        description=(
            "Runtime of the encoder: 'torch', or 'openvino' (CPU only, fp32, same vectors to ~1e-6, "
            "~1.15x faster than torch on a 2-core CPU); 'auto' = openvino on a CPU where it is installed, else torch."
        ),
    )
    cache_dir: str = Field("results/cache/embeddings", description="Embedding cache keyed by encoder + text hash.")
    allow_download: bool = Field(
        False,
        description="Let a hub name missing from the local HF cache be downloaded (only where the hub is reachable).",
    )


class GraphConfig(_Strict):
    radius: float = Field(8.0, gt=0)
    max_neighbors: int = Field(12, ge=1)
    gaussian_step: float = Field(0.2, gt=0)


class ModelHyper(_Strict):
    """Model hyper-parameters (shared across models where they apply)."""

    atom_fea_len: int = 64
    atom_features: Literal["recomputed", "cgcnn"] = Field(
        "recomputed", description="CGCNN element features: our 91-wide recomputation or CGCNN's 92-wide atom_init.json.")
    n_conv: int = 3
    h_fea_len: int = 128
    fusion_dim: int = 512
    fusion_heads: int = 8
    proj_dim: int = 64
    dropout: float = Field(0.1, ge=0, lt=1)
    backbone: Literal["cgcnn", "mdl_cgcnn"] = Field(
        "cgcnn", description="Graph encoder of the end-to-end matmmfuse: our CGCNN, or MatDeepLearn's (the authors').")
    text_pooling: Literal["cls", "mean", "mean_unmasked", "pooler"] | None = Field(
        None, description="Pooling of fine-tuned text encoders (None: the encoder's `pooling`); mean_unmasked = "
        "MatMMFuse's mean over all positions, pooler = BERT's pooler (sequence regression).")
    attn_dropout: float = Field(0.2, ge=0, lt=1, description="Attention dropout of the end-to-end matmmfuse.")


#: ModelHyper settings added after results existed: left out of the training params at their defaults.
LATER_HYPER_KEYS = ("atom_features", "backbone", "text_pooling", "attn_dropout")


class TextEncoderSettings(_Strict):
    """The encoder a token model fine-tunes (filled by the workflow from ``embeddings.<encoder>``)."""

    model: str
    max_length: int = Field(512, ge=8)
    pooling: Literal["cls", "mean"] = "mean"
    allow_download: bool = False


class TrainingConfig(_Strict):
    models: list[ModelName] = Field(default_factory=lambda: ["cgcnn", "text", "matmmfuse_frozen", "matmmfuse_tokens"])
    targets: list[str] = Field(default_factory=lambda: ["formation_energy_per_atom", "band_gap", "efermi"])
    datasets: list[str] | None = Field(None, description="Datasets to train on (None = all with train: true).")
    encoders: list[str] = Field(default_factory=lambda: ["minilm"], description="Keys of `embeddings`.")
    text_variants: list[TextVariant] = Field(default_factory=lambda: ["all"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(10, ge=1, description="Early stopping on validation MAE.")
    schedule: Literal["constant", "onecycle", "cosine", "multistep"] = Field(
        "constant",
        description="Learning-rate schedule, stepped per batch over `epochs`: constant lr; onecycle "
        "(torch OneCycleLR, peak lr, `warmup` of the steps rising); cosine (linear warm-up over `warmup` of "
        "the steps, then cosine decay to 0); multistep (lr x `gamma` at each of `milestones`, CGCNN's MultiStepLR).",
    )
    warmup: float = Field(0.1, ge=0, lt=1, description="Share of the steps spent warming up (onecycle, cosine).")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW, or SGD with `momentum` (CGCNN's).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    milestones: list[float] = Field(
        default_factory=lambda: [0.8], description="multistep: where lr drops, as shares of the training steps.")
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: lr factor at each milestone.")
    lr_by_target: dict[str, float] = Field(
        default_factory=dict, description="Learning rate per target where it differs from `lr` (e.g. CGCNN's 0.05 "
        "for band_gap).")
    recipes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-model training settings over the registry's recipe of that model (e.g. cgcnn_paper: "
        "{epochs: 1000}); keys are this section's hyper-parameter keys.",
    )
    train_sizes: list[int | Literal["all"]] = Field(
        default_factory=lambda: ["all"],
        description="Training-set sizes (learning curve): each n trains on the first n of one fixed "
        "permutation of the training split (nested: n=1000 is inside n=4000); val and test stay whole.",
    )
    extra: list["ExperimentGroup"] = Field(
        default_factory=list,
        description="More experiments, each a product of its own lists (unset lists = this section's), "
        "e.g. more targets with one seed, a learning curve for two models, a text-variant ablation.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def products(self) -> list[dict[str, Any]]:
        """The experiment lists of this section and of each ``extra`` group (unset = this section's)."""
        keys = ("models", "targets", "datasets", "encoders", "text_variants", "seeds", "train_sizes")
        base = {k: getattr(self, k) for k in keys}
        return [base] + [{k: base[k] if getattr(g, k) is None else getattr(g, k) for k in keys} for g in self.extra]

    amp: bool = Field(False, description="Mixed precision on CUDA.")
    hyper: ModelHyper = Field(default_factory=ModelHyper)
    text_encoder: TextEncoderSettings | None = Field(
        None, description="Set by the workflow for models that fine-tune a text encoder (from `embeddings.<encoder>` "
        "of the job); leave unset in a config.")

    def for_model(self, model: str, target: str | None = None) -> "TrainingConfig":
        """The settings one model trains with: this section, then the registry's recipe of the model
        (its published training recipe, e.g. ``cgcnn_paper``), then ``recipes[model]``, then
        ``lr_by_target[target]``. Hyper-parameter keys of a recipe go into ``hyper``."""
        spec = registry.spec(model)
        merged = self.model_dump()
        for layer in (spec.recipe, self.recipes.get(model, {})):
            for key, value in layer.items():
                if key == "hyper":
                    merged["hyper"] = {**merged["hyper"], **value}
                elif key in EXPERIMENT_LIST_KEYS or key == "recipes":
                    raise ValueError(f"recipe of {model!r}: {key!r} is an experiment list, not a training setting")
                else:
                    merged[key] = value
        merged["recipes"] = {}  # resolved: the result is one model's settings
        out = TrainingConfig.model_validate(merged)
        if target is not None and target in out.lr_by_target:
            out = out.model_copy(update={"lr": out.lr_by_target[target]})
        return out

    @model_validator(mode="after")
    def _recipes_are_valid(self) -> "TrainingConfig":
        for model in self.recipes:
            if model not in registry.names("crystal"):
                raise ValueError(f"training.recipes names {model!r}, not a crystal model ({registry.names('crystal')})")
            self.for_model(model)
        return self


#: TrainingConfig fields that list experiments (the wildcards), not how one is trained.
EXPERIMENT_LIST_KEYS = frozenset({"models", "targets", "datasets", "encoders", "text_variants", "seeds", "train_sizes",
                                  "extra"})


class ExperimentGroup(_Strict):
    """Extra experiments of the training section (see ``training.extra``); hyper-parameters are shared."""

    name: str | None = Field(None, description="What the group is for (documentation only).")
    models: list[ModelName] | None = None
    targets: list[str] | None = None
    datasets: list[str] | None = None
    encoders: list[str] | None = None
    text_variants: list[TextVariant] | None = None
    seeds: list[int] | None = None
    train_sizes: list[int | Literal["all"]] | None = None


TrainingConfig.model_rebuild()


class MatbenchConfig(_Strict):
    """A dataset that is a matbench v0.1 task: write matbench results files of its k-fold runs.

    Entry ids must end in the entry's 0-based position in matbench's order (e.g. ``jdft2d-17``);
    the split must be matbench's (kind kfold, 5 folds, shuffle, random_state 18012019, group false).
    """

    task: str = Field(description="Matbench task, e.g. matbench_jdft2d.")
    target: str = Field(description="The dataset's target that is the task's target.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from matfuse.matbench import MATBENCH_V01

        if value not in MATBENCH_V01:
            raise ValueError(f"unknown matbench regression task {value!r}; known: {sorted(MATBENCH_V01)}")
        return value


class EvaluationConfig(_Strict):
    zero_shot: dict[str, str] = Field(
        default_factory=dict,
        description="Evaluation dataset -> training dataset whose models it scores without retraining.",
    )
    parity_plots: bool = True
    report: bool = Field(
        False,
        description="Build the study report results/study/results.md (tables with published numbers, learning "
        "curve, ablation, hull check, wall time); `make study` copies it to docs/results.md.",
    )
    report_parity: list[str] = Field(
        default_factory=lambda: ["cgcnn", "matmmfuse_frozen"],
        description="Models whose parity plots (formation energy, band gap) the report shows.",
    )
    positive_only: list[str] = Field(
        default_factory=list,
        description="Targets also scored on the entries whose true value is > 0 only (metrics rows with "
        "subset 'y>0'), e.g. band_gap as CGCNN reported it (semiconductors).",
    )
    matbench: dict[str, MatbenchConfig] = Field(
        default_factory=dict,
        description="Dataset -> matbench task: results/matbench/<dataset>/<target>/<model>/<encoder>/<variant>/"
        "results.json.gz per model (matbench's record format; seed-ensemble mean and std) and "
        "results/matbench/<dataset>/summary.md beside the published leaderboard.",
    )


class RuleResources(_Strict):
    """What one job of a rule needs (``runtime_min`` in minutes)."""

    threads: int = Field(1, ge=1)
    mem_mb: int = Field(2000, ge=1)
    runtime_min: int = Field(10, ge=1)
    gpu: int = Field(0, ge=0)


def _res(**kw: int) -> Any:
    return Field(default_factory=lambda: RuleResources(**kw))


class ResourcesConfig(_Strict):
    """Portable per-rule needs of every rule; cluster profiles map these to partitions/GPUs.

    The GPU-capable stages keep their flat keys (``train_*``: train, predict, predict_zeroshot,
    cromel, density_train; ``describe_*``; ``embed_*``); every other rule has its own section.
    """

    train_threads: int = 1
    train_mem_mb: int = 4000
    train_runtime_min: int = 60
    train_gpu: int = 0
    predict_runtime_min: int = Field(30, ge=1, description="Run time of predict / predict_zeroshot jobs.")
    describe_threads: int = 1
    describe_mem_mb: int = 4000
    describe_runtime_min: int = 240
    embed_threads: int = 2
    embed_mem_mb: int = 6000
    embed_runtime_min: int = 120
    embed_gpu: int = 0
    ingest: RuleResources = _res(mem_mb=4000, runtime_min=60)
    split: RuleResources = _res(mem_mb=1000, runtime_min=5)
    ensemble: RuleResources = _res(mem_mb=2000, runtime_min=5)
    matbench: RuleResources = _res(mem_mb=2000, runtime_min=5)
    hull: RuleResources = _res(mem_mb=4000, runtime_min=30)
    jarvis_store: RuleResources = _res(mem_mb=2000, runtime_min=10)
    merge_texts: RuleResources = _res(mem_mb=2000, runtime_min=10)
    graphs: RuleResources = _res(mem_mb=4000, runtime_min=60)
    experiments: RuleResources = _res(mem_mb=500, runtime_min=5)
    metrics: RuleResources = _res(mem_mb=2000, runtime_min=10)
    tables: RuleResources = _res(mem_mb=1000, runtime_min=5)
    density_match: RuleResources = _res(mem_mb=4000, runtime_min=30)
    density_select: RuleResources = _res(mem_mb=2000, runtime_min=10)
    density_images: RuleResources = _res(mem_mb=6000, runtime_min=240)
    density_table6: RuleResources = _res(mem_mb=1000, runtime_min=5)
    gen_data: RuleResources = _res(mem_mb=4000, runtime_min=10)
    gen_train_lm: RuleResources = _res(mem_mb=4000, runtime_min=120)
    gen_sample: RuleResources = _res(mem_mb=4000, runtime_min=60)
    gen_train_rfm: RuleResources = _res(mem_mb=4000, runtime_min=120)
    gen_integrate: RuleResources = _res(mem_mb=4000, runtime_min=30)
    gen_baseline: RuleResources = _res(mem_mb=2000, runtime_min=30)
    gen_evaluate: RuleResources = _res(mem_mb=6000, runtime_min=240)
    gen_table: RuleResources = _res(mem_mb=2000, runtime_min=10)

    def of(self, rule: str) -> RuleResources:
        """The resources of ``rule``."""
        if rule in ("train", "cromel", "density_train", "predict", "predict_zeroshot"):
            runtime = self.predict_runtime_min if rule.startswith("predict") else self.train_runtime_min
            return RuleResources(threads=self.train_threads, mem_mb=self.train_mem_mb, runtime_min=runtime, gpu=self.train_gpu)
        if rule == "describe":
            return RuleResources(threads=self.describe_threads, mem_mb=self.describe_mem_mb, runtime_min=self.describe_runtime_min)
        if rule == "embed":
            return RuleResources(threads=self.embed_threads, mem_mb=self.embed_mem_mb, runtime_min=self.embed_runtime_min, gpu=self.embed_gpu)
        value = getattr(self, rule, None)
        if not isinstance(value, RuleResources):
            raise KeyError(f"no resources for rule {rule!r}")
        return value


class CromelConfig(_Strict):
    """Settings of the CroMEL branch (defaults: CPU-cheap; see ``paper_scale()``)."""

    dataset: str = Field("mp", description="Training dataset whose train-split structures are the source.")
    seeds: list[int] = Field(default_factory=lambda: [0])
    # source (structures)
    source_target: str = Field("formation_energy_per_atom", description="Entries column used as the source target.")
    n_source: int | None = Field(2000, ge=10, description="Seeded subset of train-split entries (None = all).")
    source_val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Part of the source subset used for early stopping.")
    cutoff: float = Field(6.0, gt=0, description="Neighbour radius (Å) of the structure graph.")
    max_neighbors: int = Field(12, ge=1)
    gaussian_step: float = Field(0.4, gt=0)
    struct_hidden: int = Field(64, ge=1)
    struct_n_conv: int = Field(3, ge=1)
    latent_dim: int = Field(64, ge=2, description="Shared embedding width (structure and composition).")
    struct_epochs: int = Field(30, ge=1)
    struct_lr: float = Field(1e-3, gt=0)
    struct_patience: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    # composition encoder
    element_dim: int = Field(32, ge=1)
    element_init: Literal["properties", "random", "matscholar"] = Field(
        "properties", description="Element vectors: pymatgen properties, random, or the fixed 200-d Matscholar "
        "embeddings (CroMEL's; needs element_dim 200; frozen).")
    comp_hidden: int = Field(128, ge=1)
    stochastic: bool = Field(True, description="Reparameterised noise on the composition latent (training only).")
    # alignment (WGAN-GP)
    align_steps: int = Field(1500, ge=1, description="Composition-encoder updates during alignment.")
    n_critic: int = Field(5, ge=1, description="Critic updates per encoder update.")
    critic_hidden: int = Field(64, ge=1)
    gp_weight: float = Field(10.0, ge=0)
    align_lr: float = Field(2e-4, gt=0)
    pred_weight: float = Field(1.0, ge=0, description="Weight of the source regression loss on the composition embedding.")
    extra_pred_weights: list[float] = Field(
        default_factory=list, description="More aligned encoders with these pred_weight values (model "
        "'composition+cromel(pw=<w>)'); 0 is the authors' setting (the generator trained by the critic alone).")
    # target (experimental enthalpies)
    exp_path: str | None = Field(None, description="exp_compounds.json.gz; None = the copy shipped with pymatgen.")
    target_sets: list[Literal["exp_compounds", "efe"]] = Field(
        default_factory=lambda: ["exp_compounds"],
        description="Target sets: exp_compounds (pymatgen's 2,135 experimental enthalpies) and/or efe (CroMEL's own "
        "1,196 intermetallic formation enthalpies, `efe_path`, column form_eng_exp).")
    efe_path: str = Field("../shared/data/cromel_efe/efe_intermetallics_1196.csv",
                          description="CroMEL's efe table (composition, form_eng_exp in eV/atom).")
    protocols: list[Literal["leakfree", "authors"]] = Field(
        default_factory=lambda: ["leakfree"],
        description="CV protocols: leakfree (our seeded folds, a fresh copy of the pretrained encoder per fold) and/or "
        "authors (numpy seed + array_split folds as exec_tl.py, one encoder object fine-tuned fold after fold, so "
        "later folds start from weights that saw their own test compounds).")
    n_folds: int = Field(5, ge=2)
    inner_val_fraction: float = Field(0.1, gt=0, lt=0.5)
    head_hidden: int = Field(64, ge=1)
    finetune_epochs: int = Field(300, ge=1)
    finetune_lr: float = Field(5e-4, gt=0)
    finetune_weight_decay: float = Field(5e-6, ge=0)
    finetune_batch_size: int = Field(64, ge=2)
    patience: int = Field(30, ge=1, description="Early stopping on inner-validation MAE.")
    # execution
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1, description="torch.set_num_threads (None = leave as is).")

    @classmethod
    def paper_scale(cls, **overrides: Any) -> "CromelConfig":
        """Settings close to the reference code: all source entries, 300 source epochs, long fine-tuning."""
        base: dict[str, Any] = dict(
            n_source=None, struct_epochs=300, struct_patience=300, align_steps=20000,
            finetune_epochs=1000, patience=1000, finetune_batch_size=32,
        )
        base.update(overrides)
        return cls(**base)



# --------------------------------------------------------------------------- generation (FlowLLM)
GenerationMethod = Literal["lm", "flowllm", "rfm_simple", "pyxtal", "test"]


class GenerationLMConfig(_Strict):
    """The crystal-text language model (GPT-2 from scratch; :mod:`matfuse.generate.lm`)."""

    n_embd: int = Field(128, ge=8)
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_positions: int = Field(512, ge=64, description="Longest token sequence (prompt + crystal); longer ones are cut.")
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1, description="Share of the steps of linear warm-up (then cosine decay).")
    patience: int = Field(100, ge=1, description="Early stopping on the validation loss (epochs).")
    cond_fraction: float = Field(0.5, ge=0, le=1, description="Share of training sequences with the formula prompt.")
    augment: bool = Field(True, description="A fresh random translation of every training crystal each epoch.")
    length_decimals: int = Field(1, ge=0, le=4)
    angle_decimals: int = Field(0, ge=0, le=4)
    coord_decimals: int = Field(2, ge=1, le=5)
    n_train: int | None = Field(None, ge=2, description="Seeded subset of the training split (None = all).")
    n_val: int | None = Field(500, ge=1, description="Seeded subset of the validation split for selection (None = all).")

    @model_validator(mode="after")
    def _heads_divide(self) -> "GenerationLMConfig":
        if self.n_embd % self.n_head:
            raise ValueError(f"generation.lm.n_embd {self.n_embd} must be a multiple of n_head {self.n_head}")
        return self


class GenerationSamplingConfig(_Strict):
    temperature: float = Field(0.7, ge=0, description="0 = greedy.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass.")
    batch_size: int = Field(64, ge=1)


class GenerationRFMConfig(_Strict):
    """The flow (:mod:`matfuse.generate.rfm`): the same network and epochs for both bases."""

    hidden: int = Field(128, ge=4)
    n_layers: int = Field(4, ge=1)
    n_freq: int = Field(8, ge=1, description="Fourier frequencies of the fractional differences.")
    time_dim: int = Field(32, ge=2)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1)
    lattice_weight: float = Field(1.0, ge=0, description="Weight of the lattice-parameter term of the loss.")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    patience: int = Field(1000, ge=1)
    steps: int = Field(50, ge=1, description="Euler steps from t = 0 to 1 when sampling.")
    n_pair_targets: int | None = Field(
        1000, ge=2, description="Training crystals whose formula prompts the LM for (base, data) pairs (seeded; None = all).")
    samples_per_target: int = Field(1, ge=1, description="LM samples per target formula (the matched ones are kept).")
    pair_sampling: Literal["filter", "constrained"] = Field(
        "filter", description="filter: formula-prompted samples, kept when their species match (FlowLLM); "
        "constrained: formula-prompted with constrained decoding (element tokens only while that element has "
        "atoms left), for an LM too small to follow the prompt.")


class GenerationConfig(_Strict):
    """The FlowLLM branch (``results/generation/``): LM -> RFM -> samples -> metrics; see docs/generation.md."""

    dataset: str = Field(description="Dataset (a key of `datasets`) whose split provides train / val / test.")
    max_sites: int = Field(20, ge=1, description="Crystals with more sites are left out of every split table.")
    methods: list[GenerationMethod] = Field(
        default_factory=lambda: ["lm", "flowllm", "rfm_simple", "pyxtal", "test"],
        description="Rows: lm (LM samples), flowllm (LM + RFM), rfm_simple (RFM from the simple base, the LM "
        "samples' compositions), pyxtal (random symmetric, training compositions), test (the test split).")
    n_samples: int = Field(200, ge=1, description="Samples drawn per method.")
    seed: int = 0
    lm: GenerationLMConfig = Field(default_factory=GenerationLMConfig)
    sampling: GenerationSamplingConfig = Field(default_factory=GenerationSamplingConfig)
    rfm: GenerationRFMConfig = Field(default_factory=GenerationRFMConfig)
    pyxtal_max_groups: int = Field(20, ge=1, description="Space groups tried per composition (pyxtal row).")
    calibration: str | None = Field(
        "../shared/data/mp20_subset_opryan90/test.csv",
        description="Real structures with DFT e_above_hull run through the identical pipeline (None = no row).")
    n_calibration: int = Field(100, ge=1, description="Seeded subset of the calibration file.")
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    reference_shards: int = Field(
        2, ge=1, description="Parallel jobs computing the CHGNet reference energies all evaluations share.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(1, ge=1, description="torch.set_num_threads of the training/sampling jobs.")

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not value:
            raise ValueError(f"generation.methods must be a non-empty list without repeats: {value}")
        return value


class Config(_Strict):
    datasets: dict[str, DatasetConfig]
    split: SplitConfig = Field(default_factory=SplitConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    embeddings: dict[str, EncoderConfig] = Field(
        default_factory=lambda: {"minilm": EncoderConfig(model="packaged:minilm")}
    )
    graph: GraphConfig = Field(default_factory=GraphConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    # No schema default: Snakemake's validate() would set density=None and then descend into the
    # section's nested defaults with None (AttributeError). Omit the section to switch it off.
    density: DensityConfig | None = Field(None, json_schema_extra=lambda schema: schema.pop("default", None) and None)
    cromel: CromelConfig | None = Field(None, description="CroMEL branch (composition encoder taught by a structure encoder).")
    generation: GenerationConfig | None = Field(
        None, description="FlowLLM branch: crystal generation and its S.U.N. metrics (results/generation/).")

    @field_validator("datasets", "embeddings")
    @classmethod
    def _names_are_path_safe(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(NAME_RE, name):
                raise ValueError(f"name {name!r} must match {NAME_RE} (it becomes part of output paths)")
        return value

    @model_validator(mode="after")
    def _references_exist(self) -> "Config":
        for group in self.training.products():
            for enc in group["encoders"]:
                if enc not in self.embeddings:
                    raise ValueError(f"training.encoders names {enc!r}, which is not a key of `embeddings`")
            for ds in group["datasets"] or []:
                if ds not in self.datasets:
                    raise ValueError(f"training.datasets names {ds!r}, which is not a key of `datasets`")
        if self.generation is not None and self.generation.dataset not in self.datasets:
            raise ValueError(f"generation.dataset {self.generation.dataset!r} is not a key of `datasets`")
        if self.cromel is not None and self.cromel.dataset not in self.datasets:
            raise ValueError(f"cromel.dataset {self.cromel.dataset!r} is not a key of `datasets`")
        for ev, tr in self.evaluation.zero_shot.items():
            if ev not in self.datasets or tr not in self.datasets:
                raise ValueError(f"evaluation.zero_shot {ev!r} -> {tr!r}: both must be keys of `datasets`")
        for ds, mb in self.evaluation.matbench.items():
            if ds not in self.datasets or mb.target not in self.datasets[ds].target_names():
                raise ValueError(f"evaluation.matbench {ds!r}: must be a dataset with the target {mb.target!r}")
            s = self.split
            if (s.kind, s.n_folds, s.shuffle, s.random_state, s.group) != ("kfold", 5, True, 18012019, False):
                raise ValueError(
                    "evaluation.matbench needs matbench's folds: split {kind: kfold, n_folds: 5, shuffle: true, "
                    f"random_state: 18012019, group: false}} (this split: {s.params()})")
        check_training_targets(self)
        self._density_references()
        return self

    def _density_references(self) -> None:
        """The density section's references to datasets, embeddings and the match stage's files."""
        d = self.density
        if d is None:
            return
        for ds, src in d.datasets.items():
            if ds not in self.datasets:
                raise ValueError(f"density.datasets names {ds!r}, which is not a key of `datasets` (its entries give the targets)")
            if ds in d.match and src.kind == "local" and src.manifest != match_file(ds, "manifest.csv"):
                raise ValueError(f"density.datasets.{ds}.manifest must be {match_file(ds, 'manifest.csv')} (density.match.{ds} writes it)")
        for ds in d.match:
            dcfg = self.datasets.get(ds)
            if dcfg is None or dcfg.source.kind != "table" or dcfg.source.path != match_file(ds, "table.csv"):
                raise ValueError(f"density.match.{ds} needs datasets.{ds}.source = table with path {match_file(ds, 'table.csv')}")
        if "ecd_text" in d.models:
            for enc in d.encoders:
                if enc not in self.embeddings:
                    raise ValueError(f"density.encoders names {enc!r}, which is not a key of `embeddings`")

    # ------------------------------------------------------------------ helpers
    def train_datasets(self) -> list[str]:
        """Datasets some experiment trains on (training.datasets and its extra groups; None = every train: true one)."""
        default = [name for name, ds in self.datasets.items() if ds.train]
        out: list[str] = []
        for group in self.training.products():
            for name in group["datasets"] if group["datasets"] is not None else default:
                if name not in out:
                    out.append(name)
        return out


def load_config(source: str | Path | dict[str, Any]) -> Config:
    """Parse a YAML path or an already-loaded dict (e.g. Snakemake's ``config``)."""
    if isinstance(source, (str, Path)):
        with open(source) as fh:
            source = yaml.safe_load(fh) or {}
    return Config.model_validate(source)


def json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = "matfuse workflow configuration (generated from matfuse.config.Config)."
    return schema


def missing_training_targets(cfg: Config) -> list[tuple[str, str]]:
    """``(dataset, target)`` pairs where a training dataset does not provide a training target.

    Evaluation-only datasets (``train: false``, zero-shot sets) may lack targets: they are skipped
    for those targets. A dataset that is trained on must provide every ``training.targets`` entry.
    """
    train = cfg.train_datasets()
    out: list[tuple[str, str]] = []
    for group in cfg.training.products():
        for ds in (group["datasets"] if group["datasets"] is not None else train):
            for target in group["targets"]:
                if ds in cfg.datasets and target not in cfg.datasets[ds].target_names() and (ds, target) not in out:
                    out.append((ds, target))
    return out


def check_training_targets(cfg: Config) -> None:
    """Fail fast (before any job runs): raise ``ValueError`` naming each dataset/target that is missing."""
    missing = missing_training_targets(cfg)
    if not missing:
        return
    lines = []
    for ds, target in missing:
        src = cfg.datasets[ds].source
        have = ", ".join(cfg.datasets[ds].target_names()) or "none"
        if src.kind == "mp":
            how = f"add {target!r} to datasets.{ds}.source.targets (a summary field, or map it in source.target_fields)"
        else:
            key = "JARVIS key" if src.kind == "jarvis" else "column of the file"
            how = f"map it in datasets.{ds}.source.targets ({target}: <{key}>)"
        lines.append(
            f"training target {target!r} is not provided by training dataset {ds!r} "
            f"({src.kind} source; its targets: {have}): {how}"
        )
    raise ValueError(
        "\n".join(lines)
        + "\nor remove the target from training.targets, or leave the dataset out of training "
        "(training.datasets, or `train: false` for an evaluation-only set)."
    )


if __name__ == "__main__":  # pragma: no cover - tiny CLI
    if "--schema" in sys.argv:
        json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
