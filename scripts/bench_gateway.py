"""Benchmark the edge gateway and edge JWT verification (one run, ratios printed).

Three parts, each with the competitor/reference in the same run, interleaved in slices:

1. **JWT verifications/s** (HS256, RS256, ES256, EdDSA; keys cached) inside the offline
   host against PyJWT on CPython verifying the same tokens in-process:
   * *per request*: ``POST /__jwt/verify`` (src/jwt_demo.py), sequential; raw rate, and the
     rate net of a bare route (``GET /__health``) measured in the same run;
   * *batch*: ``POST /__bench/jwt`` (src/bench_routes.py) verifies the token N times inside
     one request and reports the time measured inside Pyodide (no HTTP in the figure).
2. **Gateway overhead per request**: routes of an ``EDGE_KV_GATEWAY`` document (RS256 JWT
   auth + scope, a Durable Object token-bucket limit on the subject, geo routing, RFC 9421
   signing) against ``GET /__passthrough/{path}`` (src/bench_routes.py: fetch + stream, no
   auth, limit or signing) to the same trivial uvicorn origin, at concurrency 1 and
   ``--concurrency``; requests/s, p50/p99, the gateway/pass-through ratios, and the mean
   ``Server-Timing`` stages of each gateway case.
3. **Origin verifier µs/request**: ``edge_kv.origin.httpsig.verify_request`` on gateway-
   signed requests (each nonce claimed once) against http-message-signatures'
   ``HTTPMessageVerifier`` on the same requests.

Usage::

    .venv/bin/python scripts/bench_gateway.py [--seconds 3] [--concurrency 8]

``--seconds`` is the measured time per case (per concurrency), spent in 0.5 s slices that
rotate through the cases. The script builds the Worker, starts the origins (a child
process running uvicorn) and its own host with a temporary ``.dev.vars``
(``EDGE_KV_TEST_CLOCK`` enables the test-only routes), and stops both at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from edge_kv.core import httpsig as hs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "http"))
sys.path.insert(0, str(ROOT / "scripts"))
# The same start/stop helper the HTTP tests use, and the Worker build (not packages mypy sees).
HostProcess: Any = importlib.import_module("hostproc").HostProcess
build_worker: Any = importlib.import_module("build_worker").build

ISSUER = "https://id.bench"
AUDIENCE = "bench-api"
HS_SECRET = b"bench-hs256-secret-at-least-32-bytes-long!"
SIGNING = {"edge-bench-1": "11" * 32, "edge-bench-2": "0123456789abcdef" * 4}  # hex; the last signs
ALGS = ("HS256", "RS256", "ES256", "EdDSA")
GATEWAY_ALG = "RS256"
SLICE_S = 0.5
US = {
    "country": "US",
    "continent": "NA",
    "latitude": "40.7",
    "longitude": "-74.0",
    "isEUCountry": "0",
    "connectingIp": "198.51.100.7",
}


# ---- tokens ---------------------------------------------------------------------------------


@dataclass
class Signer:
    alg: str
    private: Any  # signing key (PyJWT form)
    public: Any  # verification key as PyJWT takes it (bytes or a cryptography object)
    jwk: dict[str, Any]

    def mint(self, sub: str = "bench-user", scope: str = "bench") -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "iat": now, "exp": now + 3600}
        return pyjwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.jwk["kid"]})


def signers() -> dict[str, Signer]:
    out = {
        "HS256": Signer(
            "HS256",
            HS_SECRET,
            HS_SECRET,
            {"kty": "oct", "k": pyjwt.utils.base64url_encode(HS_SECRET).decode()},
        )
    }
    asymmetric: dict[str, tuple[Any, Any]] = {
        "RS256": (rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
        "ES256": (ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
        "EdDSA": (ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
    }
    for alg, (private, algorithm) in asymmetric.items():
        jwk = algorithm.to_jwk(private.public_key(), as_dict=True)
        out[alg] = Signer(alg, private, private.public_key(), jwk)
    for alg, s in out.items():
        s.jwk = {**s.jwk, "kid": f"{alg.lower()}-1", "alg": alg, "use": "sig"}
    return out


# ---- origins (a child process: its CPU is not the client's GIL) ------------------------------


def origin_apps() -> tuple[Any, Any]:
    """A trivial ASGI origin, bare and behind ``SignatureMiddleware``."""
    from edge_kv.origin.httpsig import MemoryNonceStore, SignatureMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        body = b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    keyring = hs.Keyring.from_secrets({k: bytes.fromhex(v) for k, v in SIGNING.items()})
    return app, SignatureMiddleware(app, keyring=keyring, nonce_store=MemoryNonceStore())


def serve_origins(plain_port: int, signed_port: int) -> None:
    import uvicorn

    plain, signed = origin_apps()

    def server(app: Any, port: int) -> uvicorn.Server:
        return uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
            )
        )

    async def both() -> None:
        await asyncio.gather(server(plain, plain_port).serve(), server(signed, signed_port).serve())

    asyncio.run(both())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_origins() -> tuple[subprocess.Popen[bytes], str, str]:
    plain, signed = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-origins", str(plain), str(signed)], cwd=ROOT)
    urls = f"http://127.0.0.1:{plain}", f"http://127.0.0.1:{signed}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(urls[0]).status_code == 200 and httpx.get(urls[1]).status_code == 401:
                return proc, *urls
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the origins did not start in 30 s")


# ---- the host ----------------------------------------------------------------------------------


def gateway_document(plain: str, signed: str, keys: dict[str, Signer]) -> dict[str, Any]:
    def routing(name: str, url: str) -> dict[str, Any]:
        origin = {"name": name, "url": url, "latitude": 39.0, "longitude": -77.5, "jurisdictions": ["us"]}
        other = {
            "name": f"{name}-eu",
            "url": url,
            "latitude": 50.1,
            "longitude": 8.7,
            "jurisdictions": ["eu"],
        }
        return {
            "pools": {
                "us": {"strategy": "nearest", "origins": [origin]},
                "eu": {"strategy": "nearest", "origins": [other]},
            },
            "rules": [{"name": "eu-visitors", "match": {"eu": True}, "pools": ["eu"]}],
            "default": {"pools": ["us", "eu"]},
            "residency": [{"name": "gdpr", "visitors": {"eu": True}, "jurisdictions": ["eu"]}],
        }

    def route(name: str, prefix: str, to: str, *, auth: bool = True, limits: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "prefix": prefix, "routing": to, "timeout_ms": 10_000}
        out["auth"] = ["jwt:main"] if auth else "none"
        if auth:
            out["scopes"] = ["bench"]
        if limits:
            out["limits"] = ["per-subject"]
        return out

    return {
        "routes": [
            route("full", "/gw/", "signed"),
            route("full-plain", "/gwp/", "plain"),
            route("no-limit", "/gwn/", "signed", limits=False),
            route("public", "/gwo/", "signed", auth=False, limits=False),
        ],
        "issuers": {
            "main": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": {"keys": [keys[GATEWAY_ALG].jwk]}}
        },
        "routing": {"signed": routing("signed", signed), "plain": routing("plain", plain)},
        "limits": {
            "limits": {
                "per-subject": {
                    "key": ["subject"],
                    "tiers": [
                        {
                            "name": "open",
                            "kind": "token_bucket",
                            "capacity": 1_000_000,
                            "refill_rate": 100_000,
                        }
                    ],
                }
            }
        },
    }


def start_host(workdir: Path, plain: str, signed: str, keys: dict[str, Signer]) -> tuple[Any, str]:
    out = build_worker(workdir / "worker")
    text = (ROOT / "wrangler.toml").read_text()
    text = re.sub(r'(?m)^main\s*=\s*".*"$', f'main = "{out / "entry.py"}"', text)
    (workdir / "wrangler.toml").write_text(text)
    dev_vars = {
        "EDGE_KV_GATEWAY": json.dumps(gateway_document(plain, signed, keys), separators=(",", ":")),
        "EDGE_KV_SIGNING_KEYS": json.dumps(SIGNING),
        "EDGE_KV_TEST_CLOCK": "1",
        "EDGE_KV_PASSTHROUGH_ORIGIN": plain,
    }
    (workdir / ".dev.vars").write_text("".join(f"{k}='{v}'\n" for k, v in dev_vars.items()))
    (workdir / "persist").mkdir()
    host = HostProcess(workdir / "wrangler.toml", workdir / "persist")
    return host, host.start(timeout=90)


# ---- measuring -----------------------------------------------------------------------------------


@dataclass
class Stats:
    count: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    timing: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def quantile_ms(self, q: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else 0.0
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000


HttpOp = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]
# A local op runs some work and returns (operations done, seconds they took).
LocalOp = Callable[[float], Awaitable[tuple[int, float]]]

TIMING = re.compile(r"([\w-]+);dur=([0-9.]+)")


async def http_slice(
    client: httpx.AsyncClient, op: HttpOp, concurrency: int, seconds: float, st: Stats
) -> None:
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            r = await op(client, i)
            st.latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")
            for stage, ms in TIMING.findall(r.headers.get("server-timing", "")):
                st.timing.setdefault(stage, []).append(float(ms))

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    st.elapsed += time.monotonic() - t0
    st.count = len(st.latencies)


async def interleaved(
    cases: dict[str, HttpCase | LocalOp],
    seconds: float,
    *,
    client: httpx.AsyncClient | None = None,
    concurrency: int = 1,
) -> dict[str, Stats]:
    """Rotate through ``cases`` in ``SLICE_S`` slices until each has had ``seconds``."""
    stats = {name: Stats() for name in cases}
    rounds = max(1, round(seconds / SLICE_S))
    for _ in range(rounds):
        for name, op in cases.items():
            st = stats[name]
            if isinstance(op, HttpCase):
                assert client is not None
                await http_slice(client, op.op, concurrency, SLICE_S, st)
            else:
                n, took = await op(SLICE_S)
                st.count += n
                st.elapsed += took
    return stats


@dataclass
class HttpCase:
    """A case driven through HTTP by ``concurrency`` clients."""

    op: HttpOp


def http(op: HttpOp) -> HttpCase:
    return HttpCase(op)


def loop_for(fn: Callable[[], Any]) -> LocalOp:
    """A local op: call ``fn`` repeatedly for the slice (batches of 20 between clock reads)."""

    async def run(seconds: float) -> tuple[int, float]:
        n, t0 = 0, time.perf_counter()
        stop = t0 + seconds
        while time.perf_counter() < stop:
            for _ in range(20):
                fn()
            n += 20
        return n, time.perf_counter() - t0

    return run


# ---- part 1: JWT -------------------------------------------------------------------------------


def pyjwt_op(s: Signer, token: str) -> LocalOp:
    def verify() -> None:
        pyjwt.decode(token, s.public, algorithms=[s.alg], audience=AUDIENCE, issuer=ISSUER)

    return loop_for(verify)


def jwt_body(s: Signer, token: str) -> dict[str, Any]:
    return {
        "token": token,
        "jwks": {"keys": [s.jwk]},
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": [s.alg],
    }


def batch_op(client: httpx.AsyncClient, s: Signer, token: str) -> LocalOp:
    """``POST /__bench/jwt``: (verifications, seconds measured inside Pyodide)."""
    per_verify = [0.001]  # adapted after each request so one request lasts about a slice

    async def run(seconds: float) -> tuple[int, float]:
        n = max(10, min(100_000, int(seconds / per_verify[0])))
        r = await client.post("/__bench/jwt", json={**jwt_body(s, token), "n": n})
        if r.status_code != 200:
            raise RuntimeError(f"/__bench/jwt {s.alg} -> {r.status_code}: {r.text[:300]}")
        elapsed = float(r.json()["elapsed_s"])
        per_verify[0] = max(elapsed / n, 1e-6)
        return n, elapsed

    return run


async def bench_jwt(
    client: httpx.AsyncClient, keys: dict[str, Signer], seconds: float
) -> tuple[dict[str, Stats], int]:
    cases: dict[str, HttpCase | LocalOp] = {"health": http(lambda c, i: c.get("/__health"))}
    for alg in ALGS:
        s = keys[alg]
        token = s.mint()
        body = jwt_body(s, token)

        async def route(c: httpx.AsyncClient, i: int, body: dict[str, Any] = body) -> httpx.Response:
            return await c.post("/__jwt/verify", json=body)

        cases[f"route {alg}"] = http(route)
        cases[f"batch {alg}"] = batch_op(client, s, token)
        cases[f"pyjwt {alg}"] = pyjwt_op(s, token)
        for _ in range(5):  # warm: the key is imported once and cached
            r = await route(client, 0)
            if r.status_code != 200:
                raise RuntimeError(f"/__jwt/verify {alg} -> {r.status_code}: {r.text[:300]}")
    imports_before = (
        await client.post("/__jwt/verify", json=jwt_body(keys["RS256"], keys["RS256"].mint()))
    ).json()["key_imports"]
    stats = await interleaved(cases, seconds, client=client)
    r = await client.post("/__jwt/verify", json=jwt_body(keys["RS256"], keys["RS256"].mint()))
    return stats, int(r.json()["key_imports"]) - int(imports_before)


def jwt_table(stats: dict[str, Stats], new_imports: int) -> str:
    bare_s = 1 / stats["health"].rate
    lines = [
        f"Bare route `GET /__health` in the host: {stats['health'].rate:,.0f} requests/s "
        f"({bare_s * 1000:.2f} ms each, sequential). WebCrypto key imports during the run: {new_imports}.",
        "",
        "| alg | PyJWT (CPython, in-process) verif/s | host, per request (raw) req/s | vs PyJWT "
        "| host, per request net of bare route verif/s | vs PyJWT | host, batch inside Pyodide verif/s | vs PyJWT |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for alg in ALGS:
        base = stats[f"pyjwt {alg}"].rate
        raw = stats[f"route {alg}"].rate
        net_s = 1 / raw - bare_s
        net = (
            f"{1 / net_s:,.0f} | {1 / net_s / base:.3f}x"
            if net_s > 0
            else "n/a (under the bare route's noise) | —"
        )
        batch = stats[f"batch {alg}"].rate
        lines.append(
            f"| {alg} | {base:,.0f} | {raw:,.0f} | {raw / base:.3f}x | {net} | {batch:,.0f} | {batch / base:.2f}x |"
        )
    return "\n".join(lines)


# ---- part 2: gateway ---------------------------------------------------------------------------


GATEWAY_CASES = {
    "pass-through (`GET /__passthrough/item`)": "/__passthrough/item",
    "gateway, full: JWT + DO limit + geo + signing; origin verifies": "/gw/item",
    "gateway, full; origin does not verify": "/gwp/item",
    "gateway, JWT + geo + signing, no limit; origin verifies": "/gwn/item",
    "gateway, public route (geo + signing only); origin verifies": "/gwo/item",
}


async def bench_gateway(
    client: httpx.AsyncClient, keys: dict[str, Signer], seconds: float, concurrency: int
) -> dict[int, dict[str, Stats]]:
    headers = [
        {
            "authorization": f"Bearer {keys[GATEWAY_ALG].mint(sub=f'bench-{i}')}",
            "x-edge-kv-test-cf": json.dumps(US),
        }
        for i in range(concurrency)
    ]
    cases: dict[str, HttpCase | LocalOp] = {}
    for label, path in GATEWAY_CASES.items():

        async def op(c: httpx.AsyncClient, i: int, path: str = path) -> httpx.Response:
            return await c.get(path, headers=headers[i])

        cases[label] = http(op)
        for i in range(concurrency):  # warm: one limiter object per subject, config loaded
            r = await op(client, i)
            if r.status_code != 200:
                raise RuntimeError(f"{path} -> {r.status_code}: {r.text[:300]}")
    return {
        conc: await interleaved(cases, seconds, client=client, concurrency=conc) for conc in (1, concurrency)
    }


def gateway_table(results: dict[int, dict[str, Stats]]) -> str:
    base_label = next(iter(GATEWAY_CASES))
    lines = [
        "| case | concurrency | requests/s | p50 ms | p99 ms | p50 vs pass-through | throughput: pass-through / it |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for conc, stats in results.items():
        base = stats[base_label]
        for label, st in stats.items():
            lines.append(
                f"| {label} | {conc} | {st.rate:,.0f} | {st.quantile_ms(50):.2f} | {st.quantile_ms(99):.1f} "
                f"| {st.quantile_ms(50) / base.quantile_ms(50):.2f}x | {base.rate / st.rate:.2f}x |"
            )
    lines += ["", "Mean `Server-Timing` stages (ms), concurrency 1:", ""]
    stages = ("normalise", "auth", "limit", "prepare", "route", "origin", "respond")
    lines.append("| case | " + " | ".join(stages) + " | sum |")
    lines.append("| --- |" + " ---: |" * (len(stages) + 1))
    for label, st in results[1].items():
        if not st.timing:
            continue
        means = [statistics.fmean(st.timing.get(s, [0.0])) for s in stages]
        lines.append(f"| {label} | " + " | ".join(f"{m:.2f}" for m in means) + f" | {sum(means):.2f} |")
    return "\n".join(lines)


# ---- part 3: origin verifier --------------------------------------------------------------------


@dataclass
class Message:
    """The request interface http-message-signatures reads: method, url, headers."""

    method: str
    url: str
    headers: dict[str, str]


def signed_requests(n: int) -> tuple[list[Message], bytes, tuple[str, ...]]:
    """``n`` requests signed as the gateway signs them (distinct nonces), with a body."""
    from edge_kv.edge.gateway.pipeline import SIGNED_COMPONENTS

    body = b'{"item":"keyboard","quantity":2}'
    ring = hs.Keyring.from_secrets({k: bytes.fromhex(v) for k, v in SIGNING.items()})
    url = "http://127.0.0.1:8080/api/orders?tenant=7"
    identity = {
        "content-type": "application/json",
        "x-edge-subject": "user-42",
        "x-edge-scopes": "orders:read orders:write",
        "x-edge-issuer": ISSUER,
        "x-edge-auth": "jwt:main",
        "x-edge-client-ip": "198.51.100.7",
        "x-edge-country": "US",
        "x-edge-continent": "NA",
        "content-digest": hs.content_digest(body),
        "via": "1.1 edge-kv",
    }
    out = []
    now = int(time.time())
    for _ in range(n):
        signed = hs.sign_request(
            hs.HttpRequest.build("POST", url, list(identity.items())),
            ring,
            now=now,
            components=SIGNED_COMPONENTS,
            expires_in=600,
        )
        out.append(Message("POST", url, {**identity, **dict(signed.items())}))
    return out, body, tuple(SIGNED_COMPONENTS)


async def bench_origin(seconds: float) -> dict[str, Stats]:
    from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

    from edge_kv.origin.httpsig import MemoryNonceStore, verify_request

    pool, body, components = signed_requests(2000)
    ring = hs.Keyring.from_secrets({k: bytes.fromhex(v) for k, v in SIGNING.items()})
    secrets = {k: bytes.fromhex(v) for k, v in SIGNING.items()}
    theirs = HTTPMessageVerifier(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys=secrets, private_keys=secrets),
    )
    header_lists = [list(m.headers.items()) for m in pool]

    async def ours(seconds: float) -> tuple[int, float]:
        n, t0 = 0, time.perf_counter()
        stop = t0 + seconds
        while time.perf_counter() < stop:
            store = MemoryNonceStore()  # a fresh store per pass: every nonce is claimed once
            for m, headers in zip(pool, header_lists, strict=True):
                await verify_request(m.method, m.url, headers, body, keyring=ring, nonce_store=store)
            n += len(pool)
        return n, time.perf_counter() - t0

    def core_only() -> Callable[[], None]:
        i = [0]

        def run() -> None:
            m = pool[i[0] % len(pool)]
            i[0] += 1
            hs.verify_request(
                hs.HttpRequest.build(m.method, m.url, m.headers),
                ring,
                now=int(time.time()),
                body=body,
                required_components=components,
            )

        return run

    def their_op() -> Callable[[], None]:
        i = [0]

        def run() -> None:
            m = pool[i[0] % len(pool)]
            i[0] += 1
            theirs.verify(m, require_components=components, body=body)

        return run

    their_op()()  # fail early if it does not accept our signature
    cases: dict[str, HttpCase | LocalOp] = {
        "edge_kv `verify_request` (origin: digest + signature + nonce claim)": ours,
        "edge_kv core `httpsig.verify_request` (digest + signature, no nonce)": loop_for(core_only()),
        "http-message-signatures `HTTPMessageVerifier.verify` (digest + signature)": loop_for(their_op()),
    }
    return await interleaved(cases, seconds)


def origin_table(stats: dict[str, Stats]) -> str:
    theirs = next(st for label, st in stats.items() if label.startswith("http-message"))
    lines = ["| verifier | µs/request | vs http-message-signatures |", "| --- | ---: | ---: |"]
    for label, st in stats.items():
        us = 1e6 / st.rate
        lines.append(f"| {label} | {us:.1f} | {us / (1e6 / theirs.rate):.2f}x |")
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------------


async def run_host(url: str, keys: dict[str, Signer], seconds: float, concurrency: int) -> tuple[str, str]:
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        jwt_stats, imports = await bench_jwt(client, keys, seconds)
        gw = await bench_gateway(client, keys, seconds, concurrency)
    return jwt_table(jwt_stats, imports), gateway_table(gw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--serve-origins", nargs=2, type=int, metavar=("PLAIN", "SIGNED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_origins:
        serve_origins(*args.serve_origins)
        return
    keys = signers()
    origins, plain, signed = start_origins()
    try:
        with tempfile.TemporaryDirectory(prefix="edge-kv-bench-gw-") as tmp:
            host, url = start_host(Path(tmp), plain, signed, keys)
            try:
                jwt_md, gw_md = asyncio.run(run_host(url, keys, args.seconds, args.concurrency))
            finally:
                host.close()
    finally:
        origins.terminate()
        origins.wait(10)
    origin_md = origin_table(asyncio.run(bench_origin(args.seconds)))
    print("## JWT verification\n")
    print(jwt_md)
    print(f"\n## Gateway overhead (JWT {GATEWAY_ALG})\n")
    print(gw_md)
    print("\n## Origin verifier\n")
    print(origin_md)


if __name__ == "__main__":
    main()
