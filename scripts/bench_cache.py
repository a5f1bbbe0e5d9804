"""Benchmark the gateway cache through the offline host against the bare pass-through.

Two parts, each with the pass-through reference in the same run, interleaved in slices:

1. **Latency and requests/s per cache outcome** at concurrency 1 and ``--concurrency``:
   a cached route of an ``EDGE_KV_GATEWAY`` document (``"cache": true``, no auth, one origin)
   answering

   * HIT: one URL with ``max-age=3600``, stored before the run;
   * STALE: one URL with ``max-age=0, stale-while-revalidate=3600``: every answer comes from
     the cache and starts a background revalidation (one at a time per key);
   * MISS/BYPASS ``no-store``: an uncacheable answer through the same cached route;
   * MISS, first-time URL: a new URL per request (``max-age=3600``, stored);

   against ``GET /__passthrough/{path}`` (src/bench_routes.py: fetch + stream, nothing else)
   to the same origin. The origin (a uvicorn child process) sleeps ``--origin-delay-ms``
   before every answer, so what a hit saves is visible. Printed: requests/s, p50/p99, the
   ratios to the pass-through, origin requests per client request (counted at the origin)
   and the share of answers that carried the expected ``X-Cache``.
2. **Origin requests saved under a hot-key load**: ``--requests`` requests whose URLs are
   drawn from a Zipf distribution (s = ``--zipf-s``) over ``--urls`` URLs, ``max-age=30``,
   at ``--concurrency``; the same URL sequence through the cached route and through the
   pass-through, alternating in chunks of ``--chunk`` requests. Printed: requests/s,
   p50/p99 and origin requests per client request (the pass-through's is 1.0 by
   construction, and counted anyway).

Usage::

    .venv/bin/python scripts/bench_cache.py [--seconds 2] [--concurrency 8] [--origin-delay-ms 20]
        [--requests 1500] [--urls 1000] [--zipf-s 1.1]

``--seconds`` is the measured time per case (per concurrency), spent in 0.5 s slices that
rotate through the cases. The script builds the Worker, starts the origin and its own host
with a temporary ``.dev.vars`` (``EDGE_KV_TEST_CLOCK`` enables the pass-through route), and
stops both at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "http"))
sys.path.insert(0, str(ROOT / "scripts"))
# The same start/stop helper the HTTP tests use, and the Worker build (not packages mypy sees).
HostProcess: Any = importlib.import_module("hostproc").HostProcess
build_worker: Any = importlib.import_module("build_worker").build

SIGNING = {"edge-bench-1": "11" * 32}  # the gateway refuses to forward without a signing key
SLICE_S = 0.5
LONG = "max-age%3D3600"
SWR = "max-age%3D0%2C%20stale-while-revalidate%3D3600"
ZIPF_CC = "max-age%3D30"
TIMING = re.compile(r"([\w-]+);dur=([0-9.]+)")
STAGES = ("normalise", "auth", "limit", "prepare", "cache", "route", "origin", "respond")


# ---- the origin (a child process: its CPU is not the client's GIL) -----------------------------


def origin_app(delay_s: float) -> Any:
    """Counts GETs per ``ns`` query value, sleeps ``delay_s``, answers ``Cache-Control: <cc>``.

    ``GET /__counts`` answers the counts at once (not counted, no delay).
    """
    counts: Counter[str] = Counter()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["path"] == "/__counts":
            body = json.dumps(counts).encode()
            cc = "no-store"
        else:
            q = parse_qs(scope["query_string"].decode())
            counts[q.get("ns", ["other"])[0]] += 1
            await asyncio.sleep(delay_s)
            body = json.dumps({"path": scope["path"], "pad": "x" * 200}).encode()
            cc = q.get("cc", [""])[0]
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", cc.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_origin(port: int, delay_ms: float) -> None:
    import uvicorn

    uvicorn.Server(
        uvicorn.Config(
            origin_app(delay_ms / 1000),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    ).run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_origin(delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-origin", str(port), "--origin-delay-ms", str(delay_ms)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/__counts").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the origin did not start in 30 s")


async def origin_counts(origin: httpx.AsyncClient) -> Counter[str]:
    return Counter((await origin.get("/__counts")).json())


# ---- the host ----------------------------------------------------------------------------------


def gateway_document(origin: str) -> dict[str, Any]:
    return {
        "routes": [{"name": "cached", "prefix": "/c/", "auth": "none", "routing": "one", "cache": True}],
        "routing": {
            "one": {
                "pools": {"p": {"strategy": "ordered", "origins": [{"name": "o", "url": origin}]}},
                "default": {"pools": ["p"]},
                "all_unhealthy": "try_unhealthy",
            }
        },
    }


def start_host(workdir: Path, origin: str) -> tuple[Any, str]:
    out = build_worker(workdir / "worker")
    text = (ROOT / "wrangler.toml").read_text()
    text = re.sub(r'(?m)^main\s*=\s*".*"$', f'main = "{out / "entry.py"}"', text)
    (workdir / "wrangler.toml").write_text(text)
    dev_vars = {
        "EDGE_KV_GATEWAY": json.dumps(gateway_document(origin), separators=(",", ":")),
        "EDGE_KV_SIGNING_KEYS": json.dumps(SIGNING),
        "EDGE_KV_TEST_CLOCK": "1",
        "EDGE_KV_PASSTHROUGH_ORIGIN": origin,
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
    labels: Counter[str] = field(default_factory=Counter)
    timing: dict[str, list[float]] = field(default_factory=dict)
    origin_requests: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def quantile_ms(self, q: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else 0.0
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000

    @property
    def origin_per_request(self) -> float:
        return self.origin_requests / self.count if self.count else 0.0

    def share(self, label: str) -> float:
        return self.labels[label] / self.count if self.count else 0.0


@dataclass
class Case:
    """``path(i)`` is the next URL for worker ``i``; ``ns`` the origin's counter for it."""

    path: Callable[[int], str]
    ns: str
    expect: str  # the X-Cache the case is meant to measure ("" for the pass-through)


