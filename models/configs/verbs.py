"""Request bodies of the inference verbs (POST /models/{id}/<verb>); no torch here."""

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_INPUTS = 10_000
MAX_SAMPLES = 1000  # examples one sample call draws
MAX_GIBBS_STEPS = 10_000
MAX_LATENT = 4096
MAX_FORECAST_STEPS = 2000
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


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
    mask: list[Any] | None = Field(
        None,
        description="rbm, dbm: 1 where a value is known, 0 where it is missing; one mask shaped "
        "like one input (for every input) or one per input. Known values are clamped and the "
        "missing ones Gibbs-sampled (inpainting)",
    )
    steps: int = Field(
        200,
        ge=1,
        le=MAX_GIBBS_STEPS,
        description="rbm, dbm with a mask: Gibbs steps; inputs x steps at most 1,000,000",
    )
    seed: Seed = 0


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


class SampleRequest(VerbRequest):
    n: int = Field(16, ge=1, le=MAX_SAMPLES, description="how many samples")
    seed: Seed = Field(0, description="the same seed gives the same samples")
    steps: int | None = Field(
        None,
        ge=1,
        le=MAX_GIBBS_STEPS,
        description="rbm, dbm: Gibbs steps from a random start (default: the job's "
        "sample_steps); n x steps at most 1,000,000",
    )
    latents: list[list[float]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SAMPLES,
        description="gan, vae: decode these latent vectors (each of the model's latent size) "
        "instead of drawing n from the prior",
    )


class InterpolateRequest(VerbRequest):
    start: list[float] | None = Field(
        None, max_length=MAX_LATENT, description="a latent vector; drawn from the prior if absent"
    )
    end: list[float] | None = Field(
        None, max_length=MAX_LATENT, description="a latent vector; drawn from the prior if absent"
    )
    inputs: list[Any] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="vae: two inputs whose latent means are the endpoints (instead of start, end)",
    )
    steps: int = Field(10, ge=2, le=100, description="points on the path, endpoints included")
    seed: Seed = Field(0, description="draws the endpoints that are not given")
    raw: bool = Field(False, description="inputs are raw values (pixels 0..255, digits 0..16)")


class RecallRequest(VerbRequest):
    inputs: list[Any] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="start states: binary networks, +/-1 values or images in [0, 1] "
        "(thresholded); continuous ones, values in [-1, 1] (images: 2 x - 1)",
    )
    patterns: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="start from these stored patterns (by index)",
    )
    noise: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of units flipped at random before recall"
    )
    seed: Seed = 0
    mode: Literal["async", "sync", "flow"] = Field(
        "async",
        description="async: one unit at a time in a random order per sweep (energy never "
        "rises); sync: every unit at once; flow (continuous states): Euler steps of "
        "dx/dt = -x + tanh(gain * (W x + b))",
    )
    step_size: float | None = Field(
        None, gt=0.0, le=1.0, description="flow: the Euler step (default: the model's)"
    )
    max_iterations: int = Field(
        100, ge=1, le=1000, description="sweeps (async), updates (sync) or steps (flow)"
    )
    trajectory: bool = Field(True, description="return the state after every iteration")

    @model_validator(mode="after")
    def _one_start(self) -> Self:
        if (self.inputs is None) == (self.patterns is None):
            raise ValueError("give exactly one of inputs and patterns")
        return self


MAX_FIXED_POINT_STARTS = 10_000


class AttractorsRequest(VerbRequest):
    mode: Literal["async", "sync", "flow"] = Field(
        "async", description="the updates that settle the starts (flow: continuous states)"
    )
    max_iterations: int = Field(100, ge=1, le=1000)
    seed: Seed = 0
    step_size: float | None = Field(
        None, gt=0.0, le=1.0, description="flow: the Euler step (default: the model's)"
    )
    grid: int | None = Field(
        None,
        ge=1,
        le=101,
        description="continuous: starts on a grid of this many points per axis of [-1, 1]^n "
        "(default: the most, up to 9, that keep it to 1024 starts); with n_random and the "
        f"origin, at most {MAX_FIXED_POINT_STARTS} starts",
    )
    n_random: int | None = Field(
        None,
        ge=0,
        le=MAX_FIXED_POINT_STARTS,
        description="continuous: starts drawn uniformly in [-1, 1]^n with seed (default 200)",
    )


class ScoreRequest(InputsRequest):
    seed: Seed = Field(0, description="which unit the pseudo-likelihood flips")


class ForecastRequest(VerbRequest):
    steps: int = Field(
        ge=1,
        le=MAX_FORECAST_STEPS,
        description="values to forecast, each fed back as input (one forward pass each: 2000 "
        "steps of an LSTM take a few seconds of CPU)",
    )
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
    codes: list[list[float]] = Field(description="latent codes (vae: the posterior means)")
    std: list[list[float]] | None = Field(None, description="vae: the posterior std devs")


class DecodeResponse(BaseModel):
    outputs: list[Any] = Field(description="decoded examples, shaped like the dataset's inputs")
    codes: list[list[float]] = Field(description="the codes decoded (the mean code for mean_of)")


class SampleResponse(BaseModel):
    samples: list[Any] = Field(description="shaped like the dataset's inputs, values in [0, 1]")
    latents: list[list[float]] | None = Field(None, description="gan, vae: the latents decoded")
    steps: int | None = Field(None, description="rbm, dbm: the Gibbs steps run")


class InterpolateResponse(BaseModel):
    outputs: list[Any] = Field(description="decoded examples along the path, start to end")
    latents: list[list[float]]


class Recall(BaseModel):
    final: list[int] | list[float] = Field(description="the state reached")
    iterations: int
    converged: bool = Field(description="a fixed point was reached within max_iterations")
    pattern: int | None = Field(
        description="the stored pattern reached (continuous: whose signs the state has), if any"
    )
    inverted: bool = Field(description="the state reached is a stored pattern's negative")
    overlaps: list[float] = Field(description="m = s.p / n with each stored pattern")
    energy: list[float] = Field(
        description="E = -1/2 s W s - b s (continuous: + (1/gain) sum_i of the integral of "
        "atanh from 0 to s_i), at the start and after each iteration"
    )
    states: list[list[int]] | list[list[float]] | None = Field(
        None, description="the start and each iteration's state"
    )


class RecallResponse(BaseModel):
    results: list[Recall]


class Attractor(BaseModel):
    state: list[int] | list[float]
    energy: float
    basin: int = Field(description="how many of the starts end here")
    stored: bool = Field(
        description="it is one of the stored patterns (continuous: it has one's signs)"
    )
    kind: Literal["fixed_point", "cycle"]
    stability: Literal["stable", "saddle", "unstable"] | None = Field(
        None,
        description="continuous: from the Jacobian's eigenvalues; stable: every direction "
        "stable, unstable: none, saddle: some",
    )
    eigenvalues: list[float] | None = Field(
        None,
        description="continuous: real parts of the Jacobian's eigenvalues, of the update map "
        "for sync (stable: |eig| < 1), of the flow for async and flow (stable: Re < 0)",
    )
    eigenvalues_imag: list[float] | None = Field(None, description="their imaginary parts")


class AttractorsResponse(BaseModel):
    n_neurons: int
    starts: int
    attractors: list[Attractor]
    unsettled: int | None = Field(
        None, description="continuous: starts that ended near no fixed point"
    )


class ScoreResponse(BaseModel):
    pseudo_likelihood: list[float] = Field(description="log pseudo-likelihood of each input")
    free_energy: list[float]
