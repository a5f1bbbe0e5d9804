"""The edge outbox in the reference Worker (docs/messaging.md, "Edge outbox").

``OutboxDemo`` is a Durable Object whose state is one counter row; ``record`` bumps the
counter and writes an outbox entry carrying the new value in **one** ``transactionSync``,
and its alarm delivers the entries to ``EDGE_KV_OUTBOX_URL``, signed with the gateway's
``EDGE_KV_SIGNING_KEYS``. Routes (only when ``EDGE_KV_OUTBOX_URL`` is set; 404 otherwise):

* ``POST /outbox/{object}/events`` ``{"topic": str, "payload": any}`` → 201
  ``{"event_id", "n"}``;
* ``GET /outbox/{object}`` → the object's counter, pending entries and dead letters.
"""

from __future__ import annotations

from typing import Any

from workers import DurableObject

from edge_kv.core.errors import InvalidInput
from edge_kv.edge import HttpError, RouteContext, Router, env_str, json_response, read_json_object
from edge_kv.edge.outbox import OUTBOX_URL_VAR, EdgeOutbox, outbox_from_env
from edge_kv.edge.runtime import call_rpc, rpc_method

__all__ = ["OutboxDemo", "register"]


class OutboxDemo(DurableObject):  # type: ignore[no-untyped-call]  # SDK __init_subclass__ is untyped
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._outbox: EdgeOutbox | None = None
        self._ready = False

    def outbox(self) -> EdgeOutbox:
        """The outbox; its ``source`` is the object's name, stored with its state (the alarm
        after a restart has no request to learn it from)."""
        if self._outbox is None:
            rows = self._state().exec("SELECT name FROM demo_state WHERE id = 1").toArray()
            name = str(rows[0]["name"]) if len(rows) else None
            self._outbox = outbox_from_env(self.ctx, self.env, source=name)
        return self._outbox

    def _state(self) -> Any:
        sql = self.ctx.storage.sql
        if not self._ready:
            sql.exec(
                "CREATE TABLE IF NOT EXISTS demo_state"
                " (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, n INTEGER NOT NULL)"
            )
            self._ready = True
        return sql

    @rpc_method
    async def record(self, name: object, topic: object, payload: object) -> dict[str, Any]:
        """The object's state change and its outbox entry, in one transaction."""
        if not isinstance(name, str) or not isinstance(topic, str):
            raise InvalidInput("name and topic must be strings")
        sql = self._state()
        if not len(sql.exec("SELECT 1 AS x FROM demo_state").toArray()):
            sql.exec("INSERT INTO demo_state (id, name, n) VALUES (1, ?, 0)", name)
        outbox = self.outbox()
        result: dict[str, Any] = {}

        def write() -> None:
            n = int(sql.exec("UPDATE demo_state SET n = n + 1 WHERE id = 1 RETURNING n").one()["n"])
            body = {"n": n, "data": payload}
            result["event_id"] = outbox.add_sync(topic, f"{name}:{n}", body)
            result["n"] = n

        self.ctx.storage.transactionSync(write)
        await outbox.arm()
        return result

    @rpc_method
    async def status(self) -> dict[str, Any]:
        outbox = self.outbox()
        rows = self._state().exec("SELECT n FROM demo_state WHERE id = 1").toArray()
        return {
            "n": int(rows[0]["n"]) if len(rows) else 0,
            "pending": [
                {"seq": e.seq, "event_id": e.event_id, "attempts": e.attempts, "last_error": e.last_error}
                for e in outbox.pending()
            ],
            "dead": [
                {"seq": d.seq, "event_id": d.event_id, "attempts": d.attempts, "last_error": d.last_error}
                for d in outbox.dead_letters()
            ],
            "alarm": await self.ctx.storage.getAlarm(),
        }

    async def alarm(self, alarm_info: Any = None) -> None:
        report = await self.outbox().deliver()
        if report.last_error:
            print(f"outbox {self.outbox().source}: {report}")


def register(router: Router) -> None:
    def stub(rc: RouteContext) -> Any:
        if env_str(rc.env, OUTBOX_URL_VAR) is None:
            raise HttpError(404, f"the outbox demo is not configured ({OUTBOX_URL_VAR} is not set)")
        ns = rc.env.OUTBOX_DEMO
        return ns.get(ns.idFromName(rc.params["object"]))

    @router.route("POST", "/outbox/{object}/events")
    async def add_event(rc: RouteContext) -> Any:
        target = stub(rc)
        body = await read_json_object(rc.request)
        topic = body.get("topic", "demo.event")
        reply = await call_rpc(target, "record", rc.params["object"], topic, body.get("payload"))
        return json_response(dict(reply), status=201)

    @router.route("GET", "/outbox/{object}")
    async def outbox_status(rc: RouteContext) -> Any:
        reply = await call_rpc(stub(rc), "status")
        return json_response(dict(reply))
