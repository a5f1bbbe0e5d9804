// The offline Python Workers host: runs build/worker/ on Pyodide 314 with the real workers SDK,
// with every binding from Miniflare 4. See docs/host.md.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { CacheStorage, KvNamespace } from "./bindings.mjs";
import { TEST_CF_HEADER, defaultCf, parseTestCf } from "./cf.mjs";
import { parseCron, startCronScheduler } from "./cron.mjs";
import { bootPyodide } from "./pyodide_boot.mjs";
import {
  DurableObjectNamespace,
  DurableObjectState,
  DurableObjectStorage,
  InputGate,
} from "./durable.mjs";
import { StorageEngine } from "./sqlite_store.mjs";
import { hasRequestBody, requestBodyStream, writeResponse } from "./streams.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Set by Host.handle on a Worker's Response: the AbortSignal of the runtime that made it. */
const RUNTIME_SIGNAL = Symbol("edge-kv runtime signal");
/** The workers SDK wheel: --sdk-wheel, else the checkout's .cache/pyodide-wheels/ (scripts/setup). */
const DEFAULT_SDK_WHEEL = path.resolve(HERE, "..", "..", "..", ".cache", "pyodide-wheels", "workers_runtime_sdk-1.9.5-py3-none-any.whl");

/** An error that ends start-up with one line on stderr and exit code 1. */
export class HostError extends Error {}

/**
 * The host's view of the Worker config, cached in the persist directory under a hash of the
 * config file and the .dev.vars/.env files beside it: importing wrangler (whose reader is the
 * source of truth) alone costs ~1.9 s of start-up, so it is only imported when they change.
 */
export async function loadWorkerConfig(configPath, persist) {
  const dir = path.dirname(configPath);
  const hash = createHash("sha256").update(CONFIG_CACHE_VERSION).update(configPath);
  let names;
  try {
    hash.update(readFileSync(configPath));
    names = readdirSync(dir).filter((n) => n.startsWith(".dev.vars") || n.startsWith(".env")).sort();
  } catch {
    names = null; // a missing config: wrangler's reader says what is wrong
  }
  for (const n of names || []) {
    try {
      hash.update(`\0${n}\0`).update(readFileSync(path.join(dir, n)));
    } catch {} // a directory or unreadable file: not part of the config
  }
  const cacheFile = path.join(persist, "config-cache.json");
  const key = hash.digest("hex");
  if (names) {
    try {
      const cached = JSON.parse(readFileSync(cacheFile, "utf8"));
      if (cached.key === key) return cached.config;
    } catch {} // no cache yet, or unreadable: read the config
  }
  const wrangler = await import("wrangler");
  const config = readWorkerConfig(configPath, wrangler);
  try {
    writeFileSync(cacheFile, JSON.stringify({ key, config }));
  } catch {}
  return config;
}

const CONFIG_CACHE_VERSION = "edge-kv-config-v1";

/** Read wrangler.toml with wrangler's own reader; return what the host needs. */
export function readWorkerConfig(configPath, { unstable_readConfig, unstable_getVarsForDev }) {
  let config;
  try {
    config = unstable_readConfig({ config: configPath }, { hideWarnings: true });
  } catch (e) {
    throw new HostError(`bad config ${configPath}: ${String(e.message || e).split("\n").filter(Boolean).join(" ")}`);
  }
  if (!config.main) throw new HostError(`bad config ${configPath}: no "main" entry`);
  if (!config.main.endsWith(".py")) throw new HostError(`bad config ${configPath}: main ${config.main} is not a .py module`);
  if (!(config.compatibility_flags || []).includes("python_workers")) {
    throw new HostError(`bad config ${configPath}: compatibility_flags must include "python_workers"`);
  }
  const sqliteClasses = new Set();
  const kvClasses = new Set(); // new_classes: KV-backed objects (no ctx.storage.sql/kv)
  for (const m of config.migrations || []) for (const c of m.new_sqlite_classes || []) sqliteClasses.add(c);
  for (const m of config.migrations || []) for (const c of m.new_classes || []) kvClasses.add(c);
  const durableObjects = [];
  for (const b of config.durable_objects?.bindings || []) {
    if (b.script_name) throw new HostError(`bad config ${configPath}: Durable Object ${b.name} lives in another script (${b.script_name}); the host runs one Worker`);
    if (!sqliteClasses.has(b.class_name) && !kvClasses.has(b.class_name)) {
      throw new HostError(`bad config ${configPath}: Durable Object class ${b.class_name} needs a [[migrations]] new_sqlite_classes (or new_classes) entry`);
    }
    durableObjects.push({ binding: b.name, className: b.class_name, sqlite: sqliteClasses.has(b.class_name) });
  }
  const unsupported = unsupportedBindings(config);
  const crons = config.triggers?.crons || [];
  const vars = unstable_getVarsForDev(config.configPath ?? configPath, undefined, config.vars || {}, undefined, true);
  const plainVars = {};
  for (const [k, v] of Object.entries(vars)) plainVars[k] = v && typeof v === "object" && "value" in v ? v.value : v;
  return {
    main: config.main,
    flags: config.compatibility_flags || [],
    kv: (config.kv_namespaces || []).map((k) => k.binding),
    durableObjects,
    vars: plainVars,
    unsupported,
    crons,
  };
}

