"""The built-in datasets, their shapes, and whether this deployment has them."""

from fastapi import APIRouter

from api.deps import SettingsDep
from api.schemas import DatasetPublic, DatasetsPublic
from core.catalog import CATALOG, is_available

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", response_model=DatasetsPublic)
def list_datasets(settings: SettingsDep) -> DatasetsPublic:
    items = []
    for info in CATALOG.values():
        available = is_available(info, settings)
        items.append(
            DatasetPublic(
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
                available=available,
                how_to_get=None if available else info.how_to_get,
            )
        )
    return DatasetsPublic(items=items)
