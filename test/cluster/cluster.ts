/**
 * Several real service processes on one MongoDB-wire server, HAProxy in front (health checks on
 * /health), and a live-stream reader: what the cluster tests start. Everything on 127.0.0.1, every
 * process stopped after the file.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';
import { spawnService, type ChildService } from '../support/child-service.js';
import { call } from '../support/helper.js';
import { freePort } from '../support/free-port.js';
import { tempDir } from '../support/temp-dir.js';

export interface Instance extends ChildService {
  id: string;
  port: number;
}

const started: ChildProcess[] = [];
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** Starts `count` services on one database, INSTANCE_ID api-1, api-2, ... */
export async function startInstances(count: number, env: Record<string, string>): Promise<Instance[]> {
  const instances: Instance[] = [];
  for (let i = 1; i <= count; i++) instances.push(await startInstance(`api-${i}`, env));
  return instances;
}

export async function startInstance(id: string, env: Record<string, string>): Promise<Instance> {
  const service = await spawnService(['serve'], {
    INSTANCE_ID: id,
    COLLECTOR_BINARY_PORT: '0',
    COLLECTOR_JSON_PORT: '0',
    COLLECTOR_HOST: '127.0.0.1',
    ...env,
  });
  started.push(service.child);
  return { ...service, id, port: Number(new URL(service.url).port) };
}

/** kill -9, and waits until the process is gone. */
export async function kill(instance: Instance): Promise<void> {
  instance.child.kill('SIGKILL');
  await instance.exited;
}

export interface Balancer {
  url: string;
  config: string;
  stop(): Promise<void>;
}

/** The HAProxy configuration the tests run (docs/deploy.md shows the same). */
export function haproxyConfig(port: number, backends: readonly { id: string; port: number }[]): string {
  return [
    'global',
    '  maxconn 1024',
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  timeout client 60s',
    '  timeout server 60s',
    // Server-Sent Events: a stream stays open for as long as the client likes.
    '  timeout tunnel 1h',
    '  option redispatch',
    '  retries 2',
    'frontend api',
    `  bind 127.0.0.1:${port}`,
    '  default_backend instances',
    'backend instances',
    '  balance roundrobin',
    '  option httpchk GET /health',
    '  http-check expect status 200',
    '  default-server inter 500ms fall 2 rise 1',
    ...backends.map((backend) => `  server ${backend.id} 127.0.0.1:${backend.port} check`),
    '',
  ].join('\n');
}

/** haproxy on PATH, else where Debian's package puts it (/usr/sbin is not on every user's PATH). */
const HAPROXY = spawnSync('haproxy', ['-v']).status === 0 ? 'haproxy' : '/usr/sbin/haproxy';

export function haproxyInstalled(): boolean {
  return spawnSync(HAPROXY, ['-v']).status === 0;
}

/** Starts HAProxy with a generated configuration on a free port; waits until it serves /health. */
export async function startBalancer(backends: readonly { id: string; port: number }[]): Promise<Balancer> {
  const port = await freePort();
  const config = haproxyConfig(port, backends);
  const file = path.join(tempDir(), 'haproxy.cfg');
  writeFileSync(file, config);
  const child = spawn(HAPROXY, ['-f', file, '-db'], { stdio: ['ignore', 'ignore', 'pipe'] });
  started.push(child);
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  await until(async () => {
    if (child.exitCode !== null) throw new Error(`haproxy exited: ${stderr}`);
    return (await call(url, '/health').catch(() => ({ status: 0 }))).status === 200;
  }, 'haproxy serves /health');
  return {
    url,
    config,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Polls `check` every 25 ms until it holds; throws after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export interface StreamEvent {
  event: string;
  id: string | undefined;
  data: any;
}

/** A live-stream subscriber that keeps every event it reads, until closed. */
export class StreamReader {
  readonly events: StreamEvent[] = [];
  readonly #controller = new AbortController();
  #reading: Promise<void> = Promise.resolve();

  static async open(url: string, query = ''): Promise<StreamReader> {
    const reader = new StreamReader();
    const response = await fetch(`${url}/api/stream${query}`, { signal: reader.#controller.signal });
    assert.equal(response.status, 200);
    reader.#reading = reader.#read(response).catch(() => undefined);
    return reader;
  }

  async #read(response: Response): Promise<void> {
    const stream = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (;;) {
      const { value, done } = await stream.read();
      if (done) return;
      text += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = text.indexOf('\n\n')) >= 0) {
        const lines = text.slice(0, end).split('\n');
        text = text.slice(end + 2);
        const data = lines.find((line) => line.startsWith('data: '));
        if (data === undefined) continue; // the greeting, keep-alives
        this.events.push({
          event: lines.find((line) => line.startsWith('event: '))?.slice(7) ?? 'message',
          id: lines.find((line) => line.startsWith('id: '))?.slice(4),
          data: JSON.parse(data.slice(6)),
        });
      }
    }
  }

  records(kind = 'battery-data'): any[] {
    return this.events.filter((event) => event.event === kind).map((event) => event.data);
  }

  async close(): Promise<void> {
    this.#controller.abort();
    await this.#reading;
  }
}