// wrangler config sections the host does not provide: [section, what it is, binding name field].
const UNSUPPORTED_SECTIONS = [
  ["d1_databases", "D1 database", "binding"],
  ["r2_buckets", "R2 bucket", "binding"],
  ["services", "service binding", "binding"],
  ["queues.producers", "Queue producer", "binding"],
  ["queues.consumers", "Queue consumer", "queue"],
  ["workflows", "Workflow", "binding"],
  ["worker_loaders", "worker loader", "binding"],
  ["vectorize", "Vectorize index", "binding"],
  ["hyperdrive", "Hyperdrive config", "binding"],
  ["analytics_engine_datasets", "Analytics Engine dataset", "binding"],
  ["dispatch_namespaces", "dispatch namespace", "binding"],
  ["mtls_certificates", "mTLS certificate", "binding"],
  ["send_email", "send_email binding", "name"],
  ["secrets_store_secrets", "Secrets Store secret", "binding"],
  ["pipelines", "Pipeline", "binding"],
  ["ratelimits", "rate limiting binding", "name"],
  ["vpc_services", "VPC service", "binding"],
  ["ai_search_namespaces", "AI Search namespace", "binding"],
  ["tail_consumers", "tail consumer", "service"],
  ["unsafe.bindings", "unsafe binding", "name"],
];
const UNSUPPORTED_SINGLE = [
  ["ai", "Workers AI binding"],
  ["browser", "Browser Rendering binding"],
  ["images", "Images binding"],
  ["version_metadata", "version metadata binding"],
  ["assets", "static assets"],
  ["media", "Media binding"],
  ["stream", "Stream binding"],
];

/**
 * Bindings and config the host does not provide, as [{binding, what, section}] (binding may be
 * null for config that binds no name, e.g. assets without a binding or a queue consumer).
 */
export function unsupportedBindings(config) {
  const out = [];
  for (const [section, what, field] of UNSUPPORTED_SECTIONS) {
    const value = section.split(".").reduce((o, k) => (o ? o[k] : undefined), config);
    if (!Array.isArray(value)) continue;
    for (const entry of value) out.push({ binding: field === "binding" || field === "name" ? entry?.[field] ?? null : null, what, section, label: entry?.[field] });
  }
  for (const [section, what] of UNSUPPORTED_SINGLE) {
    const value = config[section];
    if (value && typeof value === "object" && Object.keys(value).length) out.push({ binding: value.binding ?? null, what, section });
  }
  return out;
}

/** Make env.<binding> raise a clear error for a binding the host does not provide. */
function defineUnsupported(env, { binding, what, section }) {
  if (!binding || binding in env) return;
  Object.defineProperty(env, binding, {
    enumerable: true,
    get() {
      throw new Error(
        `the offline host does not provide the ${what} "${binding}" (${section} in the wrangler config); ` +
          "test this code under `wrangler dev` online or pass a stand-in to it in tests (docs/host.md)",
      );
    },
  });
}

/**
 * After an import error: the one-line advice when the missing module is a binary package
 * that only exists as a Pyodide build (Pyodide's CDN is out of reach offline).
 */
function binaryHint(detail) {
  const m = /The module '([^']+)' is included in the Pyodide distribution/.exec(detail);
  if (!m) return "";
  return `; hint: ${m[1]} is a binary package built for Pyodide; the offline host cannot download it (Pyodide's package CDN is unreachable offline): use a pure-Python alternative, or run this Worker under \`pywrangler dev\` online`;
}

