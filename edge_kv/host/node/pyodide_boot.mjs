// Start Pyodide fast: from a memory snapshot of an interpreter that has already loaded
// (and imported the stdlib modules Workers use), made once per Pyodide version and reused.
// Cold start (no snapshot yet) costs a normal load (~2.5 s here) plus ~0.2 s to write the
// snapshot; later starts restore it in ~0.4 s. A snapshot that fails to load is deleted and
// the host falls back to a normal load: it is a cache, never a requirement.
//
// The snapshot holds only wasm memory taken before any JavaScript module is registered, the
// Worker's files are mounted or anything of the Worker is imported, so every host (any
// Worker, any config) shares it. EDGE_KV_NO_SNAPSHOT=1 disables it.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPyodide } from "pyodide";

const PYODIDE_DIR = path.dirname(fileURLToPath(import.meta.resolve("pyodide/pyodide.mjs")));
const PYODIDE_VERSION = JSON.parse(readFileSync(path.join(PYODIDE_DIR, "package.json"), "utf8")).version;
// Imported before the snapshot: what the workers SDK and typical Workers import at start-up.
const WARM_IMPORTS = [
  "asyncio", "base64", "collections", "contextlib", "dataclasses", "datetime", "email.utils",
  "enum", "functools", "hashlib", "hmac", "http", "http.client", "inspect", "json", "math", "re",
  "secrets", "struct", "time", "types", "typing", "urllib.parse", "uuid", "zlib",
];
const SNAPSHOT_KEY = `${PYODIDE_VERSION}-v1-${WARM_IMPORTS.length}`;

/** The edge-kv cache directory (the same rule as edge_kv/host/_node.py cache_root). */
export function cacheRoot() {
  if (process.env.EDGE_KV_HOST_CACHE) return path.resolve(process.env.EDGE_KV_HOST_CACHE);
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "edge-kv");
}

export function snapshotPath() {
  return path.join(cacheRoot(), "pyodide-snapshot", `${SNAPSHOT_KEY}.bin`);
}

/** A fresh Pyodide; `{stdout, stderr}` receive the interpreter's output lines. */
export async function bootPyodide({ stdout, stderr, log = console }) {
  const options = { indexURL: PYODIDE_DIR + "/", stdout, stderr };
  if (process.env.EDGE_KV_NO_SNAPSHOT === "1") return { py: await loadPyodide(options), snapshot: "off" };
  const file = snapshotPath();
  let bytes = null;
  try {
    bytes = readFileSync(file);
  } catch {} // no snapshot yet
  if (bytes) {
    try {
      return { py: await loadPyodide({ ...options, _loadSnapshot: bytes }), snapshot: "used" };
    } catch (e) {
      log.error(`edge-kv host: warning: the Pyodide snapshot ${file} did not load (${e.message || e}); removing it`);
      rmSync(file, { force: true });
    }
  }
  const py = await loadPyodide({ ...options, _makeSnapshot: true });
  py.runPython(WARM_IMPORTS.map((m) => `import ${m}`).join("\n"));
  try {
    const snapshot = py.makeMemorySnapshot();
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, snapshot);
    renameSync(tmp, file); // atomic: concurrent hosts never read half a file
    return { py, snapshot: "made" };
  } catch (e) {
    log.error(`edge-kv host: warning: could not write a Pyodide snapshot to ${file}: ${e.message || e}`);
    return { py, snapshot: "failed" };
  }
}
