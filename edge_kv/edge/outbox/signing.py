"""Signing outbox deliveries the way the gateway signs what it forwards.

RFC 9421 ``hmac-sha256`` (:func:`edge_kv.core.httpsig.sign_request`) with the keys of the
gateway's ``EDGE_KV_SIGNING_KEYS`` secret (same format: a JSON object ``{"keyid": "<hex
secret>", ...}``, the last key signs), ``created``/``expires``/``nonce``, over
``@method``, ``@target-uri``, ``content-digest`` (RFC 9530, of the body) and the
identity and event fields below. So an origin that already verifies the gateway with
``edge_kv.origin.httpsig.SignatureMiddleware`` (default policy) accepts outbox deliveries
too, with the subject ``outbox:<source>`` and the auth method ``outbox``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from edge_kv.core import httpsig
from edge_kv.core.errors import Unavailable
from edge_kv.edge.env import env_str

__all__ = [
    "OUTBOX_ISSUER",
    "SIGNED_COMPONENTS",
    "SIGNING_KEYS_VAR",
    "OutboxSigner",
    "SigningUnavailable",
    "signer_from_env",
]

SIGNING_KEYS_VAR = "EDGE_KV_SIGNING_KEYS"  # the gateway's secret (edge_kv.edge.gateway)
OUTBOX_ISSUER = "edge-outbox"
SIGNED_COMPONENTS = (
    "@method",
    "@target-uri",
    "content-digest",
    "x-edge-subject",
    "x-edge-scopes",
    "x-edge-issuer",
    "x-edge-auth",
    "x-edge-event-id",
    "x-edge-event-seq",
)


class SigningUnavailable(Unavailable):
    """No usable signing key: the outbox never sends an unsigned delivery. 503."""

    code = "outbox_signing_unavailable"


class OutboxSigner:
    """Signs one delivery: returns every header line to send (identity, event fields,
    ``Content-Digest``, ``Signature-Input``, ``Signature``)."""

    def __init__(
        self,
        keyring: httpsig.Keyring,
        *,
        expires_in_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(keyring, httpsig.Keyring):
            raise TypeError("keyring must be an edge_kv.core.httpsig.Keyring")
        self.keyring = keyring
        self.expires_in_s = expires_in_s
        self.clock = clock

    def headers(
        self, url: str, body: bytes, *, event_id: str, seq: int, source: str
    ) -> list[tuple[str, str]]:
        fields = [
            ("content-type", "application/json"),
            ("x-edge-subject", f"outbox:{source}"),
            ("x-edge-scopes", ""),
            ("x-edge-issuer", OUTBOX_ISSUER),
            ("x-edge-auth", "outbox"),
            ("x-edge-event-id", event_id),
            ("x-edge-event-seq", str(seq)),
            ("content-digest", httpsig.content_digest(body)),
        ]
        signed = httpsig.sign_request(
            httpsig.HttpRequest.build("POST", url, fields),
            self.keyring,
            now=int(self.clock()),
            components=SIGNED_COMPONENTS,
            expires_in=self.expires_in_s,
        )
        return fields + signed.items()


@functools.lru_cache(maxsize=4)
def _parse_keyring(raw: str) -> httpsig.Keyring:
    try:
        return httpsig.Keyring.from_json(raw)
    except ValueError as exc:
        print(f"edge_kv outbox: {SIGNING_KEYS_VAR} is unusable: {exc}")
        raise SigningUnavailable(f"{SIGNING_KEYS_VAR} is unusable (see the Worker log)") from None


def signer_from_env(env: Any, *, var: str = SIGNING_KEYS_VAR, expires_in_s: int = 60) -> OutboxSigner:
    """An :class:`OutboxSigner` over the keys in ``env.<var>``; :class:`SigningUnavailable`
    when the secret is missing or unusable."""
    raw = env_str(env, var)
    if raw is None:
        raise SigningUnavailable(f"the outbox cannot sign deliveries: set the {var} secret")
    return OutboxSigner(_parse_keyring(raw), expires_in_s=expires_in_s)
