"""docs/examples/order_service.py (the README's order service) runs end to end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from edge_kv.origin.testing import RedisServer

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "order_service.py"


async def test_order_service_example(redis_server: RedisServer, pg_dsn: str) -> None:
    spec = importlib.util.spec_from_file_location("order_service_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    result = await module.main(redis_server.url, pg_dsn)
    assert result["o-1"] == ("fulfilled", ["card charged", "stock reserved"], "completed")
    status, ledger, saga = result["o-2"]
    assert status.startswith("cancelled") and saga == "compensated"
    assert ledger == ["stock released", "stock reserved"]
