/**
 * A real server speaking the MongoDB wire protocol for the tests, on a free loopback port with a
 * temporary data directory. In order of preference:
 *   1. MONGODB_TEST_URI, when set: a server someone else runs (it is neither stopped nor restarted);
 *   2. `mongod` on PATH;
 *   3. FerretDB 1.24.2 on its SQLite backend, built into .cache/bin by scripts/install-ferretdb.sh
 *      when missing (Go from the module proxy, a few minutes once).
 *
 *   const { server, freshDatabase, admin } = await mongoForTests('my_test'); // at a test file's top level
 *   ... openMongoStore({ uri: server.uri, databaseName: freshDatabase(), retentionDays: 30 }) ...
 *
 * (startMongoServer gives a server alone, which its caller stops: a second one inside a test.)
 *
 * For fault tests a local server can be suspended (the process stops, its data stays) and resumed
 * on the same port with the same data.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import { freePort } from './free-port.js';

export const FERRETDB_VERSION = 'v1.24.2';
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FERRETDB_BIN = path.join(REPO, '.cache', 'bin', 'ferretdb');
const READY_TIMEOUT_MS = 30_000;

export interface MongoTestServer {
  uri: string;
  kind: 'external' | 'mongod' | 'ferretdb';
  /** What it is, for test names and logs; never holds credentials. */
  description: string;
  /** Stops the server for good and removes its data (for an external server: does nothing). */
  stop(): Promise<void>;
  /** Stops the process, keeping its data and port; undefined for an external server. */
  suspend?(): Promise<void>;
  /** Starts it again on the same port with the same data, and waits until it answers. */
  resume?(): Promise<void>;
  /** Pauses the process (SIGSTOP): connections stay open and nothing answers, as with a hung server. */
  freeze?(): void;
  /** Lets a frozen process go on (SIGCONT). */
  thaw?(): void;
}

export interface MongoServerOptions {
  /**
   * FerretDB only: answer `hello` as a member of this replica set, as Atlas does, so that clients
   * take the replica-set code paths (majority write concern). Other servers ignore it.
   */
  replicaSetName?: string;
}

export async function startMongoServer(options: MongoServerOptions = {}): Promise<MongoTestServer> {
  const external = process.env.MONGODB_TEST_URI?.trim();
  if (external) {
    return { uri: external, kind: 'external', description: 'MONGODB_TEST_URI', stop: async () => {} };
  }
  const mongod = onPath('mongod');
  if (mongod !== undefined) {
    return startLocal('mongod', (port, dir) => [
      mongod,
      ['--dbpath', path.join(dir, 'db'), '--port', String(port), '--bind_ip', '127.0.0.1', '--quiet', '--nounixsocket'],
    ]);
  }
  installFerretDb();
  return startLocal('ferretdb', (port, dir) => [
    FERRETDB_BIN,
    [
      '--handler=sqlite',
      `--sqlite-url=file:${path.join(dir, 'db')}/`,
      `--listen-addr=127.0.0.1:${port}`,
      '--telemetry=disable',
      '--debug-addr=-',
      `--state-dir=${path.join(dir, 'state')}`,
      '--log-level=WARN',
      ...(options.replicaSetName === undefined ? [] : [`--repl-set-name=${options.replicaSetName}`]),
    ],
  ]);
}

function onPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, command);
    if (dir !== '' && existsSync(candidate)) return candidate;
  }
  return undefined;
}

function installFerretDb(): void {
  const stamp = path.join(REPO, '.cache', 'bin', 'ferretdb.version');
  if (existsSync(FERRETDB_BIN) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === FERRETDB_VERSION) return;
  // Progress goes to stderr: the test runner reads stdout.
  const result = spawnSync('sh', [path.join(REPO, 'scripts', 'install-ferretdb.sh')], {
    stdio: ['ignore', 2, 2],
    env: { ...process.env, FERRETDB_VERSION },
  });
  if (result.status !== 0 || !existsSync(FERRETDB_BIN)) {
    throw new Error('could not build FerretDB (scripts/install-ferretdb.sh failed); set MONGODB_TEST_URI or put mongod on PATH');
  }
}

async function startLocal(
  kind: 'mongod' | 'ferretdb',
  command: (port: number, dir: string) => [string, string[]],
): Promise<MongoTestServer> {
  const dir = mkdtempSync(path.join(tmpdir(), `battery-${kind}-`));
  mkdirSync(path.join(dir, 'db'));
  mkdirSync(path.join(dir, 'state'));
  const port = await freePort();
  const uri = `mongodb://127.0.0.1:${port}/`;
  const [file, args] = command(port, dir);
  let child: ChildProcess | undefined;
  let output = '';

  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);

  async function start(): Promise<void> {
    output = '';
    const proc = spawn(file, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4000));
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    const exited = new Promise<never>((_, reject) =>
      proc.once('exit', (code, signal) => reject(new Error(`${kind} exited (${code ?? signal}) before answering:\n${output}`))),
    );
    exited.catch(() => undefined);
    await Promise.race([waitUntilAnswering(uri, kind, () => output), exited]);
  }

  async function halt(): Promise<void> {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGCONT');
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  await start();
  return {
    uri,
    kind,
    description: `${kind === 'ferretdb' ? `FerretDB ${FERRETDB_VERSION} (SQLite backend)` : 'mongod'} on 127.0.0.1:${port}`,
    async stop() {
      await halt();
      process.off('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
    },
    suspend: halt,
    async resume() {
      if (child !== undefined) return;
      await start();
    },
    freeze: () => {
      if (child?.pid === undefined) throw new Error(`${kind} is not running: nothing to freeze`);
      child.kill('SIGSTOP');
      waitUntilStopped(child.pid);
    },
    thaw: () => child?.kill('SIGCONT'),
  };
}

/**
 * kill() returns before the signal has stopped every thread of the process: a request sent at once
 * could still be answered. Waits (at most a second) until Linux says the process is stopped (state T).
 */
function waitUntilStopped(pid: number): void {
  const deadline = Date.now() + 1000;
  while (Date.now() < deadline) {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    if (state === 'T' || state === 't') return;
  }
  throw new Error(`process ${pid} did not stop within a second of SIGSTOP`);
}

async function waitUntilAnswering(uri: string, kind: string, output: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const client = new MongoClient(uri, { serverSelectionTimeoutMS: 300, connectTimeoutMS: 300 });
    try {
      await client.db('admin').command({ ping: 1 });
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${kind} did not answer at ${uri} within ${READY_TIMEOUT_MS} ms: ${(error as Error).message}\n${output()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await client.close();
    }
  }
}

export interface MongoForTests {
  server: MongoTestServer;
  /** A database name of its own for each call: `<prefix>_<pid>_<n>`. */
  freshDatabase(): string;
  /** A client of the server for what a test reads or plants itself (documents, indexes); it connects on first use. */
  admin: MongoClient;
}

/**
 * A MongoDB-wire server for one test file (call it at the file's top level), stopped after the file,
 * a fresh database name per call, and a client of its own. The databases are dropped at the end: on a
 * server of the user's own (MONGODB_TEST_URI) nothing may be left behind.
 */
export async function mongoForTests(prefix: string): Promise<MongoForTests> {
  const server = await startMongoServer();
  const admin = new MongoClient(server.uri);
  const databases: string[] = [];
  after(async () => {
    for (const name of databases) await admin.db(name).dropDatabase().catch(() => undefined);
    await admin.close();
    await server.stop();
  });
  const freshDatabase = () => {
    const name = `${prefix}_${process.pid}_${databases.length + 1}`;
    databases.push(name);
    return name;
  };
  return { server, freshDatabase, admin };
}
