/**
 * The side stores' thread (sqlite-thread.ts): answers each call as it arrives, in order per file; a
 * call that yields lets later ones run in between.
 */
import { parentPort } from 'node:worker_threads';
import type { CoreModule, SqliteCore, ThreadCall, ThreadReply } from './sqlite-thread.js';

const port = parentPort!;
const post = (reply: ThreadReply) => port.postMessage(reply);

/** An outage rather than a bug: SQLite's own errors, and those a core raises as such. */
const isOutage = (error: unknown) => ['SqliteError', 'StoreUnavailableError'].includes((error as Error)?.name);

const modules = new Map<string, Promise<CoreModule<SqliteCore>>>();
const cores = new Map<string, SqliteCore>();

/**
 * A file's core, opened at the first call that finds it closed: a file that could not be opened
 * (locked, say) is tried again. Calls to one core await one module promise, so they resume in order.
 */
async function coreOf(call: ThreadCall): Promise<SqliteCore> {
  let loading = modules.get(call.core);
  if (loading === undefined) modules.set(call.core, (loading = import(call.core) as Promise<CoreModule<SqliteCore>>));
  const module = await loading;
  let core = cores.get(call.file);
  if (core === undefined) cores.set(call.file, (core = module.openCore(call.file)));
  return core;
}

async function answer(call: ThreadCall): Promise<void> {
  try {
    if (call.method === 'close') {
      cores.get(call.file)?.close();
      cores.delete(call.file);
      post({ id: call.id, result: undefined });
      return;
    }
    const core = await coreOf(call);
    const method = (core as unknown as Record<string, (...args: unknown[]) => unknown>)[call.method];
    if (typeof method !== 'function') throw new Error(`no method ${call.method}`);
    post({ id: call.id, result: await method.apply(core, call.args) });
  } catch (error) {
    post({ id: call.id, error: (error as Error)?.message ?? String(error), unavailable: isOutage(error) });
  }
}

port.on('message', (call: ThreadCall) => void answer(call));
