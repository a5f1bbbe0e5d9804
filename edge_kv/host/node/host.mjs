// The offline Python Workers host: runs build/worker/ on Pyodide 314 with the real workers SDK,
// with every binding from Miniflare 4. See docs/host.md.
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, Response as MfResponse } from "miniflare";
import { loadPyodide } from "pyodide";
import { unstable_getVarsForDev, unstable_readConfig } from "wrangler";
import { CacheStorage, KvNamespace } from "./bindings.mjs";
import { TEST_CF_HEADER, defaultCf, parseTestCf } from "./cf.mjs";
import {
  DurableObjectNamespace,
  DurableObjectState,
  DurableObjectStorage,
  InputGate,
} from "./durable.mjs";
import { storageWorkerSource } from "./storage_worker.mjs";
import { hasRequestBody, requestBodyStream, writeResponse } from "./streams.mjs";
import { SyncChannel } from "./sync_channel.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Set by Host.handle on a Worker's Response: the AbortSignal of the runtime that made it. */
const RUNTIME_SIGNAL = Symbol("edge-kv runtime signal");
const ROOT = path.resolve(HERE, "..", "..");

/** An error that ends start-up with one line on stderr and exit code 1. */
export class HostError extends Error {}

/** Read wrangler.toml with wrangler's own reader; return what the host needs. */
export function readWorkerConfig(configPath) {
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
  for (const m of config.migrations || []) for (const c of m.new_sqlite_classes || []) sqliteClasses.add(c);
  const durableObjects = [];
  for (const b of config.durable_objects?.bindings || []) {
    if (b.script_name) throw new HostError(`bad config ${configPath}: Durable Object ${b.name} lives in another script (${b.script_name}); the host runs one Worker`);
    if (!sqliteClasses.has(b.class_name)) {
      throw new HostError(`bad config ${configPath}: Durable Object class ${b.class_name} needs a [[migrations]] new_sqlite_classes entry`);
    }
    durableObjects.push({ binding: b.name, className: b.class_name });
  }
  const vars = unstable_getVarsForDev(config.configPath ?? configPath, undefined, config.vars || {}, undefined, true);
  const plainVars = {};
  for (const [k, v] of Object.entries(vars)) plainVars[k] = v && typeof v === "object" && "value" in v ? v.value : v;
  return {
    main: config.main,
    flags: config.compatibility_flags || [],
    kv: (config.kv_namespaces || []).map((k) => k.binding),
    durableObjects,
    vars: plainVars,
  };
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
  constructor({ configPath, persist, inputGate = true, log = console }) {
    this.configPath = configPath;
    this.persist = persist;
    this.inputGate = inputGate;
    this.log = log;
    this.pending = new Set();
    this.instances = new Map();
    this.restarting = null;
    this.pythonRestarts = 0;
  }

  /** Read config, start Miniflare, load Pyodide and the Worker; throws HostError on a bad setup. */
  async start() {
    this.config = readWorkerConfig(this.configPath);
    const bindings = this.config.durableObjects.map((d) => d.binding);
    this.mf = new Miniflare({
      modules: true,
      script: storageWorkerSource(bindings),
      compatibilityDate: "2025-11-01",
      kvNamespaces: this.config.kv,
      kvPersist: path.join(this.persist, "kv"),
      cachePersist: path.join(this.persist, "cache"),
      durableObjectsPersist: path.join(this.persist, "do"),
      durableObjects: Object.fromEntries(
        bindings.map((b) => [`STORE_${b}`, { className: `Store_${b}`, useSQLite: true }]),
      ),
      serviceBindings: { HOST: (request) => this.onAlarmCallback(request) },
      host: "127.0.0.1",
      port: 0,
    });
    this.mfUrl = (await this.mf.ready).toString().replace(/\/$/, "");
    this.sync = new SyncChannel();
    const env = { ...this.config.vars };
    for (const b of this.config.kv) env[b] = new KvNamespace(await this.mf.getKVNamespace(b));
    for (const d of this.config.durableObjects) env[d.binding] = new DurableObjectNamespace(this, d.binding, d.className);
    this.env = env;
    globalThis.caches = new CacheStorage(await this.mf.getCaches());
    await this.loadPython();
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
    const py = await loadPyodide({
      indexURL: path.join(ROOT, "node_modules", "pyodide") + "/",
      stdout: (line) => this.log.log(line),
      stderr: (line) => this.log.error(line),
    });
    this.py = py;
    const wheel = path.join(ROOT, ".cache", "pyodide-wheels", "workers_runtime_sdk-1.9.5-py3-none-any.whl");
    let wheelBytes;
    try {
      wheelBytes = await readFile(wheel);
    } catch {
      throw new HostError(`missing ${path.relative(ROOT, wheel)}: run bash scripts/setup`);
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
    py.runPython("import sys; sys.path[:0] = ['/worker', '/sdk', '/host']");
    this.glue = py.pyimport("_edge_kv_host");
    try {
      this.entry = this.glue.import_entry(moduleName);
    } catch (e) {
      const detail = e.type ? `${this.glue.last_line(e.message)}` : String(e.message || e);
      throw new HostError(`Python exception while importing ${moduleName}.py: ${detail}`);
    }
    const problems = [this.glue.check_class(this.entry, "Default", "worker_entrypoint")];
    for (const d of this.config.durableObjects) problems.push(this.glue.check_class(this.entry, d.className, "durable_object"));
    const first = problems.find((p) => p);
    if (first) throw new HostError(`missing class: ${first}`);
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

  /** Call a Python method on an instance; a Python exception is logged and rethrown as `Error`. */
  async callPython(relaxed, instance, name, args, where) {
    const runtime = this.runtime;
    try {
      return await Promise.race([this.glue.call(relaxed, instance, name, ...args), runtime.died]);
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

  /** Serve one HTTP request through Default.fetch. */
  async handle(request) {
    if (this.restarting) await this.restarting;
    const runtime = this.runtime;
    const ctx = new ExecutionContext(this);
    const instance = this.glue.new_instance(this.entry, "Default", ctx, this.env);
    try {
      const response = await this.callPython(true, instance, "fetch", [request], "Default.fetch");
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
        instance.destroy();
      } catch {} // a runtime that crashed meanwhile
    }
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

  async onAlarmCallback(request) {
    if (this.restarting) await this.restarting;
    const { binding, id, retryCount } = await request.json();
    const d = this.config.durableObjects.find((x) => x.binding === binding);
    if (!d) return new MfResponse("unknown binding", { status: 404 });
    const object = this.objectFor(binding, { hex: id, toString: () => id });
    try {
      await object.gate.run(async () => {
        const instance = this.instanceOf(object);
        if (!this.glue.has_method(instance, "alarm")) return;
        const info = { retryCount, isRetry: retryCount > 0 };
        await this.callPython(true, instance, "alarm", [info], `${d.className}.alarm`);
      });
      return new MfResponse("ok");
    } catch (e) {
      return new MfResponse(String(e.message || e), { status: 500 });
    }
  }

  // storage client used by DurableObjectStorage
  async call(pathPart, op, args) {
    const r = await fetch(`${this.mfUrl}/${pathPart}/${op}`, { method: "POST", body: JSON.stringify(args) });
    return await r.json();
  }

  callSync(pathPart, op, args) {
    const r = this.sync.post(`${this.mfUrl}/${pathPart}/${op}`, JSON.stringify(args));
    return JSON.parse(r.text);
  }

  async close() {
    await this.drain();
    if (this.sync) await this.sync.close();
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
