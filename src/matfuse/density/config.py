"""Typed configuration of the electron-charge-density (ECD) branch: ``Config.density``.

This module must not import :mod:`matfuse.config` (which imports it). Cross-references to the
rest of the config (encoders, ingest datasets) are checked by ``workflow/rules/density.smk``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from matfuse import registry

def match_file(dataset: str, name: str) -> str:
    """Outputs of the density structure-matching stage of ``dataset``."""
    return f"results/density/{dataset}/match/{name}"


#: Density kinds this branch can produce, and the VASP file each one is read from.
DensityKind = Literal["total", "spin", "valence"]
FileKind = Literal["CHGCAR", "AECCAR0", "AECCAR2"]
KIND_FILE: dict[str, str] = {"total": "CHGCAR", "spin": "CHGCAR", "valence": "AECCAR2"}
#: Key of ``Chgcar.data`` holding each kind.
KIND_BLOCK: dict[str, str] = {"total": "total", "spin": "diff", "valence": "total"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalDensitySource(_Strict):
    """VASP CHGCAR/AECCAR files (plain or .gz) listed in a manifest CSV.

    The manifest has columns ``material_id, path, kind`` (kind = CHGCAR, AECCAR0 or AECCAR2);
    relative paths are relative to the manifest's folder.
    """

    kind: Literal["local"] = "local"
    manifest: str = Field(description="CSV with columns material_id, path, kind.")


class MPDensitySource(_Strict):
    """Materials Project through ``MPRester.get_charge_density_from_material_id``.

    mp-api asks the REST API for the material's GGA(+U) static task ids, picks the newest, then
    downloads ``s3://materialsproject-parsed/chgcars/{task_id}.json.gz`` (unsigned boto3).
    """

    kind: Literal["mp"] = "mp"
    endpoint: str | None = Field(None, description="REST endpoint; default is mp-api's own.")
    api_key_env: str = "MP_API_KEY"
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint override (e.g. a mirror); default is AWS."
    )
    cache_dir: str | None = Field(
        "results/cache/chgcar",
        description="Downloaded densities are cached here as Chgcar JSON (.json.gz); None = no cache.",
    )


DensitySource = Annotated[Union[LocalDensitySource, MPDensitySource], Field(discriminator="kind")]


class SliceConfig(_Strict):
    """A plane of the density sampled as a 2-D image."""

    miller: tuple[int, int, int] = Field((1, 1, 1), description="Plane (hkl) of the conventional standard cell.")
    through: Literal["site", "origin"] = Field(
        "site", description="The plane passes through site `site_index` or through the density cell's origin."
    )
    site_index: int = Field(0, ge=0)
    offset: float = Field(0.0, description="Shift along the plane normal, in units of the (hkl) spacing d_hkl.")
    size: tuple[int, int] = Field((75, 75), description="Image height, width in pixels.")
    extent: float | None = Field(
        None,
        gt=0,
        description="Side of the (square) sampled region in Å; None = n_periods x the shortest "
        "in-plane lattice vector of the conventional cell.",
    )
    n_periods: float = Field(1.0, gt=0)
    order: int = Field(1, ge=0, le=5, description="Spline order of the periodic interpolation (1 = trilinear).")


class MatchConfig(_Strict):
    """Label local densities by matching their structures to a reference table (e.g. MP rows).

    Every ``<scan_dir>/<name>/{CHGCAR,AECCAR0,AECCAR2}[.gz]`` is read (structure header only),
    compared with the reference rows of the same reduced formula by pymatgen's
    ``StructureMatcher``; a match gives the entry its reference targets and id (``ref_id``).
    Writes ``results/density/{dataset}/match/{table.csv,manifest.csv,rejects.parquet}``: the
    ingest dataset of the same name reads ``table.csv`` (table source), the density source
    reads ``manifest.csv`` (local source). The densities' DFT settings (functional, U, k-points)
    may differ from the reference's: the labels are the reference's, not the density's.
    """

    scan_dir: str = Field(description="Folder of per-calculation sub-folders holding CHGCAR/AECCAR files.")
    reference: str = Field(description="CSV(.gz) with an id column, a CIF column and target columns.")
    id_column: str = "material_id"
    cif_column: str = "cif"
    targets: list[str] = Field(default_factory=lambda: ["formation_energy_per_atom", "band_gap"])
    ltol: float = Field(0.2, gt=0)
    stol: float = Field(0.3, gt=0)
    angle_tol: float = Field(5.0, gt=0)


class SelectionConfig(_Strict):
    """Dataset selection of the paper: stable FCC-lattice (cubic, F-centred) crystals."""

    enabled: bool = True
    e_hull_column: str | None = Field(
        "e_above_hull",
        description="Entries column with E_above_hull (eV/atom); None = no stability filter (logged "
        "and stated in selection.json) for datasets that lack it.",
    )
    e_hull_max: float = Field(0.0, ge=0, description="Keep entries with E_hull <= this (eV/atom).")
    spacegroups: list[int] | None = Field(
        None, description="Allowed space-group numbers; None = the cubic F-centred groups."
    )
    targets: list[str] = Field(
        default_factory=lambda: ["band_gap", "formation_energy_per_atom", "total_magnetization", "k_vrh"]
    )
    require_all_targets: bool = Field(False, description="False: keep entries with at least one target.")


class EcdModelConfig(_Strict):
    """Hyper-parameters of the ECD image models."""

    cnn_channels: list[int] = Field(default_factory=lambda: [32, 64, 128])
    cnn_dense: int = Field(128, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    inception_weights: str | None = Field(
        None, description="Local torchvision-format InceptionV3 state dict (ImageNet); absent -> random init."
    )
    text_hidden: int = Field(32, ge=1, description="Dense layer after image+text concatenation.")
    text_image_model: Literal["ecd_cnn", "ecd_inception"] = "ecd_cnn"


class EcdTrainConfig(_Strict):
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(10, ge=1)
    augment: bool = Field(True, description="Random flips and 90° rotations of training images.")
    kfold: int | None = Field(None, ge=2, description="k-fold CV over train+val (test untouched); None = off.")
    recalibrate_bn: bool = Field(
        False,
        description="Re-estimate BatchNorm running statistics of the kept model over the training images "
        "before the final predictions (helps tiny data / few epochs, e.g. random-init InceptionV3).",
    )
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


class DensityConfig(_Strict):
    """The ``density:`` section of config.yaml."""

    datasets: dict[str, DensitySource] = Field(
        default_factory=dict, description="Dataset name -> where its densities come from."
    )
    kinds: list[DensityKind] = Field(default_factory=lambda: ["total"])
    grid: tuple[int, int, int] = Field((60, 60, 60), description="Regridded cube shape (pyrho).")
    cube_dtype: Literal["float16", "float32"] = "float16"
    store_cubes: bool = True
    previews: bool = True
    slice: SliceConfig = Field(default_factory=SliceConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    model: EcdModelConfig = Field(default_factory=EcdModelConfig)
    train: EcdTrainConfig = Field(default_factory=EcdTrainConfig)
    models: list[Literal[registry.names("density")]] = Field(default_factory=lambda: ["ecd_cnn"])  # type: ignore[valid-type]
    targets: list[str] | None = Field(None, description="Targets to train on; None = selection.targets.")
    encoders: list[str] = Field(
        default_factory=lambda: ["minilm"], description="Text encoders (keys of `embeddings`) for ecd_text."
    )
    text_variants: list[Literal["all", "key", "single"]] = Field(
        default_factory=lambda: ["single", "key", "all"], description="Robocrys variants for ecd_text (paper: all three)."
    )
    seeds: list[int] = Field(default_factory=lambda: [0])
    match: dict[str, MatchConfig] = Field(
        default_factory=dict, description="Dataset name -> local densities labelled by structure matching."
    )

    def train_targets(self) -> list[str]:
        """Targets the ECD models are trained on."""
        return list(self.targets if self.targets is not None else self.selection.targets)

    @field_validator("grid")
    @classmethod
    def _grid_positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 2:
            raise ValueError(f"grid must be >= 2 points per axis, got {v}")
        return v


def load_density_config(section: dict[str, Any] | None) -> DensityConfig:
    """Validate the (so far untyped) ``Config.density`` dict."""
    return DensityConfig.model_validate(section or {})