/** The `instance` argument of Host.callPython for a legacy module-level handler. */
const LEGACY = Symbol("legacy module-level handler");

/** The controller a scheduled handler receives (workerd's ScheduledController). */
class ScheduledController {
  constructor(cron, scheduledTime) {
    this.cron = cron;
    this.scheduledTime = scheduledTime;
    this.type = "scheduled";
  }
  noRetry() {}
}

/** ExecutionContext of one Default.fetch call. */
class ExecutionContext {
  constructor(host) {
    this._host = host;
    this.props = {};
  }
  waitUntil(awaitable) {
    this._host.waitUntil(awaitable);
  }
  passThroughOnException() {}
}

function problemResponse(status, title, detail) {
  return new Response(JSON.stringify({ type: "about:blank", title, status, detail }), {
    status,
    headers: { "content-type": "application/problem+json" },
  });
}

export class Host {
  constructor({ configPath, persist, inputGate = true, log = console, sdkWheel = null, pythonPath = [], testScheduled = false }) {
    this.configPath = configPath;
    this.pythonPath = pythonPath;
    this.testScheduled = testScheduled;
    this.sdkWheel = sdkWheel;
    this.persist = persist;
    this.inputGate = inputGate;
    this.log = log;
    this.pending = new Set();
    this.instances = new Map();
    this.restarting = null;
    this.pythonRestarts = 0;
  }

  /** Read config, start Miniflare, load Pyodide and the Worker; throws HostError on a bad setup. */
  /** A fresh Pyodide (from the shared memory snapshot when there is one: pyodide_boot.mjs). */
  bootPyodide() {
    return bootPyodide({ stdout: (line) => this.log.log(line), stderr: (line) => this.log.error(line), log: this.log });
  }

  async start() {
    // Pyodide boots while the config is read and Miniflare starts (independent; all take a while).
    this.booting = this.bootPyodide();
    this.booting.catch(() => {}); // awaited in loadPython; a failure there ends start-up
    this.config = await loadWorkerConfig(this.configPath, this.persist);
    this.mf = new Miniflare({
      modules: true,
      // Miniflare gives KV and the Cache API; Durable Object storage is in-process (sqlite_store.mjs).
      script: "export default { fetch() { return new Response(null, { status: 404 }); } };",
      compatibilityDate: "2025-11-01",
      kvNamespaces: this.config.kv,
      kvPersist: path.join(this.persist, "kv"),
      cachePersist: path.join(this.persist, "cache"),
      host: "127.0.0.1",
      port: 0,
    });
    await this.mf.ready;
    this.storage = new StorageEngine({
      dir: path.join(this.persist, "do"),
      classes: Object.fromEntries(this.config.durableObjects.map((d) => [d.binding, { sqlite: d.sqlite }])),
      runAlarm: (binding, hex, info) => this.runAlarm(binding, hex, info),
      log: this.log,
    });
    const env = { ...this.config.vars };
    for (const b of this.config.kv) env[b] = new KvNamespace(await this.mf.getKVNamespace(b));
    for (const d of this.config.durableObjects) env[d.binding] = new DurableObjectNamespace(this, d.binding, d.className);
    for (const u of this.config.unsupported) {
      defineUnsupported(env, u);
      const name = u.binding || u.label;
      this.log.error(`edge-kv host: warning: ${u.section}${name ? ` ${name}` : ""}: not provided by the offline host (${u.what})` +
        (u.binding ? `; env.${u.binding} raises an error saying so` : ""));
    }
    this.env = env;
    globalThis.caches = new CacheStorage(await this.mf.getCaches());
    await this.loadPython();
    this.storage.start(); // alarms stored by an earlier run are due again
    this.startCrons();
  }

  /**
   * The Python runtime died (a fatal Pyodide error, e.g. a wasm stack overflow in deeply
   * recursive code): every later call into it would hang. Replace it, as Cloudflare replaces a
   * crashed isolate: calls in flight fail (their requests get a 500), Durable Object instances
   * and module globals start afresh, storage is kept. Requests arriving meanwhile wait for it.
   * A fatal error surfaces as a rejection nobody awaits (the call that caused it never settles):
   * the process's 'unhandledRejection' handler (main.mjs) passes it here.
   */
  onPythonFatal(error) {
    if (this.restarting || !this.runtime) return;
    const cause = String(error?.message || error).split("\n")[0];
    this.log.error(
      `edge-kv host: the Python runtime crashed (${cause}); restarting it: requests in flight fail with 500, ` +
        "Durable Object instances and module globals start afresh (storage is kept)",
    );
    const dead = new Error(`the Python runtime crashed: ${cause}`);
    dead.pythonFatal = true;
    this.runtime.controller.abort(dead);
    this.instances = new Map();
    this.pythonRestarts += 1;
    this.restarting = (async () => {
      try {
        await this.loadPython();
        this.log.error("edge-kv host: Python runtime restarted");
      } catch (e) {
        this.log.error(`edge-kv host: error: restarting the Python runtime failed: ${e.message || e}`);
        process.exit(1);
      } finally {
        this.restarting = null;
      }
    })();
  }

