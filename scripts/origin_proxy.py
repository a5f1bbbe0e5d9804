"""Write a host configuration that serves the gateway as a transparent caching proxy for
one origin (what ``scripts/dev --origin URL`` runs), and print its path.

The configuration is the project's wrangler.toml (the reference Worker, ``main`` pointing at
the assembled ``build/worker/entry.py``) next to a ``.dev.vars`` holding the project's own
``.dev.vars`` (if any) plus an ``EDGE_KV_GATEWAY`` document with one route: every path and
every method to ``URL``, no authentication, the RFC 9111 cache on (``"cache": true``), and
a signing key made for this run. Written under ``.state/origin-proxy/``.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def gateway_document(origin: str) -> dict[str, object]:
    return {
        "routes": [
            {
                "name": "origin",
                "prefix": "/",
                "methods": ["*"],
                "auth": "none",
                "routing": "origin",
                "cache": True,
                "max_body_bytes": 100 << 20,
                "timeout_ms": 30_000,
            }
        ],
        "routing": {
            "origin": {
                "pools": {"origin": {"strategy": "ordered", "origins": [{"name": "origin", "url": origin}]}},
                "default": {"pools": ["origin"]},
                "all_unhealthy": "try_unhealthy",
            }
        },
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("origin", help="the origin's base URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--out", default=str(ROOT / ".state" / "origin-proxy"))
    parser.add_argument(
        "--main", default=str(ROOT / "build" / "worker" / "entry.py"), help="the assembled entry module"
    )
    args = parser.parse_args(argv)
    parts = urlsplit(args.origin)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path not in ("", "/")
        or parts.query
    ):
        print(f"--origin must be http(s)://host[:port] without a path, got {args.origin!r}", file=sys.stderr)
        return 2
    origin = f"{parts.scheme}://{parts.netloc}"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "wrangler.toml").read_text()
    main_path = Path(args.main).resolve()
    text, count = re.subn(r'(?m)^main\s*=\s*".*"$', f'main = "{main_path}"', text)
    if count != 1:
        print("wrangler.toml must have one top-level main = line", file=sys.stderr)
        return 2
    (out / "wrangler.toml").write_text(text)
    own = ROOT / ".dev.vars"
    lines = (
        [line for line in own.read_text().splitlines() if not line.startswith("EDGE_KV_GATEWAY=")]
        if own.exists()
        else []
    )
    lines.append(f"EDGE_KV_GATEWAY='{json.dumps(gateway_document(origin), separators=(',', ':'))}'")
    if not any(line.startswith("EDGE_KV_SIGNING_KEYS=") for line in lines):
        lines.append(
            f"EDGE_KV_SIGNING_KEYS='{json.dumps({'dev-' + secrets.token_hex(4): secrets.token_hex(32)})}'"
        )
    (out / ".dev.vars").write_text("\n".join(lines) + "\n")
    print(out / "wrangler.toml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
