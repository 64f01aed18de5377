/**
 * Every benchmark, one after another (`npm run bench`): each in its own process, so that none
 * inherits another's heap, JIT state or open files, with the arguments docs/PERFORMANCE.md gives
 * it. Each writes its own bench/results/<name>.json; this writes bench/results/run-all.json (what
 * ran, how long, how it ended). A benchmark that fails does not stop the rest, so a long run is not
 * lost to one failure, but the run fails: exit code 1, the failures named at the end.
 *
 *   npm run bench                          every benchmark, full length
 *   npm run bench -- --quick               every benchmark, briefly: shows each runs (about 2 minutes
 *                                          on 2 cores); results go to .cache/bench-quick/, not bench/results
 *   npm run bench -- --only api,stream     some of them
 *   npm run bench -- --dry-run             print the commands only
 *
 * Benchmarks measure against ceilings taken in the same run; still, run them on a quiet machine:
 * they share its cores with whatever else runs.
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { RESULTS_DIR, writeResults } from './support.js';

export interface Benchmark {
  name: string;
  /** Path under bench/. */
  file: string;
  /** The arguments docs/PERFORMANCE.md runs it with. */
  args: string[];
  /** Short arguments for --quick: every code path, little time. */
  quick: string[];
}

export const BENCHMARKS: Benchmark[] = [
  {
    name: 'api',
    file: 'api.ts',
    args: ['--seconds', '10', '--rows', '1000000', '--mongodb-rows', '10000'],
    quick: ['--seconds', '2', '--rows', '20000', '--mongodb-rows', '1000'],
  },
  {
    name: 'aggregate',
    file: 'aggregate.ts',
    args: ['--mongodb'],
    quick: ['--rows', '100000', '--runs', '5', '--raw-runs', '1', '--mongodb', '--mongo-rows', '2000', '--mongo-runs', '2'],
  },
  {
    name: 'stream',
    file: 'stream.ts',
    args: [],
    quick: ['--seconds', '3', '--subscribers', '10', '--rate', '1000', '--warmup', '1'],
  },
  {
    name: 'collector-ingest',
    file: 'collector-ingest.ts',
    args: [],
    // --tsx: no build of the service first; the figures then include tsx's overhead.
    quick: ['--duration', '3', '--standalone-frames', '50000', '--forward-records', '50000', '--ceiling-rows', '50000', '--tsx'],
  },
  {
    name: 'storage-layout',
    file: 'storage-layout.ts',
    args: [],
    quick: ['--rows', '20000'],
  },
  {
    name: 'export-latency',
    file: 'export-latency.ts',
    args: [],
    quick: ['--rows', '50000', '--idle-seconds', '1'],
  },
  {
    name: 'analytics',
    file: 'analytics.ts',
    args: ['--duration', '15', '--connections', '20', '--rounds', '2'],
    quick: ['--duration', '3', '--connections', '4', '--rounds', '1'],
  },
  {
    name: 'alarms',
    file: 'alarms.ts',
    args: [],
    quick: ['--duration', '5', '--rounds', '1', '--packs', '200'],
  },
  {
    name: 'v2-ingest',
    file: 'v2-ingest.ts',
    args: [],
    quick: ['--duration', '3', '--connections', '10', '--tsx'],
  },
  {
    name: 'cluster',
    file: 'cluster.ts',
    args: [],
    quick: ['--seconds', '3', '--rate', '100', '--warmup', '1'],
  },
  {
    name: 'post-cpu',
    file: 'post-cpu.ts',
    args: [],
    quick: ['--requests', '2000', '--rounds', '1'],
  },
];

const BENCH_DIR = fileURLToPath(new URL('./', import.meta.url));
const QUICK_RESULTS_DIR = fileURLToPath(new URL('../.cache/bench-quick/', import.meta.url));

export interface BenchmarkRun {
  name: string;
  command: string;
  /** Exit code; null when a signal ended it. */
  code: number | null;
  signal: string | null;
  seconds: number;
}

