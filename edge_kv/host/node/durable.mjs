// Durable Objects for Python classes: namespaces, ids, stubs, instances with an input gate,
// and ctx.storage backed by a SQLite-backed Miniflare Durable Object (storage_worker.mjs).
import { createHash, randomBytes } from "node:crypto";

const HEX64 = /^[0-9a-f]{64}$/;

// Class names matter: the workers SDK recognises bindings by constructor name.
export class DurableObjectId {
  constructor(hex, name) {
    this.hex = hex;
    if (name !== undefined) this.name = name;
  }
  toString() {
    return this.hex;
  }
  equals(other) {
    return other instanceof DurableObjectId && other.hex === this.hex;
  }
}

/**
 * The input gate of one object: events (fetch, RPC, alarm) run one at a time, in arrival
 * order, after any blockConcurrencyWhile() callbacks. Disabled only by --no-input-gate.
 */
export class InputGate {
  constructor(enabled) {
    this.enabled = enabled;
    this.tail = Promise.resolve();
    this.blockers = [];
  }
  async run(fn) {
    if (!this.enabled) {
      await this.drainBlockers();
      return fn();
    }
    const previous = this.tail;
    let release;
    this.tail = new Promise((resolve) => (release = resolve));
    try {
      await previous;
      await this.drainBlockers();
      return await fn();
    } finally {
      release();
    }
  }
  async drainBlockers() {
    while (this.blockers.length) {
      const pending = this.blockers.splice(0);
      await Promise.allSettled(pending);
    }
  }
}

function storageError(reply) {
  const error = new Error(reply.message);
  error.name = reply.name || "Error";
  return error;
}

/** A JS value to JSON and back: what the storage round trip keeps (plain data only). */
function checkStorable(value) {
  if (value === undefined) throw new TypeError("storage value must not be undefined");
  try {
    return JSON.parse(JSON.stringify(value));
  } catch (e) {
    throw new TypeError(`storage value is not serialisable: ${e.message}`);
  }
}

export class SqlStorageCursor {
  constructor(result) {
    this.columnNames = result.columns;
    this.rowsRead = result.rowsRead;
    this.rowsWritten = result.rowsWritten;
    this._rows = result.rows;
    this._next = 0;
  }
  _object(row) {
    return Object.fromEntries(this.columnNames.map((c, i) => [c, row[i]]));
  }
  toArray() {
    const rows = this._rows.slice(this._next).map((r) => this._object(r));
    this._next = this._rows.length;
    return rows;
  }
  one() {
    const rest = this._rows.length - this._next;
    if (rest !== 1) throw new Error(rest === 0 ? "Expected exactly one result from SQL query, but got no results." : "Expected exactly one result from SQL query, but got multiple results.");
    return this._object(this._rows[this._next++]);
  }
  raw() {
    const rows = this._rows.slice(this._next);
    this._next = this._rows.length;
    return rows;
  }
  next() {
    if (this._next >= this._rows.length) return { done: true, value: undefined };
    return { done: false, value: this._object(this._rows[this._next++]) };
  }
  [Symbol.iterator]() {
    return this;
  }
}

export class SqlStorage {
  constructor(storage) {
    this._storage = storage;
  }
  exec(query, ...bindings) {
    return new SqlStorageCursor(this._storage._sync("sql", { query, bindings: bindings.map(checkStorable) }));
  }
  get databaseSize() {
    return 0;
  }
}

