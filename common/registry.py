"""Named registries of small factories (tracks, views, heads, backbones), as timm registers its models.

A leaf module (imports nothing from the project), so tracks and features may use it.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ValueError:
    """The error for a name nobody registered, suggesting the closest known one."""
    known = sorted(known)
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    return ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}.{suggestion}")


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
