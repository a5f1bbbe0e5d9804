// A synchronous HTTP POST for the few Workers APIs that are synchronous at the edge
// (`ctx.storage.sql.exec`): the request runs on a worker thread while the main thread
// blocks on Atomics.wait, like a real SQLite call blocks the isolate.
import { MessageChannel, Worker, receiveMessageOnPort } from "node:worker_threads";

const THREAD_SOURCE = `
const { workerData } = require("node:worker_threads");
const { port, signal } = workerData;
port.on("message", async ({ url, body }) => {
  let reply;
  try {
    const r = await fetch(url, { method: "POST", body });
    reply = { status: r.status, text: await r.text() };
  } catch (e) {
    reply = { error: String(e && e.message || e) };
  }
  port.postMessage(reply);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
});
`;

export class SyncChannel {
  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.signal = new Int32Array(new SharedArrayBuffer(4));
    this.worker = new Worker(THREAD_SOURCE, {
      eval: true,
      workerData: { port: port2, signal: this.signal },
      transferList: [port2],
    });
    this.worker.unref();
  }

  /** POST `body` to `url` and return {status, text}; throws on a network error or timeout. */
  post(url, body, timeoutMs = 30000) {
    Atomics.store(this.signal, 0, 0);
    this.port.postMessage({ url, body });
    if (Atomics.wait(this.signal, 0, 0, timeoutMs) === "timed-out") {
      throw new Error(`synchronous storage call timed out after ${timeoutMs} ms`);
    }
    const message = receiveMessageOnPort(this.port);
    if (!message) throw new Error("synchronous storage call returned nothing");
    if (message.message.error) throw new Error(message.message.error);
    return message.message;
  }

  close() {
    return this.worker.terminate();
  }
}
