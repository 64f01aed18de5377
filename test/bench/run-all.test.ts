/**
 * `npm run bench` (bench/run-all.ts): the script package.json names exists and runs, knows every
 * benchmark in bench/, runs each with the arguments the docs give, and fails when one fails without
 * skipping the rest. The benchmarks themselves are not run here: they take minutes and measure
 * timings, which tests do not assert.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BENCHMARKS, runBenchmarks } from '../../bench/run-all.js';
import { tempDir } from '../support/temp-dir.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const npm = (...args: string[]) => spawnSync('npm', ['run', '--silent', 'bench', '--', ...args], { cwd: ROOT, encoding: 'utf8' });

describe('npm run bench', () => {
  it('is the script package.json names, and answers --help with every benchmark', () => {
    const script = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts.bench as string;
    const file = /bench\/[\w-]+\.ts/.exec(script)?.[0];
    assert.ok(file !== undefined && existsSync(path.join(ROOT, file)), `${script}: the file it runs exists`);
    const help = npm('--help');
    assert.equal(help.status, 0, help.stderr);
    for (const benchmark of BENCHMARKS) assert.match(help.stdout, new RegExp(`^  ${benchmark.name} `, 'm'));
  });

  it('runs every benchmark in bench/ and only those', () => {
    const files = readdirSync(path.join(ROOT, 'bench')).filter((name) => name.endsWith('.ts') && name !== 'support.ts' && name !== 'run-all.ts');
    assert.deepEqual(BENCHMARKS.map((b) => b.file).sort(), files.sort());
  });

  it('runs each with the command docs/PERFORMANCE.md gives', () => {
    const doc = readFileSync(path.join(ROOT, 'docs', 'PERFORMANCE.md'), 'utf8');
    const dry = npm('--dry-run');
    assert.equal(dry.status, 0, dry.stderr);
    const commands = dry.stdout.trim().split('\n');
    assert.equal(commands.length, BENCHMARKS.length);
    for (const command of commands) assert.ok(doc.includes(`\`${command}\``), `docs/PERFORMANCE.md gives \`${command}\``);
    // The quick commands are other arguments to the same files.
    const quick = npm('--dry-run', '--quick').stdout.trim().split('\n');
    assert.deepEqual(quick.map((c) => c.split(' ')[3]), commands.map((c) => c.split(' ')[3]));
  });

  it('goes on after a benchmark that fails, and reports it', async () => {
    const dir = tempDir();
    const marker = path.join(dir, 'second-ran');
    writeFileSync(path.join(dir, 'fails.ts'), 'process.exit(3);\n');
    writeFileSync(path.join(dir, 'works.ts'), `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(marker)}, process.argv.slice(2).join(' '));\n`);
    const runs = await runBenchmarks(
      [
        { name: 'fails', file: path.join(dir, 'fails.ts'), args: [], quick: [] },
        { name: 'works', file: path.join(dir, 'works.ts'), args: ['--full'], quick: ['--short'] },
      ],
      { quick: true, quiet: true },
    );
    assert.deepEqual(runs.map((run) => [run.name, run.code]), [['fails', 3], ['works', 0]]);
    assert.equal(readFileSync(marker, 'utf8'), '--short');
  });

  it('refuses a benchmark it does not know', () => {
    const answer = npm('--only', 'no-such-bench');
    assert.equal(answer.status, 1);
    assert.match(answer.stderr, /unknown benchmark no-such-bench/);
  });
});