/** ctx.storage: the Durable Object storage API over one Miniflare storage object. */
export class DurableObjectStorage {
  constructor(client, binding, hex) {
    this._client = client;
    this._path = `${binding}/${hex}`;
    this._txn = null; // {puts: Map, deletes: Set} while a transaction closure runs
    this.sql = new SqlStorage(this);
  }
  async _op(name, args) {
    const reply = await this._client.call(this._path, name, args);
    if (!reply.ok) throw storageError(reply);
    return reply.result;
  }
  _sync(name, args) {
    const reply = this._client.callSync(this._path, name, args);
    if (!reply.ok) throw storageError(reply);
    return reply.result;
  }
  async get(key, _options) {
    if (Array.isArray(key)) {
      const out = new Map();
      const missing = [];
      for (const k of key) {
        if (this._txn?.puts.has(k)) out.set(k, this._txn.puts.get(k));
        else if (!this._txn?.deletes.has(k)) missing.push(k);
      }
      if (missing.length) {
        const found = await this._op("get", { key: missing });
        for (const k of missing) if (k in found) out.set(k, found[k]);
      }
      return out;
    }
    if (typeof key !== "string") throw new TypeError("storage key must be a string");
    if (this._txn?.puts.has(key)) return this._txn.puts.get(key);
    if (this._txn?.deletes.has(key)) return undefined;
    const reply = await this._op("get", { key });
    return reply.missing ? undefined : reply.value;
  }
  async put(key, value, _options) {
    const entries = typeof key === "object" && key !== null ? Object.entries(key) : [[key, value]];
    for (const [k] of entries) if (typeof k !== "string") throw new TypeError("storage key must be a string");
    const clean = entries.map(([k, v]) => [k, checkStorable(v)]);
    if (this._txn) {
      for (const [k, v] of clean) {
        this._txn.deletes.delete(k);
        this._txn.puts.set(k, v);
      }
      return;
    }
    if (clean.length === 1) await this._op("put", { key: clean[0][0], value: clean[0][1] });
    else await this._op("put", { entries: Object.fromEntries(clean) });
  }
  async delete(key, _options) {
    if (this._txn) {
      const keys = Array.isArray(key) ? key : [key];
      let existed = 0;
      for (const k of keys) {
        if ((await this.get(k)) !== undefined) existed += 1;
        this._txn.puts.delete(k);
        this._txn.deletes.add(k);
      }
      return Array.isArray(key) ? existed : existed === 1;
    }
    return await this._op("delete", { key });
  }
  async deleteAll(_options) {
    if (this._txn) throw new Error("deleteAll() cannot be called inside a transaction");
    await this._op("deleteAll", {});
  }
  async list(options) {
    const opts = options ? { ...options } : {};
    const stored = new Map(await this._op("list", { options: this._txn ? { ...opts, limit: undefined } : opts }));
    if (!this._txn) return stored;
    for (const k of this._txn.deletes) stored.delete(k);
    for (const [k, v] of this._txn.puts) stored.set(k, v);
    let keys = [...stored.keys()].filter((k) =>
      (opts.prefix === undefined || k.startsWith(opts.prefix)) &&
      (opts.start === undefined || k >= opts.start) &&
      (opts.startAfter === undefined || k > opts.startAfter) &&
      (opts.end === undefined || k < opts.end));
    keys.sort();
    if (opts.reverse) keys.reverse();
    if (opts.limit !== undefined) keys = keys.slice(0, opts.limit);
    return new Map(keys.map((k) => [k, stored.get(k)]));
  }
  /**
   * Run `closure(txn)`; its puts/deletes are buffered (read-your-writes) and committed in one
   * atomic storage transaction when it returns, discarded if it throws or calls rollback().
   * `sql.exec` inside the closure is not part of the buffered transaction.
   */
  async transaction(closure) {
    if (this._txn) return await closure(this);
    this._txn = { puts: new Map(), deletes: new Set(), rolledBack: false };
    const txn = this._txn;
    let result;
    try {
      this.rollback = () => {
        txn.rolledBack = true;
      };
      result = await closure(this);
    } finally {
      this._txn = null;
      delete this.rollback;
    }
    if (!txn.rolledBack && (txn.puts.size || txn.deletes.size)) {
      await this._op("batch", { puts: [...txn.puts], deletes: [...txn.deletes] });
    }
    return result;
  }
  transactionSync(closure) {
    // Only sql.exec is synchronous, and each statement commits on its own here.
    return closure();
  }
  async setAlarm(scheduledTime, _options) {
    const time = scheduledTime instanceof Date ? scheduledTime.getTime() : Number(scheduledTime);
    if (!Number.isFinite(time)) throw new TypeError("setAlarm() needs a Date or a number of ms since the epoch");
    await this._op("setAlarm", { time });
  }
  async getAlarm(_options) {
    return await this._op("getAlarm", {});
  }
  async deleteAlarm(_options) {
    await this._op("deleteAlarm", {});
  }
  async sync() {}
}

/** ctx for a Python Durable Object instance. */
export class DurableObjectState {
  constructor(id, storage, gate, host) {
    this.id = id;
    this.storage = storage;
    this._gate = gate;
    this._host = host;
  }
  waitUntil(awaitable) {
    this._host.waitUntil(awaitable);
  }
  blockConcurrencyWhile(callback) {
    const promise = Promise.resolve().then(() => callback());
    this._gate.blockers.push(promise);
    return promise;
  }
  abort(reason) {
    this._host.evict(this._key, reason);
  }
}

/** env.<BINDING> for a Python Durable Object class. */
export class DurableObjectNamespace {
  constructor(host, binding, className) {
    this._host = host;
    this._binding = binding;
    this._className = className;
  }
  idFromName(name) {
    if (typeof name !== "string") throw new TypeError("idFromName() needs a string");
    const hex = createHash("sha256").update(`${this._className}\0${name}`).digest("hex");
    return new DurableObjectId(hex, name);
  }
  newUniqueId(_options) {
    return new DurableObjectId(randomBytes(32).toString("hex"));
  }
  idFromString(hex) {
    if (typeof hex !== "string" || !HEX64.test(hex)) {
      throw new TypeError("Invalid Durable Object ID: must be 64 hex digits");
    }
    return new DurableObjectId(hex);
  }
  get(id, _options) {
    if (!(id instanceof DurableObjectId)) throw new TypeError("get() needs a DurableObjectId");
    return makeStub(this._host, this._binding, id);
  }
  getByName(name, options) {
    return this.get(this.idFromName(name), options);
  }
}

/** A stub: fetch() goes to the object's fetch handler, any other name is an RPC method. */
function makeStub(host, binding, id) {
  const target = { id, name: id.name };
  return new Proxy(target, {
    get(t, prop) {
      if (typeof prop !== "string") return undefined;
      if (prop === "id" || prop === "name") return t[prop];
      if (prop === "then" || prop === "constructor") return undefined;
      if (prop === "fetch") {
        return (input, init) => host.doFetch(binding, id, new Request(input, init));
      }
      return (...args) => host.doRpc(binding, id, prop, args);
    },
  });
}
