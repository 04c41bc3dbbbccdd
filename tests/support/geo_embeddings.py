"""Validators for the geo-embeddings metadata, written from the specifications' field tables (no package
implements them): the Zarr convention (geo-embeddings/embeddings-zarr-convention, v1: ``zarr_conventions``
entry and ``geoemb:*`` root attributes) and the STAC Embeddings extension
(geo-embeddings/embeddings-stac-specification, v0.0.1: ``emb:*`` Collection fields, required link
relations, the Item's ``embeddings`` asset). Core STAC is checked with stac-pydantic beside these."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

CONVENTION_UUID = "61c12cc5-0e28-4056-999a-480cf3fb7e4c"
CONVENTION_SCHEMA = "https://raw.githubusercontent.com/geo-embeddings/embeddings-zarr-convention/refs/tags/v1/schema.json"
CONVENTION_SPEC = "https://github.com/geo-embeddings/embeddings-zarr-convention/blob/v1/README.md"
EMB_EXTENSION = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"


class ConventionEntry(BaseModel):
    """One ``zarr_conventions`` entry naming this convention (at least one identifying key, fixed values)."""

    model_config = ConfigDict(extra="forbid")
    schema_url: Optional[Literal[CONVENTION_SCHEMA]] = None  # type: ignore[valid-type]
    spec_url: Optional[Literal[CONVENTION_SPEC]] = None  # type: ignore[valid-type]
    uuid: Optional[Literal[CONVENTION_UUID]] = None  # type: ignore[valid-type]
    name: Optional[Literal["geoemb:"]] = None
    description: Optional[str] = None

    @model_validator(mode="after")
    def _identified(self) -> "ConventionEntry":
        if not (self.schema_url or self.spec_url or self.uuid):
            raise ValueError("a convention entry needs schema_url, spec_url or uuid")
        return self


class ZarrChipLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout_type: Literal["regular_grid", "irregular"]
    chip_size: list[PositiveInt] = Field(min_length=2, max_length=2)
    stride: Optional[list[PositiveInt]] = Field(default=None, min_length=2, max_length=2)
    grid_id: Optional[str] = None
    grid_definition: Optional[AnyUrl] = None


class GeoembAttributes(BaseModel):
    """The root group attributes (other attributes are allowed beside them)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    zarr_conventions: list[dict[str, Any]]
    type: Literal["pixel", "chip"] = Field(alias="geoemb:type")
    dimensions: PositiveInt = Field(alias="geoemb:dimensions")
    model: AnyUrl = Field(alias="geoemb:model")
    source_data: list[AnyUrl] = Field(alias="geoemb:source_data", min_length=1)
    data_type: str = Field(alias="geoemb:data_type")
    gsd: Optional[PositiveFloat] = Field(default=None, alias="geoemb:gsd")
    chip_layout: Optional[ZarrChipLayout] = Field(default=None, alias="geoemb:chip_layout")
    spatial_layout: Optional[Literal["utm_zones", "global"]] = Field(default=None, alias="geoemb:spatial_layout")
    build_version: Optional[str] = Field(default=None, alias="geoemb:build_version")
    benchmark: Optional[list[AnyUrl]] = Field(default=None, alias="geoemb:benchmark")

    @model_validator(mode="after")
    def _rules(self) -> "GeoembAttributes":
        entries = []
        for entry in self.zarr_conventions:
            try:
                entries.append(ConventionEntry.model_validate(entry))
            except ValueError:
                continue
        if not entries:
            raise ValueError("zarr_conventions does not register the geoemb: convention")
        if self.type == "chip" and self.chip_layout is None:
            raise ValueError("geoemb:type chip needs geoemb:chip_layout")
        return self


class StacChipLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout_type: Literal["regular_grid", "variable_grid", "named_grid"]
    chip_size: Optional[list[PositiveInt]] = Field(default=None, min_length=2, max_length=2)
    stride: Optional[list[PositiveInt]] = Field(default=None, min_length=2, max_length=2)
    grid_id: Optional[str] = None
    grid_definition: Optional[dict[str, Any]] = None


class EmbeddingsCollection(BaseModel):
    """The extension's Collection fields and its required ``emb:model`` / ``emb:source-data`` links."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    stac_extensions: list[str]
    type: Literal["Collection"]
    emb_type: Literal["pixel", "chip"] = Field(alias="emb:type")
    emb_dimensions: PositiveInt = Field(alias="emb:dimensions")
    data_type: str
    gsd: Optional[float] = None
    chip_layout: Optional[StacChipLayout] = Field(default=None, alias="emb:chip_layout")
    links: list[dict[str, Any]]

    @model_validator(mode="after")
    def _rules(self) -> "EmbeddingsCollection":
        if EMB_EXTENSION not in self.stac_extensions:
            raise ValueError(f"stac_extensions lacks {EMB_EXTENSION}")
        rels = {link.get("rel") for link in self.links}
        missing = {"emb:model", "emb:source-data"} - rels
        if missing:
            raise ValueError(f"links lack {sorted(missing)}")
        return self


class EmbeddingsItem(BaseModel):
    """An Item of the extension: it declares it and has an ``embeddings`` asset."""

    model_config = ConfigDict(extra="allow")
    stac_extensions: list[str]
    type: Literal["Feature"]
    assets: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _rules(self) -> "EmbeddingsItem":
        if EMB_EXTENSION not in self.stac_extensions:
            raise ValueError(f"stac_extensions lacks {EMB_EXTENSION}")
        if "embeddings" not in self.assets:
            raise ValueError("an embeddings Item must have an 'embeddings' asset")
        return self