/** The command line of one benchmark: node, its flags, the file, the arguments. */
export function commandOf(benchmark: Benchmark, quick: boolean): string[] {
  return [process.execPath, '--import', 'tsx', fileURLToPath(new URL(benchmark.file, pathToFileURL(BENCH_DIR))), ...(quick ? benchmark.quick : benchmark.args)];
}

/**
 * Runs the benchmarks in turn, each as a child process sharing this terminal (or silent, with
 * `quiet`); answers how each ended. `env` is added to each child's environment.
 */
export async function runBenchmarks(
  benchmarks: Benchmark[],
  options: { quick: boolean; env?: Record<string, string>; quiet?: boolean },
): Promise<BenchmarkRun[]> {
  const say = options.quiet ? () => {} : (line: string) => console.log(line);
  const runs: BenchmarkRun[] = [];
  for (const benchmark of benchmarks) {
    const [file, ...args] = commandOf(benchmark, options.quick);
    const shown = `node ${args.map((arg) => arg.replace(BENCH_DIR, 'bench/')).join(' ')}`;
    say(`\n=== ${benchmark.name}: ${shown}`);
    const began = performance.now();
    const child = spawn(file!, args, { stdio: options.quiet ? 'ignore' : 'inherit', env: { ...process.env, ...options.env } });
    const { code, signal } = await new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      child.once('error', () => resolve({ code: -1, signal: null }));
      child.once('exit', (exitCode, exitSignal) => resolve({ code: exitCode, signal: exitSignal }));
    });
    const seconds = +((performance.now() - began) / 1000).toFixed(1);
    runs.push({ name: benchmark.name, command: shown, code, signal, seconds });
    say(`=== ${benchmark.name}: ${code === 0 ? 'done' : `FAILED (${signal ?? `exit code ${code}`})`} in ${seconds} s`);
  }
  return runs;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      'dry-run': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(
      [
        'npm run bench [-- --quick] [-- --only NAME,...] [-- --dry-run]',
        '',
        'Runs every benchmark in turn, each in its own process; fails if any fails.',
        '  --quick     short runs that show each benchmark works; results to .cache/bench-quick/',
        '  --only      some benchmarks, by name',
        '  --dry-run   print the commands, run nothing',
        '',
        'Benchmarks:',
        ...BENCHMARKS.map((b) => `  ${b.name.padEnd(18)} bench/${b.file} ${b.args.join(' ')}`.trimEnd()),
      ].join('\n'),
    );
    return;
  }
  let chosen = BENCHMARKS;
  if (values.only !== undefined) {
    const names = values.only.split(',').filter(Boolean);
    const unknown = names.filter((name) => !BENCHMARKS.some((b) => b.name === name));
    if (unknown.length > 0) throw new Error(`unknown benchmark ${unknown.join(', ')}; known: ${BENCHMARKS.map((b) => b.name).join(', ')}`);
    chosen = BENCHMARKS.filter((b) => names.includes(b.name));
  }
  if (values['dry-run']) {
    for (const benchmark of chosen) console.log(`node ${commandOf(benchmark, values.quick).slice(1).join(' ').replaceAll(BENCH_DIR, 'bench/')}`);
    return;
  }
  const env: Record<string, string> = {};
  if (values.quick) {
    mkdirSync(QUICK_RESULTS_DIR, { recursive: true });
    env.BENCH_RESULTS_DIR = QUICK_RESULTS_DIR;
  }
  const runs = await runBenchmarks(chosen, { quick: values.quick, env });
  console.log('');
  for (const run of runs) console.log(`${run.name.padEnd(18)} ${run.code === 0 ? 'ok    ' : 'FAILED'} ${String(run.seconds).padStart(7)} s`);
  writeResults('run-all', { quick: values.quick, runs }, values.quick ? QUICK_RESULTS_DIR : RESULTS_DIR);
  const failed = runs.filter((run) => run.code !== 0);
  if (failed.length > 0) {
    console.error(`\n${failed.length} of ${runs.length} benchmarks failed: ${failed.map((run) => run.name).join(', ')}`);
    process.exitCode = 1;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main().catch((error: unknown) => {
    console.error((error as Error).message);
    process.exitCode = 1;
  });
}