  async loadPython() {
    const controller = new AbortController();
    const died = new Promise((_, reject) => {
      controller.signal.addEventListener("abort", () => reject(controller.signal.reason), { once: true });
    });
    died.catch(() => {});
    this.runtime = { controller, signal: controller.signal, died };
    const workerDir = path.dirname(this.config.main);
    const moduleName = path.basename(this.config.main, ".py");
    const booting = this.booting || this.bootPyodide();
    this.booting = null;
    const { py, snapshot } = await booting;
    this.snapshot = snapshot;
    this.py = py;
    const wheel = this.sdkWheel || DEFAULT_SDK_WHEEL;
    let wheelBytes;
    try {
      wheelBytes = await readFile(wheel);
    } catch {
      throw new HostError(`missing the workers SDK wheel ${wheel}: run \`edge-kv dev\` (it fetches it) or bash scripts/setup`);
    }
    py.unpackArchive(new Uint8Array(wheelBytes), "wheel", { extractDir: "/sdk" });
    py.FS.mkdirTree("/worker");
    py.FS.mount(py.FS.filesystems.NODEFS, { root: workerDir }, "/worker");
    py.FS.mkdirTree("/host");
    py.FS.writeFile("/host/_edge_kv_host.py", new Uint8Array(await readFile(path.join(HERE, "host_glue.py"))));
    const flags = Object.fromEntries(this.config.flags.map((f) => [f, true]));
    py.registerJsModule("_cloudflare_compat_flags", flags);
    const host = this;
    const workersModule = {
      env: this.env,
      waitUntil: (p) => host.waitUntil(p),
    };
    py.registerJsModule("_pyodide_entrypoint_helper", {
      cloudflareWorkersModule: workersModule,
      cloudflareSocketsModule: {},
      doAnImport: async (name) => {
        if (name === "cloudflare:workers") return workersModule;
        throw new Error(`the offline host cannot import JavaScript module ${name}`);
      },
      patchWaitUntil: () => {},
      patch_env_helper: () => {
        throw new Error("workers.patch_env is not supported by the offline host");
      },
    });
    // The Worker's dependencies (python_modules/, pyproject.toml dependencies resolved by
    // `edge-kv dev`): each directory mounted read-only under /deps<N>, after the Worker itself.
    const depPaths = this.pythonPath.map((dir, i) => {
      const mount = `/deps${i}`;
      py.FS.mkdirTree(mount);
      py.FS.mount(py.FS.filesystems.NODEFS, { root: dir }, mount);
      return mount;
    });
    py.globals.set("_edge_kv_paths", py.toPy(["/worker", ...depPaths, "/sdk", "/host"]));
    py.runPython("import sys; sys.path[:0] = _edge_kv_paths; del _edge_kv_paths");
    this.glue = py.pyimport("_edge_kv_host");
    try {
      this.entry = this.glue.import_entry(moduleName);
    } catch (e) {
      const detail = e.type ? this.glue.describe_exception(e.message) : String(e.message || e);
      throw new HostError(`Python exception while importing ${moduleName}.py: ${this.hostPaths(detail, workerDir)}${binaryHint(detail)}`);
    }
    const noDefault = this.glue.check_class(this.entry, "Default", "worker_entrypoint");
    // A Worker without `class Default` may use the legacy module-level handlers (on_fetch, ...).
    this.legacy = Boolean(noDefault) && noDefault.includes("is not defined") && this.glue.has_legacy_handler(this.entry, "on_fetch");
    const problems = [this.legacy ? "" : noDefault];
    for (const d of this.config.durableObjects) problems.push(this.glue.check_class(this.entry, d.className, "durable_object"));
    const first = problems.find((p) => p);
    if (first) {
      const hint = first === noDefault ? "; a Worker needs `class Default(WorkerEntrypoint)` with `async def fetch(self, request)` (or the legacy `async def on_fetch(request, env)`)" : "";
      throw new HostError(`missing class: ${first}${hint}`);
    }
  }

