"""Request bodies of the inference verbs (POST /models/{id}/<verb>); no torch here."""

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_INPUTS = 10_000


class VerbRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputsRequest(VerbRequest):
    inputs: list[Any] = Field(
        min_length=1,
        max_length=MAX_INPUTS,
        description="examples, each flat or shaped like the dataset's input_shape, scaled as the "
        "dataset is served (images in [0, 1]); set raw=true to send raw pixel/feature values",
    )
    raw: bool = Field(False, description="inputs are raw values (pixels 0..255, digits 0..16)")


class PredictRequest(InputsRequest):
    attention: bool = Field(False, description="ViT: also return attention maps")


class ReconstructRequest(InputsRequest):
    pass


class EncodeRequest(InputsRequest):
    pass


class DecodeRequest(VerbRequest):
    codes: list[list[float]] | None = Field(
        None, min_length=1, max_length=MAX_INPUTS, description="latent codes to decode"
    )
    mean_of: Literal["train", "test"] | None = Field(
        None, description="decode the mean latent code of this split of the job's dataset"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.codes is None) == (self.mean_of is None):
            raise ValueError("give exactly one of codes and mean_of")
        return self


class ForecastRequest(VerbRequest):
    steps: int = Field(ge=1, le=10_000, description="values to forecast, each fed back as input")
    history: list[float] | None = Field(
        None,
        max_length=1000,
        description="the last `lag` values (in the series' units) to start from; default: the "
        "window just before the test period, so the answer also holds the true continuation",
    )


class PredictResponse(BaseModel):
    outputs: list[Any]
    probabilities: list[list[float]] | None = None
    class_names: list[str] | None = None
    attention: list[Any] | None = Field(
        None,
        description="ViT: per example, per layer, the attention over the patches of the "
        "token(s) the head reads, averaged over heads, as an (H/patch, W/patch) map",
    )


class ForecastResponse(BaseModel):
    forecast: list[float]
    truth: list[float] | None = Field(None, description="the series' true continuation, if known")
    start: Literal["test", "history"]


class ReconstructResponse(BaseModel):
    outputs: list[Any] = Field(description="reconstructions, shaped and scaled like the inputs")
    loss: list[float] = Field(description="each example's reconstruction loss")


class EncodeResponse(BaseModel):
    codes: list[list[float]]


class DecodeResponse(BaseModel):
    outputs: list[Any] = Field(description="decoded examples, shaped like the dataset's inputs")
    codes: list[list[float]] = Field(description="the codes decoded (the mean code for mean_of)")
