"""Typed configuration of the electron-charge-density (ECD) branch.

Not yet wired into :class:`matfuse.config.Config` (whose ``density`` field is still an untyped
dict); :func:`load_density_config` validates that dict into :class:`DensityConfig`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class SelectionConfig(_Strict):
    """Dataset selection of the paper: stable FCC-lattice (cubic, F-centred) crystals."""

    enabled: bool = True
    e_hull_column: str = "e_above_hull"
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
    models: list[Literal["ecd_cnn", "ecd_inception", "ecd_text"]] = Field(default_factory=lambda: ["ecd_cnn"])

    @field_validator("grid")
    @classmethod
    def _grid_positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 2:
            raise ValueError(f"grid must be >= 2 points per axis, got {v}")
        return v


def load_density_config(section: dict[str, Any] | None) -> DensityConfig:
    """Validate the (so far untyped) ``Config.density`` dict."""
    return DensityConfig.model_validate(section or {})
