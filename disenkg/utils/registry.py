"""A name -> object registry; unknown names raise ``ValueError`` listing the choices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to variants (classes or functions).

    Args:
        kind (str): what the registry holds, used in error messages (e.g. ``"scorer"``).

    Example::

        COMPOSITIONS = Registry("composition")

        @COMPOSITIONS.register("sub")
        def sub(x, r): return x - r
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        key = name.lower()

        def deco(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if not isinstance(name, str) or name.lower() not in self._items:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of {sorted(self._items)}"
            )
        return self._items[name.lower()]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
