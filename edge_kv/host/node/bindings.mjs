// KV and Cache API bindings for Python code, over Miniflare's Node-side proxies.
// Wrapper class names matter: the workers SDK recognises bindings by constructor name.
import { Request as MfRequest, Response as MfResponse } from "miniflare";

/** env.<KV binding>: forwards to Miniflare's KV namespace (real local KV, persisted). */
export class KvNamespace {
  constructor(proxy) {
    this._kv = proxy;
  }
  get(key, options) {
    return this._kv.get(key, plain(options));
  }
  getWithMetadata(key, options) {
    return this._kv.getWithMetadata(key, plain(options));
  }
  put(key, value, options) {
    return this._kv.put(key, value, plain(options));
  }
  delete(key) {
    return this._kv.delete(key);
  }
  list(options) {
    return this._kv.list(plain(options));
  }
}

function plain(options) {
  if (options === undefined || options === null || typeof options === "string") return options ?? undefined;
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined && v !== null));
}

function toMfRequest(request) {
  if (typeof request === "string" || request instanceof URL) return new MfRequest(String(request));
  return new MfRequest(request.url, { method: request.method, headers: [...request.headers] });
}

async function toMfResponse(response) {
  const body = response.body === null ? null : await response.arrayBuffer();
  return new MfResponse(body, { status: response.status, statusText: response.statusText, headers: [...response.headers] });
}

async function fromMfResponse(response) {
  if (!response) return undefined;
  const body = await response.arrayBuffer();
  return new Response(body.byteLength || ![204, 304].includes(response.status) ? body : null, {
    status: response.status,
    statusText: response.statusText,
    headers: [...response.headers],
  });
}

/** One cache (caches.default or caches.open(name)). */
export class Cache {
  constructor(proxy) {
    this._cache = proxy;
  }
  async match(request, options) {
    return await fromMfResponse(await this._cache.match(toMfRequest(request), plain(options)));
  }
  async put(request, response) {
    await this._cache.put(toMfRequest(request), await toMfResponse(response));
  }
  async delete(request, options) {
    return await this._cache.delete(toMfRequest(request), plain(options));
  }
}

/** The global `caches` the Worker sees. */
export class CacheStorage {
  constructor(proxy) {
    this._caches = proxy;
    this.default = new Cache(proxy.default);
    this._named = new Map();
  }
  async open(name) {
    if (!this._named.has(name)) this._named.set(name, new Cache(await this._caches.open(name)));
    return this._named.get(name);
  }
}
