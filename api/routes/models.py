"""Trained models: list them, download their weights, call their inference verbs."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from sqlalchemy import func, select

from api import plots
from api.deps import MAX_OFFSET, CallerDep, LoadedDep, ModelDep, SessionDep
from api.errors import field_error
from api.examples import PREDICT_ANSWER, PREDICT_EXAMPLES, SAMPLE_ANSWER, SAMPLE_EXAMPLES
from api.examples import answer as example_answer
from api.routing import Route
from api.schemas import PNG, ModelPublic, ModelsPublic, Problem, answers
from api.serving import Loaded, final_weights
from core.db import Job
from models.configs.verbs import (
    AttractorsRequest,
    AttractorsResponse,
    DecodeRequest,
    DecodeResponse,
    EncodeRequest,
    EncodeResponse,
    ForecastRequest,
    ForecastResponse,
    InterpolateRequest,
    InterpolateResponse,
    PredictRequest,
    PredictResponse,
    RecallRequest,
    RecallResponse,
    ReconstructRequest,
    ReconstructResponse,
    SampleRequest,
    SampleResponse,
    ScoreRequest,
    ScoreResponse,
)
from models.specs import SPECS

router = APIRouter(
    route_class=Route,
    prefix="/models",
    tags=["models"],
    responses={
        404: {"model": Problem, "description": "no such model"},
    },
)


def model_public(job: Job) -> ModelPublic:
    return ModelPublic(
        id=job.id,
        family=job.family,
        task=job.spec.get("task"),
        dataset=job.spec["dataset"]["name"],
        n_params=job.n_params,
        result=job.result,
        verbs=list(SPECS[job.family].verbs),
        images=list(SPECS[job.family].images),
        finished_at=job.finished_at,
    )


@router.get("", response_model=ModelsPublic)
def list_models(
    session: SessionDep,
    caller: CallerDep,
    family: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ModelsPublic:
    """The caller's trained models (succeeded jobs), newest first, by family if asked."""
    query = caller.only_own(select(Job).where(Job.status == "succeeded"))
    if family is not None:
        query = query.where(Job.family == family)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    jobs = session.scalars(query.order_by(Job.finished_at.desc()).limit(limit).offset(offset))
    return ModelsPublic(
        items=[model_public(j) for j in jobs], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", response_model=ModelPublic, responses=answers(409))
def read_model(job: ModelDep) -> ModelPublic:
    """A trained model: its family, the verbs it answers, its dataset and final figures."""
    return model_public(job)


@router.get(
    "/{job_id}/checkpoint",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "the weights as safetensors; the header's metadata holds "
            "the job spec and dataset info",
        }
    }
    | answers(409),
)
def download_checkpoint(job: ModelDep, session: SessionDep) -> Response:
    """The trained weights as a safetensors file, to load outside annlab."""
    return Response(
        final_weights(session, job.id),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{job.id}.safetensors"'},
    )


# The inference verbs, each a POST /models/{id}/<verb>. Their router is included without the
# router-wide get_caller: LoadedDep identifies the caller, checks the job and finds its model
# (with no query once both are cached), and no session stays open while a verb runs.
verbs = APIRouter(
    route_class=Route,
    prefix="/models",
    tags=["models"],
    responses={
        404: {"model": Problem, "description": "no such model, or its family has no such verb"},
        409: {"model": Problem, "description": "the job has not succeeded"},
    },
)


def offered(loaded: Loaded, verb: str) -> str:
    """The model's family, if it offers `verb`; 404 otherwise."""
    family = loaded.served.spec.family
    if verb not in SPECS[family].verbs:
        raise HTTPException(404, f"a {family} model has no {verb!r}")
    return family


def serve(loaded: Loaded, verb: str, body: Any) -> dict:
    """A verb that is not batched, on this thread of the threadpool (where FastAPI also checks
    its answer against the response model, off the event loop); a 422 as in `answer`."""
    # torch loads with the first model served, not when the API starts.
    from models.base import BadRequest

    offered(loaded, verb)
    try:
        return loaded.run(verb, body)
    except BadRequest as exc:
        raise field_error(422, exc.field, str(exc)) from exc


async def answer(loaded: Loaded, verb: str, body: Any) -> dict:
    """The family's verb on the cached model, batched with other callers' calls if it is
    batchable (api/serving.py); a BadRequest from it is a 422 naming its field. The fast path
    (api/fastpath.py) calls this too."""
    from models.base import BadRequest

    offered(loaded, verb)
    try:
        return await loaded.call(verb, body)
    except BadRequest as exc:
        raise field_error(422, exc.field, str(exc)) from exc


# A coroutine, as a batchable verb's route (models.base.Batchable) must be: its calls are many
# and small, and the event loop hands them to the batcher without a thread each.
@verbs.post(
    "/{job_id}/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=example_answer(PREDICT_ANSWER),
)
async def predict(
    loaded: LoadedDep, body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)]
) -> dict:
    """Class labels and probabilities for classifiers, values for regressors."""
    return await answer(loaded, "predict", body)


