"""The entry module of the example Worker (``main = "entry.py"`` in its wrangler.toml)."""

from __future__ import annotations

from typing import Any

from routes import router  # type: ignore[import-not-found]  # a sibling module in the upload
from workers import WorkerEntrypoint

from edge_kv.edge.objects import LockService, RateLimiter

__all__ = ["Default", "LockService", "RateLimiter"]


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Any:
        return await router.dispatch(request, self.env, self.ctx)
