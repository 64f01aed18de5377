/**
 * The side stores' SQLite files (alarms, analytics, v2 stream positions), each on a thread of its own.
 *
 * Their commits sync to disk (WAL, synchronous=FULL). Run on the event loop, each sync held every
 * request: 0.4 s per part of a fleet-wide alarm change set, 0.5-1.2 s while other processes kept the
 * disk busy (a fuzzing run). On a thread, the event loop only posts a call and later takes its
 * answer. The records' file has its own writer thread (sqlite-writer.ts) for the same reason.
 *
 * A store's synchronous code, its "core", is a module exporting `openCore(file)`: an object whose
 * methods the thread calls as the calls arrive (sqlite-thread-host.ts). A method may return a promise;
 * one that yields between parts of a long write lets later calls (reads) run in between. A SQLite
 * error (a full disk, a file locked by another process) comes back as StoreUnavailableError: the
 * engines retry, the API answers 503.
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
  /** The core module's URL. */
  core: string;
  file: string;
}

export interface ThreadCall {
  id: number;
  method: string;
  args: unknown[];
}

export type ThreadReply =
  | { id: number; result: unknown }
  | { id: number; error: string; unavailable: boolean };

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

/** One core on its thread, called by method name. The thread keeps the process alive only while a call is waiting. */
export class SqliteThread<Core extends SqliteCore> {
  readonly file: string;
  /** How errors name the store: "alarm store", "analytics store"… */
  readonly #label: string;
  readonly #worker: Worker;
  readonly #waiting = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  #nextId = 1;
  #failure: Error | undefined;
  #closing: Promise<void> | undefined;

  /**
   * Opens the core once on this thread first, so that a file that cannot be opened fails here, at
   * start-up; then the thread opens it for good (at its first call, and again at the next one if
   * that failed).
   */
  constructor(module: CoreModule<Core>, coreUrl: string, file: string, label: string) {
    module.openCore(file).close();
    this.file = file;
    this.#label = label;
    const data: ThreadData = { role: 'sqlite-thread', core: coreUrl, file };
    this.#worker = startWorker('sqlite-thread-host', data);
    this.#worker.unref();
    this.#worker.on('message', (reply: ThreadReply) => this.#answer(reply));
    this.#worker.on('error', (error) => this.#fail(new StoreUnavailableError(`${label} ${file}: its thread failed: ${error.message}`)));
    this.#worker.on('exit', (code) => this.#closing ?? this.#fail(new StoreUnavailableError(`${label} ${file}: its thread stopped (exit code ${code})`)));
  }

  call<K extends Method<Core>>(method: K, ...args: ArgsOf<Core[K]>): Promise<ResultOf<Core[K]>> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#closing !== undefined) return Promise.reject(new StoreUnavailableError(`${this.#label} ${this.file} is closed`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (this.#waiting.size === 0) this.#worker.ref();
      this.#waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#worker.postMessage({ id, method, args } satisfies ThreadCall);
    });
  }

  /** Closes the file once the calls made before are answered, then ends the thread. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#worker.ref();
      if (this.#failure === undefined) {
        const id = this.#nextId++;
        await new Promise<unknown>((resolve, reject) => {
          this.#waiting.set(id, { resolve, reject });
          this.#worker.postMessage({ id, method: 'close', args: [] } satisfies ThreadCall);
        }).catch(() => {});
      }
      await this.#worker.terminate();
    })();
    return this.#closing;
  }

  #answer(reply: ThreadReply): void {
    const waiting = this.#waiting.get(reply.id);
    if (waiting === undefined) return;
    this.#waiting.delete(reply.id);
    if (this.#waiting.size === 0) this.#worker.unref();
    if ('result' in reply) waiting.resolve(reply.result);
    else waiting.reject(reply.unavailable ? new StoreUnavailableError(`${this.#label} ${this.file}: ${reply.error}`) : new Error(reply.error));
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const waiting of this.#waiting.values()) waiting.reject(error);
    this.#waiting.clear();
    this.#worker.unref();
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
