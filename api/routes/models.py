"""Trained models: list them, download their weights, call their inference verbs."""

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy import func, select

from api import plots
from api.deps import ModelDep, SessionDep
from api.errors import field_error
from api.schemas import ModelPublic, ModelsPublic
from api.serving import final_weights
from core.db import Job
from models.configs.verbs import (
    DecodeRequest,
    DecodeResponse,
    EncodeRequest,
    EncodeResponse,
    ForecastRequest,
    ForecastResponse,
    PredictRequest,
    PredictResponse,
    ReconstructRequest,
    ReconstructResponse,
)
from models.specs import SPECS

router = APIRouter(prefix="/models", tags=["models"])


def model_public(job: Job) -> ModelPublic:
    return ModelPublic(
        id=job.id,
        family=job.family,
        task=job.spec.get("task"),
        dataset=job.spec["dataset"]["name"],
        n_params=job.n_params,
        result=job.result,
        verbs=list(SPECS[job.family].verbs),
        finished_at=job.finished_at,
    )


@router.get("", response_model=ModelsPublic)
def list_models(
    session: SessionDep,
    family: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelsPublic:
    query = select(Job).where(Job.status == "succeeded")
    if family is not None:
        query = query.where(Job.family == family)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    jobs = session.scalars(query.order_by(Job.finished_at.desc()).limit(limit).offset(offset))
    return ModelsPublic(
        items=[model_public(j) for j in jobs], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", response_model=ModelPublic)
def read_model(job: ModelDep) -> ModelPublic:
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
    },
)
def download_checkpoint(job: ModelDep, session: SessionDep) -> Response:
    return Response(
        final_weights(session, job.id),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{job.id}.safetensors"'},
    )


def serve(request: Request, session: SessionDep, job: Job, verb: str, body: Any) -> dict:
    """Run a family's verb on the cached model; a BadRequest from it is a 422 naming its field."""
    # torch loads with the first model served, not when the API starts.
    from models.base import BadRequest
    from models.registry import get_family

    if verb not in SPECS[job.family].verbs:
        raise HTTPException(404, f"a {job.family} model has no {verb!r}")
    served = request.app.state.models.get(session, job)
    try:
        return get_family(job.family).verbs[verb](served, body)
    except BadRequest as exc:
        raise field_error(422, exc.field, str(exc)) from exc


@router.post("/{job_id}/predict", response_model=PredictResponse, response_model_exclude_none=True)
def predict(job: ModelDep, body: PredictRequest, request: Request, session: SessionDep) -> dict:
    """Class labels and probabilities for classifiers, values for regressors."""
    return serve(request, session, job, "predict", body)


@router.post("/{job_id}/forecast", response_model=ForecastResponse)
def forecast(job: ModelDep, body: ForecastRequest, request: Request, session: SessionDep) -> dict:
    """Forecast a time series `steps` values ahead, feeding each prediction back as input."""
    return serve(request, session, job, "forecast", body)


@router.post("/{job_id}/reconstruct", response_model=ReconstructResponse)
def reconstruct(
    job: ModelDep, body: ReconstructRequest, request: Request, session: SessionDep
) -> dict:
    """Autoencoders: inputs through the bottleneck and back."""
    return serve(request, session, job, "reconstruct", body)


@router.post("/{job_id}/encode", response_model=EncodeResponse)
def encode(job: ModelDep, body: EncodeRequest, request: Request, session: SessionDep) -> dict:
    """Autoencoders: the latent codes of the inputs."""
    return serve(request, session, job, "encode", body)


@router.post("/{job_id}/decode", response_model=DecodeResponse)
def decode(job: ModelDep, body: DecodeRequest, request: Request, session: SessionDep) -> dict:
    """Autoencoders: images from latent codes, or from the mean code of a dataset split."""
    return serve(request, session, job, "decode", body)


IMAGES = ("forecast", "reconstructions")


@router.get(
    "/{job_id}/images/{name}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def read_image(
    job: ModelDep,
    name: str,
    request: Request,
    session: SessionDep,
    steps: Annotated[int, Query(ge=1, le=5000)] = 200,
    n: Annotated[int, Query(ge=1, le=32)] = 10,
) -> Response:
    """`forecast`: the recursive forecast from the start of the test period against the truth
    (time-series models); `reconstructions`: test images and their reconstructions (autoencoders).
    """
    title = f"{job.family} on {job.spec['dataset']['name']}"
    if name == "forecast":
        answer = serve(request, session, job, "forecast", ForecastRequest(steps=steps))
        png = plots.forecast(answer["forecast"], answer["truth"], title)
    elif name == "reconstructions":
        served = request.app.state.models.get(session, job)
        if len(served.info.input_shape) != 3:
            raise HTTPException(409, "reconstructions are drawn for image datasets only")
        originals = served.dataset().test.x[:n].cpu()
        body = ReconstructRequest(inputs=originals.tolist())
        answer = serve(request, session, job, "reconstruct", body)
        shape = (len(originals), *served.info.input_shape)
        rows = [
            ("test", originals.numpy().reshape(shape)),
            ("reconstructed", np.asarray(answer["outputs"], dtype=np.float32).reshape(shape)),
        ]
        png = plots.image_rows(rows, title)
    else:
        raise HTTPException(404, f"no image {name!r}; images: {', '.join(IMAGES)}")
    return Response(png, media_type="image/png")
