"""The shared EVALSHA/NOSCRIPT loader against a real redis-server."""

from __future__ import annotations

import pytest
import redis as syncredis
import redis.asyncio as aioredis

from edge_kv.origin._scripts import LuaScript
from edge_kv.origin.testing import RedisServer

ECHO = LuaScript("return {KEYS[1], ARGV[1]}", name="echo")


async def test_runs_after_script_flush(redis: aioredis.Redis) -> None:
    await redis.script_flush()
    assert (await redis.script_exists(ECHO.sha)) == [False]
    assert await ECHO.run(redis, ["k"], [123456789012345678]) == [b"k", b"123456789012345678"]
    # The EVAL fallback cached it: the next call is a plain EVALSHA.
    assert (await redis.script_exists(ECHO.sha)) == [True]
    assert await ECHO.run(redis, ["k"], ["x"]) == [b"k", b"x"]


def test_run_sync(redis_server: RedisServer) -> None:
    client = syncredis.Redis.from_url(redis_server.url)
    try:
        client.script_flush()
        assert ECHO.run_sync(client, ["a"], [1]) == [b"a", b"1"]
        assert client.script_exists(ECHO.sha) == [True]
    finally:
        client.close()


async def test_script_errors_are_not_swallowed(redis: aioredis.Redis) -> None:
    bad = LuaScript("return redis.call('NOSUCHCOMMAND')", name="bad")
    with pytest.raises(aioredis.ResponseError):
        await bad.run(redis)


def test_empty_source_rejected() -> None:
    with pytest.raises(ValueError):
        LuaScript("  \n")


def test_from_package() -> None:
    script = LuaScript.from_package("edge_kv.origin.ratelimit", "limit.lua")
    assert "TIME" in script.source
    assert len(script.sha) == 40
