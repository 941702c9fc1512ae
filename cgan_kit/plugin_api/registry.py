"""Registries of named components, one per kind, filled by plugins through ``register(name, factory)``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from cgan_kit.errors import CganError
from cgan_kit.plugin_api.params import Param, did_you_mean, params_of, parse_docstring


@dataclass(frozen=True)
class Kind:
    """A kind of component: its name, the hook that fills it and what the engine passes itself."""

    name: str
    plural: str
    context: tuple[str, ...] = ()  # parameters the engine supplies; recipes never set them
    requires: tuple[str, ...] = ()  # parameters every factory of this kind must declare

    @property
    def hook(self) -> str:
        return f"register_{self.plural}"


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("method", "methods"),
        Kind("generator", "generators", context=("in_channels", "out_channels")),
        Kind("critic", "critics", context=("in_channels",)),
        Kind("loss", "losses"),
        Kind("norm", "norms"),
        Kind("activation", "activations"),
        Kind("stabilizer", "stabilizers"),
        Kind("dataset", "datasets", context=("split", "augment"), requires=("in_channels", "out_channels")),
        Kind("logger", "loggers"),
    )
}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def kind_named(word: str) -> Kind:
    """The kind called ``word`` (singular or plural), or a user error suggesting one."""
    for kind in KINDS.values():
        if word in (kind.name, kind.plural):
            return kind
    names = [k.plural for k in KINDS.values()]
    raise CganError(f'unknown kind "{word}"{did_you_mean(word, names)}; kinds are: {", ".join(names)}')


def _check_method(name: str, factory: Any, provider: Provider) -> None:
    """A method is a ``Method`` subclass whose declarations agree with each other."""
    from cgan_kit.plugin_api.contracts import Direction, Method, Network

    where = f'plugin {provider.plugin}: method "{name}"'
    if not (isinstance(factory, type) and issubclass(factory, Method)):
        raise CganError(f"{where} must be registered as a subclass of cgan_kit.Method, not "
                        f"{type(factory).__name__} {getattr(factory, '__name__', factory)!r}")
    networks = factory.networks
    if not networks or not all(isinstance(n, Network) and n.kind in ("generator", "critic")
                               for n in networks.values()):
        raise CganError(f"{where}: networks must map each role to Network(kind, table), kind "
                        '"generator" or "critic"')
    for role in networks:
        if not _NAME.match(role):
            raise CganError(f"{where}: role {role!r} must be lowercase letters, digits and underscores")
    updated = [role for roles in factory.optimizers.values() for role in roles]
    unknown = [role for role in updated if role not in networks]
    if unknown or sorted(updated) != sorted(set(updated)) or set(updated) != set(networks):
        raise CganError(f"{where}: optimizers must update every role of networks exactly once "
                        f"(networks: {', '.join(networks)}; optimizers: {dict(factory.optimizers)})")
    if not factory.directions or not all(isinstance(d, Direction) and networks.get(d.role, None) is not None
                                         and networks[d.role].kind == "generator"
                                         for d in factory.directions.values()):
        raise CganError(f"{where}: directions must name at least one Direction whose role is a generator")
    if factory.measures not in ("paired", "unpaired"):
        raise CganError(f'{where}: measures must be "paired" or "unpaired", not {factory.measures!r}')


@dataclass(frozen=True)
class Provider:
    """Who registered a component: the plugin (entry-point name) and its distribution."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin})"


@dataclass(frozen=True)
class Entry:
    """A registered component: its factory and everything needed to document and validate it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    summary: str
    description: str
    params: tuple[Param, ...]
    context: tuple[Param, ...]
    provider: Provider

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


@dataclass
class Registry:
    """All registered components, by kind and name."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def add(self, kind: str, name: str, factory: Callable[..., Any], provider: Provider) -> Entry:
        spec = KINDS[kind]
        if not isinstance(name, str) or not _NAME.match(name):
            raise CganError(f"plugin {provider.plugin}: {kind} name {name!r} must be lowercase letters, "
                            "digits and underscores, starting with a letter")
        if not callable(factory):
            raise CganError(f'plugin {provider.plugin}: {kind} "{name}" was registered with a '
                            f"{type(factory).__name__}, not a callable factory")
        taken = self.entries[kind].get(name)
        if taken is not None:
            raise CganError(f'{kind} "{name}" is registered twice: by {taken.provider} and by {provider}; '
                            f"disable one with CGAN_DISABLE_PLUGINS={provider.plugin}")
        if kind == "method":
            _check_method(name, factory, provider)
        every = params_of(factory)
        declared = {p.name for p in every}
        missing = [n for n in spec.requires if n not in declared]
        if missing:
            raise CganError(f'plugin {provider.plugin}: {kind} "{name}" must accept the parameter(s) '
                            f"{', '.join(missing)}")
        summary, description, _ = parse_docstring(factory.__doc__)
        entry = Entry(
            kind=kind,
            name=name,
            factory=factory,
            summary=summary,
            description=description,
            params=tuple(p for p in every if p.name not in spec.context),
            context=tuple(p for p in every if p.name in spec.context),
            provider=provider,
        )
        self.entries[kind][name] = entry
        return entry

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            raise CganError(self.unknown(kind, name)) from None

    def find(self, kind: str, name: str) -> Entry | None:
        return self.entries[kind].get(name)

    def unknown(self, kind: str, name: Any) -> str:
        plural = KINDS[kind].plural
        return (f'unknown {kind} "{name}"{did_you_mean(name, self.names(kind))} '
                f"(see `cgan list {plural}`)")

    def __iter__(self):
        for kind in KINDS:
            yield from (self.entries[kind][n] for n in self.names(kind))
