// Durable Objects for Python classes: namespaces, ids, stubs, instances with an input gate,
// and ctx.storage backed by one in-process SQLite database per object (sqlite_store.mjs).
import { createHash, randomBytes } from "node:crypto";
import { KV_NOT_AVAILABLE, SQL_NOT_AVAILABLE } from "./sqlite_store.mjs";

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

/**
 * Deliver a storage result on a later turn of the event loop, as real storage I/O does: the
 * operation itself runs at once (in call order), but the caller resumes later, so other events
 * can run in between (what makes the input gate matter).
 */
function settled(fn) {
  return new Promise((resolve, reject) => {
    let value;
    try {
      value = fn();
    } catch (e) {
      setImmediate(() => reject(e));
      return;
    }
    setImmediate(() => resolve(value));
  });
}

function checkKeyArray(keys) {
  if (keys.length > 128) throw new RangeError("Maximum number of keys is 128.");
  return keys;
}

/** put({k: v, ...}) or put(k, v) -> [[k, v], ...] */
function putEntries(key, value) {
  if (typeof key === "object" && key !== null) {
    const entries = key instanceof Map ? [...key.entries()] : Object.entries(key);
    if (entries.length > 128) throw new RangeError("Maximum number of pairs is 128.");
    return entries;
  }
  return [[key, value]];
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

/** ctx.storage.sql: synchronous SQL on the object's own SQLite database. */
export class SqlStorage {
  constructor(storage) {
    this._storage = storage;
  }
  exec(query, ...bindings) {
    return new SqlStorageCursor(this._storage._db().exec(query, bindings));
  }
  get databaseSize() {
    return this._storage._db().databaseSize;
  }
}

/** The iterator kv.list() returns: [key, value] entries. */
export class ListIterator {
  constructor(entries) {
    this._entries = entries;
    this._next = 0;
  }
  next() {
    if (this._next >= this._entries.length) return { done: true, value: undefined };
    return { done: false, value: this._entries[this._next++] };
  }
  [Symbol.iterator]() {
    return this;
  }
}

/** ctx.storage.kv: the synchronous KV API of SQLite-backed objects (same keys as get/put). */
export class SyncKvStorage {
  constructor(storage) {
    this._storage = storage;
  }
  get(key) {
    return this._storage._db().get(key);
  }
  put(key, value) {
    this._storage._db().putMany([[key, value]]);
  }
  delete(key) {
    return this._storage._db().delete(key);
  }
  list(options) {
    return new ListIterator(this._storage._db().list(options || {}));
  }
}

/** The `txn` of transaction(closure): the storage API, plus rollback(). */
export class DurableObjectTransaction {
  constructor(storage) {
    this._storage = storage;
    this._rolledBack = false;
  }
  get(key, options) {
    return this._storage.get(key, options);
  }
  put(key, value, options) {
    return this._storage.put(key, value, options);
  }
  delete(key, options) {
    return this._storage.delete(key, options);
  }
  list(options) {
    return this._storage.list(options);
  }
  getAlarm(options) {
    return this._storage.getAlarm(options);
  }
  setAlarm(time, options) {
    return this._storage.setAlarm(time, options);
  }
  deleteAlarm(options) {
    return this._storage.deleteAlarm(options);
  }
  rollback() {
    this._rolledBack = true;
  }
}

/**
 * ctx.storage: the Durable Object storage API over the object's SQLite database
 * (sqlite_store.mjs), in the host process. Values are structured-cloned (V8 serialisation).
 */
export class DurableObjectStorage {
  constructor(client, binding, hex) {
    this._client = client;
    this._binding = binding;
    this._hex = hex;
    this._store = null;
    this._sql = null;
    this._kv = null;
  }
  _db() {
    if (!this._store) this._store = this._client.openStorage(this._binding, this._hex);
    return this._store;
  }
  get sql() {
    if (!this._db().sqlite) throw new Error(SQL_NOT_AVAILABLE);
    return (this._sql ??= new SqlStorage(this));
  }
  get kv() {
    if (!this._db().sqlite) throw new Error(KV_NOT_AVAILABLE);
    return (this._kv ??= new SyncKvStorage(this));
  }
  get(key, _options) {
    return settled(() => (Array.isArray(key) ? this._db().getMany(checkKeyArray(key)) : this._db().get(key)));
  }
  put(key, value, _options) {
    return settled(() => {
      this._db().putMany(putEntries(key, value));
    });
  }
  delete(key, _options) {
    return settled(() => (Array.isArray(key) ? this._db().deleteMany(checkKeyArray(key)) : this._db().delete(key)));
  }
  deleteAll(_options) {
    return settled(() => {
      this._db().deleteAll();
    });
  }
  list(options) {
    return settled(() => new Map(this._db().list(options || {})));
  }
  /**
   * Run `closure(txn)` in one transaction (a SQLite savepoint: KV writes and SQL together);
   * committed when it returns, rolled back if it throws or calls txn.rollback().
   */
  async transaction(closure) {
    const store = this._db();
    const savepoint = store.begin();
    const txn = new DurableObjectTransaction(this);
    let result;
    try {
      result = await closure(txn);
    } catch (e) {
      store.rollback(savepoint);
      throw e;
    }
    if (txn._rolledBack) store.rollback(savepoint);
    else store.commit(savepoint);
    return result;
  }
  /** Run `closure()` synchronously, atomically: rolled back (SQL and KV) if it throws. */
  transactionSync(closure) {
    return this._db().atomically(() => closure());
  }
  setAlarm(scheduledTime, _options) {
    return settled(() => {
      const time = scheduledTime instanceof Date ? scheduledTime.getTime() : Number(scheduledTime);
      if (!Number.isFinite(time)) throw new TypeError("setAlarm() needs a Date or a number of ms since the epoch");
      this._db().setAlarm(Math.round(time));
    });
  }
  getAlarm(_options) {
    return settled(() => this._db().getAlarm());
  }
  deleteAlarm(_options) {
    return settled(() => {
      this._db().deleteAlarm();
    });
  }
  sync() {
    return settled(() => undefined);
  }
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
