"""Typed configuration sections: dataclasses whose fields carry their rule, help and flag.

Each field of a section is declared with :func:`option`: its default, its value rule
(:mod:`disenkg.config.rules`), its ``--help`` text and, for the command line, its group.
The front ends are generated from these declarations: the flags of ``python -m disenkg.run
link`` (one per field, ``--`` + the name with ``-``), the keys of a TOML config (the field
names) and the keyword arguments of :func:`disenkg.train`. A section validates every field
through its rule when it is built, so a bad value raises :class:`~disenkg.errors.ConfigError`
naming the field and the value, whichever front end gave it.

A field whose default is ``None`` and that is marked ``derived`` is filled later from the
KG's size (:mod:`disenkg.defaults`); ``nullable`` fields accept ``None`` as a value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from disenkg.config.rules import Rule, RuleError, as_bool
from disenkg.errors import ConfigError

__all__ = ["Option", "Section", "check_value", "option"]


@dataclass(frozen=True)
class Option:
    """What a configuration field is: its rule, help, command-line group and flags.

    Args:
        name: the field name (= the TOML key and the keyword argument).
        rule: parses and checks a value (:mod:`disenkg.config.rules`).
        help: the ``--help`` text.
        default: the field default (``None`` for a derived or optional value).
        group: the ``--help`` group of the flag.
        derived: ``None`` means "derive from the KG" (:mod:`disenkg.defaults`).
        nullable: ``None`` is a valid value.
        negatable: a boolean flag that also has ``--no-NAME``.
        metavar: the flag's metavar.
        search: the range a hyper-parameter search moves it in
            (:mod:`disenkg.config.search`; ``None``: not searched by default).
    """

    name: str
    rule: Rule
    help: str
    default: Any = None
    group: str = "run"
    derived: bool = False
    nullable: bool = False
    negatable: bool = False
    metavar: str | None = None
    search: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_bool(self) -> bool:
        return self.rule is as_bool

    @property
    def choices(self) -> list[str] | None:
        c = getattr(self.rule, "choices", None)
        if c is None:
            return None
        return list(c() if callable(c) else c)


def option(default: Any, rule: Rule, help: str, **kw: Any) -> Any:
    """A dataclass field with its :class:`Option` (name filled in by :class:`Section`)."""
    return dataclasses.field(default=default, metadata={"option": dict(
        rule=rule, help=help, default=default, **kw)})


def check_value(opt: Option, value: Any, where: str) -> Any:
    """``value`` through ``opt``'s rule; :class:`ConfigError` ``"{where}: expected ..."``."""
    if value is None and (opt.nullable or opt.derived):
        return None
    try:
        return opt.rule(value)
    except RuleError as err:
        raise ConfigError(f"{where}: {err}") from None


class Section:
    """Base of the configuration sections (a frozen, keyword-only dataclass each).

    Subclasses declare fields with :func:`option`; plain fields (without it) are settings
    that no front end sets directly.
    """

    #: the section's name in the configuration tree
    section: ClassVar[str] = ""
    #: ``{field: predicate over the other settings}``: where it is false the field does not
    #: apply (it keeps its default, is not recorded, and giving it explicitly is an error)
    CONDITIONS: ClassVar[dict[str, Callable[[Mapping[str, Any]], bool]]] = {}

    @classmethod
    def applicable(cls, values: Mapping[str, Any]) -> list[str]:
        """The fields that apply given ``values`` (other fields at their defaults)."""
        full = {o.name: o.default for o in cls.options()} | dict(values)
        return [o.name for o in cls.options()
                if o.name not in cls.CONDITIONS or cls.CONDITIONS[o.name](full)]

    @classmethod
    def variant_defaults(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults that depend on other settings (none by default)."""
        return {}

    def recorded(self) -> dict[str, Any]:
        """The applicable settings (what a run's ``config.json`` records)."""
        vals = self.values()
        return {k: vals[k] for k in self.applicable(vals)}

    @classmethod
    def options(cls) -> list[Option]:
        """The section's options in declaration order."""
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            meta = f.metadata.get("option")
            if meta is not None:
                out.append(Option(name=f.name, **meta))
        return out

    @classmethod
    def option_names(cls) -> list[str]:
        return [o.name for o in cls.options()]

    def __post_init__(self) -> None:
        for opt in self.options():
            value = check_value(opt, getattr(self, opt.name), f"{opt.name}")
            object.__setattr__(self, opt.name, value)
        self.check()

    def check(self) -> None:
        """Rules across fields (none by default); raise :class:`ConfigError`."""

    def values(self) -> dict[str, Any]:
        """``{field: value}`` of the options."""
        return {o.name: getattr(self, o.name) for o in self.options()}

    @classmethod
    def from_values(cls, values: Mapping[str, Any], **extra: Any) -> Any:
        """The section from a flat mapping (keys of other sections are ignored)."""
        names = set(cls.option_names())
        return cls(**{k: v for k, v in values.items() if k in names}, **extra)

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def iter_options(sections: list[type[Section]]) -> Iterator[tuple[type[Section], Option]]:
    """Every option of ``sections`` once (an option shared by two sections is the first's)."""
    seen: set[str] = set()
    for sec in sections:
        for opt in sec.options():
            if opt.name not in seen:
                seen.add(opt.name)
                yield sec, opt

