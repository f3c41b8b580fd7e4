"""Every family's job document, combined into one union on `family`.

No torch here: the API validates jobs and publishes their JSON schema from this module alone.
Each family's config lives in models/configs/<family>.py; a new family adds its job class here.
"""

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from core.catalog import DatasetInfo
from core.spec import JobSpecBase
from models.configs.autoencoder import AEJob, SAEJob
from models.configs.cnn import CNNJob
from models.configs.lstm import LSTMJob
from models.configs.mlp import MLPJob
from models.configs.vit import ViTJob

JobSpec = Annotated[
    MLPJob | CNNJob | LSTMJob | ViTJob | AEJob | SAEJob, Field(discriminator="family")
]
SPECS: dict[str, type[JobSpecBase]] = {
    "mlp": MLPJob,
    "cnn": CNNJob,
    "lstm": LSTMJob,
    "vit": ViTJob,
    "ae": AEJob,
    "sae": SAEJob,
}
FAMILY_NAMES: tuple[str, ...] = tuple(SPECS)

_adapter: TypeAdapter[Any] = TypeAdapter(JobSpec)


def parse_job_spec(
    document: dict[str, Any], uploads: Mapping[str, DatasetInfo] | None = None
) -> JobSpecBase:
    """Validate a job document; `uploads` gives the facts of uploaded datasets it may name."""
    return _adapter.validate_python(document, context={"uploads": uploads or {}})
