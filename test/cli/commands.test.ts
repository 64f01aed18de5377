/**
 * The command line: help and usage errors of each command, and where settings come from: the
 * environment and a .env file in the working directory, read by the CLI (the environment wins).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from '../support/child-service.js';
import { tempDir } from '../support/temp-dir.js';

/** A working directory holding this .env. */
function withDotEnv(text: string): string {
  const dir = tempDir();
  writeFileSync(path.join(dir, '.env'), text);
  return dir;
}

describe('battery-monitor', () => {
  it('--help lists the commands', async () => {
    const { code, stdout } = await runCli(['--help'], {});
    assert.equal(code, 0);
    assert.match(stdout, /^Usage: battery-monitor \[command\]/);
    for (const command of ['run', 'serve', 'collect', 'simulate']) assert.match(stdout, new RegExp(`\\b${command} `));
  });

  it('refuses an unknown command with the help, exit 2', async () => {
    const { code, stderr } = await runCli(['colect'], {});
    assert.equal(code, 2);
    assert.match(stderr, /^battery-monitor: unknown command "colect"\n\nUsage:/);
  });

  it('simulate --help prints the options; a bad flag is a usage error', async () => {
    const help = await runCli(['simulate', '--help'], {});
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--scenario NAME/);
    const bad = await runCli(['simulate', '--scenario', 'exploding'], {});
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--scenario must be one of normal, charging, discharging, overheating, voltage_anomaly/);
  });

  it('collect --help prints the options; a bad --api is a usage error', async () => {
    const help = await runCli(['collect', '--help'], {});
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--api URL/);
    const bad = await runCli(['collect', '--api', 'ftp://host'], {});
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^--api must be an http:\/\/ or https:\/\/ URL, got "ftp:\/\/host"/);
  });

  it('reads .env in the working directory: a bad value there stops start-up with one line naming it', async () => {
    const { code, stdout, stderr } = await runCli(['serve'], {}, { cwd: withDotEnv('# from .env\nAPI_PORT=80a\n') });
    assert.equal(stderr, 'battery-monitor: API_PORT must be a whole number from 0 to 65535, got "80a"\n');
    assert.equal(code, 2);
    assert.equal(stdout, '');
  });

  it('lets the environment win over .env', async () => {
    // Past the settings (the environment's API_PORT wins), collect stops at its own flag.
    const { code, stderr } = await runCli(['collect', '--api', 'ftp://host'], { API_PORT: '8000' }, { cwd: withDotEnv('API_PORT=80a\n') });
    assert.equal(code, 2);
    assert.match(stderr, /^--api must be/);
  });
});
