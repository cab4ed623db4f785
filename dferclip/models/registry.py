"""Model families by name: a family's class registers itself with ``@register_model("name")``."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")

_FAMILIES: dict[str, Callable] = {}


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: ``cls(config, descriptions, clip_model=None)`` builds the family ``name``."""

    def add(cls: T) -> T:
        if name in _FAMILIES and _FAMILIES[name] is not cls:
            raise ValueError(f"model family {name!r} is registered twice")
        _FAMILIES[name] = cls
        cls.family = name
        return cls

    return add


def model_family(name: str) -> Callable:
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def families() -> list[str]:
    return sorted(_FAMILIES)
