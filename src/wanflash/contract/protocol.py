"""Runware wire types for the ``videoInference`` task and its results (plain data).

The request model mirrors the ``alibaba:wan@2.6-flash`` model page field for field. Unknown
fields are refused at every level (``extra="forbid"``) and types are strict, so ``"5"`` is not
a duration. Cross-field rules live in :mod:`wanflash.contract.validation`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wanflash.formats import QUALITY_MAX, QUALITY_MIN, OutputFormat

MAX_SEED = 2147483647


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class FrameImage(_Wire):
    image: str = Field(min_length=1)
    # The page types `frame` as an object whose only values are "first" and 0.
    frame: Literal["first", 0, "0"] | None = None

    @field_validator("frame", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # False == 0 in Python; a boolean is not a frame index
            raise ValueError("frame must be 'first' or 0")
        return v


class Inputs(_Wire):
    frameImages: list[FrameImage] | None = None
    audio: str | None = Field(default=None, min_length=1)

    @field_validator("frameImages", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # A plain string is the shorthand for {"image": <string>}.
        if isinstance(v, list):
            return [{"image": item} if isinstance(item, str) else item for item in v]
        return v


class AlibabaSettings(_Wire):
    audio: bool | None = None
    promptExtend: bool | None = None
    shotType: Literal["single", "multi"] | None = None


class ProviderSettings(_Wire):
    alibaba: AlibabaSettings | None = None


class Safety(_Wire):
    checkContent: bool | None = None
    mode: Literal["none", "fast", "full"] | None = None


class VideoInferenceTask(_Wire):
    """A ``videoInference`` request as sent on the wire (defaults are applied later)."""

    taskType: Literal["videoInference"]
    taskUUID: str
    model: str
    positivePrompt: str = Field(min_length=1, max_length=1500)
    negativePrompt: str | None = Field(default=None, min_length=1, max_length=500)
    width: int | None = None
    height: int | None = None
    resolution: Literal["720p", "1080p"] | None = None
    duration: int | None = Field(default=None, ge=2, le=15)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    numberResults: int | None = Field(default=None, ge=1, le=4)
    outputType: Literal["URL"] | None = None
    outputFormat: OutputFormat | None = None
    outputQuality: int | None = Field(default=None, ge=QUALITY_MIN, le=QUALITY_MAX)
    deliveryMethod: Literal["async"] | None = None
    webhookURL: str | None = Field(default=None, min_length=1, max_length=2048)
    uploadEndpoint: str | None = Field(default=None, min_length=1, max_length=4096)
    ttl: int | None = Field(default=None, ge=60, le=604800)
    includeCost: bool | None = None
    safety: Safety | None = None
    inputs: Inputs | None = None
    providerSettings: ProviderSettings | None = None


class VideoResult(BaseModel):
    """One result item, as returned by ``getResponse`` (and the ack, without status)."""

    model_config = ConfigDict(extra="allow")

    taskType: Literal["videoInference"] = "videoInference"
    taskUUID: str
    status: Literal["processing", "success"] | None = None
    videoUUID: str | None = None
    videoURL: str | None = None
    seed: int | None = None
    cost: float | None = None
    NSFWContent: bool | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
