"""Verify what the edge signed: RFC 9421 ``hmac-sha256`` over the forwarded request.

:func:`verify_request` runs the core checks (:func:`edge_kv.core.httpsig.verify_request`:
syntax, coverage, ``created``/``expires`` window with clock skew, key, MAC, body digest)
and then, only for a signature that verified, claims its nonce in a
:class:`~edge_kv.origin.httpsig.nonces.NonceStore` so it is accepted once. The result is
an :class:`EdgeIdentity` built from the *signed* values of ``X-Edge-Subject``,
``X-Edge-Scopes`` and ``X-Edge-Issuer`` — never from unsigned headers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge_kv.core import httpsig
from edge_kv.core.errors import InvalidInput
from edge_kv.core.httpsig import Component, HttpRequest, Keyring, SignatureRejected
from edge_kv.origin.httpsig.nonces import NonceStore, nonce_key

__all__ = [
    "DEFAULT_REQUIRED_COMPONENTS",
    "DEFAULT_REQUIRED_PARAMS",
    "EdgeIdentity",
    "SignaturePolicy",
    "verify_request",
]

DEFAULT_REQUIRED_COMPONENTS: tuple[str, ...] = (
    "@method",
    "@target-uri",
    "content-digest",
    "x-edge-subject",
    "x-edge-scopes",
    "x-edge-issuer",
)
DEFAULT_REQUIRED_PARAMS: tuple[str, ...] = ("created", "nonce", "keyid")
MAX_NONCE_LENGTH = 256
_SCOPE_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class SignaturePolicy:
    """What the origin demands of the edge's signature.

    ``max_age_s``: oldest acceptable ``created`` (and how long nonces are remembered,
    plus ``clock_skew_s``); ``clock_skew_s``: how far in the future ``created`` may be.
    ``required_params`` must include ``nonce`` for replay protection to apply (a
    signature without a nonce can then never verify). ``label``/``tag`` select one
    signature when a request carries several.
    """

    required_components: tuple[str, ...] = DEFAULT_REQUIRED_COMPONENTS
    required_params: tuple[str, ...] = DEFAULT_REQUIRED_PARAMS
    max_age_s: int = 300
    clock_skew_s: int = 30
    label: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_age_s", "clock_skew_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidInput(f"{name} must be a non-negative integer number of seconds, got {v!r}")
        if self.max_age_s == 0:
            raise InvalidInput("max_age_s must be > 0")
        comps = tuple(self.required_components)
        for c in comps:
            httpsig.check_component(Component.of(c))
        object.__setattr__(self, "required_components", comps)
        params = tuple(self.required_params)
        unknown = set(params) - set(httpsig.SIGNATURE_PARAMETERS)
        if unknown:
            raise InvalidInput(f"unknown signature parameters required: {sorted(unknown)}")
        object.__setattr__(self, "required_params", params)

    @property
    def nonce_ttl_s(self) -> int:
        return self.max_age_s + self.clock_skew_s

    def accept_signature_header(self, label: str = "sig1") -> str:
        """RFC 9421 §5.1 ``Accept-Signature`` value asking for what this policy requires."""
        flags: list[tuple[str, httpsig.BareItem]] = [
            (p, True) for p in ("created", "expires", "nonce") if p in self.required_params
        ]
        flags.append(("alg", httpsig.ALGORITHM))
        if self.tag is not None:
            flags.append(("tag", self.tag))
        inner = httpsig.SfInnerList(
            tuple(httpsig.SfItem(Component.of(c).name) for c in self.required_components), tuple(flags)
        )
        return httpsig.serialize_dictionary({self.label or label: inner})


@dataclass(frozen=True)
class EdgeIdentity:
    """Who the edge vouches for, taken only from signed components."""

    subject: str | None
    scopes: tuple[str, ...]
    issuer: str | None
    keyid: str
    label: str
    created: int | None
    nonce: str | None
    covered: Mapping[str, str] = field(default_factory=dict, repr=False)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def _identity(v: httpsig.VerifiedSignature) -> EdgeIdentity:
    raw_scopes = v.covered.get("x-edge-scopes", "")
    return EdgeIdentity(
        subject=v.covered.get("x-edge-subject") or None,
        scopes=tuple(s for s in _SCOPE_SPLIT.split(raw_scopes) if s),
        issuer=v.covered.get("x-edge-issuer") or None,
        keyid=v.keyid,
        label=v.label,
        created=v.created,
        nonce=v.nonce,
        covered=dict(v.covered),
    )


async def verify_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]] | Mapping[str, str],
    body: bytes,
    *,
    keyring: Keyring,
    nonce_store: NonceStore,
    policy: SignaturePolicy | None = None,
    now: int | None = None,
) -> EdgeIdentity:
    """Verify one request; return the signed identity or raise
    :class:`~edge_kv.core.httpsig.SignatureRejected` (``reason`` says why, ``replayed``
    for a nonce already used) or :class:`~edge_kv.origin.httpsig.nonces.NonceStoreUnavailable`.

    ``url`` is the absolute target URI as the edge addressed it; ``headers`` are the
    field lines as received (several lines with one name allowed); ``body`` is the whole
    content as received (before any content decoding).
    """
    policy = policy or SignaturePolicy()
    at = int(time.time()) if now is None else now
    request = HttpRequest.build(method, url, headers)
    verified = httpsig.verify_request(
        request,
        keyring,
        now=at,
        max_age=policy.max_age_s,
        clock_skew=policy.clock_skew_s,
        required_components=policy.required_components,
        required_params=policy.required_params,
        body=body,
        label=policy.label,
        tag=policy.tag,
    )
    nonce = verified.nonce
    if nonce is not None:
        if len(nonce) > MAX_NONCE_LENGTH:
            raise SignatureRejected(
                httpsig.REASON_MALFORMED, f"nonce longer than {MAX_NONCE_LENGTH} characters"
            )
        if not await nonce_store.claim(nonce_key(verified.keyid, nonce), policy.nonce_ttl_s):
            raise SignatureRejected(httpsig.REASON_REPLAYED, "this signature's nonce was already used")
    return _identity(verified)
