"""Every family's job document, combined into one union on `family`.

No torch here: the API validates jobs and publishes their JSON schema from this module alone.
Each family's job class lives in models/configs/<family>.py and is found there: a module of
that package that defines a JobSpecBase subclass with a literal `family` adds a family.
"""

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from core.catalog import DatasetInfo
from core.spec import STORED, JobSpecBase
from models import configs


def _job_classes() -> dict[str, type[JobSpecBase]]:
    found: dict[str, type[JobSpecBase]] = {}
    for module_info in sorted(pkgutil.iter_modules(configs.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{configs.__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, JobSpecBase)
                and value.__module__ == module.__name__
                and "family" in value.__annotations__
            ):
                name = value.family_name()
                if name in found:
                    raise ValueError(f"two job classes for family {name!r}")
                found[name] = value
    return found


SPECS: dict[str, type[JobSpecBase]] = _job_classes()
FAMILY_NAMES: tuple[str, ...] = tuple(SPECS)

JobSpec = Annotated[Union[tuple(SPECS.values())], Field(discriminator="family")]  # noqa: UP007

_adapter: TypeAdapter[Any] = TypeAdapter(JobSpec)


def parse_job_spec(
    document: dict[str, Any],
    uploads: Mapping[str, DatasetInfo] | None = None,
    *,
    stored: bool = False,
) -> JobSpecBase:
    """Validate a job document; `uploads` gives the facts of uploaded datasets it may name.
    `stored`: a document the service accepted earlier, read back (see STORED)."""
    context = {"uploads": uploads or {}} | (STORED if stored else {})
    return _adapter.validate_python(document, context=context)


# One small job per family for the OpenAPI document (each validates: a test checks).
JOB_EXAMPLES: dict[str, dict[str, Any]] = {
    name: {
        "summary": f"{name} on digits",
        "value": {"family": name, "dataset": {"name": "digits"}, "train": {"epochs": 5}},
    }
    for name in FAMILY_NAMES
}
JOB_EXAMPLES["hopfield"]["value"] = {
    "family": "hopfield",
    "dataset": {"name": "patterns", "patterns": [[1, 1], [-1, -1], [1, -1]]},
}
