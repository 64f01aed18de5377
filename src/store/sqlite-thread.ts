/**
 * The side stores' SQLite files (alarms, analytics, v2 stream positions), written on a thread of their own.
 *
 * Their commits sync to disk (WAL, synchronous=FULL). Run on the event loop, each sync held every
 * request: 0.4 s per part of a fleet-wide alarm change set, 0.5-1.2 s while other processes kept the
 * disk busy (a fuzzing run). On a thread, the event loop only posts a call and later takes its
 * answer. The records' file has its own writer thread (sqlite-writer.ts) for the same reason.
 *
 * One thread serves the three files (each thread is an isolate of its own: about 11 MiB idle, and three
 * of them kept the service's idle RSS 60 MiB higher). A store's synchronous code, its "core", is a
 * module exporting `openCore(file)`: an object whose methods the thread calls as the calls arrive
 * (sqlite-thread-host.ts), in order per file. A method may return a promise. A SQLite error (a full
 * disk, a file locked by another process) comes back as StoreUnavailableError: the engines retry, the
 * API answers 503. A thread that ends unexpectedly fails the calls waiting on it the same way; the
 * next call starts a new one, which opens the files again.
 */
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { StoreUnavailableError } from './store.js';

/** What a core module exports. */
export interface CoreModule<Core> {
  openCore(file: string): Core;
}

/** A core: methods with JSON-like (structured-clone) arguments and results, and close(). */
export interface SqliteCore {
  close(): void;
}

export interface ThreadData {
  role: 'sqlite-thread';
}

export interface ThreadCall {
  id: number;
  /** The core module's URL, and the file it serves. */
  core: string;
  file: string;
  method: string;
  args: unknown[];
}

export type ThreadReply = { id: number; result: unknown } | { id: number; error: string; unavailable: boolean };

/**
 * A side store's connection: WAL, every commit synced, and a short wait for a lock (nothing else
 * writes the file; a lock held longer is another process on the same DATA_DIR).
 */
export function openSideFile(file: string): Database.Database {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 1000');
  return db;
}

/**
 * A worker thread running this directory's module `name` (no extension) with `workerData`. Under tsx
 * (tests, dev) the modules are TypeScript, and Node 20 does not carry loader hooks into worker
 * threads: the worker registers tsx itself before it loads its entry.
 */
export function startWorker(name: string, workerData: unknown): Worker {
  if (import.meta.url.endsWith('.ts')) {
    const tsx = import.meta.resolve('tsx/esm/api');
    const entry = new URL(`./${name}.ts`, import.meta.url).href;
    const bootstrap = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(bootstrap, { workerData, eval: true });
  }
  return new Worker(new URL(`./${name}.js`, import.meta.url), { workerData });
}

type Method<Core> = { [K in keyof Core]: Core[K] extends (...args: any[]) => unknown ? K : never }[keyof Core] & string;
type ArgsOf<F> = F extends (...args: infer A) => unknown ? A : never;
type ResultOf<F> = F extends (...args: any[]) => infer R ? Awaited<R> : never;

interface Waiting {
  resolve(value: unknown): void;
  reject(error: Error): void;
  /** Who asked: how an error names the store. */
  store: string;
}

/** The thread the side stores share: started at the first call, ended when the last store closes. */
class SharedThread {
  #worker: Worker | undefined;
  #stores = 0;
  readonly #waiting = new Map<number, Waiting>();
  #nextId = 1;

  join(): void {
    this.#stores++;
  }

  /** A store closed; the last one ends the thread. */
  async leave(): Promise<void> {
    this.#stores--;
    const worker = this.#worker;
    if (this.#stores > 0 || worker === undefined) return;
    this.#worker = undefined;
    await worker.terminate();
  }

  get running(): boolean {
    return this.#worker !== undefined;
  }

  /** Keeps the process alive only while a call is waiting. */
  call(call: Omit<ThreadCall, 'id'>, store: string): Promise<unknown> {
    const worker = (this.#worker ??= this.#start());
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (this.#waiting.size === 0) worker.ref();
      this.#waiting.set(id, { resolve, reject, store });
      worker.postMessage({ id, ...call } satisfies ThreadCall);
    });
  }

  #start(): Worker {
    const data: ThreadData = { role: 'sqlite-thread' };
    const worker = startWorker('sqlite-thread-host', data);
    worker.unref();
    worker.on('message', (reply: ThreadReply) => this.#answer(reply));
    worker.on('error', (error) => this.#lost(worker, `its thread failed: ${error.message}`));
    worker.on('exit', (code) => this.#lost(worker, `its thread stopped (exit code ${code})`));
    return worker;
  }

  #answer(reply: ThreadReply): void {
    const waiting = this.#waiting.get(reply.id);
    if (waiting === undefined) return;
    this.#waiting.delete(reply.id);
    if (this.#waiting.size === 0) this.#worker?.unref();
    if ('result' in reply) waiting.resolve(reply.result);
    else waiting.reject(reply.unavailable ? new StoreUnavailableError(`${waiting.store}: ${reply.error}`) : new Error(reply.error));
  }

  /** The thread ended unexpectedly: the calls waiting on it fail as an outage; the next call starts a new one. */
  #lost(worker: Worker, why: string): void {
    // Ended on purpose (the last store closed), or already replaced.
    if (this.#worker !== worker) return;
    this.#worker = undefined;
    for (const waiting of this.#waiting.values()) waiting.reject(new StoreUnavailableError(`${waiting.store}: ${why}`));
    this.#waiting.clear();
  }
}

const sharedThread = new SharedThread();

/** One core on the shared thread, called by method name. */
export class SqliteThread<Core extends SqliteCore> {
  readonly file: string;
  /** How errors name the store: "alarm store <file>"… */
  readonly #store: string;
  readonly #coreUrl: string;
  #closing: Promise<void> | undefined;

  /**
   * Opens the core once on this thread first, so that a file that cannot be opened fails here, at
   * start-up; then the thread opens it for good (at its first call, and again at the next one if
   * that failed).
   */
  constructor(module: CoreModule<Core>, coreUrl: string, file: string, label: string) {
    module.openCore(file).close();
    this.file = file;
    this.#store = `${label} ${file}`;
    this.#coreUrl = coreUrl;
    sharedThread.join();
  }

  call<K extends Method<Core>>(method: K, ...args: ArgsOf<Core[K]>): Promise<ResultOf<Core[K]>> {
    if (this.#closing !== undefined) return Promise.reject(new StoreUnavailableError(`${this.#store} is closed`));
    return sharedThread.call({ core: this.#coreUrl, file: this.file, method, args }, this.#store) as Promise<ResultOf<Core[K]>>;
  }

  /** Closes the file once the calls made before are answered. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (sharedThread.running) await sharedThread.call({ core: this.#coreUrl, file: this.file, method: 'close', args: [] }, this.#store).catch(() => {});
      await sharedThread.leave();
    })();
    return this.#closing;
  }
}

/** A side store as the event loop sees it: a name, its file, and calls that its thread answers. */
export class SqliteSideStore<Core extends SqliteCore> {
  readonly name = 'sqlite';
  readonly file: string;
  protected readonly thread: SqliteThread<Core>;

  constructor(module: CoreModule<Core>, coreUrl: string, file: string, label: string) {
    this.file = file;
    this.thread = new SqliteThread(module, coreUrl, file, label);
  }

  close(): Promise<void> {
    return this.thread.close();
  }
}
