/**
 * What one instance tells the others through the store (MongoDB only), beside the records' feed:
 *
 * - Changes of settings every instance keeps in memory (the alarm rules, the packs' specs): the
 *   instance that stored a change bumps the topic's version in `cluster_versions` ({_id: topic,
 *   version}); every instance reads the versions each CLUSTER_POLL_MS and, when one moved, reloads
 *   that topic from the store (the first read reloads too: a change may have come between the
 *   engine's load and it). A bump that fails is retried each poll: the change itself is stored.
 * - Commands for the owner of a pack (cluster/pack-ownership.ts), such as acknowledging one of its
 *   alarms through an instance that does not own it: the instance that got the request inserts a
 *   command into `cluster_commands` ({_id, kind, battery_id, args, state: pending}); the owner finds
 *   it at its next poll, takes it (pending to taken, one instance only), runs it as if asked itself,
 *   and stores the result (done); the requester reads the result and removes the command. A
 *   requester that hears nothing in time abandons a command still pending (no owner ran it, none
 *   will) and answers 503; one already taken is waited for a little longer.
 */
import { randomUUID } from 'node:crypto';
import type { Collection, Db } from 'mongodb';
import type { MongoStore } from '../store/mongodb-store.js';
import { within } from './cluster-feed.js';

export const VERSIONS_COLLECTION = 'cluster_versions';
export const COMMANDS_COLLECTION = 'cluster_commands';

export type SyncTopic = 'alarm-rules' | 'pack-specs' | 'webhooks';
export type CommandKind = 'acknowledge';

/** How long a requester waits for the owner to take a command before abandoning it. */
export const COMMAND_WAIT_MS = 5000;
/** How much longer it waits for the result of a command an owner took. */
const TAKEN_WAIT_MS = 5000;
/** How often a requester looks for its command's result. */
const RESULT_POLL_MS = 50;
/** Commands left behind (a requester that died) are removed this long after they expired. */
const GONE_SECONDS = 3600;
const OPERATION_TIMEOUT_MS = 10_000;

interface VersionDocument {
  _id: SyncTopic;
  version: number;
}

export interface CommandDocument {
  _id: string;
  kind: CommandKind;
  battery_id: string;
  args: Record<string, unknown>;
  state: 'pending' | 'taken' | 'done' | 'abandoned';
  /** The instance that asked, and the one that took it. */
  from: string;
  taken_by?: string;
  result?: unknown;
  /** Unix seconds: past it, no owner takes it. */
  expires_at: number;
}

export interface CommandHandler {
  /** Whether this instance runs commands for the pack now (it owns it and holds its state). */
  owns(batteryId: string): boolean;
  /** Runs the command here; answers what the requester answers its client (stored as a document). */
  run(args: Record<string, unknown>): Promise<unknown>;
}

export interface SyncLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface ClusterSyncOptions {
  store: Pick<MongoStore, 'cluster'>;
  instanceId: string;
  pollMs: number;
  logger: SyncLogger;
}

