"""Durable Object storage on the host: structured-clone values, ``ctx.storage.kv``, transactions,
alarms (persisted, retried) and KV-backed (``new_classes``) objects.

The Worker is ``fixtures/do_values``: ``POST /{binding}/{name}/{method}`` with a JSON list of
arguments calls an RPC method of a Durable Object that describes what storage gave back
(Python types as the ``workers`` SDK converts them, and JavaScript types below it).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostproc import HostProcess

pytestmark = pytest.mark.host_only

CONFIG = Path(__file__).resolve().parent / "fixtures" / "do_values" / "wrangler.toml"

# What the Worker stores (fixtures/do_values: python_values()) and reads back. Bytes come back
# as a memoryview: the stored value is a JavaScript Uint8Array, which the SDK's python_from_rpc
# turns into a memoryview (the same SDK code runs at the edge).
EXPECTED_PYTHON = {
    "big": 2**70,
    "bytes": {"memoryview": b"\x00\x01\xffbinary".hex()},
    "datetime": {"datetime": "2024-05-06T07:08:09.250000"},
    "dict": {"dict": {"a": 1, "b": "two", "c": None, "d": 2.5, "e": True}},
    "list": {"list": [1, "x", None, {"list": [2, {"list": [3]}]}, {"dict": {"k": {"memoryview": "07"}}}]},
    "nested": {
        "dict": {
            "deep": {
                "dict": {
                    "er": {
                        "list": [
                            {"dict": {"bytes": {"memoryview": "00"}}},
                            {"dict": {"when": {"datetime": "2000-01-01T00:00:00"}}},
                        ]
                    }
                }
            }
        }
    },
    "set": {"set": [1, 2, 3]},
    "text": "héllo \u2603",
}

# JavaScript values the structured clone keeps and JSON would not.
JS_VALUES = {
    "uint8array": "new Uint8Array([0, 1, 255])",
    "arraybuffer": "new Uint8Array([9, 8]).buffer",
    "float64array": "new Float64Array([1.5, -2])",
    "date": "new Date(86400000)",
    "map": "new Map([[1, 'one'], ['k', [1, 2]], [true, new Map()]])",
    "set": "new Set(['a', 2, null])",
    "sparse-array": "[1, undefined, , 3]",
    "bigint": "2n ** 80n",
    "nested": "({a: {b: [new Date(5), {c: new Set([1n])}]}, u: undefined, n: null})",
    "regexp": "/ab+c/gi",
    "error": "new RangeError('too far')",
    "special-numbers": "[NaN, Infinity, -0, 1e-300]",
}


class Worker:
    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        self.client.close()

    def call(self, binding: str, name: str, method: str, *args: Any) -> Any:
        reply = self.client.post(f"/{binding}/{name}/{method}", json=list(args))
        assert reply.status_code == 200, reply.text
        return reply.json()

    def sqlite(self, name: str, method: str, *args: Any) -> Any:
        return self.call("SQLITE_STORE", name, method, *args)


def start(persist: Path) -> HostProcess:
    return HostProcess(CONFIG, persist)


@pytest.fixture(scope="module")
def persist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("do-values-state")


@pytest.fixture(scope="module")
def worker(persist: Path) -> Iterator[Worker]:
    host = start(persist)
    try:
        w = Worker(host.start())
        yield w
        w.close()
    finally:
        host.close()


def test_python_values_round_trip_through_get_get_many_and_list(worker: Worker) -> None:
    name = uuid.uuid4().hex
    assert worker.sqlite(name, "put_python") == sorted(EXPECTED_PYTHON)
    got = worker.sqlite(name, "get_python")
    assert got["single"] == EXPECTED_PYTHON
    prefixed = {f"py:{k}": v for k, v in EXPECTED_PYTHON.items()}
    assert got["many"] == {"dict": prefixed}
    assert got["listed_keys"] == sorted(prefixed)
    assert got["listed"] == {"dict": prefixed}


@pytest.mark.parametrize("key", sorted(JS_VALUES))
def test_javascript_values_keep_their_type(worker: Worker, key: str) -> None:
    got = worker.sqlite("js-values", "put_js", key, JS_VALUES[key])
    assert got["after"] == got["before"]


def test_javascript_values_are_exact(worker: Worker) -> None:
    """A few descriptions spelled out, so a describer that loses types cannot pass the test above."""
    got = {k: worker.sqlite("js-exact", "put_js", k, JS_VALUES[k])["after"] for k in JS_VALUES}
    assert got["uint8array"] == {"Uint8Array": [0, 1, 255]}
    assert got["arraybuffer"] == {"ArrayBuffer": [9, 8]}
    assert got["date"] == {"Date": 86400000}
    assert got["sparse-array"] == {
        "Array": [{"number": 1}, {"undefined": True}, {"hole": True}, {"number": 3}]
    }
    assert got["bigint"] == {"bigint": str(2**80)}
    assert got["map"]["Map"][2] == [{"boolean": True}, {"Map": []}]
    assert got["nested"]["Object"]["u"] == {"undefined": True}
    assert got["error"] == {"Error": "RangeError: too far"}


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("python-object", "a Python object of type 'object'"),
        ("python-nested", "a Python object of type 'object'"),
        ("python-function", "a Python object of type 'function'"),
        ("js-function", "a function"),
        ("js-symbol", "a symbol (Symbol(s))"),
        ("js-weakmap", "#<WeakMap> could not be cloned"),
    ],
)
def test_values_the_structured_clone_refuses_raise_a_data_clone_error(
    worker: Worker, kind: str, named: str
) -> None:
    got = worker.sqlite("refused", "put_refused", kind)
    assert got["error"] is not None, "the value was stored"
    assert "DataCloneError" in got["error"] and "could not be cloned" in got["error"]
    assert named in got["error"]
    assert got["stored"] is None  # nothing was written


def test_sync_kv_api_shares_the_key_space_of_get_and_put(worker: Worker) -> None:
    got = worker.sqlite(uuid.uuid4().hex, "kv_ops")
    assert got["a_async"] == 1  # kv.put -> await storage.get
    assert got["b_sync"] == {"memoryview": "0102"}
    assert got["d_sync"] == "from async put"  # await storage.put -> kv.get
    assert got["missing"] is None
    assert got["list"] == [
        ["kv:a", 1],
        ["kv:b", {"memoryview": "0102"}],
        ["kv:c", {"dict": {"x": {"list": [1, None]}}}],
        ["kv:d", "from async put"],
    ]
    assert got["list_reverse_limit"] == ["kv:d", "kv:c"]
    assert got["list_range"] == ["kv:b", "kv:c"]
    assert (got["delete_existing"], got["delete_missing"]) == (True, False)
    assert got["a_after_delete"] is None
    assert got["b_after_async_delete"] is None


def test_transaction_sync_is_atomic(worker: Worker) -> None:
    got = worker.sqlite(uuid.uuid4().hex, "transaction_sync")
    assert got["raised"] == "ValueError: boom inside transactionSync"
    assert got["after_failure"] == {"kv": None, "rows": []}  # the KV write and the SQL row rolled back
    assert got["result"] == "done"
    assert got["after_success"] == {"kv": "kept", "rows": [2]}


def test_async_transaction_rolls_back_kv_and_sql(worker: Worker) -> None:
    got = worker.sqlite(uuid.uuid4().hex, "transaction_async")
    assert "ValueError: boom inside transaction" in got["raised"]
    assert got["rolled"] == "rolled back"
    assert got["committed"] == "z"
    assert got["keys"] == ["atxn:3"]
    assert got["rows"] == [3]


def test_sql_carries_blobs(worker: Worker) -> None:
    got = worker.sqlite(uuid.uuid4().hex, "sql_blobs")
    assert got["sqlite_type"] == "blob" and got["length"] == 5
    assert got["v"] == {"memoryview": b"\x00\xffsql".hex()}
    assert got["js"] == {"ArrayBuffer": list(b"\x00\xffsql")}  # as workerd returns BLOB columns
    assert got["written"] == 1
    assert "storage.transaction()" in got["begin"]  # BEGIN is refused, as at the edge


def test_kv_backed_class_stores_values_and_has_no_sql(worker: Worker) -> None:
    got = worker.call("KV_STORE", uuid.uuid4().hex, "roundtrip")
    assert got["k"] == {"memoryview": b"\x01kv-backed".hex()}
    assert got["when"] == {"datetime": "2024-01-02T03:04:05"}
    assert got["listed"] == ["k", "when"]
    assert "not backed by SQLite storage, so the SQL API is not available" in got["sql"]
    assert "storage.kv (synchronous KV) API is only available for SQLite-backed" in got["kv"]


def wait_for_calls(worker: Worker, name: str, count: int, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        state = worker.sqlite(name, "alarm_state")
        calls = state["calls"]["list"]
        if len(calls) >= count or time.monotonic() > deadline:
            return state, [c["dict"] for c in calls]
        time.sleep(0.2)


def test_failing_alarm_is_retried_with_backoff(worker: Worker) -> None:
    name = uuid.uuid4().hex
    worker.sqlite(name, "set_alarm", 200, 2)  # alarm() raises twice, then succeeds
    state, calls = wait_for_calls(worker, name, 3, timeout=15)
    assert [(c["retryCount"], c["isRetry"]) for c in calls] == [(0, False), (1, True), (2, True)]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(calls)]
    assert 1900 <= gaps[0] <= 3500 and 3900 <= gaps[1] <= 6000  # 2 s, then 4 s
    assert state["pending"] is None
    time.sleep(1)
    assert len(wait_for_calls(worker, name, 4, timeout=0)[1]) == 3  # no more calls after success


def test_values_and_alarms_survive_a_restart(tmp_path: Path) -> None:
    persist = tmp_path / "state"
    first = start(persist)
    try:
        w = Worker(first.start())
        w.sqlite("kept", "put_python")
        kept_js = {k: w.sqlite("kept", "put_js", k, JS_VALUES[k])["after"] for k in JS_VALUES}
        w.sqlite("kept", "kv_ops")
        scheduled = w.sqlite("alarm-kept", "set_alarm", 1500, 0)
        w.close()
        assert first.stop() == 0
    finally:
        first.close()
    second = start(persist)
    try:
        w = Worker(second.start())
        assert w.sqlite("kept", "get_python")["single"] == EXPECTED_PYTHON
        assert {k: w.sqlite("kept", "get_js", k) for k in JS_VALUES} == kept_js
        state, calls = wait_for_calls(w, "alarm-kept", 1, timeout=15)  # set before the restart
        assert len(calls) == 1 and calls[0]["retryCount"] == 0
        assert calls[0]["at"] >= scheduled
        assert state["pending"] is None
        w.close()
    finally:
        second.close()
    assert (persist / "do" / "SQLITE_STORE").is_dir()
