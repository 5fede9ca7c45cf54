"""Settings: one typed, frozen object read once at the edge from TOML and the environment.

Any string value may name environment variables as ``${NAME}``, so secrets (AS keys, API
tokens, database passwords) can stay out of the file. Every error names the key at fault
(``applications[1].as_keys[0]``) and never repeats a secret value.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tpas.errors import ConfigError
from tpas.protocol import DEFAULT_RECIPES, AsKey, InvalidKeyError, Recipe, RecipeError

__all__ = [
    "ApiSettings",
    "ApplicationSettings",
    "DownlinkSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "load_settings",
    "parse_settings",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_AS_ID = re.compile(r"[0-9A-Za-z\-._]+")


class Secret:
    """A secret string whose ``repr``/``str`` are masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Never log or print it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``[server]``: where to listen and how much to accept."""

    host: str = "127.0.0.1"
    port: int = 8080
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    max_body_bytes: int = 64 * 1024
    max_pending_reports: int = 1024
    """Report requests in progress at once; more are answered 503 ``overloaded`` (REL-6)."""
    read_timeout: float = 10.0
    """Seconds a client has to send a whole request, head and body (SEC-11: slowloris)."""


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """``[storage]``: the database URL and the local spool used when it is down."""

    url: Secret = field(default_factory=lambda: Secret("sqlite:///tpas.db"))
    spool_dir: str = "tpas-spool"
    batch_max: int = 512


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """``[api]``: bearer tokens allowed to read data and send downlinks."""

    tokens: tuple[Secret, ...] = ()


@dataclass(frozen=True, slots=True)
class DownlinkSettings:
    """``[downlinks]``: how the dispatcher submits and retries (QUALITY.md REL-5)."""

    max_attempts: int = 8
    retry_base: float = 2.0
    """Seconds before the first retry; doubling each time, with jitter."""
    retry_cap: float = 300.0
    default_lifetime: float = 3600.0
    """Seconds a downlink without ValidityTime may wait before it expires."""
    http_timeout: float = 10.0
    poll_interval: float = 0.5


@dataclass(frozen=True, slots=True)
class ApplicationSettings:
    """One ``[[applications]]`` entry: one ThingPark connection."""

    name: str
    as_id: str
    as_keys: tuple[AsKey, ...]
    max_time_drift: float = 120.0
    downlink_url: str | None = None
    recipes: Mapping[str, Recipe] = field(default_factory=lambda: dict(DEFAULT_RECIPES))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``tpas serve`` needs."""

    server: ServerSettings = field(default_factory=ServerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    applications: tuple[ApplicationSettings, ...] = ()
    downlinks: DownlinkSettings = field(default_factory=DownlinkSettings)

    def application(self, name: str) -> ApplicationSettings | None:
        """The application called ``name``, or ``None``."""
        for app in self.applications:
            if app.name == name:
                return app
        return None


def load_settings(path: str | Path, environ: Mapping[str, str]) -> Settings:
    """Read and validate a TOML file; ``environ`` supplies ``${NAME}`` references."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from exc
    return parse_settings(data, environ)


class _Reader:
    """Typed access to one TOML table, naming the key path in every error."""

    def __init__(self, data: Any, path: str, environ: Mapping[str, str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, "must be a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.environ = environ
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def expand(self, value: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            var = match.group(1)
            if var not in self.environ:
                raise ConfigError(key, f"environment variable {var} is not set")
            return self.environ[var]

        return _ENV_REF.sub(substitute, value)

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), "is required")
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), "must be a string")
        return self.expand(value, self.key(name))

    def number(self, name: str, default: float, *, minimum: float, integer: bool) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
            what = "an integer" if integer else "a number"
            raise ConfigError(self.key(name), f"must be {what} >= {minimum:g}")
        return value

    def strings(self, name: str, *, required: bool = False) -> list[str]:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), "is required")
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), "must be a list of strings")
        return [self.expand(v, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "is not a known setting")


_TOP: Final = ("server", "storage", "api", "applications", "downlinks")


def parse_settings(data: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Validate a TOML document already read into ``data``."""
    top = _Reader(dict(data), "", environ)
    for name in _TOP:
        top.raw(name)
    top.finish()
    server = _server(_Reader(data.get("server", {}), "server", environ))
    storage = _storage(_Reader(data.get("storage", {}), "storage", environ))
    api = _api(_Reader(data.get("api", {}), "api", environ))
    apps_raw = data.get("applications", [])
    if not isinstance(apps_raw, list):
        raise ConfigError("applications", "must be an array of tables ([[applications]])")
    apps = tuple(
        _application(_Reader(item, f"applications[{i}]", environ))
        for i, item in enumerate(apps_raw)
    )
    names = [a.name for a in apps]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"applications[{i}].name", f"{name!r} is used twice")
    downlinks = _downlinks(_Reader(data.get("downlinks", {}), "downlinks", environ))
    return Settings(server, storage, api, apps, downlinks)