/** No owner of the pack answered a command in time: 503 with Retry-After (the pack may be moving to another instance). */
export class NoOwnerAnswerError extends Error {
  override name = 'NoOwnerAnswerError';
  readonly retryAfterSeconds = 5;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export class ClusterSync {
  readonly #store: ClusterSyncOptions['store'];
  readonly #instanceId: string;
  readonly #pollMs: number;
  readonly #log: SyncLogger;
  readonly #reloads = new Map<SyncTopic, () => Promise<void>>();
  /** The version of each topic this instance last reloaded; absent: never yet. */
  readonly #known = new Map<SyncTopic, number>();
  /** Topics changed here whose bump did not reach the store yet. */
  readonly #unbumped = new Set<SyncTopic>();
  readonly #handlers = new Map<CommandKind, CommandHandler>();
  /** Commands this instance took and runs. */
  readonly #running = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> = Promise.resolve();
  #problem: string | undefined;
  #closed = false;

  constructor(options: ClusterSyncOptions) {
    this.#store = options.store;
    this.#instanceId = options.instanceId;
    this.#pollMs = options.pollMs;
    this.#log = options.logger;
  }

  /** Calls `reload` when another instance (or this one) changed the topic, and once at the first poll. */
  onChange(topic: SyncTopic, reload: () => Promise<void>): void {
    this.#reloads.set(topic, reload);
  }

  /** Runs commands of this kind for the packs `handler` owns. */
  handle(kind: CommandKind, handler: CommandHandler): void {
    this.#handlers.set(kind, handler);
  }

  /** The topic changed here (stored already): the others reload it at their next poll. */
  async changed(topic: SyncTopic): Promise<void> {
    this.#unbumped.add(topic);
    try {
      await this.#bump();
    } catch (error) {
      // Retried each poll.
      this.#warn(error);
    }
  }

  /**
   * Has the owner of `batteryId` run the command, and answers its result; NoOwnerAnswerError when no
   * owner took it within COMMAND_WAIT_MS (or took it and stored no result within TAKEN_WAIT_MS more).
   */
  async request(kind: CommandKind, batteryId: string, args: Record<string, unknown>): Promise<unknown> {
    const commands = await this.#commands();
    const id = randomUUID();
    const expiresAt = Date.now() / 1000 + COMMAND_WAIT_MS / 1000;
    await within(
      commands.insertOne({ _id: id, kind, battery_id: batteryId, args, state: 'pending', from: this.#instanceId, expires_at: expiresAt }),
      OPERATION_TIMEOUT_MS,
      'command',
    );
    try {
      let deadline = Date.now() + COMMAND_WAIT_MS;
      let taken = false;
      for (;;) {
        const doc = await within(commands.findOne({ _id: id }), OPERATION_TIMEOUT_MS, 'command');
        if (doc?.state === 'done') return doc.result;
        if (Date.now() >= deadline) {
          if (taken) break;
          // Pending still: nobody ran it, and nobody will once it is abandoned.
          const abandoned = await within(commands.updateOne({ _id: id, state: 'pending' }, { $set: { state: 'abandoned' } }), OPERATION_TIMEOUT_MS, 'command');
          if (abandoned.matchedCount > 0) break;
          taken = true;
          deadline = Date.now() + TAKEN_WAIT_MS;
        }
        await sleep(RESULT_POLL_MS);
      }
    } finally {
      await within(commands.deleteOne({ _id: id }), OPERATION_TIMEOUT_MS, 'command').catch(() => undefined);
    }
    throw new NoOwnerAnswerError(`No instance that owns battery ${batteryId} answered in time; try again shortly`);
  }

  /** Starts polling (the first poll at once). */
  start(): void {
    this.#schedule(0);
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const startedAt = Date.now();
      this.#polling = this.#poll().then(() => this.#schedule(Math.max(0, this.#pollMs - (Date.now() - startedAt))));
    }, delayMs);
  }

  async #poll(): Promise<void> {
    try {
      const { db } = await this.#store.cluster();
      if (this.#unbumped.size > 0) await this.#bump();
      await this.#readVersions(db);
      await this.#takeCommands(db);
      if (this.#problem !== undefined) this.#log.info({}, 'cluster sync: the store answers again');
      this.#problem = undefined;
    } catch (error) {
      this.#warn(error);
    }
  }

  async #bump(): Promise<void> {
    const { db } = await this.#store.cluster();
    const versions = db.collection<VersionDocument>(VERSIONS_COLLECTION);
    for (const topic of [...this.#unbumped]) {
      await within(versions.updateOne({ _id: topic }, { $inc: { version: 1 } }, { upsert: true }), OPERATION_TIMEOUT_MS, 'version');
      this.#unbumped.delete(topic);
    }
  }

  async #readVersions(db: Db): Promise<void> {
    if (this.#reloads.size === 0) return;
    const docs = await within(db.collection<VersionDocument>(VERSIONS_COLLECTION).find({}).toArray(), OPERATION_TIMEOUT_MS, 'versions');
    const versions = new Map(docs.map((doc) => [doc._id, doc.version]));
    for (const [topic, reload] of this.#reloads) {
      const version = versions.get(topic) ?? 0;
      if (this.#known.get(topic) === version) continue;
      // Noted once reloaded: a reload that fails is tried again next poll.
      await reload();
      this.#known.set(topic, version);
    }
  }

  /** Takes the pending commands for packs this instance owns and runs them, each in the background. */
  async #takeCommands(db: Db): Promise<void> {
    const commands = db.collection<CommandDocument>(COMMANDS_COLLECTION);
    const now = Date.now() / 1000;
    const pending = await within(commands.find({ state: 'pending', expires_at: { $gt: now } }).toArray(), OPERATION_TIMEOUT_MS, 'commands');
    for (const command of pending) {
      const handler = this.#handlers.get(command.kind);
      if (handler === undefined || this.#running.has(command._id) || !handler.owns(command.battery_id)) continue;
      const took = await within(
        commands.updateOne({ _id: command._id, state: 'pending' }, { $set: { state: 'taken', taken_by: this.#instanceId } }),
        OPERATION_TIMEOUT_MS,
        'command',
      );
      if (took.matchedCount === 0) continue;
      this.#running.add(command._id);
      void this.#run(commands, command, handler).finally(() => this.#running.delete(command._id));
    }
    await within(commands.deleteMany({ expires_at: { $lt: now - GONE_SECONDS } }), OPERATION_TIMEOUT_MS, 'commands');
  }

  async #run(commands: Collection<CommandDocument>, command: CommandDocument, handler: CommandHandler): Promise<void> {
    try {
      const result = await handler.run(command.args);
      await within(commands.updateOne({ _id: command._id }, { $set: { state: 'done', result } }), OPERATION_TIMEOUT_MS, 'command');
    } catch (error) {
      // The requester answers 503 when its wait ends.
      this.#log.warn({ err: (error as Error).message, command: command.kind, battery_id: command.battery_id }, 'cluster sync: a command failed');
    }
  }

  async #commands(): Promise<Collection<CommandDocument>> {
    const { db } = await this.#store.cluster();
    return db.collection<CommandDocument>(COMMANDS_COLLECTION);
  }

  #warn(error: unknown): void {
    const message = (error as Error).message;
    if (message !== this.#problem) this.#log.warn({ err: message }, 'cluster sync: cannot reach the store; retrying');
    this.#problem = message;
  }

  /** Stops polling; resolves once a poll under way has finished. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#polling;
  }
}
