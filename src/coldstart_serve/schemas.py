"""Request and response bodies, with bounds on every size a client controls."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Raw ids of new items and users: printable, no path separators, bounded.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
RawId = Annotated[str, Field(pattern=ID_PATTERN, description="raw id: letters, digits, _ . : - (1-64 characters)")]
AnyId = Annotated[str, Field(min_length=1, max_length=128)]
FieldName = Annotated[str, Field(min_length=1, max_length=64)]
ShortText = Annotated[str, Field(max_length=20_000)]
Label = Annotated[str, Field(min_length=1, max_length=200)]
Number = Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]

MAX_VECTOR = 4096


class Content(BaseModel):
    """Raw content of a new item or user, by raw modality name (GET /info lists the names this run takes)."""

    model_config = ConfigDict(extra="forbid")

    text: dict[FieldName, ShortText] = Field(default_factory=dict, max_length=16,
                                             description="text fields, e.g. {\"title\": ..., \"plot\": ...}")
    labels: dict[FieldName, Annotated[list[Label], Field(max_length=500)]] = Field(
        default_factory=dict, max_length=16, description="categorical / multi-label fields, e.g. {\"genres\": [...]}")
    numbers: dict[FieldName, Number | Annotated[list[Number], Field(max_length=MAX_VECTOR)]] = Field(
        default_factory=dict, max_length=16, description="numeric fields, e.g. {\"year\": 1999}")
    vectors: dict[FieldName, Annotated[list[Number], Field(min_length=1, max_length=MAX_VECTOR)]] = Field(
        default_factory=dict, max_length=8,
        description="precomputed feature vectors by model modality name (replace that modality's extraction)")


class ItemIn(Content):
    """A new item: its id, an optional display title, and its content."""

    id: RawId
    title: Annotated[str, Field(max_length=300)] | None = None


class UserIn(Content):
    """A new user: attributes and an optional short history of known item ids."""

    id: RawId
    history: list[AnyId] = Field(default_factory=list, max_length=200)


class InteractionIn(BaseModel):
    """Feedback kept for the next training run."""

    model_config = ConfigDict(extra="forbid")

    user: AnyId
    item: AnyId
    rating: Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)] | None = None
    timestamp: Annotated[int, Field(ge=0, le=2**53)] | None = None


class Scored(BaseModel):
    item: str
    score: float
    title: str | None = None
    kind: Literal["warm", "cold", "new"]


class Recommendations(BaseModel):
    user: str
    k: int
    candidates: str
    exclude_seen: bool
    fallback: str | None = Field(None, description="why the list is not the model's own scores (e.g. popularity)")
    items: list[Scored]


class AudienceUser(BaseModel):
    user: str
    score: float


class Audience(BaseModel):
    item: str
    k: int
    users: list[AudienceUser]


class Rank(BaseModel):
    user: str
    rank: int | None = Field(description="1-based position among the user's unseen items; None if seen")
    of: int
    score: float


class Ranks(BaseModel):
    item: str
    ranks: list[Rank]


class ItemOut(BaseModel):
    item: str
    title: str | None = None
    kind: Literal["warm", "cold", "new"]
    poster: bool
    unknown_labels: dict[str, list[str]] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    seconds: float | None = None


class UserOut(BaseModel):
    user: str
    kind: Literal["warm", "cold", "new"]
    history: list[Scored]


class InteractionOut(BaseModel):
    seq: int
    user: str
    item: str


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    dataset: str
    index: str
    items: int
    users: int
