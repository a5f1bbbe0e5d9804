// Durable Object storage in the host process: one SQLite database per object (node:sqlite),
// what workerd does for SQLite-backed Durable Objects:
//   <persist>/do/<BINDING>/<object id hex>.sqlite
//   _cf_KV(key TEXT PRIMARY KEY, value BLOB)        the KV API (async get/put and storage.kv),
//                                                   values serialised by V8 (structured clone)
//   _cf_METADATA(key INTEGER PRIMARY KEY, value)    key 1: the alarm time (ms since the epoch)
//   every other table                               the Worker's own ctx.storage.sql tables
// The alarm scheduler (host timers) also lives here: alarms are read back from the files at
// start, so they survive a restart, and a failing alarm() is retried with backoff like workerd.
import { mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import v8 from "node:v8";

// node:sqlite prints an ExperimentalWarning when first loaded (Node 22): keep it off the
// host's console unless the warning is wanted (--trace-warnings).
const { DatabaseSync } = await (async () => {
  const emit = process.emitWarning;
  process.emitWarning = function (warning, ...rest) {
    const text = String(warning?.message ?? warning);
    const type = typeof rest[0] === "string" ? rest[0] : rest[0]?.type;
    if (type === "ExperimentalWarning" && text.includes("SQLite")) return;
    return emit.call(process, warning, ...rest);
  };
  try {
    return await import("node:sqlite");
  } finally {
    process.emitWarning = emit;
  }
})();

/** workerd's messages for the SQLite-only APIs on a KV-backed (`new_classes`) object. */
export const SQL_NOT_AVAILABLE =
  "This Durable Object is not backed by SQLite storage, so the SQL API is not available. SQL can be " +
  "enabled on a new Durable Object class by using the `new_sqlite_classes` instead of `new_classes` " +
  "under `[[migrations]]` in your wrangler.toml, but an already-deployed class cannot be converted to " +
  "SQLite (except by deleting the existing data).";
export const KV_NOT_AVAILABLE =
  "The storage.kv (synchronous KV) API is only available for SQLite-backed Durable Objects, but this " +
  "object's namespace is not declared to use SQLite. You can use the older, asyncronous interface via " +
  "methods of `storage` itself (e.g. `storage.get()`). SQLite can be enabled on a new Durable Object " +
  "class by using the `new_sqlite_classes` instead of `new_classes` under `migrations` in your " +
  "wrangler.jsonc or wrangler.toml, but an already-deployed class cannot be converted to SQLite " +
  "(except by deleting the existing data).";
const NO_SQL_TRANSACTIONS =
  "To execute a transaction, please use the state.storage.transaction() or " +
  "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT statements. " +
  "The JavaScript API is safer because it will automatically roll back on exceptions, and because it " +
  "interacts correctly with Durable Objects' automatic atomic write coalescing.";

/** workerd retries a failing alarm() up to 6 times, 2 s after the first failure, doubling. */
export const ALARM_RETRIES = 6;
export const ALARM_FIRST_BACKOFF_MS = 2000;
const MAX_KEY_BYTES = 2048;

// ----- values: V8's structured clone (what workerd stores) -----

function describe(value, seen = new Set(), depth = 0) {
  // Find what makes a value uncloneable, to name it in the error (a Python object first).
  if (value === null || (typeof value !== "object" && typeof value !== "function" && typeof value !== "symbol")) return null;
  if (typeof value === "symbol") return `a symbol (${String(value)})`;
  const tag = Object.prototype.toString.call(value);
  if (tag === "[object PyProxy]") {
    let type = "object";
    try {
      type = value.type;
    } catch {}
    return (
      `a Python object of type '${type}' (it reached JavaScript as a PyProxy, which cannot be cloned): store ` +
      "str, int, float, bool, None, bytes, datetime, or dicts/lists/sets of them"
    );
  }
  if (typeof value === "function") return `a function (${value.name || "anonymous"})`;
  if (depth > 64 || seen.has(value)) return null;
  seen.add(value);
  let entries = [];
  try {
    if (value instanceof Map) entries = [...value.keys(), ...value.values()];
    else if (value instanceof Set) entries = [...value];
    else if (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype) entries = Object.values(value);
  } catch {
    return null;
  }
  for (const v of entries) {
    const found = describe(v, seen, depth + 1);
    if (found) return found;
  }
  return null;
}

/** A DataCloneError naming what could not be stored. */
export function dataCloneError(value, cause) {
  const culprit = describe(value);
  const base = String(cause?.message || cause || "could not be cloned");
  const error = new Error(culprit ? `${base} The value contains ${culprit}.` : base);
  error.name = "DataCloneError";
  return error;
}

/** Serialise a storage value with V8's structured clone; throws a DataCloneError. */
export function serializeValue(value) {
  if (value === undefined) throw new TypeError("storage value must not be undefined");
  const serializer = new v8.Serializer();
  serializer.writeHeader();
  try {
    serializer.writeValue(value);
  } catch (e) {
    throw dataCloneError(value, e);
  }
  return serializer.releaseBuffer();
}

export function deserializeValue(bytes) {
  const deserializer = new v8.Deserializer(bytes);
  deserializer.readHeader();
  return deserializer.readValue();
}

function checkKey(key) {
  if (typeof key !== "string") throw new TypeError("storage key must be a string");
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new RangeError(`Keys cannot be larger than ${MAX_KEY_BYTES} bytes.`);
  return key;
}

// ----- SQL: statements of one exec() call -----

const TRANSACTION_STATEMENT = /^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b/i;

/**
 * Split a SQL text into statements (sql.exec runs them all and returns the last one's rows):
 * `;` ends a statement outside quotes, comments and the BEGIN ... END body of a trigger.
 */
export function splitStatements(text) {
  const out = [];
  let start = 0;
  let words = []; // the first words of the current statement, and the last word seen
  let last = "";
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (c === "'" || c === '"' || c === "`" || c === "[") {
      const close = c === "[" ? "]" : c;
      i += 1;
      while (i < n) {
        if (text[i] === close) {
          if (close !== "]" && text[i + 1] === close) i += 2;
          else break;
        } else i += 1;
      }
      i += 1;
      last = "";
    } else if (c === "-" && text[i + 1] === "-") {
      while (i < n && text[i] !== "\n") i += 1;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end < 0 ? n : end + 2;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$]/.test(text[j])) j += 1;
      last = text.slice(i, j).toUpperCase();
      if (words.length < 3) words.push(last);
      i = j;
    } else if (c === ";") {
      const trigger = words[0] === "CREATE" && (words[1] === "TRIGGER" || words[2] === "TRIGGER");
      if (!trigger || last === "END") {
        const statement = text.slice(start, i + 1);
        if (words.length) out.push(statement);
        start = i + 1;
        words = [];
      }
      last = "";
      i += 1;
    } else {
      if (!/\s/.test(c)) last = "";
      i += 1;
    }
  }
  const tail = text.slice(start);
  if (words.length) out.push(tail);
  return out;
}