@verbs.post("/{job_id}/forecast", response_model=ForecastResponse)
def forecast(loaded: LoadedDep, body: ForecastRequest) -> dict:
    """Forecast a time series `steps` values ahead, feeding each prediction back as input."""
    return serve(loaded, "forecast", body)


@verbs.post("/{job_id}/reconstruct", response_model=ReconstructResponse)
def reconstruct(loaded: LoadedDep, body: ReconstructRequest) -> dict:
    """Autoencoders, VAE: inputs through the bottleneck and back. RBM, DBM: one pass up and
    down, or with a `mask` the missing values Gibbs-sampled with the known ones clamped."""
    return serve(loaded, "reconstruct", body)


@verbs.post("/{job_id}/encode", response_model=EncodeResponse)
def encode(loaded: LoadedDep, body: EncodeRequest) -> dict:
    """Autoencoders: the latent codes of the inputs (VAE: posterior means and std devs)."""
    return serve(loaded, "encode", body)


@verbs.post("/{job_id}/decode", response_model=DecodeResponse)
def decode(loaded: LoadedDep, body: DecodeRequest) -> dict:
    """Autoencoders, VAE: images from latent codes, or from the mean code of a dataset split."""
    return serve(loaded, "decode", body)


@verbs.post(
    "/{job_id}/sample",
    response_model=SampleResponse,
    response_model_exclude_none=True,
    responses=example_answer(SAMPLE_ANSWER),
)
def sample(
    loaded: LoadedDep, body: Annotated[SampleRequest, Body(openapi_examples=SAMPLE_EXAMPLES)]
) -> dict:
    """New examples: RBM, DBM by Gibbs sampling; GAN, VAE from latent vectors (drawn with
    `seed`, or given)."""
    return serve(loaded, "sample", body)


@verbs.post("/{job_id}/interpolate", response_model=InterpolateResponse)
def interpolate(loaded: LoadedDep, body: InterpolateRequest) -> dict:
    """GAN, VAE: decoded examples along a straight line between two latent points."""
    return serve(loaded, "interpolate", body)


@verbs.post("/{job_id}/score", response_model=ScoreResponse)
def score(loaded: LoadedDep, body: ScoreRequest) -> dict:
    """RBM: each input's log pseudo-likelihood and free energy."""
    return serve(loaded, "score", body)


@verbs.post("/{job_id}/recall", response_model=RecallResponse, response_model_exclude_none=True)
def recall(loaded: LoadedDep, body: RecallRequest) -> dict:
    """Hopfield: run the network from given or noised states; states, energy, attractor."""
    return serve(loaded, "recall", body)


@verbs.post(
    "/{job_id}/attractors", response_model=AttractorsResponse, response_model_exclude_none=True
)
def attractors(loaded: LoadedDep, body: AttractorsRequest) -> dict:
    """Hopfield. Binary (up to 16 neurons): where each of the 2^n states ends, and how often.
    Continuous (up to 10 neurons): every fixed point found from a grid of starts and random
    ones, with its stability (Jacobian eigenvalues) and how many starts end there."""
    return serve(loaded, "attractors", body)


@router.get(
    "/{job_id}/images/{name}.png",
    response_class=Response,
    responses=PNG | answers(409),
)
def read_image(
    job: ModelDep,
    name: str,
    request: Request,
    session: SessionDep,
    n: Annotated[int, Query(ge=1, le=64, description="examples or samples shown")] = 10,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    steps: Annotated[
        int, Query(ge=1, le=5000, description="forecast steps, Gibbs steps, iterations")
    ] = 200,
    layer: Annotated[int, Query(ge=1, le=8, description="dbm: whose filters")] = 1,
) -> Response:
    """The pictures a model's family draws (GET /models/{id} lists them): `forecast`,
    `reconstructions`, `samples`, `filters`, `inpainting`, `interpolation`, `latent_grid`,
    `recall`, `energy`, `states`."""
    from models.base import BadRequest, ImageQuery
    from models.registry import get_family

    declared = SPECS[job.family].images
    if name not in declared:
        raise HTTPException(
            404,
            f"a {job.family} model draws no {name!r}; it draws: {', '.join(declared) or 'none'}",
        )
    loaded = request.app.state.models.get(session, job)
    session.commit()  # nothing to write: no transaction stays open while the picture is drawn
    query = ImageQuery(n=n, seed=seed, steps=steps, layer=layer)
    try:
        with loaded.reserve("images", query):
            picture = get_family(job.family).images[name](loaded.served, query)
    except BadRequest as exc:
        raise field_error(422, exc.field, str(exc)) from exc
    title = f"{job.family} on {job.spec['dataset']['name']}: {name}"
    return Response(plots.render(picture, title), media_type="image/png")
