"""Registries for what configs pick by name (timm's ``register_model`` / ``create_model``).

A registry is a dict plus a decorator. Tests loop over every registry, so each registered entry gets
forward/backward/NaN checks on a tiny config for free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modalbridge.errors import UserError, closest


class Registry(dict):
    """Maps a name to a class or factory; ``create`` gives a clear error for unknown names."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str | None = None) -> Callable:
        def deco(obj):
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self and self[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' registered twice")
            self[key] = obj
            return obj

        return deco

    def get_entry(self, name: str) -> Any:
        if name not in self:
            known = ", ".join(sorted(self)) or "none"
            raise UserError(f"unknown {self.kind} '{name}'{closest(name, self)}; known: {known}")
        return self[name]

    def create(self, name: str, *args, **kwargs) -> Any:
        return self.get_entry(name)(*args, **kwargs)


# Every module that can be saved as a model directory registers its class here under ``model_type``.
MODELS = Registry("model type")
# Training tasks that ``modalbridge train CONFIG.yaml`` builds by ``task:`` name.
TASKS = Registry("task")


# Modules that register models and tasks on import. ``load_builtins`` imports them all, so a model
# directory or a config can name any of them.
BUILTIN_MODULES = [
    "modalbridge.training.toy",
    "modalbridge.generators.biggan",
    "modalbridge.training.gan",
    "modalbridge.vision.classifier",
    "modalbridge.t2i.mapper",
    "modalbridge.t2i.resolver",
    "modalbridge.t2i.train",
    "modalbridge.captioning.sat",
    "modalbridge.captioning.clipcap",
    "modalbridge.captioning.train",
]


def load_builtins() -> None:
    import importlib

    for name in BUILTIN_MODULES:
        importlib.import_module(name)