  /** Python paths in a message (/worker/..., /deps0/...) as the files on this machine. */
  hostPaths(text, workerDir) {
    let out = text.replaceAll("/worker/", `${workerDir}/`);
    this.pythonPath.forEach((dir, i) => (out = out.replaceAll(`/deps${i}/`, `${dir}/`)));
    return out;
  }

  /** Track work passed to ctx.waitUntil: it runs after the response and before shutdown. */
  waitUntil(awaitable) {
    let owned = awaitable;
    if (owned && typeof owned.copy === "function") owned = owned.copy();
    const died = this.runtime.died;
    const done = (async () => {
      try {
        await Promise.race([owned, died]);
      } catch (e) {
        this.log.error(`waitUntil task failed: ${e.message || e}`);
      } finally {
        try {
          if (owned && typeof owned.destroy === "function") owned.destroy();
        } catch {} // a runtime that crashed meanwhile
      }
    })();
    this.pending.add(done);
    done.finally(() => this.pending.delete(done));
  }

  async drain() {
    while (this.pending.size) await Promise.allSettled([...this.pending]);
  }

  /**
   * Call a Python method on an instance (or, with instance LEGACY, the module-level legacy
   * handler `name`); a Python exception is logged and rethrown as `Error`.
   */
  async callPython(relaxed, instance, name, args, where) {
    const runtime = this.runtime;
    try {
      const call = instance === LEGACY ? this.glue.call_legacy(this.entry, name, ...args) : this.glue.call(relaxed, instance, name, ...args);
      return await Promise.race([call, runtime.died]);
    } catch (e) {
      if (e?.pyodide_fatal_error) {
        this.onPythonFatal(e);
        throw runtime.signal.reason;
      }
      if (e && e.type && !e.pythonFatal) {
        this.log.error(`Unhandled Python exception in ${where}:\n${e.message}`);
        const error = new Error(this.glue.last_line(e.message));
        error.pythonType = e.type;
        throw error;
      }
      throw e;
    }
  }

  /** Serve one HTTP request through Default.fetch (or the legacy on_fetch). */
  async handle(request) {
    if (this.testScheduled) {
      const answer = await this.testRoute(request);
      if (answer) return answer;
    }
    if (this.restarting) await this.restarting;
    const runtime = this.runtime;
    const ctx = new ExecutionContext(this);
    const instance = this.legacy ? LEGACY : this.glue.new_instance(this.entry, "Default", ctx, this.env);
    try {
      const response = this.legacy
        ? await this.callPython(true, LEGACY, "on_fetch", [request, this.env, ctx], "on_fetch")
        : await this.callPython(true, instance, "fetch", [request], "Default.fetch");
      if (!(response instanceof Response)) {
        this.log.error("Default.fetch did not return a Response");
        return problemResponse(500, "Internal Server Error", "The Worker did not return a response.");
      }
      // A body still produced by Python stops if this runtime dies (writeResponse watches it).
      response[RUNTIME_SIGNAL] = runtime.signal;
      return response;
    } catch (e) {
      if (e.pythonFatal) {
        return problemResponse(500, "Internal Server Error", "The Worker's Python runtime crashed (see the host log); the host restarted it.");
      }
      if (!e.pythonType) this.log.error(`host error in Default.fetch: ${e.stack || e}`);
      return problemResponse(500, "Internal Server Error", "The Worker raised an unhandled exception.");
    } finally {
      try {
        if (instance !== LEGACY) instance.destroy();
      } catch {} // a runtime that crashed meanwhile
    }
  }

  // ----- Cron Triggers -----

  /**
   * Run the Worker's scheduled handler once, as a Cron Trigger would: Default.scheduled
   * (controller, env, ctx) or the legacy on_scheduled(controller, env, ctx). Resolves with
   * {outcome: "ok"} or {outcome: "exception", error}; throws HostError if there is no handler.
   */
  async scheduled(cron = "", scheduledTime = Date.now()) {
    if (this.restarting) await this.restarting;
    const ctx = new ExecutionContext(this);
    const controller = new ScheduledController(cron, scheduledTime);
    if (this.legacy) {
      if (!this.glue.has_legacy_handler(this.entry, "on_scheduled")) throw new HostError("the Worker has no on_scheduled() handler");
      return await this.runScheduled(() => this.callPython(true, LEGACY, "on_scheduled", [controller, this.env, ctx], "on_scheduled"));
    }
    const instance = this.glue.new_instance(this.entry, "Default", ctx, this.env);
    try {
      if (!this.glue.has_method(instance, "scheduled")) throw new HostError("Default has no scheduled() handler");
      return await this.runScheduled(() => this.callPython(true, instance, "scheduled", [controller, this.env, ctx], "Default.scheduled"));
    } finally {
      try {
        instance.destroy();
      } catch {}
    }
  }

