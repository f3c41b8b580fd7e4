"""Datasets: the built-in ones and those users upload (.npz with X and y, or a CSV series)."""

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from pydantic import WithJsonSchema
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import CallerDep, SessionDep, SettingsDep
from api.errors import field_error
from api.routing import Route
from api.schemas import DatasetPublic, DatasetsPublic, FeatureNetPublic, answers
from core import feature_nets, uploads
from core.catalog import CATALOG, DatasetInfo, is_available
from core.db import Upload, sessionmaker_for

router = APIRouter(
    route_class=Route,
    prefix="/datasets",
    tags=["datasets"],
)


def dataset_public(
    info: DatasetInfo, available: bool = True, feature_net: feature_nets.State | None = None
) -> DatasetPublic:
    return DatasetPublic(
        name=info.name,
        kind=info.kind,
        source=info.source,
        description=info.description,
        input_shape=list(info.input_shape),
        n_classes=info.n_classes,
        target_dim=info.target_dim,
        classes=list(info.classes) if info.classes else None,
        n_train=info.n_train,
        n_test=info.n_test,
        params=list(info.params),
        sequence=info.sequence,
        available=available,
        how_to_get=None if available else info.how_to_get,
        feature_net=None if feature_net is None else feature_net_public(feature_net),
    )


def feature_net_public(state: feature_nets.State) -> FeatureNetPublic:
    return FeatureNetPublic(
        status=state.status,
        step=state.step,
        steps=state.steps,
        percent=state.percent,
        test_accuracy=state.test_accuracy,
    )


@router.get("", response_model=DatasetsPublic)
def list_datasets(settings: SettingsDep, session: SessionDep, caller: CallerDep) -> DatasetsPublic:
    """The built-in datasets (whether this machine has them and, for an image dataset, the
    state of the classifier that scores generated samples on it), and the caller's uploads."""
    images = [info for info in CATALOG.values() if feature_nets.applies(info)]
    keys = {info.name: feature_nets.key_of(info.name) for info in images}
    found = feature_nets.states(session, keys.values())
    items = [
        dataset_public(
            info,
            is_available(info, settings),
            found[keys[info.name]] if info.name in keys else None,
        )
        for info in CATALOG.values()
    ]
    uploaded = select(Upload.info).where(caller.mine(Upload.owner_id)).order_by(Upload.created_at)
    for info in session.scalars(uploaded):
        items.append(dataset_public(DatasetInfo.from_dict(info)))
    return DatasetsPublic(items=items)


def upload_problem(exc: uploads.UploadError) -> HTTPException:
    return field_error(exc.status, exc.field, str(exc), "upload_invalid")


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    responses=answers(**{"409": "an upload of that name exists"}),
)
def upload_dataset(
    file: Annotated[
        UploadFile,
        File(
            description=".npz with arrays X and y, or a one-column CSV (its name says which)",
            json_schema_extra={"minLength": 1},
        ),
    ],
    name: Annotated[str, Form(pattern=uploads.NAME_PATTERN, description="jobs use upload:<name>")],
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    kind: Annotated[
        Literal["classification", "regression"] | None,
        # A form field is a string or absent: the document offers no null.
        WithJsonSchema({"type": "string", "enum": ["classification", "regression"]}),
        Form(),
    ] = None,
) -> DatasetPublic:
    """Upload a dataset; jobs then name it `upload:<name>` (names are per owner). Uploads are
    kept in the database, compressed. An .npz is checked against the size limit and the
    owner's quota by what its headers declare, before anything is decompressed."""
    raw = file.file.read(settings.max_upload_bytes + 1)
    if len(raw) > settings.max_upload_bytes:
        raise upload_problem(
            uploads.UploadError(
                "file", f"the upload is larger than {settings.max_upload_bytes} bytes", status=413
            )
        )
    filename = (file.filename or "").lower()
    quota = settings.max_upload_bytes_per_owner
    try:
        full_name = uploads.dataset_name(name)
        # Checked, decompressed and compressed again outside any write transaction: on SQLite
        # the write lock is held only for the inserts below.
        with sessionmaker_for(settings.database_url, read_only=True)() as reading:
            room = uploads.room(reading, full_name, caller.owner, quota)
        if filename.endswith(".csv"):
            prepared = uploads.parse_csv(raw, name)
        elif filename.endswith(".npz"):
            prepared = uploads.parse_npz(
                raw, name, kind, max_uncompressed=settings.max_upload_uncompressed_bytes, room=room
            )
        else:
            raise uploads.UploadError("file", "upload a .npz (X, y) or a .csv (one column)")
        kept, _ = uploads.room(session, full_name, caller.owner, quota)
        if kept + prepared.size_bytes > quota:
            raise uploads.over_quota(prepared.size_bytes, kept, quota)
        uploads.store(session, prepared, owner_id=caller.owner)
        session.commit()
    except uploads.UploadError as exc:
        raise upload_problem(exc) from exc
    except IntegrityError as exc:  # the same owner's upload of that name, a moment earlier
        session.rollback()
        raise upload_problem(
            uploads.UploadError("name", f"your dataset {full_name!r} exists already", 409)
        ) from exc
    return dataset_public(prepared.info)
