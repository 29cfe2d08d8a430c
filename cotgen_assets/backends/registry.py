"""Which batch backends exist, by name: the extension point for another batch API.

A backend registers once, at import, with `register_backend(wire, factory)`: its wire format
(whose `name` is what `COTGEN_GEMINI_BACKEND` and the resource's `backend` select, and what each
submission records) and a factory that makes it from the configured `BackendSettings`. The two
Gemini backends register below; docs/writing-a-backend.md shows how to add one.
"""

from collections.abc import Callable

from cotgen_assets.backends import developer, vertex
from cotgen_assets.backends.base import Backend, BackendSettings
from cotgen_assets.core.model_io import WireFormat, register_wire

Factory = Callable[[BackendSettings], Backend]
_FACTORIES: dict[str, Factory] = {}
_SURELY_OFFLINE: dict[str, Callable[[BackendSettings], bool]] = {}


def register_backend(
    wire: WireFormat, factory: Factory, surely_offline: Callable[[BackendSettings], bool] = lambda s: False
) -> None:
    """Make `wire.name` a backend. `surely_offline` says, without a call, whether the settings
    point at a local stand-in (the UI then marks the assets offline when the code location loads)."""
    register_wire(wire)
    _FACTORIES[wire.name] = factory
    _SURELY_OFFLINE[wire.name] = surely_offline


def backend_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def make_backend(name: str, settings: BackendSettings) -> Backend:
    """The backend `name`, made from `settings` (a bad setting is the factory's SettingError)."""
    if name not in _FACTORIES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, _FACTORIES))}, not {name!r}")
    return _FACTORIES[name](settings)


def surely_offline(name: str, settings: BackendSettings) -> bool:
    return name in _SURELY_OFFLINE and _SURELY_OFFLINE[name](settings)


register_backend(developer.WIRE, developer.from_settings, surely_offline=lambda s: not s.api_key)
register_backend(vertex.WIRE, vertex.from_settings, surely_offline=lambda s: bool(s.base_url))
