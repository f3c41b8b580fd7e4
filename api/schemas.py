"""Request and response bodies. Job documents themselves are models.specs.JobSpec."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, field_validator

from core.db import JOB_STATUSES
from core.sweeps import SweepSpec
from models.specs import JobSpec

JobStatus = Literal[JOB_STATUSES]  # type: ignore[valid-type]


Phase = Literal["loading", "training", "evaluating", "scoring samples", "saving"]


class Progress(BaseModel):
    phase: Phase | None = Field(
        None,
        description="what the run does now: loading its data, training, evaluating (the "
        "validation set after an epoch, the test set at the end), scoring samples (a "
        "generative family's sample quality, training the dataset's feature net first if "
        "none is stored yet), saving",
    )
    phase_percent: float | None = Field(None, description="how far the phase is, 0-100")
    phase_step: int | None = Field(None, description="steps of the phase done, where counted")
    phase_steps: int | None = None
    epoch: int = 0
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    percent: float = 0.0
    eta_seconds: float | None = Field(
        None,
        description="seconds left: training, evaluation and scoring at their measured rates; "
        "null while a part left has no rate yet",
    )
    memory_bytes: int | None = Field(
        None, description="what the run held at its last report (host RSS, or GPU if more)"
    )


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    family: str
    status: JobStatus
    spec: dict[str, Any] = Field(description="the job document with every default filled in")
    progress: Progress
    n_params: int | None
    result: dict[str, Any] | None
    error: str | None
    provenance: dict[str, Any] | None = Field(
        description="set when it runs: python, torch, annlab and numpy versions, device, "
        "dataset_sha256 (the content it trained on) and every seed"
    )
    rerun_of: str | None = Field(description="the job this one reruns (POST /jobs/{id}/rerun)")
    sweep_id: str | None = Field(description="the sweep this job is a cell's repeat of")
    name: str | None = Field(description="a name its owner gave it (PATCH /jobs/{id})")
    tags: list[str] = Field(description="labels its owner gave it (PATCH /jobs/{id})")
    note: str | None = Field(description="its owner's words on it (PATCH /jobs/{id})")
    cancel_requested: bool

    @field_validator("tags", mode="before")
    @classmethod
    def _none_is_no_tags(cls, tags: list[str] | None) -> list[str]:
        return tags or []

    attempts: int
    owner_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")]


class JobPatch(BaseModel):
    """What its owner may change of a job: its name, tags and note (the fields given)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, description="names the job")
    tags: list[Tag] | None = Field(
        None, max_length=32, description="replaces the job's tags (letters, digits, ._:+-)"
    )
    note: str | None = Field(None, max_length=10_000, description="replaces the job's note")


class JobsPublic(BaseModel):
    items: list[JobPublic]
    total: int | None = Field(
        description="how many jobs match the filters; null on a cursor page unless count=true"
    )
    limit: int
    offset: int
    next_cursor: str | None = Field(
        None, description="pass as `cursor` for the next page; null on the last page"
    )


class MetricsPublic(BaseModel):
    history: list[dict[str, Any]] = Field(
        description="one entry per epoch: epoch, seconds, attempt and the metrics by name; "
        "a gradient family's first is epoch 0, its initial weights evaluated (seconds 0)"
    )


class ModelPublic(BaseModel):
    id: str
    family: str
    task: str | None
    dataset: str
    n_params: int | None
    result: dict[str, Any] | None
    verbs: list[str]
    images: list[str] = Field(description="names of GET /models/{id}/images/<name>.png")
    finished_at: datetime | None


class ModelsPublic(BaseModel):
    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class FeatureNetPublic(BaseModel):
    """The classifier whose features score a generative job's samples on this dataset,
    trained once per dataset: absent (not trained yet), training (by a worker, `percent`
    done) or ready (kept, with its accuracy on the test split)."""

    status: Literal["absent", "training", "ready"]
    step: int | None = Field(None, description="training steps done (while training)")
    steps: int | None = Field(None, description="training steps in all (while training)")
    percent: float | None = Field(None, description="of its training done")
    test_accuracy: float | None = Field(None, description="on the test split (once ready)")


