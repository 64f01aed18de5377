/**
 * What the side stores on MongoDB (alarms, analytics, v2 stream positions) share; each keeps its own
 * collections and what it does with them.
 *
 * - A client of its own (sideClient: its pool, its application name), connected at first use.
 * - Its collections made and set up once, at first use. A failed set-up is tried again at the next
 *   call: a server away at start never leaves a store broken.
 * - Every operation bounded in time.
 * - Driver errors as store errors, the URI's credentials removed. A server's refusal of an operation
 *   stays an Error (a bug to see in the log). Anything else (no server, a timeout, a closed
 *   connection) is StoreUnavailableError: the engines retry, the API answers 503.
 */
import type { Db, MongoClient } from 'mongodb';
import { withDeadline } from './deadline.js';
import { isReplicaSet } from './mongodb-setup.js';
import { maskMongoUri, redactor, sideClient } from './mongodb-uri.js';
import { StoreUnavailableError } from './store.js';

export interface MongoSideStoreOptions {
  uri: string;
  databaseName: string;
  serverSelectionTimeoutMs?: number;
  operationTimeoutMs?: number;
}

export abstract class MongoSideStore<Collections> {
  readonly name = 'mongodb';
  protected readonly client: MongoClient;
  protected readonly operationTimeoutMs: number;
  /** Removes the URI's credentials from a message. */
  protected readonly redact: (message: string) => string;
  readonly #databaseName: string;
  readonly #where: string;
  /** How messages name the store: "MongoDB alarm store"… */
  readonly #label: string;
  #collections: Promise<Collections> | undefined;
  #closed = false;

  constructor(options: MongoSideStoreOptions, appName: string, label: string) {
    this.#databaseName = options.databaseName;
    this.#label = label;
    this.redact = redactor(options.uri);
    this.#where = maskMongoUri(options.uri);
    this.operationTimeoutMs = options.operationTimeoutMs ?? 10_000;
    this.client = sideClient(options.uri, appName, label, options.serverSelectionTimeoutMs ?? 2500);
  }

  /** The store's collections on the connected client's database: made, indexed, as it needs them. */
  protected abstract setUp(db: Db): Promise<Collections>;

  /** The collections, set up once (again after a failed attempt). */
  protected ready(): Promise<Collections> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError(`${this.#label} is closed`));
    this.#collections ??= this.bounded(
      this.client.connect().then((client) => this.setUp(client.db(this.#databaseName))),
      'set-up',
    ).catch((error: unknown) => {
      this.#collections = undefined;
      throw error;
    });
    return this.#collections;
  }

  /**
   * Bounds an operation in time; driver errors become store errors, secrets removed. An error that
   * `passes` says the caller reads itself (a duplicate key) is thrown as it is.
   */
  protected bounded<T>(operation: Promise<T>, what: string, passes?: (error: unknown) => boolean): Promise<T> {
    const ms = this.operationTimeoutMs;
    return withDeadline(operation, ms, () => new StoreUnavailableError(`${this.#label}: ${what} got no answer within ${ms} ms`)).catch((error: unknown) => {
      if (passes?.(error) === true) throw error;
      throw this.storeError(error);
    });
  }

  /** A driver error as this store reports it (see the file's header). */
  protected storeError(error: unknown): Error {
    if (error instanceof StoreUnavailableError) return error;
    const message = this.redact(String((error as Error)?.message ?? error));
    const name = (error as Error)?.name;
    if (!this.#closed && (name === 'MongoServerError' || name === 'MongoBulkWriteError')) return new Error(`${this.#label}: ${message}`);
    return new StoreUnavailableError(`${this.#label} unavailable at ${this.#where}: ${message}`);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.client.close();
  }
}

/** Makes the collections not there yet; one that another instance made meanwhile is fine. */
export async function createCollections(db: Db, names: readonly string[]): Promise<void> {
  const existing = new Set((await db.listCollections({}, { nameOnly: true }).toArray()).map((info) => info.name));
  for (const name of names) {
    if (existing.has(name)) continue;
    try {
      await db.createCollection(name);
    } catch (error) {
      // 48 NamespaceExists: another instance made it first.
      if ((error as { code?: number }).code !== 48) throw error;
    }
  }
}

/** On a replica set, writes wait for a majority (bounded): an acknowledged write survives a failover. */
export async function sideWriteConcern(db: Db, timeoutMs: number): Promise<{ writeConcern?: { w: 'majority'; wtimeoutMS: number } }> {
  return (await isReplicaSet(db)) ? { writeConcern: { w: 'majority', wtimeoutMS: timeoutMs } } : {};
}
