/**
 * The console log: JSON lines when stdout is a pipe (services, log shippers, these tests), human
 * lines when it is a terminal; one "listening" line per listener either way.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { call } from '../support/helper.js';
import { CLI, spawnService, TSX } from '../support/child-service.js';
import { tempDir } from '../support/temp-dir.js';
import { freePort } from '../support/free-port.js';

const API_KEY = 'log-test-key-0123456789';

/** A port free a moment ago (a port rule cannot say 0). */
function env(dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATA_DIR: dataDir,
    API_HOST: '127.0.0.1',
    API_PORT: '0',
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_BINARY_PORT: '0',
    COLLECTOR_JSON_PORT: '0',
    COLLECTOR_V2_PORT: '0',
    COLLECTOR_BATTERY_MAP: '',
    RETENTION_DAYS: '0',
    ...extra,
  };
}

type Entry = Record<string, unknown>;

/** The "listening" lines as `<listener> <setting> <port>`, sorted. */
function listening(entries: Entry[]): string[] {
  return entries
    .filter((entry) => /listening/i.test(String(entry.msg)))
    .map((entry) => `${String(entry.listener)} ${String(entry.setting)} ${String(entry.port)}`)
    .sort();
}

const hasScript = (() => {
  try {
    return /util-linux/.test(execFileSync('script', ['--version'], { encoding: 'utf8' }));
  } catch {
    return false;
  }
})();

describe('console log', () => {
  it('is JSON lines on a pipe, one "listening" line per listener, no key in it', async () => {
    const mapped = await freePort();
    const service = await spawnService(
      ['run'],
      env(tempDir(), { COLLECTOR_BATTERY_MAP: `port:${mapped}=pack-7`, LOG_LEVEL: 'debug', API_KEY, READ_API_KEY: API_KEY }),
    );
    const answer = await call(service.url, '/api/battery-data/latest', { headers: { 'x-api-key': API_KEY, authorization: `Bearer ${API_KEY}` } });
    assert.ok(answer.status === 200 || answer.status === 404, `GET answered ${answer.status}`);
    const ended = new Promise((resolve) => service.child.stdout!.once('close', resolve));
    service.child.kill('SIGTERM');
    assert.equal(await service.exited, 0);
    await ended;

    const entries = service.lines.map((line) => {
      try {
        return JSON.parse(line) as Entry;
      } catch {
        assert.fail(`not a JSON line: ${line}`);
      }
    });
    const apiPort = Number(new URL(service.url).port);
    const api = entries.find((entry) => entry.msg === 'battery monitor API listening')!;
    const binary = entries.find((entry) => entry.setting === 'COLLECTOR_BINARY_PORT')!;
    const json = entries.find((entry) => entry.setting === 'COLLECTOR_JSON_PORT')!;
    const v2 = entries.find((entry) => entry.setting === 'COLLECTOR_V2_PORT')!;
    assert.deepEqual(listening(entries), [
      `api API_PORT ${apiPort}`,
      `binary COLLECTOR_BATTERY_MAP ${mapped}`,
      `binary COLLECTOR_BINARY_PORT ${String(binary.port)}`,
      `json COLLECTOR_JSON_PORT ${String(json.port)}`,
      `v2 COLLECTOR_V2_PORT ${String(v2.port)}`,
    ]);
    for (const entry of [api, binary, json, v2]) assert.equal(entry.host, '127.0.0.1');
    assert.equal(api.url, service.url);
    assert.ok(!service.lines.some((line) => line.includes(API_KEY)), 'the key reached the log');
  });

  it('is human lines on a terminal (the log file stays JSON)', { skip: !hasScript && 'needs script(1) from util-linux for a pseudo-terminal' }, async (t) => {
    const dataDir = tempDir();
    const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
    // `exec`: the shell script(1) starts must not stay between the terminal and the service. A
    // shell waiting for its child (dash, when SHELL is unset) also receives the Ctrl-C, and dies
    // of it after the service exited 0, which made this test fail now and then with 130.
    const command = `exec ${[process.execPath, '--import', TSX, CLI, 'run'].map(quote).join(' ')}`;
    // script(1) runs the command on a pseudo-terminal and copies what it prints to our pipe, and
    // what we write to the terminal: Ctrl-C there stops the service as it would a person's.
    const child = spawn('script', ['-qfec', command, '/dev/null'], {
      cwd: dataDir,
      env: { ...process.env, ...env(dataDir), LOG_LEVEL: 'info' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    // Should the test fail first: the terminal closes, and the service with it (SIGHUP).
    t.after(() => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')));
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
        if (output.includes('battery monitor API listening')) resolve();
      });
      void closed.then(() => reject(new Error(`exited before listening:\n${output}`)));
    });
    child.stdin.write('\x03');
    assert.equal(await closed, 0, output);

    // eslint-disable-next-line no-control-regex
    const lines = output.replace(/\x1b\[[0-9;]*m/g, '').split(/\r?\n/);
    const logged = lines.filter((line) => /^\[\d\d:\d\d:\d\d\.\d{3}\] [A-Z]+/.test(line));
    assert.ok(logged.length >= 3, output);
    for (const line of lines) assert.throws(() => JSON.parse(line) as unknown, SyntaxError, `a JSON line on a terminal: ${line}`);
    const listeningLines = logged.filter((line) => line.includes('listening'));
    assert.equal(listeningLines.length, 4, listeningLines.join('\n'));
    assert.match(listeningLines.join('\n'), /INFO \(collector\): collector listening \{"listener":"binary","host":"127\.0\.0\.1","port":\d+/);
    assert.match(listeningLines.join('\n'), /INFO: battery monitor API listening \{"listener":"api"/);

    const file = readFileSync(path.join(dataDir, 'data_collector.log'), 'utf8').trim().split('\n');
    const fileEntries = file.map((line) => JSON.parse(line) as Entry);
    assert.deepEqual(
      fileEntries.map((entry) => `${String(entry.msg)} ${String(entry.setting)}`),
      ['collector listening COLLECTOR_BINARY_PORT', 'collector listening COLLECTOR_JSON_PORT', 'collector listening COLLECTOR_V2_PORT', 'collector closed undefined'],
    );
  });
});
