/**
 * SQLite mode is one process (src/store/data-dir-lock.ts): a second store on a DATA_DIR in use is
 * refused with a message that says what to do, in this process and from another one (a second
 * `battery-monitor serve`), and the directory is free again once the first closes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DataDirInUseError } from '../../src/store/data-dir-lock.js';
import { openSqliteStore } from '../../src/store/sqlite-store.js';
import { tempDir } from '../support/temp-dir.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

describe('one process per SQLite DATA_DIR', () => {
  it('refuses a second store on a DATA_DIR in use, saying what to do; takes it once the first is closed', async () => {
    const dir = tempDir();
    const first = await openSqliteStore(dir);
    try {
      await assert.rejects(openSqliteStore(dir), (error: Error) => error instanceof DataDirInUseError && error.message.includes(dir) && /MONGODB_URI/.test(error.message));
    } finally {
      await first.close();
    }
    const second = await openSqliteStore(dir);
    await second.close();
  });

  it('a second `serve` on the same DATA_DIR exits at start with that message', { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const first = await openSqliteStore(dir);
    try {
      const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve'], {
        env: { ...process.env, DATA_DIR: dir, API_HOST: '127.0.0.1', API_PORT: '0' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      assert.notEqual(code, 0, output);
      assert.match(output, /in use by another battery-monitor process/, output);
    } finally {
      await first.close();
    }
  });
});
