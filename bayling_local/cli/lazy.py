"""Verbs registered by name and import path: a verb's module is imported when the verb runs or shows its
own help, never to print the root `--help` (which lists each verb's one-line summary, kept as data).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

import typer
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class Verb:
    """One `bayling-local` verb: `target` is "module:attribute", a function (a command) or a `typer.Typer` (a
    group of commands); `summary` is the line the root help shows, the first paragraph of the verb's own help."""

    name: str
    target: str
    summary: str

    def load(self) -> TyperCommand | TyperGroup:
        """Import the verb's module and build its click command exactly as `Typer.command`/`add_typer` would."""
        module_name, _, attribute = self.target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, typer.Typer):
            command = typer.main.get_group(target)
        else:
            single = typer.Typer(add_completion=False)
            single.command(self.name)(target)
            command = typer.main.get_command(single)
        command.name = self.name
        return command


class LazyCommands(MutableMapping):
    """A group's `commands` mapping whose values (click commands) are built on first access: click and typer
    read names (listing, "did you mean") without touching values, and look a value up only to run it."""

    def __init__(self, verbs: tuple[Verb, ...], built: Mapping | None = None) -> None:
        self._verbs = {verb.name: verb for verb in verbs}
        self._built: dict = dict(built or {})

    def __getitem__(self, name: str):
        if name not in self._built:
            self._built[name] = self._verbs[name].load()
        return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in self._verbs or name in self._built

    def get(self, name: str, default=None):
        # Mapping.get would turn a KeyError raised while importing a verb into "no such command"
        return self[name] if name in self else default  # noqa: SIM401 (this is `get`)

    def __setitem__(self, name: str, command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._verbs.pop(name, None)
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._verbs, *self._built]))

    def __len__(self) -> int:
        return len(set(self._verbs) | set(self._built))


class LazyVerbGroup(TyperGroup):
    """The root group: subclasses set `verbs`; listing them for `--help` reads their summaries only."""

    verbs: tuple[Verb, ...] = ()

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.verbs, built=self.commands)  # keeps commands typer registered eagerly

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx, formatter) -> None:
        summaries = {verb.name: verb.summary for verb in self.verbs}
        rows = [(name, summaries.get(name) or self.commands[name].get_short_help_str()) for name in self.commands]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
