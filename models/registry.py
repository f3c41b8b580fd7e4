"""Importing this module registers every family (and loads torch)."""

from models import autoencoder, cnn, lstm, mlp, vit  # noqa: F401  (registration happens on import)
from models.base import REGISTRY, Family, get_family

__all__ = ["REGISTRY", "Family", "get_family"]
