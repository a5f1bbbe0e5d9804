"""The one seam between edge_kv and the Workers runtime.

Protocols for the bindings (:class:`Env`, :class:`KVNamespace`,
:class:`DurableObjectNamespace`, :class:`DurableObjectStorage`, :class:`Cache`, ...), the
Python/JavaScript conversions (:func:`to_py`, :func:`js_object`, :func:`request_cf`, KV
helpers that validate keys and TTLs before the call), SQL storage helpers, and the typed
error envelope of Durable Object RPC (:func:`rpc_method`, :func:`call_rpc`). Nothing here
imports ``js``/``pyodide``/``workers`` at import time.
"""

from edge_kv.edge.runtime._fetch import (
    BodyTooLarge,
    OriginResponse,
    OriginTimeout,
    OriginUnreachable,
    cache_delete,
    cache_get_bytes,
    cache_put_bytes,
    fetch_origin,
    read_body,
    request_body,
    request_headers,
    streaming_response,
)
from edge_kv.edge.runtime._ffi import (
    KV_MAX_KEY_BYTES,
    KV_MAX_TTL_S,
    KV_MIN_TTL_S,
    check_js_args,
    check_kv_key,
    check_kv_ttl,
    js_object,
    js_response,
    kv_delete,
    kv_get,
    kv_put,
    open_cache,
    request_cf,
    request_method,
    to_py,
)
from edge_kv.edge.runtime._protocols import (
    Cache,
    DurableObjectNamespace,
    DurableObjectStorage,
    DurableObjectStub,
    Env,
    KVNamespace,
    SqlCursor,
    SqlStorage,
)
from edge_kv.edge.runtime._rpc import call_rpc, decode_reply, rpc_method
from edge_kv.edge.runtime._sql import resolve, sql_exec, sql_rows

__all__ = [
    "KV_MAX_KEY_BYTES",
    "KV_MAX_TTL_S",
    "KV_MIN_TTL_S",
    "BodyTooLarge",
    "Cache",
    "DurableObjectNamespace",
    "DurableObjectStorage",
    "DurableObjectStub",
    "Env",
    "KVNamespace",
    "OriginResponse",
    "OriginTimeout",
    "OriginUnreachable",
    "SqlCursor",
    "SqlStorage",
    "cache_delete",
    "cache_get_bytes",
    "cache_put_bytes",
    "call_rpc",
    "check_js_args",
    "check_kv_key",
    "check_kv_ttl",
    "decode_reply",
    "fetch_origin",
    "js_object",
    "js_response",
    "kv_delete",
    "kv_get",
    "kv_put",
    "open_cache",
    "read_body",
    "request_body",
    "request_cf",
    "request_headers",
    "request_method",
    "resolve",
    "rpc_method",
    "sql_exec",
    "sql_rows",
    "streaming_response",
    "to_py",
]
