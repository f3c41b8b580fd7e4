"""Trained models, loaded once from their final checkpoint and kept in a small LRU cache."""

import threading
from collections import OrderedDict
from functools import cache
from typing import Any

from sqlalchemy.orm import Session

from core.catalog import DatasetInfo
from core.db import Job
from core.jobs import latest_checkpoint
from core.settings import Settings


def final_weights(session: Session, job_id: str) -> bytes:
    checkpoint = latest_checkpoint(session, job_id, kind="final")
    if checkpoint is None:
        raise LookupError(f"job {job_id} has no final checkpoint")
    return checkpoint.data


def load_model(job: Job, weights: bytes, settings: Settings) -> Any:
    """A models.base.Served for the job. torch is imported on the first model served."""
    import torch

    from core.checkpoint import unpack_weights
    from core.datasets import load_dataset
    from models.base import Served
    from models.registry import get_family
    from models.specs import parse_job_spec

    spec = parse_job_spec(job.spec)
    info = DatasetInfo.from_dict(job.data_info)
    family = get_family(spec.family)
    module = family.build(spec, info)
    tensors, _ = unpack_weights(weights)
    module.load_state_dict(tensors)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = cache(lambda: load_dataset(spec.dataset, settings, device))
    return Served(module=module.to(device).eval(), spec=spec, info=info, dataset=dataset)


class ModelCache:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, job: Job) -> Any:
        with self._lock:
            if job.id in self._models:
                self._models.move_to_end(job.id)
                return self._models[job.id]
        served = load_model(job, final_weights(session, job.id), self.settings)
        with self._lock:
            self._models[job.id] = served
            while len(self._models) > self.settings.model_cache_size:
                self._models.popitem(last=False)
        return served
