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
import { SyncChannel } from "./sync_channel.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
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

  async loadPython() {
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
    const done = (async () => {
      try {
        await owned;
      } catch (e) {
        this.log.error(`waitUntil task failed: ${e.message || e}`);
      } finally {
        if (owned && typeof owned.destroy === "function") owned.destroy();
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
    try {
      return await this.glue.call(relaxed, instance, name, ...args);
    } catch (e) {
      if (e && e.type) {
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
    const ctx = new ExecutionContext(this);
    const instance = this.glue.new_instance(this.entry, "Default", ctx, this.env);
    try {
      const response = await this.callPython(true, instance, "fetch", [request], "Default.fetch");
      if (!(response instanceof Response)) {
        this.log.error("Default.fetch did not return a Response");
        return problemResponse(500, "Internal Server Error", "The Worker did not return a response.");
      }
      return response;
    } catch (e) {
      if (!e.pythonType) this.log.error(`host error in Default.fetch: ${e.stack || e}`);
      return problemResponse(500, "Internal Server Error", "The Worker raised an unhandled exception.");
    } finally {
      instance.destroy();
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
    const object = this.objectFor(binding, id);
    return await object.gate.run(async () => {
      const instance = this.instanceOf(object);
      if (!this.glue.has_method(instance, "fetch")) throw new TypeError(`${object.className} has no fetch() handler`);
      return await this.callPython(true, instance, "fetch", [request], `${object.className}.fetch`);
    });
  }

  async doRpc(binding, id, method, args) {
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

/** Node http request -> fetch Request with cf; throws Error(message) for a bad test header. */
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
  const hasBody = !["GET", "HEAD"].includes(req.method) && body.length > 0;
  const request = new Request(url, { method: req.method, headers, body: hasBody ? body : undefined });
  Object.defineProperty(request, "cf", { value: cf, enumerable: true });
  return request;
}

/** Serve `host` on 127.0.0.1:port; resolves with the http.Server once listening. */
export function serve(host, port, hostname = "127.0.0.1") {
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    let response;
    try {
      let request;
      try {
        request = toFetchRequest(req, Buffer.concat(chunks), server.address().port);
      } catch (e) {
        response = problemResponse(400, "Bad Request", e.message);
      }
      if (!response) response = await host.handle(request);
    } catch (e) {
      host.log.error(`host error: ${e.stack || e}`);
      response = problemResponse(500, "Internal Server Error", "The host failed to handle the request.");
    }
    const headers = {};
    for (const [k, v] of response.headers) {
      if (k === "set-cookie") continue;
      headers[k] = v;
    }
    const cookies = response.headers.getSetCookie?.() || [];
    if (cookies.length) headers["set-cookie"] = cookies;
    const body = req.method === "HEAD" || response.body === null ? null : Buffer.from(await response.arrayBuffer());
    res.writeHead(response.status, response.statusText || undefined, headers);
    res.end(body);
  });
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, hostname, () => resolve(server));
  });
}
