"""Named registries of small factories (tracks, views, heads, backbones), as timm registers its models, and the
import of the package modules that fill them.

A leaf module (imports nothing from the project), so tracks and features may use it.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ValueError:
    """The error for a name nobody registered, suggesting the closest known one."""
    known = sorted(known)
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    return ValueError(f"unknown {kind} {name!r}; known {plural(kind)}: {', '.join(known)}.{suggestion}")


def plural(kind: str) -> str:
    """`kind` in the plural, as a registry's kinds are named (loss, view family, track)."""
    if kind.endswith("s"):
        return f"{kind}es"
    if kind.endswith("y") and kind[-2:-1] not in "aeiou":
        return f"{kind[:-1]}ies"
    return f"{kind}s"


def import_submodules(package: str, skip: Collection[str] = ()) -> None:
    """Imports every module of `package` but those named in `skip`: the modules that register themselves on import
    (tracks, synthetic datasets, stream families), so that no list of them needs keeping."""
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")


class Registry(Generic[T]):
    """Names to entries. A prefix family (`register_prefix("hf:")`) stands for open-ended names such as
    `hf:<model id>`: its factory takes what follows the prefix first, and `get` hands it back bound to that."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._prefixes: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def register_prefix(self, prefix: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if prefix in self._prefixes:
                raise ValueError(f"{self.kind} prefix {prefix!r} is registered twice")
            self._prefixes[prefix] = factory
            return factory

        return decorate

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        for prefix, factory in self._prefixes.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return functools.partial(factory, name[len(prefix) :])
        raise unknown_name(self.kind, name, [*self._entries, *(f"{p}<name>" for p in self._prefixes)])

    def __contains__(self, name: str) -> bool:
        return name in self._entries or any(name.startswith(p) and len(name) > len(p) for p in self._prefixes)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        """The names in the order they were registered (where the order means something, as the blends')."""
        return iter(self._entries)
