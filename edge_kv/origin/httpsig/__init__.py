"""Origin side of the edge's RFC 9421 request signatures.

* :func:`verify_request` — verify one request (core checks + replay protection) and
  return the signed :class:`EdgeIdentity`;
* :class:`SignatureMiddleware` — plain ASGI middleware doing that for every request,
  answering 401 problem+json otherwise;
* nonce stores — :class:`RedisNonceStore` (``SET NX EX``) and :class:`MemoryNonceStore`.

The signature format, keys and digests live in :mod:`edge_kv.core.httpsig` (shared with
the edge, which signs).
"""

from edge_kv.core.httpsig import HmacKey, Keyring, SignatureRejected
from edge_kv.origin.httpsig.middleware import (
    SignatureMiddleware,
    edge_identity,
    fixed_origin,
    target_uri_from_scope,
)
from edge_kv.origin.httpsig.nonces import MemoryNonceStore, NonceStore, NonceStoreUnavailable, RedisNonceStore
from edge_kv.origin.httpsig.verifier import (
    DEFAULT_REQUIRED_COMPONENTS,
    DEFAULT_REQUIRED_PARAMS,
    EdgeIdentity,
    SignaturePolicy,
    verify_request,
)

__all__ = [
    "DEFAULT_REQUIRED_COMPONENTS",
    "DEFAULT_REQUIRED_PARAMS",
    "EdgeIdentity",
    "HmacKey",
    "Keyring",
    "MemoryNonceStore",
    "NonceStore",
    "NonceStoreUnavailable",
    "RedisNonceStore",
    "SignatureMiddleware",
    "SignaturePolicy",
    "SignatureRejected",
    "edge_identity",
    "fixed_origin",
    "target_uri_from_scope",
    "verify_request",
]
