"""Trained models, loaded once from their final checkpoint and kept in a small LRU cache."""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from core.catalog import DatasetInfo
from core.db import Job
from core.jobs import latest_checkpoint


@dataclass(frozen=True)
class LoadedModel:
    family: Any  # models.base.Family
    spec: Any  # the validated job spec
    info: DatasetInfo
    module: Any  # torch.nn.Module, in eval mode


def final_weights(session: Session, job_id: str) -> bytes:
    checkpoint = latest_checkpoint(session, job_id, kind="final")
    if checkpoint is None:
        raise LookupError(f"job {job_id} has no final checkpoint")
    return checkpoint.data


def load_model(job: Job, weights: bytes) -> LoadedModel:
    # torch is imported on the first model served, not when the API starts.
    import torch

    from core.checkpoint import unpack_weights
    from models.registry import get_family
    from models.specs import parse_job_spec

    spec = parse_job_spec(job.spec)
    info = DatasetInfo.from_dict(job.data_info)
    family = get_family(spec.family)
    module = family.build(spec, info)
    tensors, _ = unpack_weights(weights)
    module.load_state_dict(tensors)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return LoadedModel(family=family, spec=spec, info=info, module=module.to(device).eval())


class ModelCache:
    def __init__(self, size: int):
        self.size = size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, job: Job) -> LoadedModel:
        with self._lock:
            if job.id in self._models:
                self._models.move_to_end(job.id)
                return self._models[job.id]
        loaded = load_model(job, final_weights(session, job.id))
        with self._lock:
            self._models[job.id] = loaded
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return loaded