def _downlinks(r: _Reader) -> DownlinkSettings:
    settings = DownlinkSettings(
        max_attempts=r.number("max_attempts", 8, minimum=1, integer=True),
        retry_base=r.number("retry_base", 2.0, minimum=0.01, integer=False),
        retry_cap=r.number("retry_cap", 300.0, minimum=0.01, integer=False),
        default_lifetime=r.number("default_lifetime", 3600.0, minimum=1, integer=False),
        http_timeout=r.number("http_timeout", 10.0, minimum=0.1, integer=False),
        poll_interval=r.number("poll_interval", 0.5, minimum=0.01, integer=False),
    )
    r.finish()
    return settings


def _server(r: _Reader) -> ServerSettings:
    settings = ServerSettings(
        host=r.string("host", "127.0.0.1"),
        port=r.number("port", 8080, minimum=0, integer=True),
        tls_certfile=r.string("tls_certfile"),
        tls_keyfile=r.string("tls_keyfile"),
        max_body_bytes=r.number("max_body_bytes", 64 * 1024, minimum=1, integer=True),
        max_pending_reports=r.number("max_pending_reports", 1024, minimum=1, integer=True),
        read_timeout=r.number("read_timeout", 10.0, minimum=0.1, integer=False),
    )
    r.finish()
    if settings.port > 65535:
        raise ConfigError(r.key("port"), "must be a TCP port (0-65535)")
    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        raise ConfigError(r.key("tls_keyfile"), "tls_certfile and tls_keyfile go together")
    return settings


def _storage(r: _Reader) -> StorageSettings:
    url = r.string("url", "sqlite:///tpas.db")
    if not url.startswith(("sqlite://", "postgresql://", "postgres://", "memory://")):
        raise ConfigError(r.key("url"), "must start with sqlite://, postgresql:// or memory://")
    settings = StorageSettings(
        url=Secret(url),
        spool_dir=r.string("spool_dir", "tpas-spool"),
        batch_max=r.number("batch_max", 512, minimum=1, integer=True),
    )
    r.finish()
    return settings


def _api(r: _Reader) -> ApiSettings:
    tokens = r.strings("tokens")
    for i, token in enumerate(tokens):
        if len(token) < 16:
            raise ConfigError(f"{r.key('tokens')}[{i}]", "must be at least 16 characters")
    r.finish()
    return ApiSettings(tuple(Secret(t) for t in tokens))


def _application(r: _Reader) -> ApplicationSettings:
    name = r.string("name", required=True)
    if not _APP_NAME.fullmatch(name):
        raise ConfigError(r.key("name"), "may hold letters, digits, '_', '.', '-' (1-64)")
    as_id = r.string("as_id", required=True)
    if not _AS_ID.fullmatch(as_id):
        raise ConfigError(r.key("as_id"), "may hold only letters, digits, '-', '.', '_'")
    keys = []
    for i, text in enumerate(r.strings("as_keys", required=True)):
        try:
            keys.append(AsKey(text))
        except InvalidKeyError as exc:
            raise ConfigError(f"{r.key('as_keys')}[{i}]", "must be 32 hex digits") from exc
    if not keys:
        raise ConfigError(r.key("as_keys"), "needs at least one key")
    recipes = dict(DEFAULT_RECIPES)
    overrides = r.raw("recipes") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(r.key("recipes"), "must be a table of report type = recipe")
    for root, text in overrides.items():
        key = f"{r.key('recipes')}.{root}"
        if root not in DEFAULT_RECIPES:
            raise ConfigError(key, "is not a report type with a token")
        if not isinstance(text, str):
            raise ConfigError(key, "must be a recipe string such as 'CustomerID + DevEUI'")
        try:
            recipes[root] = Recipe.parse(text)
        except RecipeError as exc:
            raise ConfigError(key, str(exc)) from exc
    downlink_url = r.string("downlink_url")
    if downlink_url is not None and not downlink_url.startswith(("http://", "https://")):
        raise ConfigError(r.key("downlink_url"), "must be an http:// or https:// URL")
    settings = ApplicationSettings(
        name=name,
        as_id=as_id,
        as_keys=tuple(keys),
        max_time_drift=r.number("max_time_drift", 120.0, minimum=0, integer=False),
        downlink_url=downlink_url,
        recipes=recipes,
    )
    r.finish()
    return settings