  async runScheduled(call) {
    try {
      await call();
      return { outcome: "ok" };
    } catch (e) {
      return { outcome: "exception", error: String(e.message || e) };
    }
  }

  startCrons() {
    const parsed = [];
    for (const expr of this.config.crons) {
      try {
        parsed.push(parseCron(expr));
      } catch (e) {
        this.log.error(`edge-kv host: warning: ${e.message}: this trigger will not run`);
      }
    }
    this.crons = startCronScheduler(parsed, (expr, time) => {
      const run = this.scheduled(expr, time).then(
        (r) => r.outcome !== "ok" && this.log.error(`edge-kv host: scheduled "${expr}" failed: ${r.error}`),
        (e) => this.log.error(`edge-kv host: scheduled "${expr}": ${e.message || e}`),
      );
      this.pending.add(run);
      run.finally(() => this.pending.delete(run));
    });
  }

  /**
   * The test routes (only with --test-scheduled, as `wrangler dev --test-scheduled`):
   * GET /__scheduled?cron=...&time=ms and /cdn-cgi/handler/scheduled run the scheduled
   * handler now; /cdn-cgi/handler/alarm?binding=B&name=N (or &id=hex) runs a Durable
   * Object's alarm() now. Anything else: null (the Worker answers).
   */
  async testRoute(request) {
    const url = new URL(request.url);
    if (url.pathname === "/__scheduled" || url.pathname === "/cdn-cgi/handler/scheduled") {
      const time = url.searchParams.has("time") ? Number(url.searchParams.get("time")) : Date.now();
      if (!Number.isFinite(time)) return problemResponse(400, "Bad Request", "time must be milliseconds since the epoch");
      let result;
      try {
        result = await this.scheduled(url.searchParams.get("cron") ?? "", time);
      } catch (e) {
        if (e instanceof HostError) return problemResponse(404, "Not Found", e.message);
        throw e;
      }
      if (result.outcome === "ok") return new Response("Ran scheduled event", { headers: { "content-type": "text/plain" } });
      return problemResponse(500, "Internal Server Error", `scheduled() raised: ${result.error}`);
    }
    if (url.pathname === "/cdn-cgi/handler/alarm") {
      const binding = url.searchParams.get("binding");
      const d = this.config.durableObjects.find((x) => x.binding === binding);
      if (!d) return problemResponse(404, "Not Found", `no Durable Object binding ${JSON.stringify(binding)}`);
      const ns = this.env[binding];
      let id;
      try {
        id = url.searchParams.has("id") ? ns.idFromString(url.searchParams.get("id")) : ns.idFromName(url.searchParams.get("name") ?? "");
      } catch (e) {
        return problemResponse(400, "Bad Request", e.message);
      }
      let ran;
      try {
        ran = await this.runAlarm(binding, id.hex, { retryCount: 0, isRetry: false });
      } catch (e) {
        return problemResponse(500, "Internal Server Error", `alarm() raised: ${e.message || e}`);
      }
      if (!ran) return problemResponse(404, "Not Found", `${d.className} has no alarm() handler`);
      return new Response("Ran alarm", { headers: { "content-type": "text/plain" } });
    }
    return null;
  }

  // ----- Durable Objects -----

  objectFor(binding, id) {
    const key = `${binding}/${id.hex}`;
    let object = this.instances.get(key);
    if (!object) {
      const className = this.config.durableObjects.find((d) => d.binding === binding).className;
      const storage = new DurableObjectStorage(this, binding, id.hex);
      const gate = new InputGate(this.inputGate);
      object = { key, gate, className, instance: null, state: new DurableObjectState(id, storage, gate, this) };
      object.state._key = key;
      this.instances.set(key, object);
    }
    return object;
  }

  instanceOf(object) {
    if (!object.instance) {
      object.instance = this.glue.new_instance(this.entry, object.className, object.state, this.env);
    }
    return object.instance;
  }

