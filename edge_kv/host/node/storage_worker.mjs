// Source of the JavaScript Worker that runs inside Miniflare (workerd) and holds the
// Durable Object storage of every Python Durable Object namespace.
//
// One SQLite-backed Miniflare Durable Object class per Python namespace (`Store_<BINDING>`),
// one storage object per Python object id (addressed with idFromName(<python id hex>)).
// The host talks to it over HTTP (JSON): POST /<BINDING>/<id>/<op>. Its real alarm()
// calls back into the host through the HOST service binding, so alarms are persisted by
// Miniflare and survive a host restart.

/** Build the module source for the given Durable Object binding names. */
export function storageWorkerSource(bindings) {
  const classes = bindings
    .map((b) => `export class Store_${b} extends Store {}`)
    .join("\n");
  return `${STORE_SOURCE}\n${classes}\n`;
}

const STORE_SOURCE = String.raw`
import { DurableObject } from "cloudflare:workers";

function listOptions(o) {
  const out = {};
  for (const k of ["start", "startAfter", "end", "prefix", "reverse", "limit"]) {
    if (o && o[k] !== undefined && o[k] !== null) out[k] = o[k];
  }
  return out;
}

export class Store extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS _edge_kv_host_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)");
  }

  remember(binding, id) {
    this.ctx.storage.sql.exec(
      "INSERT OR REPLACE INTO _edge_kv_host_meta (k, v) VALUES ('owner', ?)",
      JSON.stringify({ binding, id }));
  }

  async op(name, a) {
    const s = this.ctx.storage;
    switch (name) {
      case "get": {
        if (Array.isArray(a.key)) return Object.fromEntries(await s.get(a.key));
        const v = await s.get(a.key);
        return v === undefined ? { missing: true } : { value: v };
      }
      case "put":
        if (a.entries) await s.put(a.entries); else await s.put(a.key, a.value);
        return null;
      case "delete":
        return await s.delete(a.key);
      case "deleteAll":
        await s.deleteAll();
        return null;
      case "list":
        return [...(await s.list(listOptions(a.options)))];
      case "batch":
        // One atomic commit of a host-side transaction: deletes then puts.
        await s.transaction(async (txn) => {
          if (a.deletes.length) await txn.delete(a.deletes);
          if (a.puts.length) await txn.put(Object.fromEntries(a.puts));
        });
        return null;
      case "sql": {
        const cur = s.sql.exec(a.query, ...(a.bindings || []));
        const rows = [...cur.raw()];
        return { columns: cur.columnNames, rows, rowsRead: cur.rowsRead, rowsWritten: cur.rowsWritten };
      }
      case "setAlarm":
        await s.setAlarm(a.time);
        return null;
      case "getAlarm":
        return await s.getAlarm();
      case "deleteAlarm":
        await s.deleteAlarm();
        return null;
      default:
        throw new Error("unknown storage operation " + name);
    }
  }

  async fetch(request) {
    const url = new URL(request.url);
    const [, binding, id, name] = url.pathname.split("/");
    try {
      const args = await request.json();
      if (name === "setAlarm") this.remember(binding, id);
      return Response.json({ ok: true, result: await this.op(name, args) });
    } catch (e) {
      return Response.json({ ok: false, name: e.name || "Error", message: String(e.message || e) });
    }
  }

  async alarm(info) {
    const row = this.ctx.storage.sql
      .exec("SELECT v FROM _edge_kv_host_meta WHERE k = 'owner'").toArray()[0];
    if (!row) return;
    const owner = JSON.parse(row.v);
    const response = await this.env.HOST.fetch("http://host/alarm", {
      method: "POST",
      body: JSON.stringify({ ...owner, retryCount: info ? info.retryCount : 0 }),
    });
    if (!response.ok) throw new Error("alarm() failed: " + (await response.text()));
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const [, binding, id] = url.pathname.split("/");
    const ns = env["STORE_" + binding];
    if (!ns || !id) return Response.json({ ok: false, name: "Error", message: "bad storage path" }, { status: 404 });
    return ns.get(ns.idFromName(id)).fetch(request);
  },
};
`;
