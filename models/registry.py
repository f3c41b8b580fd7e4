"""Importing this module registers every family (and loads torch).

Every module of the models package is imported; a family module registers its one Family
declaration on import. A job class in models/configs without a registered family fails here.
"""

import importlib
import pkgutil

import models
from models.base import REGISTRY, Family, get_family
from models.specs import SPECS

for _module in pkgutil.iter_modules(models.__path__):
    if not _module.ispkg and _module.name != "registry":
        importlib.import_module(f"{models.__name__}.{_module.name}")

if _missing := sorted(set(SPECS) - set(REGISTRY)):
    raise ImportError(f"job classes without a registered family: {', '.join(_missing)}")

__all__ = ["REGISTRY", "Family", "get_family"]