  evict(key) {
    const object = this.instances.get(key);
    this.instances.delete(key);
    if (object?.instance) object.instance.destroy();
  }

  async doFetch(binding, id, request) {
    if (this.restarting) await this.restarting;
    const object = this.objectFor(binding, id);
    return await object.gate.run(async () => {
      const instance = this.instanceOf(object);
      if (!this.glue.has_method(instance, "fetch")) throw new TypeError(`${object.className} has no fetch() handler`);
      return await this.callPython(true, instance, "fetch", [request], `${object.className}.fetch`);
    });
  }

  async doRpc(binding, id, method, args) {
    if (this.restarting) await this.restarting;
    const object = this.objectFor(binding, id);
    let cloned;
    try {
      cloned = structuredClone(args);
    } catch (e) {
      throw new TypeError(`cannot send the arguments of ${method}() over RPC: ${e.message}`);
    }
    return await object.gate.run(async () => {
      const instance = this.instanceOf(object);
      if (["fetch", "alarm", "constructor"].includes(method) || !this.glue.has_method(instance, method)) {
        throw new TypeError(`The RPC receiver does not implement the method "${method}".`);
      }
      return await this.callPython(false, instance, method, cloned, `${object.className}.${method}`);
    });
  }

  /** A due alarm (sqlite_store.mjs scheduler): alarm() through the gate; rejects if it raised. */
  /** Run one object's alarm() through its input gate; false if its class has none. */
  async runAlarm(binding, hex, info) {
    if (this.restarting) await this.restarting;
    const d = this.config.durableObjects.find((x) => x.binding === binding);
    const object = this.objectFor(binding, this.env[binding].idFromString(hex));
    return await object.gate.run(async () => {
      const instance = this.instanceOf(object);
      if (!this.glue.has_method(instance, "alarm")) return false;
      await this.callPython(true, instance, "alarm", [info], `${d.className}.alarm`);
      return true;
    });
  }

  /** The storage of one object (used by DurableObjectStorage). */
  openStorage(binding, hex) {
    return this.storage.open(binding, hex);
  }

  async close() {
    this.crons?.stop();
    await this.drain();
    this.storage?.close();
    if (this.mf) await this.mf.dispose();
  }
}

/**
 * Node http request -> fetch Request with cf; throws Error(message) for a bad test header.
 * `body` is a ReadableStream (streamed into the Worker as it arrives), a Buffer, or null.
 */
export function toFetchRequest(req, body, port) {
  const headers = new Headers();
  let cf = defaultCf();
  let connectingIp = req.socket.remoteAddress?.replace(/^::ffff:/, "") || "127.0.0.1";
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i];
    const lower = name.toLowerCase();
    if (lower === TEST_CF_HEADER) {
      const parsed = parseTestCf(req.rawHeaders[i + 1]);
      cf = parsed.cf;
      if (parsed.connectingIp) connectingIp = parsed.connectingIp;
      continue;
    }
    if (lower === "cf-connecting-ip" || lower === "host" || lower === "connection" || lower === "transfer-encoding") continue;
    headers.append(name, req.rawHeaders[i + 1]);
  }
  headers.set("cf-connecting-ip", connectingIp);
  headers.set("host", req.headers.host || `127.0.0.1:${port}`);
  const url = `http://${req.headers.host || `127.0.0.1:${port}`}${req.url}`;
  const hasBody = !["GET", "HEAD"].includes(req.method) && body !== null && body !== undefined && body.length !== 0;
  const init = { method: req.method, headers, body: hasBody ? body : undefined };
  if (hasBody && body instanceof ReadableStream) init.duplex = "half";
  const request = new Request(url, init);
  Object.defineProperty(request, "cf", { value: cf, enumerable: true });
  return request;
}

/** Limits of the HTTP server; every one is a CLI flag of main.mjs (docs/host.md). */
export const SERVER_DEFAULTS = Object.freeze({
  headersTimeoutMs: 10_000, // the whole request head must arrive within this (else 408, close)
  requestTimeoutMs: 60_000, // the whole request, head and body, must arrive within this (else 408, close)
  keepAliveTimeoutMs: 5_000, // an idle keep-alive connection is closed after this
  writeTimeoutMs: 30_000, // a client that reads nothing of the response for this long is disconnected
  maxHeaderBytes: 16_384, // request line + headers larger than this: 431
});

const STATUS_TITLES = {
  400: "Bad Request",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
};

