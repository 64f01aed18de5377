/**
 * A start-up that fails reads as one line naming the setting to change, the process exits non-zero,
 * and nothing else is printed but the JSON log lines of what had started (and was closed again):
 * no stack trace, no "sonic boom is not ready yet" from a log file still opening at exit.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, describe, it } from 'node:test';
import { ListenError } from '../../src/listen-error.js';
import { runCli, spawnService, type Finished } from '../support/child-service.js';
import { startTestService } from '../support/service.js';
import { tempDir } from '../support/temp-dir.js';

const taken: net.Server[] = [];
after(() => Promise.all(taken.map((server) => new Promise((resolve) => server.close(resolve)))));

/** A port bound on 127.0.0.1 by this process for the rest of the file. */
async function takePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  taken.push(server);
  return (server.address() as net.AddressInfo).port;
}

/** Every listener on 127.0.0.1 and a free port unless the case says otherwise. */
function env(overrides: Record<string, string>): Record<string, string> {
  return {
    DATA_DIR: tempDir(),
    API_HOST: '127.0.0.1',
    API_PORT: '0',
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_BINARY_PORT: '0',
    COLLECTOR_JSON_PORT: '0',
    COLLECTOR_V2_PORT: '0',
    COLLECTOR_BATTERY_MAP: '',
    RETENTION_DAYS: '0',
    ...overrides,
  };
}

