"""Finding and loading plugins: entry points in the ``cgan_kit`` group, loaded once, on demand.

Built-in components arrive this way too. A plugin that fails to import is reported (one warning
line) and skipped, unless ``CGAN_STRICT_PLUGINS=1``; ``CGAN_DISABLE_PLUGINS=a,b`` skips plugins
by entry-point name.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pluggy

from cgan_kit.plugin_api import hookspecs
from cgan_kit.errors import CganError
from cgan_kit.plugin_api.registry import KINDS, Provider, Registry

GROUP = "cgan_kit"


@dataclass(frozen=True)
class PluginInfo:
    """A plugin found through an entry point: where it came from, its hooks, or why it failed."""

    name: str
    module: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = ()
    error: str | None = None

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.distribution, self.version)


@dataclass
class Plugins:
    """The plugin manager, the registry it filled, and what loaded, failed or was disabled."""

    manager: pluggy.PluginManager
    registry: Registry
    loaded: list[PluginInfo] = field(default_factory=list)
    failed: list[PluginInfo] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    recipes: dict[str, ShippedRecipe] = field(default_factory=dict)


@dataclass(frozen=True)
class ShippedRecipe:
    """A recipe a plugin ships: its file, its one-line purpose (the file's first comment) and who
    shipped it."""

    name: str
    path: Path
    purpose: str
    provider: Provider


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _strict() -> bool:
    return os.environ.get("CGAN_STRICT_PLUGINS", "").strip().lower() not in ("", "0", "false", "no")


_loaded: Plugins | None = None
_extra: dict[str, Any] = {}  # plugins registered in-process (tests), by name


def load() -> Plugins:
    """Load every plugin and fill the registry; done once per process (until ``reset``)."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def reset() -> None:
    """Forget the loaded plugins and registry: the next ``load()`` finds and fills them afresh."""
    global _loaded
    _loaded = None


@contextlib.contextmanager
def registered(plugin: Any, name: str) -> Iterator[Plugins]:
    """Load every installed plugin plus ``plugin`` (a module or object with hook implementations)
    under ``name``, in this process, as if it were installed; restored afterwards. For tests."""
    _extra[name] = plugin
    reset()
    try:
        yield load()
    finally:
        _extra.pop(name, None)
        reset()


def registry() -> Registry:
    """The registry, filled by every plugin."""
    return load().registry


def _load() -> Plugins:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager=manager, registry=Registry())
    disabled = set(_env_list("CGAN_DISABLE_PLUGINS"))
    points = {p.name: p for p in metadata.entry_points(group=GROUP)}  # one per name, even if found twice
    for name in sorted(points):
        point = points[name]
        dist = point.dist
        info = PluginInfo(name, point.value, dist.metadata["Name"] if dist else "?", dist.version if dist else "?")
        if name in disabled:
            plugins.disabled.append(name)
            continue
        if name in _extra:  # registered in-process under the same name: that one stands
            continue
        try:
            module = point.load()
            manager.register(module, name=name)
            manager.check_pending()  # a misspelt hook name is an error, not a silent no-op
        except Exception as error:  # a broken plugin must never stop the CLI
            if manager.get_plugin(name) is not None:
                manager.unregister(name=name)
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            if _strict():
                raise CganError(f"plugin {name} ({info.distribution} {info.version}) failed to load: "
                                f"{reason} (unset CGAN_STRICT_PLUGINS to skip it)") from error
            print(f"warning: plugin {name} ({info.distribution} {info.version}) failed to load and was "
                  f"skipped: {reason}", file=sys.stderr)
            plugins.failed.append(PluginInfo(**{**info.__dict__, "error": reason}))
            continue
        hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(module) or []))
        plugins.loaded.append(PluginInfo(**{**info.__dict__, "hooks": hooks}))
    for name, plugin in _extra.items():
        manager.register(plugin, name=name)
        manager.check_pending()
        hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(plugin) or []))
        plugins.loaded.append(PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__), "(in-process)",
                                         "0", hooks))
    _fill(plugins)
    _fill_recipes(plugins)
    return plugins


def _purpose(text: str) -> str:
    """A recipe's one-line purpose: the first sentence of its leading comment."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#") or not line.lstrip("#").strip():
            break
        lines.append(line.lstrip("#").strip())
    sentence = " ".join(lines).split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 72 else sentence[:69].rsplit(" ", 1)[0] + "..."


def _fill_recipes(plugins: Plugins) -> None:
    """Call every ``register_recipes`` hook: each name once, each file a readable TOML file."""
    providers = {info.name: info.provider for info in plugins.loaded}
    for impl in reversed(plugins.manager.hook.register_recipes.get_hookimpls()):
        provider = providers[impl.plugin_name]

        def register(name: str, path: Any, _provider: Provider = provider) -> None:
            where = f"plugin {_provider.plugin}: recipe {name!r}"
            plain = isinstance(name, str) and name.replace("_", "").replace("-", "").isalnum()
            if not plain or not name.isascii() or name != name.lower():
                raise CganError(f"{where}: a recipe name is lowercase letters, digits, _ and -")
            if name in plugins.recipes:
                other = plugins.recipes[name].provider.plugin
                raise CganError(f"{where} is shipped by plugin {other} too; disable one with "
                                f"CGAN_DISABLE_PLUGINS={_provider.plugin}")
            path = Path(path)
            if path.suffix != ".toml" or not path.is_file():
                raise CganError(f"{where}: {path} is not a .toml file")
            purpose = _purpose(path.read_text(encoding="utf-8"))
            plugins.recipes[name] = ShippedRecipe(name, path, purpose, _provider)

        _call(impl, provider, "register_recipes", register)


def _fill(plugins: Plugins) -> None:
    """Call every ``register_*`` hook, attributing each component to the plugin that registered it."""
    providers = {info.name: info.provider for info in plugins.loaded}
    for kind in KINDS.values():
        caller = getattr(plugins.manager.hook, kind.hook)
        for impl in reversed(caller.get_hookimpls()):  # registration order
            provider = providers[impl.plugin_name]

            def register(name: str, factory: Any, _kind: str = kind.name, _provider: Provider = provider) -> None:
                plugins.registry.add(_kind, name, factory, _provider)

            _call(impl, provider, kind.hook, register)


def _call(impl: Any, provider: Provider, hook: str, register: Any) -> None:
    """Call one plugin's ``register_*`` hook; what it raises, other than a user error, names it."""
    try:
        impl.function(register=register)
    except CganError:
        raise
    except Exception as error:
        raise CganError(f"plugin {provider.plugin} ({provider.distribution}) failed in {hook}: "
                        f"{type(error).__name__}: {error}") from error