async def get(client: httpx.AsyncClient, path: str, st: Stats) -> None:
    t = time.perf_counter()
    r = await client.get(path)
    st.latencies.append(time.perf_counter() - t)
    if r.status_code != 200:
        raise RuntimeError(f"GET {path} -> {r.status_code}: {r.text[:300]}")
    st.labels[r.headers.get("x-cache", "")] += 1
    for stage, ms in TIMING.findall(r.headers.get("server-timing", "")):
        st.timing.setdefault(stage, []).append(float(ms))


async def timed_slice(
    client: httpx.AsyncClient, case: Case, concurrency: int, seconds: float, st: Stats
) -> None:
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        while time.monotonic() < stop:
            await get(client, case.path(i), st)

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    st.elapsed += time.monotonic() - t0
    st.count = len(st.latencies)


async def interleaved(
    client: httpx.AsyncClient,
    origin: httpx.AsyncClient,
    cases: dict[str, Case],
    seconds: float,
    concurrency: int,
) -> dict[str, Stats]:
    """Rotate through ``cases`` in ``SLICE_S`` slices until each has had ``seconds``."""
    stats = {name: Stats() for name in cases}
    before = await origin_counts(origin)
    for _ in range(max(1, round(seconds / SLICE_S))):
        for name, case in cases.items():
            await timed_slice(client, case, concurrency, SLICE_S, stats[name])
    await asyncio.sleep(0.5)  # let background revalidations reach the origin
    after = await origin_counts(origin)
    for name, case in cases.items():
        stats[name].origin_requests = after[case.ns] - before[case.ns]
    return stats


# ---- part 1: per outcome -------------------------------------------------------------------------


PASS = "pass-through (`GET /__passthrough/{path}`)"


def outcome_cases(run: int) -> dict[str, Case]:
    fresh = itertools.count()

    def fixed(path: str) -> Callable[[int], str]:
        return lambda i: path

    return {
        PASS: Case(fixed(f"/__passthrough/pt?cc={LONG}&ns=pass{run}"), f"pass{run}", ""),
        "cache HIT": Case(fixed(f"/c/hit?cc={LONG}&ns=hit{run}"), f"hit{run}", "HIT"),
        "cache STALE (within stale-while-revalidate)": Case(
            fixed(f"/c/stale?cc={SWR}&ns=stale{run}"), f"stale{run}", "STALE"
        ),
        "MISS: `no-store` through the cached route": Case(
            fixed(f"/c/nostore?cc=no-store&ns=nostore{run}"), f"nostore{run}", "BYPASS"
        ),
        "MISS: first-time URL (stored)": Case(
            lambda i: f"/c/new-{run}-{next(fresh)}?cc={LONG}&ns=miss{run}", f"miss{run}", "MISS"
        ),
    }


async def bench_outcomes(
    client: httpx.AsyncClient, origin: httpx.AsyncClient, seconds: float, concurrency: int
) -> dict[int, dict[str, Stats]]:
    results = {}
    for run, conc in enumerate((1, concurrency)):
        cases = outcome_cases(run)
        for case in cases.values():  # warm: store the HIT and STALE entries, load the config
            for _ in range(3):
                await get(client, case.path(0), Stats())
        results[conc] = await interleaved(client, origin, cases, seconds, conc)
    return results


def outcome_table(results: dict[int, dict[str, Stats]], delay_ms: float) -> str:
    lines = [
        f"Origin delay {delay_ms:g} ms per request.",
        "",
        "| case | concurrency | requests/s | p50 ms | p99 ms | p50 vs pass-through "
        "| requests/s vs pass-through | origin requests per client request | expected `X-Cache` |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for conc, stats in results.items():
        base = stats[PASS]
        for label, st in stats.items():
            expect = next(c.expect for n, c in outcome_cases(0).items() if n == label)
            shown = f"{expect} {st.share(expect):.0%}" if expect else "—"
            lines.append(
                f"| {label} | {conc} | {st.rate:,.0f} | {st.quantile_ms(50):.1f} | {st.quantile_ms(99):.1f} "
                f"| {st.quantile_ms(50) / base.quantile_ms(50):.2f}x | {st.rate / base.rate:.2f}x "
                f"| {st.origin_per_request:.2f} | {shown} |"
            )
    lines += ["", "Mean `Server-Timing` stages (ms) of the cached route, concurrency 1:", ""]
    stages = [s for s in STAGES if any(s in st.timing for st in results[1].values())]
    lines.append("| case | " + " | ".join(stages) + " | sum | client p50 |")
    lines.append("| --- |" + " ---: |" * (len(stages) + 2))
    for label, st in results[1].items():
        if not st.timing:
            continue
        means = [statistics.fmean(st.timing[s]) if s in st.timing else 0.0 for s in stages]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{m:.2f}" for m in means)
            + f" | {sum(means):.2f} | {st.quantile_ms(50):.1f} |"
        )
    return "\n".join(lines)