function bindable(value) {
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return value;
}

function columnValue(value) {
  // workerd returns BLOB columns as ArrayBuffer (node:sqlite gives a Uint8Array).
  if (value instanceof Uint8Array) return value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
  return value;
}

// ----- one object's database -----

export class ObjectStore {
  constructor(file, { sqlite }) {
    this.file = file;
    this.sqlite = sqlite;
    this.db = new DatabaseSync(file);
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    this.db.exec(
      "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;" +
        "CREATE TABLE IF NOT EXISTS _cf_METADATA (key INTEGER PRIMARY KEY, value BLOB);",
    );
    this.statements = new Map();
    this.userStatements = new Map();
    this.depth = 0; // open savepoints (transaction()/transactionSync() nesting)
    this.savepoints = 0;
    this.runningAlarm = null; // the alarm time while its alarm() runs
    this.alarmWrites = 0; // setAlarm()/deleteAlarm() calls: did alarm() change its alarm?
    this.onAlarmChange = null;
  }

  _stmt(sql) {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  // --- KV ---
  get(key) {
    const row = this._stmt("SELECT value FROM _cf_KV WHERE key = ?").get(checkKey(key));
    return row === undefined ? undefined : deserializeValue(row.value);
  }
  getMany(keys) {
    const out = new Map();
    for (const k of keys) {
      const v = this.get(k);
      if (v !== undefined) out.set(k, v);
    }
    return out;
  }
  /** Serialise first (a refused value writes nothing), then write in one transaction. */
  putMany(entries) {
    const rows = entries.map(([k, v]) => [checkKey(k), serializeValue(v)]);
    const put = this._stmt("INSERT OR REPLACE INTO _cf_KV (key, value) VALUES (?, ?)");
    this.atomically(() => {
      for (const [k, bytes] of rows) put.run(k, bytes);
    });
  }
  delete(key) {
    return this._stmt("DELETE FROM _cf_KV WHERE key = ?").run(checkKey(key)).changes > 0;
  }
  deleteMany(keys) {
    let count = 0;
    this.atomically(() => {
      for (const k of keys) if (this.delete(k)) count += 1;
    });
    return count;
  }
  /** Entries ordered by key (SQLite's binary order of UTF-8, as workerd): [[key, value], ...]. */
  list(options = {}) {
    const where = [];
    const args = [];
    const o = options || {};
    const has = (k) => o[k] !== undefined && o[k] !== null;
    const clause = (sql, ...values) => {
      where.push(sql);
      args.push(...values.map(String));
    };
    if (has("start")) clause("key >= ?", o.start);
    if (has("startAfter")) clause("key > ?", o.startAfter);
    if (has("end")) clause("key < ?", o.end);
    if (has("prefix") && o.prefix !== "") clause("substr(key, 1, length(?)) = ?", o.prefix, o.prefix);
    let sql = "SELECT key, value FROM _cf_KV";
    if (where.length) sql += " WHERE " + where.join(" AND ");
    sql += o.reverse ? " ORDER BY key DESC" : " ORDER BY key";
    if (has("limit")) {
      const limit = Number(o.limit);
      if (!Number.isInteger(limit) || limit <= 0) throw new RangeError("List limit must be positive.");
      sql += " LIMIT ?";
      args.push(limit);
    }
    return this._stmt(sql).all(...args).map((r) => [r.key, deserializeValue(r.value)]);
  }
  deleteAll() {
    this.atomically(() => {
      this.db.exec("DELETE FROM _cf_KV");
      const objects = this.db
        .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND type IN ('table', 'view', 'trigger')")
        .all();
      for (const { type, name } of objects) {
        if (type === "table" || type === "view") this.db.exec(`DROP ${type.toUpperCase()} IF EXISTS "${name.replaceAll('"', '""')}"`);
      }
    });
    this.userStatements.clear();
  }

  // --- SQL ---
  /** Run every statement of `query`; returns {columns, rows (arrays), rowsRead, rowsWritten} of the last. */
  exec(query, bindings) {
    if (typeof query !== "string") throw new TypeError("sql.exec() needs a query string");
    let statements = this.userStatements.get(query);
    if (!statements) {
      // Prepared one by one as they run: a statement may use a table the one before creates.
      statements = splitStatements(query).map((text) => ({ text, st: null }));
      if (statements.some(({ text }) => TRANSACTION_STATEMENT.test(text))) throw new Error(NO_SQL_TRANSACTIONS);
      if (this.userStatements.size > 500) this.userStatements.clear();
      this.userStatements.set(query, statements);
    }
    const args = bindings.map(bindable);
    if (statements.length === 0) {
      if (args.length) throw new RangeError(`Wrong number of parameter bindings for SQL query.`);
      return { columns: [], rows: [], rowsRead: 0, rowsWritten: 0 };
    }
    const before = this._stmt("SELECT total_changes() AS n").get().n;
    let result;
    for (let i = 0; i < statements.length; i += 1) {
      const entry = statements[i];
      const st = (entry.st ??= this.db.prepare(entry.text));
      const last = i === statements.length - 1;
      const theseArgs = last ? args : [];
      const columns = st.columns().map((c) => c.name);
      if (columns.length) {
        st.setReturnArrays(true);
        const rows = st.all(...theseArgs).map((r) => r.map(columnValue));
        result = { columns, rows };
      } else {
        st.run(...theseArgs);
        result = { columns: [], rows: [] };
      }
    }
    const written = this._stmt("SELECT total_changes() AS n").get().n - before;
    return { ...result, rowsRead: result.rows.length, rowsWritten: written };
  }
  get databaseSize() {
    const pages = this._stmt("PRAGMA page_count").get().page_count;
    const size = this._stmt("PRAGMA page_size").get().page_size;
    return pages * size;
  }

  // --- transactions (savepoints: nestable, the SQL and the KV of the object together) ---
  begin() {
    const name = `_cf_sp_${this.savepoints++}`;
    this.db.exec(`SAVEPOINT ${name}`);
    this.depth += 1;
    return name;
  }
  commit(name) {
    this.db.exec(`RELEASE ${name}`);
    this.depth -= 1;
  }
  rollback(name) {
    this.db.exec(`ROLLBACK TO ${name}`);
    this.db.exec(`RELEASE ${name}`);
    this.depth -= 1;
    this.userStatements.clear(); // a rolled-back CREATE/DROP can invalidate prepared statements
  }
  /** Run fn() synchronously in one transaction: all of it or (it throws) none of it. */
  atomically(fn) {
    const name = this.begin();
    let result;
    try {
      result = fn();
    } catch (e) {
      this.rollback(name);
      throw e;
    }
    this.commit(name);
    return result;
  }

  // --- alarm ---
  alarmTime() {
    const row = this._stmt("SELECT value FROM _cf_METADATA WHERE key = 1").get();
    return row === undefined || row.value === null ? null : Number(row.value);
  }
  getAlarm() {
    const time = this.alarmTime();
    // While alarm() runs, its own time is no longer pending (as at the edge).
    return time !== null && time === this.runningAlarm ? null : time;
  }
  setAlarm(time) {
    this._stmt("INSERT OR REPLACE INTO _cf_METADATA (key, value) VALUES (1, ?)").run(time);
    this.alarmWrites += 1;
    this.onAlarmChange?.();
  }
  deleteAlarm() {
    this._stmt("DELETE FROM _cf_METADATA WHERE key = 1").run();
    this.alarmWrites += 1;
    this.onAlarmChange?.();
  }

  close() {
    try {
      this.db.close();
    } catch {}
  }
}

// ----- all objects of a host, and their alarms -----

const SAFE_NAME = /^[A-Za-z0-9_$-]+$/;

export class StorageEngine {
  /**
   * `dir`: <persist>/do; `classes`: {binding: {sqlite: bool}}; `runAlarm(binding, hex, info)`:
   * runs the object's alarm() through its input gate (rejects when alarm() raised).
   */
  constructor({ dir, classes, runAlarm, log = console }) {
    this.dir = dir;
    this.classes = classes;
    this.runAlarm = runAlarm;
    this.log = log;
    this.stores = new Map();
    this.timers = new Map(); // "binding/hex" -> {timer, time}
    this.closed = false;
  }

