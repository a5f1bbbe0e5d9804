"""A recording in-memory publisher for relay tests (the real brokers have tests of their own)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from edge_kv.origin.messaging import Message, PublishFailed


class RecordingPublisher:
    """Accepts everything (unless ``fail`` says otherwise) and records it in order."""

    def __init__(self, fail: Callable[[Message], bool] | None = None, delay_s: float = 0.0) -> None:
        self.sent: list[Message] = []
        self.fail = fail
        self.delay_s = delay_s
        self.calls = 0

    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out: list[BaseException | None] = []
        for m in messages:
            if self.fail is not None and self.fail(m):
                out.append(PublishFailed(f"refused {m.id}"))
            else:
                self.sent.append(m)
                out.append(None)
        return out