# ---- part 2: hot keys ----------------------------------------------------------------------------


def zipf_ranks(n: int, urls: int, s: float, seed: int = 1) -> list[int]:
    weights = [1 / (k**s) for k in range(1, urls + 1)]
    return random.Random(seed).choices(range(urls), weights=weights, k=n)


async def run_chunk(client: httpx.AsyncClient, paths: list[str], concurrency: int, st: Stats) -> None:
    it = iter(paths)

    async def worker() -> None:
        for path in it:
            await get(client, path, st)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    st.elapsed += time.monotonic() - t0
    st.count = len(st.latencies)


async def bench_zipf(
    client: httpx.AsyncClient,
    origin: httpx.AsyncClient,
    *,
    requests: int,
    urls: int,
    s: float,
    concurrency: int,
    chunk: int,
) -> tuple[dict[str, Stats], int]:
    ranks = zipf_ranks(requests, urls, s)
    cases = {  # label: (path prefix, origin counter)
        PASS: ("/__passthrough/z-", "zpass"),
        "gateway cache (`max-age=30`)": ("/c/z-", "zcache"),
    }
    stats = {name: Stats() for name in cases}
    before = await origin_counts(origin)
    for start in range(0, requests, chunk):
        part = ranks[start : start + chunk]
        for name, (prefix, ns) in cases.items():
            paths = [f"{prefix}{k}?cc={ZIPF_CC}&ns={ns}" for k in part]
            await run_chunk(client, paths, concurrency, stats[name])
    await asyncio.sleep(0.5)
    after = await origin_counts(origin)
    for name, (_, ns) in cases.items():
        stats[name].origin_requests = after[ns] - before[ns]
    return stats, len(set(ranks))


def zipf_table(stats: dict[str, Stats], distinct: int, args: argparse.Namespace) -> str:
    base = stats[PASS]
    lines = [
        f"{args.requests:,} requests, Zipf s={args.zipf_s:g} over {args.urls:,} URLs ({distinct:,} distinct "
        f"drawn), concurrency {args.concurrency}, chunks of {args.chunk} alternating; origin delay "
        f"{args.origin_delay_ms:g} ms.",
        "",
        "| case | requests/s | p50 ms | p99 ms | requests/s vs pass-through | origin requests "
        "| origin requests per client request | `X-Cache` |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, st in stats.items():
        shown = ", ".join(f"{k} {v:,}" for k, v in st.labels.most_common() if k) or "—"
        lines.append(
            f"| {label} | {st.rate:,.0f} | {st.quantile_ms(50):.1f} | {st.quantile_ms(99):.1f} "
            f"| {st.rate / base.rate:.2f}x | {st.origin_requests:,} | {st.origin_per_request:.3f} | {shown} |"
        )
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------------


async def run_host(url: str, origin_url: str, args: argparse.Namespace) -> tuple[str, str]:
    limits = httpx.Limits(
        max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2
    )
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client,
        httpx.AsyncClient(base_url=origin_url, timeout=10) as origin,
    ):
        outcomes = await bench_outcomes(client, origin, args.seconds, args.concurrency)
        zipf, distinct = await bench_zipf(
            client,
            origin,
            requests=args.requests,
            urls=args.urls,
            s=args.zipf_s,
            concurrency=args.concurrency,
            chunk=args.chunk,
        )
    return outcome_table(outcomes, args.origin_delay_ms), zipf_table(zipf, distinct, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per case")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--origin-delay-ms", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=1500, help="hot-key part: client requests")
    parser.add_argument("--urls", type=int, default=1000, help="hot-key part: distinct URLs")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--chunk", type=int, default=500, help="hot-key part: requests per slice")
    parser.add_argument("--serve-origin", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_origin:
        serve_origin(args.serve_origin, args.origin_delay_ms)
        return
    origin, origin_url = start_origin(args.origin_delay_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="edge-kv-bench-cache-") as tmp:
            host, url = start_host(Path(tmp), origin_url)
            try:
                outcome_md, zipf_md = asyncio.run(run_host(url, origin_url, args))
            finally:
                host.close()
    finally:
        origin.terminate()
        origin.wait(10)
    print("## Gateway cache: latency per outcome\n")
    print(outcome_md)
    print("\n## Gateway cache: origin requests under hot keys\n")
    print(zipf_md)


if __name__ == "__main__":
    main()