/** A complete HTTP/1.1 problem response that closes the connection, for a raw socket. */
function rawProblem(status, detail) {
  const body = JSON.stringify({ type: "about:blank", title: STATUS_TITLES[status], status, detail });
  return (
    `HTTP/1.1 ${status} ${STATUS_TITLES[status]}\r\n` +
    "Content-Type: application/problem+json\r\n" +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    "Connection: close\r\n\r\n" +
    body
  );
}

/** Send `text` and close, draining what the client still sends so it can read the answer. */
function answerAndClose(socket, text) {
  socket.on("error", () => {});
  if (socket.writable) socket.end(text);
  socket.resume();
  setTimeout(() => socket.destroy(), 2000).unref();
}

const CLIENT_ERRORS = {
  HPE_HEADER_OVERFLOW: [431, "the request line and headers are larger than the host accepts (--max-header-bytes)"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "the request did not arrive in time (--headers-timeout-ms / --request-timeout-ms)"],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, "chunk extensions are too large"],
};

/** Serve `host` on 127.0.0.1:port; resolves with the http.Server once listening. */
export function serve(host, port, hostname = "127.0.0.1", options = {}) {
  const limits = { ...SERVER_DEFAULTS, ...options };
  const log = host.log;
  const timeouts = [limits.headersTimeoutMs, limits.requestTimeoutMs].filter((t) => t > 0);
  const server = http.createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    maxHeaderSize: limits.maxHeaderBytes,
    // How often Node checks those two timeouts (its default, 30 s, would make them coarse).
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(Math.min(4000, ...timeouts) / 4))),
  });
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;

  async function respond(req, res) {
    let response;
    let body = null;
    try {
      if (hasRequestBody(req)) body = requestBodyStream(req);
      let request;
      try {
        request = toFetchRequest(req, body ? body.stream : null, server.address().port);
      } catch (e) {
        response = problemResponse(400, "Bad Request", e.message);
      }
      if (!response) response = await host.handle(request);
    } catch (e) {
      log.error(`host error: ${e.stack || e}`);
      response = problemResponse(500, "Internal Server Error", "The host failed to handle the request.");
    }
    // A body the Worker did not read is drained once the response is out, so the connection
    // can carry the next request.
    if (body) res.once("finish", () => body.discard());
    const signal = response[RUNTIME_SIGNAL];
    await writeResponse(req, res, response, { writeTimeoutMs: limits.writeTimeoutMs, log, signal });
  }

  // Requests pipelined on one connection run one after the other, in order (RFC 9112 9.3.2:
  // only safe methods may be processed in parallel); Node already sends responses in order.
  const queues = new WeakMap();
  server.on("request", (req, res) => {
    res.on("error", (e) => log.error(`edge-kv host: ${req.method} ${req.url}: response error: ${e.message}`));
    req.on("error", () => {}); // an aborted body is reported through the body stream
    const socket = req.socket;
    const previous = queues.get(socket) || Promise.resolve();
    const current = previous.then(async () => {
      try {
        await respond(req, res);
      } catch (e) {
        log.error(`edge-kv host: ${req.method} ${req.url}: ${e.stack || e}`);
        res.destroy();
      }
    });
    queues.set(socket, current);
  });

  const answered = new WeakSet();
  server.on("clientError", (err, socket) => {
    if (answered.has(socket)) return;
    answered.add(socket);
    const [status, detail] = CLIENT_ERRORS[err.code] || [400, `malformed request (${err.code || err.message})`];
    if (["ECONNRESET", "EPIPE", "HPE_INVALID_EOF_STATE"].includes(err.code)) {
      socket.destroy(); // the client left (mid-body: the Worker's body stream reports it)
      return;
    }
    log.error(`edge-kv host: client error from ${socket.remoteAddress}: ${status} ${err.code || ""} ${err.message}`);
    const inFlight = socket._httpMessage; // a response already started: no room for another one
    if (socket.writable && (!inFlight || !inFlight.headersSent)) answerAndClose(socket, rawProblem(status, detail));
    else socket.destroy();
  });

  // CONNECT is a proxy request: no Worker handles it (workerd has no connect handler for them).
  server.on("connect", (req, socket) => {
    log.error(`edge-kv host: refused CONNECT ${req.url}`);
    answerAndClose(socket, rawProblem(501, "the offline host does not open CONNECT tunnels"));
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, hostname, () => resolve(server));
  });
}