class DatasetPublic(BaseModel):
    name: str
    kind: str
    source: str
    description: str
    input_shape: list[int]
    n_classes: int | None
    target_dim: int | None
    classes: list[str] | None
    n_train: int | None
    n_test: int | None
    params: list[str]
    sequence: bool = Field(False, description="a time series: examples are `lag` past values")
    available: bool
    how_to_get: str | None
    feature_net: FeatureNetPublic | None = Field(
        None,
        description="the sample-quality classifier of a built-in image dataset; null for "
        "other datasets",
    )


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the failing field, e.g. train.optimizer.lr")
    message: str
    type: str


class Problem(BaseModel):
    """Every other 4xx and 5xx: what went wrong, as a sentence or as fields that failed."""

    detail: str | list[FieldError]


class ValidationProblem(BaseModel):
    """What every 422 answers: each failing field, and one line that lists them."""

    detail: list[FieldError]
    message: str


class JobComparison(BaseModel):
    jobs: list[JobPublic]
    differences: dict[str, list[Any]] = Field(
        description="every result figure and provenance entry whose values differ between the "
        "jobs, by name (`result.test_accuracy`, `provenance.torch`...), one value per job"
    )


class SweepJob(BaseModel):
    repeat: int
    id: str
    status: JobStatus


class SweepCell(BaseModel):
    cell: int
    values: dict[str, Any] = Field(description="path -> value of this cell")
    jobs: list[SweepJob]


class SweepCounts(BaseModel):
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class SweepPublic(BaseModel):
    id: str
    family: str = Field(
        description="its cells' family; families joined by commas where the cells differ"
    )
    families: list[str] = Field(description="its cells' families, in the order of its cells")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] = Field(
        description="succeeded: every job did; failed: all ended and some did not"
    )
    spec: dict[str, Any] = Field(description="the sweep document as given")
    n_cells: int
    repeats: int
    n_jobs: int
    counts: SweepCounts = Field(description="the sweep's jobs by status")
    cells_done: int = Field(description="cells whose every repeat has ended")
    eta_seconds: float | None = Field(
        description="remaining jobs x mean duration of the finished ones / jobs running now"
    )
    cancel_requested: bool
    created_at: datetime
    cells: list[SweepCell] | None = Field(None, description="GET /sweeps/{id} only")


class SweepsPublic(BaseModel):
    items: list[SweepPublic]
    total: int
    limit: int
    offset: int


class SweepTable(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]] = Field(
        description="one per cell: its axis values, n_params, <figure>_mean and <figure>_std "
        "over the repeats that succeeded (sample std; 0 for one) of every final figure, of "
        "best_<metric> and best_<metric>_epoch (each per-epoch metric's best over epochs >= 1 "
        "and where it was reached) and of seconds, then succeeded and repeats"
    )


# A job document as POST /jobs states it; its parts are that operation's components.
_JOB_DOCUMENT = {
    key: value
    for key, value in TypeAdapter(JobSpec)
    .json_schema(ref_template="#/components/schemas/{model}")
    .items()
    if key != "$defs"
}


class SweepCreate(SweepSpec):
    """A sweep as posted: the document states its base as the job document it is (the API
    keeps the base as written, so that the axes change what the user wrote)."""

    base: Annotated[dict[str, Any], WithJsonSchema(_JOB_DOCUMENT)] = Field(
        description=SweepSpec.model_fields["base"].description
    )


# A picture's 200 answer: binary, as generated clients read it.
PNG: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a PNG picture",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def answers(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of error answers a route gives: `answers(409, 429)`, or with its
    own words, `answers(**{"409": "an upload of that name exists"})`."""
    shown = {code: {"model": Problem, "description": ANSWERS[code]} for code in codes}
    for code, text in described.items():
        shown[int(code)] = {"model": Problem, "description": text}
    return shown


ANSWERS = {
    409: "not in a state that allows it (ended, or nothing recorded yet)",
    429: "over the caller's quota of queued jobs; see Retry-After",
}
