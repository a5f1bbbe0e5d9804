// Bodies between Node's http server and the Worker's fetch Request/Response, chunk by chunk:
// a request body reaches the Worker as it arrives, a response body reaches the client as the
// Worker produces it, and a client that goes away (or stops reading) releases both sides.

const REQUEST_HIGH_WATER_BYTES = 64 * 1024;
const PENDING = Symbol("pending");
// Statuses whose responses never carry a body (Fetch's null body statuses).
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/** Whether the request announces a body (Content-Length > 0 or Transfer-Encoding). */
export function hasRequestBody(req) {
  if (req.method === "GET" || req.method === "HEAD") return false;
  if (req.headers["transfer-encoding"] !== undefined) return true;
  const length = Number(req.headers["content-length"] || 0);
  return Number.isFinite(length) && length > 0;
}

/**
 * A ReadableStream of `req`'s body that reads from the socket only as the Worker reads
 * (backpressure pauses the socket). It errors if the client goes away before the body is
 * complete. `discard()` stops feeding it and drains the rest of the body, so a keep-alive
 * connection can carry its next request after a Worker that ignored the body.
 */
export function requestBodyStream(req) {
  let controller;
  let state = "open"; // open | ended | discarded
  const onData = (chunk) => {
    controller.enqueue(new Uint8Array(chunk)); // a copy: workerd hands the Worker plain Uint8Arrays
    if (controller.desiredSize <= 0) req.pause();
  };
  const onEnd = () => {
    if (state === "open") controller.close();
    finish();
  };
  const onAborted = () => {
    if (state === "open") {
      controller.error(new Error("the client closed the connection before the request body was complete"));
    }
    finish();
  };
  const onClose = () => {
    if (!req.complete) onAborted();
  };
  function finish() {
    if (state === "open") state = "ended";
    req.off("data", onData);
    req.off("end", onEnd);
    req.off("error", onAborted);
    req.off("close", onClose);
  }
  function discard() {
    if (state !== "open") return;
    finish();
    state = "discarded";
    req.on("error", () => {});
    req.resume();
  }
  const stream = new ReadableStream(
    {
      start(c) {
        controller = c;
        req.on("data", onData);
        req.on("end", onEnd);
        req.on("error", onAborted);
        req.on("close", onClose);
        req.pause();
      },
      pull() {
        req.resume();
      },
      cancel() {
        discard();
      },
    },
    { highWaterMark: REQUEST_HIGH_WATER_BYTES, size: (chunk) => chunk.byteLength },
  );
  return { stream, discard };
}

function toBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError(`the response body stream produced a ${value?.constructor?.name ?? typeof value}, not bytes`);
}

/** `promise`'s value if it settles before the event loop's next turn, else PENDING. */
function settledNow(promise) {
  return Promise.race([promise, new Promise((resolve) => setImmediate(resolve, PENDING))]);
}

/** A promise that rejects with `signal`'s reason when it aborts (never, without a signal). */
function rejectOnAbort(signal) {
  if (!signal) return new Promise(() => {});
  const aborted = new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
  aborted.catch(() => {});
  return aborted;
}

/**
 * Write the fetch `response` to Node's `res`, streaming its body as the Worker produces it.
 *
 * A body that is complete at once (a string, a buffer) goes out with Content-Length, as workerd
 * sends it; a body still being produced goes out chunked, each chunk when it is made, and the
 * headers as soon as the Worker returns the Response. Backpressure is honoured: a client that
 * reads nothing for `writeTimeoutMs` (0 = never) is disconnected. When the client goes away the
 * body stream is cancelled, which reaches the Worker's stream source. When `signal` aborts (the
 * runtime producing the body died) the connection is closed. Never rejects.
 */
export async function writeResponse(req, res, response, { writeTimeoutMs = 0, log = console, signal } = {}) {
  const where = `${req.method} ${req.url}`;
  const socket = req.socket;
  const body = response.body;
  let reader = null;
  let gone = false;
  const onGone = () => {
    if (gone || res.writableFinished) return;
    gone = true;
    reader?.cancel(new Error("the client closed the connection")).catch(() => {});
  };
  try {
    res.statusCode = response.status;
    if (response.statusText) res.statusMessage = response.statusText;
    for (const [name, value] of response.headers) if (name !== "set-cookie") res.setHeader(name, value);
    const cookies = response.headers.getSetCookie?.() || [];
    if (cookies.length) res.setHeader("set-cookie", cookies);
  } catch (e) {
    log.error(`edge-kv host: ${where}: the Worker's response headers cannot be sent: ${e.message}`);
    body?.cancel().catch(() => {});
    res.statusCode = 502;
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    res.setHeader("content-type", "application/problem+json");
    res.end(JSON.stringify({ type: "about:blank", title: "Bad Gateway", status: 502, detail: "The Worker's response headers are invalid." }));
    return;
  }
  if (body === null || req.method === "HEAD" || NULL_BODY_STATUSES.has(response.status)) {
    body?.cancel().catch(() => {});
    res.end();
    return;
  }
  reader = body.getReader();
  socket.once("close", onGone);
  if (socket.destroyed) onGone();

  const write = async (chunk) => {
    if (gone) return false;
    if (res.write(chunk)) return true;
    const outcome = await new Promise((resolve) => {
      // A response queued behind a pipelined one has no socket yet: it waits its turn untimed.
      const timer = writeTimeoutMs > 0 && res.socket ? setTimeout(() => done("timeout"), writeTimeoutMs) : null;
      const onDrain = () => done("drain");
      const onClose = () => done("closed");
      function done(value) {
        if (timer) clearTimeout(timer);
        res.off("drain", onDrain);
        socket.off("close", onClose);
        resolve(value);
      }
      res.on("drain", onDrain);
      socket.on("close", onClose);
    });
    if (outcome === "timeout") {
      log.error(`edge-kv host: ${where}: the client read nothing for ${writeTimeoutMs} ms; closing the connection`);
      onGone();
      res.destroy();
      return false;
    }
    return outcome === "drain" && !gone;
  };

  try {
    const aborted = rejectOnAbort(signal);
    const read = () => Promise.race([reader.read(), aborted]);
    let held = null; // the first chunk, held back while it may be the whole body
    let next = read();
    for (;;) {
      let step = await settledNow(next);
      if (step === PENDING) {
        // The body is still being produced: send what there is now, then wait for more.
        if (held) {
          const chunk = held;
          held = null;
          if (!(await write(chunk))) return;
        } else if (!res.headersSent && !gone) {
          res.flushHeaders();
        }
        step = await next;
      }
      if (step.done || gone) break;
      const chunk = toBytes(step.value);
      next = read();
      if (!res.headersSent && held === null) {
        held = chunk;
        continue;
      }
      if (held) {
        const first = held;
        held = null;
        if (!(await write(first))) return;
      }
      if (!(await write(chunk))) return;
    }
    if (gone) return;
    if (held && !res.headersSent) res.end(held); // the whole body in one piece: Content-Length
    else {
      if (held && !(await write(held))) return;
      res.end();
    }
  } catch (e) {
    if (!gone) {
      log.error(`edge-kv host: ${where}: the response body failed after the headers were sent: ${e.message || e}`);
      reader.cancel(e).catch(() => {});
    }
    res.destroy(); // the client sees a truncated body, not a clean end
  } finally {
    socket.off("close", onGone);
  }
}
