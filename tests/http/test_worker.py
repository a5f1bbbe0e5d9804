"""The reference Worker over HTTP: every binding kind end to end, and the error contract."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

JSON = {"content-type": "application/json"}


def name() -> str:
    return uuid.uuid4().hex[:12]


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"]
    return body  # type: ignore[no-any-return]


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/__health")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert body["python"].startswith("3.14")
    assert body["env"] == "local"


async def test_kv_round_trip(client: httpx.AsyncClient) -> None:
    key = name()
    assert (await client.get(f"/kv/{key}")).status_code == 404
    r = await client.put(f"/kv/{key}", json={"value": "héllo"})
    assert r.status_code == 200 and r.json() == {"key": key, "stored": True}
    assert (await client.get(f"/kv/{key}")).json()["value"] == "héllo"
    await client.put(f"/kv/{key}", json={"value": "second"})
    assert (await client.get(f"/kv/{key}")).json()["value"] == "second"
    assert (await client.delete(f"/kv/{key}")).status_code == 200
    assert_problem(await client.get(f"/kv/{key}"), 404)


async def test_kv_ttl_sets_expiration(client: httpx.AsyncClient) -> None:
    """KV refuses TTLs under 60 s (as Cloudflare does); a 60 s TTL is recorded as an expiry."""
    key = name()
    assert_problem(await client.put(f"/kv/{key}", json={"value": "v", "ttl": 1}), 400)
    before = time.time()
    assert (await client.put(f"/kv/{key}", json={"value": "v", "ttl": 60})).status_code == 200
    meta = (await client.get(f"/kv-meta/{key}")).json()
    assert before + 58 <= meta["expiration"] <= time.time() + 61
    assert (await client.get(f"/kv/{key}")).json()["value"] == "v"


@pytest.mark.slow
@pytest.mark.skipif(
    "EDGE_KV_SLOW_TESTS" not in __import__("os").environ,
    reason="waits 61 s for the KV minimum TTL; set EDGE_KV_SLOW_TESTS=1",
)
async def test_kv_value_disappears_after_ttl(client: httpx.AsyncClient) -> None:
    key = name()
    await client.put(f"/kv/{key}", json={"value": "v", "ttl": 60})
    await asyncio.sleep(61.5)
    assert (await client.get(f"/kv/{key}")).status_code == 404


@pytest.mark.parametrize("cache", ["", "?cache=named"])
async def test_cache_round_trip(client: httpx.AsyncClient, cache: str) -> None:
    key = name()
    miss = assert_problem(await client.get(f"/cache/{key}{cache}"), 404)
    assert miss["cache"] == "MISS"
    assert (
        await client.put(f"/cache/{key}{cache}", json={"value": "cached!", "max_age": 60})
    ).status_code == 200
    assert (await client.get(f"/cache/{key}{cache}")).json() == {
        "key": key,
        "value": "cached!",
        "cache": "HIT",
    }


async def test_named_cache_is_separate(client: httpx.AsyncClient) -> None:
    key = name()
    await client.put(f"/cache/{key}?cache=other", json={"value": "x", "max_age": 60})
    assert (await client.get(f"/cache/{key}")).status_code == 404


async def test_cache_entry_expires(client: httpx.AsyncClient) -> None:
    key = name()
    await client.put(f"/cache/{key}", json={"value": "brief", "max_age": 1})
    assert (await client.get(f"/cache/{key}")).status_code == 200
    await asyncio.sleep(2.1)
    assert_problem(await client.get(f"/cache/{key}"), 404)


async def test_durable_object_rpc_and_fetch(client: httpx.AsyncClient) -> None:
    counter = name()
    first = await client.get(f"/do/counter/{counter}")
    assert first.json()["value"] == 0
    object_id = first.json()["id"]
    assert len(object_id) == 64
    r = await client.post(f"/do/counter/{counter}/increment", json={"by": 5})
    assert r.json() == {"name": counter, "value": 5}
    r = await client.post(f"/do/counter/{counter}/increment", json={})
    assert r.json()["value"] == 6
    again = (await client.get(f"/do/counter/{counter}")).json()
    assert again == {"name": counter, "value": 6, "id": object_id}
    other = (await client.get(f"/do/counter/{name()}")).json()
    assert other["value"] == 0 and other["id"] != object_id


async def test_durable_object_sql(client: httpx.AsyncClient) -> None:
    counter = name()
    await client.post(f"/do/counter/{counter}/sql", json={"text": "one"})
    r = await client.post(f"/do/counter/{counter}/sql", json={"text": "two"})
    assert r.json()["rows"] == [{"id": 1, "text": "one"}, {"id": 2, "text": "two"}]


@pytest.mark.parametrize("bad", ["x", -1, 0, 1.5, None, [1]])
async def test_rpc_bad_argument_is_a_clear_400(client: httpx.AsyncClient, bad: object) -> None:
    counter = name()
    started = time.monotonic()
    body = assert_problem(await client.post(f"/do/counter/{counter}/increment", json={"by": bad}), 400)
    assert time.monotonic() - started < 5
    # Mapped by type across the RPC boundary (the object raised InvalidInput), not by text.
    assert body["code"] == "invalid_input"
    assert str(body["detail"]).startswith("by must be")
    assert "Traceback" not in json.dumps(body)
    assert (await client.get(f"/do/counter/{counter}")).json()["value"] == 0


async def test_wait_until_runs_after_the_response(client: httpx.AsyncClient) -> None:
    key = name()
    r = await client.post(f"/wait-until/{key}")
    assert r.status_code == 202
    assert (await client.get(f"/kv/{key}")).status_code == 404  # not done when the response came
    for _ in range(50):
        await asyncio.sleep(0.1)
        if (await client.get(f"/kv/{key}")).status_code == 200:
            break
    assert (await client.get(f"/kv/{key}")).json()["value"] == "done"


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/echo", content=b"{not json", headers=JSON), 400)
    assert "malformed JSON" in str(body["detail"])
    assert_problem(await client.post("/echo", content=b"", headers=JSON), 400)
    assert_problem(await client.post("/echo", content=b"[1, 2]", headers=JSON), 400)
    assert_problem(await client.post("/echo", content=b"a=b", headers={"content-type": "text/plain"}), 415)
    assert (await client.post("/echo", json={"a": [1, 2]})).json() == {"json": {"a": [1, 2]}}


async def test_unknown_route_is_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    assert "no route" in str(assert_problem(await client.get("/no/such/route"), 404)["detail"])
    r = await client.delete("/__health")
    assert_problem(r, 405)
    assert r.headers["allow"] == "GET"


async def test_python_exception_is_500_without_traceback(client: httpx.AsyncClient) -> None:
    r = await client.get("/__error")
    body = assert_problem(r, 500)
    assert "Traceback" not in r.text and "RuntimeError" not in r.text
    assert body["detail"]


@pytest.mark.host_only
async def test_request_cf_default_and_override(client: httpx.AsyncClient) -> None:
    default = (await client.get("/__cf")).json()
    assert default["cf"]["colo"] == "SJC" and default["cf"]["country"] == "US"
    assert default["connecting_ip"] == "127.0.0.1"
    override = {"country": "DE", "continent": "EU", "isEUCountry": "1", "connectingIp": "203.0.113.9"}
    r = await client.get("/__cf", headers={"X-Edge-Kv-Test-Cf": json.dumps(override)})
    got = r.json()
    assert got["cf"]["country"] == "DE" and got["cf"]["continent"] == "EU"
    assert got["cf"]["colo"] == "SJC"  # the rest keeps the default
    assert "connectingIp" not in got["cf"]
    assert got["connecting_ip"] == "203.0.113.9"


@pytest.mark.host_only
async def test_test_cf_header_is_stripped_and_client_ip_not_spoofable(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/echo", json={}, headers={"X-Edge-Kv-Test-Cf": "{}", "CF-Connecting-IP": "6.6.6.6"}
    )
    assert r.status_code == 200
    seen = (await client.get("/__cf", headers={"CF-Connecting-IP": "6.6.6.6"})).json()
    assert seen["connecting_ip"] == "127.0.0.1"


@pytest.mark.host_only
@pytest.mark.parametrize("header", ["{broken", "[1]", '{"connectingIp": 5}'])
async def test_bad_test_cf_header_is_400(client: httpx.AsyncClient, header: str) -> None:
    assert_problem(await client.get("/__health", headers={"X-Edge-Kv-Test-Cf": header}), 400)
