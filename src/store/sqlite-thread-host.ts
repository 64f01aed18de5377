/**
 * The thread of one side store (sqlite-thread.ts): answers each call as it arrives, in order; a call
 * that yields (a long write in parts) lets later ones run in between.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { CoreModule, SqliteCore, ThreadCall, ThreadData, ThreadReply } from './sqlite-thread.js';

const port = parentPort!;
const data = workerData as ThreadData;
const post = (reply: ThreadReply) => port.postMessage(reply);

/** An outage rather than a bug: SQLite's own errors, and those a core raises as such. */
const isOutage = (error: unknown) => ['SqliteError', 'StoreUnavailableError'].includes((error as Error)?.name);

let loading: Promise<CoreModule<SqliteCore>> | undefined;
let core: SqliteCore | undefined;

/**
 * The core, opened at the first call that finds it closed: a file that could not be opened (locked,
 * say) is tried again. Every call awaits the one module promise, so calls resume in the order they came.
 */
async function coreOf(): Promise<SqliteCore> {
  const module = await (loading ??= import(data.core) as Promise<CoreModule<SqliteCore>>);
  core ??= module.openCore(data.file);
  return core;
}

async function answer(call: ThreadCall): Promise<void> {
  try {
    if (call.method === 'close') {
      core?.close();
      post({ id: call.id, result: undefined });
      return;
    }
    const opened = await coreOf();
    const method = (opened as unknown as Record<string, (...args: unknown[]) => unknown>)[call.method];
    if (typeof method !== 'function') throw new Error(`no method ${call.method}`);
    post({ id: call.id, result: await method.apply(opened, call.args) });
  } catch (error) {
    post({ id: call.id, error: (error as Error)?.message ?? String(error), unavailable: isOutage(error) });
  }
}

port.on('message', (call: ThreadCall) => void answer(call));