  file(binding, hex) {
    if (!SAFE_NAME.test(binding) || !/^[0-9a-f]{64}$/.test(hex)) throw new Error(`bad Durable Object storage name ${binding}/${hex}`);
    return path.join(this.dir, binding, `${hex}.sqlite`);
  }

  /** The store of one object (its database file is created on first use). */
  open(binding, hex) {
    const key = `${binding}/${hex}`;
    let store = this.stores.get(key);
    if (!store) {
      mkdirSync(path.join(this.dir, binding), { recursive: true });
      store = new ObjectStore(this.file(binding, hex), { sqlite: this.classes[binding]?.sqlite !== false });
      store.onAlarmChange = () => this.schedule(binding, hex);
      this.stores.set(key, store);
    }
    return store;
  }

  /** Reschedule every stored alarm (host start). */
  start() {
    for (const binding of Object.keys(this.classes)) {
      let names = [];
      try {
        names = readdirSync(path.join(this.dir, binding));
      } catch {
        continue;
      }
      for (const name of names) {
        const match = /^([0-9a-f]{64})\.sqlite$/.exec(name);
        if (!match) continue;
        const store = this.open(binding, match[1]);
        if (store.alarmTime() !== null) this.schedule(binding, match[1]);
      }
    }
  }

  /** (Re)arm the timer of one object's alarm from what its database holds. */
  schedule(binding, hex, retryCount = 0, delayMs = null) {
    if (this.closed) return;
    const key = `${binding}/${hex}`;
    const store = this.stores.get(key);
    const time = store?.alarmTime() ?? null;
    const current = this.timers.get(key);
    if (current) {
      if (current.running) return; // alarm() changed its own alarm: fire() looks once it returns
      clearTimeout(current.timer);
      this.timers.delete(key);
    }
    if (time === null) return;
    const wait = delayMs ?? Math.max(0, time - Date.now());
    const entry = { time, running: false };
    // setTimeout holds at most 2^31-1 ms: a later alarm re-arms when that timer ends.
    entry.timer = setTimeout(() => this.fire(binding, hex, entry, retryCount), Math.min(wait, 2 ** 31 - 1));
    this.timers.set(key, entry);
  }

