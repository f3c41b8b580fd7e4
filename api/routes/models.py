"""Trained models: list them, download their weights, call their inference verbs."""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy import func, select

from api.deps import ModelDep, SessionDep
from api.schemas import ModelPublic, ModelsPublic, PredictRequest, PredictResponse
from api.serving import LoadedModel, final_weights
from core.db import Job
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


def _serve(request: Request, session: SessionDep, job: Job, verb: str, body: Any) -> dict:
    model: LoadedModel = request.app.state.models.get(session, job)
    run = model.family.verbs.get(verb)
    if run is None:
        raise HTTPException(404, f"a {job.family} model has no {verb!r}")
    try:
        return run(model.module, model.spec, model.info, body)
    except ValueError as exc:
        raise HTTPException(
            422, [{"field": "inputs", "type": "value_error", "message": str(exc)}]
        ) from exc


@router.post("/{job_id}/predict", response_model=PredictResponse, response_model_exclude_none=True)
def predict(job: ModelDep, body: PredictRequest, request: Request, session: SessionDep) -> dict:
    """Class labels and probabilities for classifiers, values for regressors."""
    return _serve(request, session, job, "predict", body)