/** Exactly `line` on stderr, exit 1, and a stdout of JSON log lines without a stack among them. */
function assertOneLine(result: Finished, line: string): void {
  const output = `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
  assert.equal(result.stderr, `battery-monitor: ${line}\n`, output);
  assert.equal(result.code, 1, output);
  for (const text of result.stdout.split('\n').filter((l) => l !== '')) {
    const entry = JSON.parse(text) as { level: number };
    assert.ok(entry.level < 50, `an error was logged: ${text}`);
  }
  assert.doesNotMatch(result.stdout + result.stderr, /\n\s+at |"stack"|sonic boom/, output);
}

describe('start-up failures', () => {
  it('in-process: startService rejects with a ListenError and closes the listeners it had opened', async () => {
    const port = await takePort();
    const servers = () => process.getActiveResourcesInfo().filter((name) => name === 'TCPServerWrap').length;
    const before = servers();
    await assert.rejects(
      startTestService({ apiPort: port }, { collector: true }),
      (error: unknown) => error instanceof ListenError && error.code === 'EADDRINUSE' && error.target.portSetting === 'API_PORT',
    );
    assert.equal(servers(), before, 'the collector listeners are closed');
  });

  it('COLLECTOR_BINARY_PORT taken', async () => {
    const port = await takePort();
    const result = await runCli([], env({ COLLECTOR_BINARY_PORT: String(port) }));
    assertOneLine(result, `port ${port} (COLLECTOR_BINARY_PORT) on 127.0.0.1 is already in use; set COLLECTOR_BINARY_PORT to a free port`);
  });

  it('COLLECTOR_JSON_PORT taken (the binary listener had started: it is closed)', async () => {
    const port = await takePort();
    const result = await runCli(['run'], env({ COLLECTOR_JSON_PORT: String(port) }));
    assertOneLine(result, `port ${port} (COLLECTOR_JSON_PORT) on 127.0.0.1 is already in use; set COLLECTOR_JSON_PORT to a free port`);
    assert.match(result.stdout, /"listener":"binary".*"collector listening"/);
  });

  it('API_PORT taken (the collector had started: it is closed, and the store)', async () => {
    const port = await takePort();
    const result = await runCli(['run'], env({ API_PORT: String(port) }));
    assertOneLine(result, `port ${port} (API_PORT) on 127.0.0.1 is already in use; set API_PORT to a free port`);
    assert.match(result.stdout, /"collector closed"/);
  });

  it('API_PORT taken, API only (serve)', async () => {
    const port = await takePort();
    const result = await runCli(['serve'], env({ API_PORT: String(port) }));
    assertOneLine(result, `port ${port} (API_PORT) on 127.0.0.1 is already in use; set API_PORT to a free port`);
  });

  it('a port rule of COLLECTOR_BATTERY_MAP taken', async () => {
    const port = await takePort();
    const result = await runCli(['run'], env({ COLLECTOR_BATTERY_MAP: `peer:10.0.0.7=pack-2, port:${port}=pack-7` }));
    assertOneLine(
      result,
      `port ${port} (COLLECTOR_BATTERY_MAP rule "port:${port}=pack-7") on 127.0.0.1 is already in use; change that rule of COLLECTOR_BATTERY_MAP to a free port`,
    );
  });

  it('COLLECTOR_BINARY_PORT taken, standalone collector (collect)', async () => {
    const port = await takePort();
    const result = await runCli(['collect', '--api', 'http://127.0.0.1:9', '--metrics-port', '0'], env({ COLLECTOR_BINARY_PORT: String(port) }));
    assertOneLine(result, `port ${port} (COLLECTOR_BINARY_PORT) on 127.0.0.1 is already in use; set COLLECTOR_BINARY_PORT to a free port`);
  });

  it('--metrics-port taken, standalone collector (collect)', async () => {
    const port = await takePort();
    const result = await runCli(['collect', '--api', 'http://127.0.0.1:9', '--metrics-port', String(port), '--metrics-host', '127.0.0.1'], env({}));
    assertOneLine(result, `port ${port} (--metrics-port) on 127.0.0.1 is already in use; pass --metrics-port a free port, or 0 for any`);
  });

  // 198.51.100.0/24 is TEST-NET-2: documentation only, on no machine's interface.
  const foreign = '198.51.100.77';
  const local = Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address === foreign));

  it('API_HOST not an address of this machine', { skip: local && `${foreign} is local here` }, async () => {
    const result = await runCli(['serve'], env({ API_HOST: foreign }));
    assertOneLine(result, `address ${foreign} (API_HOST) is not an address of this machine; set API_HOST to one of its addresses, or 0.0.0.0 for all`);
  });

  it('COLLECTOR_HOST not an address of this machine', { skip: local && `${foreign} is local here` }, async () => {
    const result = await runCli(['run'], env({ COLLECTOR_HOST: foreign }));
    assertOneLine(result, `address ${foreign} (COLLECTOR_HOST) is not an address of this machine; set COLLECTOR_HOST to one of its addresses, or 0.0.0.0 for all`);
  });

  // Binding port 80 needs privileges: as root the child runs as nobody (65534) to be refused.
  const unprivilegedFrom = Number(readFileSafe('/proc/sys/net/ipv4/ip_unprivileged_port_start') ?? 1024);
  const root = process.getuid?.() === 0;
  it('API_PORT below 1024 without the privilege to bind it', { skip: unprivilegedFrom <= 80 && 'port 80 needs no privilege here' }, async () => {
    const dataDir = tempDir();
    if (root) chmodSync(dataDir, 0o777);
    const result = await runCli(['serve'], env({ API_PORT: '80', DATA_DIR: dataDir }), { cwd: dataDir, ...(root ? { uid: 65534 } : {}) });
    assertOneLine(result, `port 80 (API_PORT) on 127.0.0.1 is not allowed: ports below 1024 need root or CAP_NET_BIND_SERVICE; set API_PORT to a port from 1024 to 65535`);
  });
});

function readFileSafe(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

describe('start-up warnings', () => {
  const READ_KEY = 'read-key-0123456789';
  const WRITE_KEY = 'write-key-0123456789';

  /** The JSON log lines of `serve` with these settings, from start to a clean stop. */
  async function startUpLog(overrides: Record<string, string>): Promise<{ level: number; msg: string; settings?: string[] }[]> {
    const service = await spawnService(['serve'], env(overrides));
    const stopped = new Promise((resolve) => service.child.stdout!.once('close', resolve));
    service.child.kill('SIGTERM');
    assert.equal(await service.exited, 0);
    await stopped;
    for (const line of service.lines) {
      for (const key of [READ_KEY, WRITE_KEY]) assert.ok(!line.includes(key), `a key in the log: ${line}`);
    }
    return service.lines.map((line) => JSON.parse(line) as { level: number; msg: string; settings?: string[] });
  }

  const openWrites = (entry: { msg: string }) => /READ_API_KEY is set but API_KEY is not/.test(entry.msg);

  it('READ_API_KEY without API_KEY: one warning naming both settings, writes open (no value logged)', async () => {
    const warnings = (await startUpLog({ READ_API_KEY: READ_KEY })).filter(openWrites);
    assert.equal(warnings.length, 1);
    const [warning] = warnings;
    assert.equal(warning?.level, 40, 'logged as a warning');
    assert.deepEqual(warning?.settings, ['READ_API_KEY', 'API_KEY']);
    assert.match(warning?.msg ?? '', /writes \(POST \/api\/\.\.\.\) are open to anyone who reaches the API; set API_KEY too$/);
  });

  it('no such warning with both keys, or with API_KEY alone', async () => {
    assert.deepEqual((await startUpLog({ READ_API_KEY: READ_KEY, API_KEY: WRITE_KEY })).filter(openWrites), []);
    assert.deepEqual((await startUpLog({ API_KEY: WRITE_KEY })).filter(openWrites), []);
  });
});
