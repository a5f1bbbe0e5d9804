"""A configuration document that changes without a redeploy.

Sources, later ones winning:

1. a var (a JSON string in ``wrangler.toml [vars]``), changed by ``wrangler deploy`` or in
   the dashboard;
2. optionally a KV value (the key named by another var): ``wrangler kv key put`` changes
   it within the cache period (how long an isolate keeps what it read) plus KV
   propagation.

A KV document that does not parse is logged and ignored (the var's document stays in
force) so a bad edit cannot take the Worker down; a bad var is a deploy error that
``get`` raises on every call until fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from edge_kv.core.errors import InvalidInput
from edge_kv.edge.env import env_binding, env_str

__all__ = ["ConfigSource", "ConfigVars"]

T = TypeVar("T")
DEFAULT_CACHE_S = 10.0


@dataclass(frozen=True, slots=True)
class ConfigVars:
    """Names of the vars that locate a document (see the module docstring)."""

    document: str
    kv_key: str
    kv_binding: str
    cache_s: str
    default_binding: str = "KV"
    empty_document: str = "{}"


class ConfigSource(Generic[T]):
    """Per-isolate cache of a parsed configuration (keep one at module scope).

    ``parse`` turns the document's text into ``T`` and raises ``InvalidInput`` (or
    ``ValueError``) for a bad one. ``clock`` is monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        parse: Callable[[str], T],
        names: ConfigVars,
        *,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = print,
    ) -> None:
        self.parse = parse
        self.names = names
        self.clock = clock
        self.log = log
        self._config: T | None = None
        self._var_text: str | None = None
        self._kv_text: str | None = None
        self._loaded_at = 0.0

    def cache_seconds(self, env: Any) -> float:
        try:
            return max(0.0, float(env_str(env, self.names.cache_s) or DEFAULT_CACHE_S))
        except ValueError:
            return DEFAULT_CACHE_S

    async def get(self, env: Any) -> T:
        """The configuration in force; ``InvalidInput`` if the var itself is invalid."""
        var_text = env_str(env, self.names.document) or self.names.empty_document
        fresh = self.clock() - self._loaded_at < self.cache_seconds(env)
        if self._config is not None and fresh and var_text == self._var_text:
            return self._config
        kv_text = await self._read_kv(env)
        config: T | None = None
        if kv_text:
            try:
                config = self.parse(kv_text)
            except ValueError as exc:
                self.log(f"edge_kv: ignoring invalid {self.names.document} document in KV: {exc}")
        if config is None:
            try:
                config = self.parse(var_text)
            except InvalidInput:
                raise
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
        self._config, self._var_text, self._kv_text = config, var_text, kv_text
        self._loaded_at = self.clock()
        return config

    async def _read_kv(self, env: Any) -> str | None:
        key = env_str(env, self.names.kv_key)
        if key is None:
            return None
        kv = env_binding(env, self.names.kv_binding, self.names.default_binding)
        if kv is None:
            return None
        try:
            value = await kv.get(key)
        except Exception as exc:
            self.log(f"edge_kv: could not read {self.names.document} from KV: {exc}")
            return self._kv_text
        return value if isinstance(value, str) else None

    def invalidate(self) -> None:
        """Forget the cached document: the next ``get`` reads the sources again."""
        self._config = None
