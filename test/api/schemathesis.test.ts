/**
 * schemathesis (property-based API testing from the OpenAPI document) against the live service on
 * SQLite: every check, every phase (examples, coverage, fuzzing, stateful), every operation but the
 * endless /api/stream. The document and the server must agree: 0 failures, 0 errors. Once with no
 * keys, once with API_KEY set and supplied (writes then need it, and schemathesis also checks that
 * they refuse requests without it).
 *
 * schemathesis is a Python tool: scripts/test-all.sh installs the pinned version into a virtual
 * environment in .cache/schemathesis (git-ignored); SCHEMATHESIS_BIN points elsewhere if wanted.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MAX_TIMESTAMP } from '../../src/records/schemas.js';
import { startTestService } from '../support/service.js';
import { tempDir } from '../support/temp-dir.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ST = process.env.SCHEMATHESIS_BIN ?? path.join(ROOT, '.cache/schemathesis/bin/st');
/** Test cases per operation and phase: about a minute a run on two cores (the whole CI has 90 minutes). */
const MAX_EXAMPLES = Number(process.env.SCHEMATHESIS_MAX_EXAMPLES ?? 75);
/** Per-operation settings: where the server refuses schema-valid bodies on purpose, and why. */
const CONFIG = fileURLToPath(new URL('./schemathesis.toml', import.meta.url));

/** The parts of schemathesis' JSON report (--report json) this test reads. */
interface Report {
  schemathesis_version: string;
  seed: string;
  running_time: number;
  exit_code: number;
  complete: boolean;
  operations: { selected: number; tested: number; errored: number; skipped: number };
  phases: Record<string, { status: string; skip_reason: string | null }>;
  test_cases: { generated: number; with_failures: number; errored: number };
  failures: { code: string; title: string; count: number; operations: string[] }[];
  errors: { title: string; count: number }[];
}

function run(command: string, args: string[], cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    // No proxy for the loopback service, whatever the machine's settings.
    const env = { ...process.env, NO_COLOR: '1', NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost' };
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/**
 * The parts of schemathesis' text output worth reading on failure: its failures, errors and summary,
 * without the "Stateful tests" notes on links it could not follow (a POST of an array or of a
 * record without battery_id gives no `$request.body#/battery_id`; not a failure).
 */
function findings(output: string): string {
  const sections = output.split(/\n(?==+ [A-Za-z ]+ =+\n)/);
  const kept = sections.filter((section) => !/^=+ Stateful tests =+/.test(section)).join('\n');
  // A reproduction's curl line may hold a body of megabytes: keep its ends, and the rest readable.
  const lines = kept.split('\n').map((line) => (line.length > 2_000 ? `${line.slice(0, 1_000)} …[${line.length} characters]… ${line.slice(-500)}` : line));
  const text = lines.join('\n');
  return text.length > 30_000 ? `…${text.slice(-30_000)}` : text;
}

async function schemathesis(apiKey: string | undefined): Promise<Report & { seed: string }> {
  assert.ok(
    existsSync(ST),
    `schemathesis is not installed at ${ST}: run scripts/test-all.sh (it creates the virtual environment), or set SCHEMATHESIS_BIN`,
  );
  // A timestamp may be at most MAX_CLOCK_SKEW_SECONDS ahead of the server clock: a bound that moves
  // with the clock, which a JSON Schema (a fixed document, loaded once per run) cannot state. The
  // document states the fixed bound, 2100-01-01, and says the moving one in words; here the moving
  // bound is set past the fixed one, so that the document says exactly what the server does.
  // api-suite.ts and plausible-time.test.ts test the moving bound itself.
  const skewPastFixedBound = Math.ceil(MAX_TIMESTAMP - Date.now() / 1000) + 86_400;
  const service = await startTestService({ apiKey, maxClockSkewSeconds: skewPastFixedBound });
  // schemathesis writes its example database and replay files to the working directory.
  const work = tempDir('schemathesis-');
  const reportPath = path.join(work, 'report.json');
  try {
    const args = [
      '--config-file',
      CONFIG,
      'run',
      `${service.url}/openapi.json`,
      '--checks', 'all',
      '--phases', 'examples,coverage,fuzzing,stateful',
      '--exclude-path', '/api/stream',
      '--max-examples', String(MAX_EXAMPLES),
      // One worker: schemathesis' workers are threads, and CPython 3.11's ast.parse is not safe
      // across threads ("AST constructor recursion depth mismatch", a runtime error of the run).
      '--workers', '1',
      '--request-timeout', '30',
      '--generation-database', 'none',
      '--report', 'json',
      '--report-json-path', reportPath,
      '--no-color',
      // A failing run prints its seed; SCHEMATHESIS_SEED replays it.
      ...(process.env.SCHEMATHESIS_SEED ? ['--seed', process.env.SCHEMATHESIS_SEED] : []),
      ...(apiKey === undefined ? [] : ['-H', `X-API-Key: ${apiKey}`]),
    ];
    const { code, output } = await run(ST, args, work);
    assert.ok(existsSync(reportPath), `schemathesis wrote no report (exit code ${code}):\n${output.slice(-5000)}`);
    const text = readFileSync(reportPath, 'utf8');
    // The seed is a 128-bit integer: read as text, a JSON number would lose the digits `--seed` needs.
    const report = { ...(JSON.parse(text) as Report), seed: /"seed":\s*(\d+)/.exec(text)?.[1] ?? '?' };
    const summary = `schemathesis ${report.schemathesis_version}, seed ${report.seed} (rerun with --seed), exit code ${code}:\n${findings(output)}`;
    assert.deepEqual(report.failures, [], summary);
    assert.deepEqual(report.errors, [], summary);
    assert.equal(report.test_cases.with_failures, 0, summary);
    assert.equal(report.test_cases.errored, 0, summary);
    assert.equal(report.operations.errored, 0, summary);
    // Nothing quietly left out: every selected operation tested, every phase run to success.
    assert.equal(report.operations.tested, report.operations.selected, summary);
    for (const phase of ['examples', 'coverage', 'fuzzing', 'stateful']) assert.equal(report.phases[phase]?.status, 'success', `${phase}: ${summary}`);
    assert.equal(report.complete, true, summary);
    assert.equal(code, 0, summary);
    assert.ok(report.operations.selected >= 20, `${report.operations.selected} operations selected`);
    return report;
  } finally {
    await service.close();
  }
}

// Two runs of about a minute each. SCHEMATHESIS_SEED=171639545074711911957508385040536846679 replays one
// that took over 10 minutes: fuzzed webhooks at made-up hosts, each alarm retried on its own and name
// lookups filling libuv's thread pool (fixed: receivers are backed off as a whole, lookups bounded).
describe('schemathesis, all checks and all phases, against the live service on SQLite', { timeout: 15 * 60_000 }, () => {
  for (const apiKey of [undefined, 'schemathesis-write-key']) {
    it(apiKey === undefined ? 'without keys: 0 failures, 0 errors' : 'with API_KEY set and supplied: 0 failures, 0 errors', async (t) => {
      const report = await schemathesis(apiKey);
      t.diagnostic(`${report.operations.tested} operations, ${report.test_cases.generated} test cases in ${report.running_time.toFixed(1)} s (seed ${report.seed})`);
    });
  }
});