  async fire(binding, hex, entry, retryCount) {
    const key = `${binding}/${hex}`;
    const store = this.stores.get(key);
    if (this.closed || !store || this.timers.get(key) !== entry) return;
    if (store.alarmTime() !== entry.time) return this.schedule(binding, hex);
    if (entry.time > Date.now()) return this.schedule(binding, hex, retryCount);
    entry.running = true;
    const writes = store.alarmWrites;
    store.runningAlarm = entry.time;
    let failed = null;
    try {
      await this.runAlarm(binding, hex, { retryCount, isRetry: retryCount > 0 });
    } catch (e) {
      failed = e;
    } finally {
      store.runningAlarm = null;
      entry.running = false;
    }
    if (this.closed || this.timers.get(key) !== entry) return;
    this.timers.delete(key);
    // alarm() that set (even to the same time) or deleted its alarm decides what comes next.
    const unchanged = store.alarmWrites === writes && store.alarmTime() === entry.time;
    if (failed && unchanged && retryCount < ALARM_RETRIES) {
      const backoff = ALARM_FIRST_BACKOFF_MS * 2 ** retryCount;
      this.log.error(`edge-kv host: alarm() of ${key} failed (${failed.message || failed}); retry ${retryCount + 1} of ${ALARM_RETRIES} in ${backoff / 1000} s`);
      return this.schedule(binding, hex, retryCount + 1, backoff);
    }
    if (failed && unchanged) this.log.error(`edge-kv host: alarm() of ${key} failed ${ALARM_RETRIES + 1} times; giving up`);
    if (unchanged) {
      store._stmt("DELETE FROM _cf_METADATA WHERE key = 1 AND value = ?").run(entry.time);
      return;
    }
    this.schedule(binding, hex); // alarm() set a new alarm (or deleted it)
  }

  close() {
    this.closed = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const store of this.stores.values()) store.close();
    this.stores.clear();
  }
}
