import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { tempDir } from './temp-dir.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/**
 * tsx by its path, so that a child runs from any working directory: by default a fresh one, where
 * the CLI finds no .env (a developer's .env in the project stays out of the tests).
 */
export const TSX = import.meta.resolve('tsx');

export interface ChildService {
  url: string;
  child: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<number | null>;
  /** Every stdout line so far (the log, JSON lines). */
  lines: string[];
}

/**
 * Runs `battery-monitor <args>` as a real child process and waits for its API to listen; one that has
 * not listened within `timeoutMs` (default a minute) is killed, and the call fails with its stderr.
 */
export async function spawnService(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<ChildService> {
  const child = spawn(process.execPath, ['--import', TSX, CLI, ...args], {
    cwd: tempDir(),
    env: { ...process.env, API_HOST: '127.0.0.1', API_PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const lines: string[] = [];
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string };
        if (entry.msg === 'battery monitor API listening' && entry.url !== undefined) resolve(entry.url);
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => reject(new Error(`service exited (${code}) before listening (killed after ${timeoutMs} ms if it hung): ${stderr}`)));
  }).finally(() => clearTimeout(timer));
  return { url, child, exited, lines };
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Working directory (where the CLI looks for .env); default a fresh one. */
  cwd?: string;
  /** Run as another user (when the tests run as root). */
  uid?: number;
  gid?: number;
  /** Killed after this long; default two minutes. */
  timeoutMs?: number;
}

/** Runs `battery-monitor <args>` to its end (a start-up that fails, --help) and answers its exit and output. */
export function runCli(args: string[], env: Record<string, string>, options: RunOptions = {}): Promise<Finished> {
  const child = spawn(process.execPath, ['--import', TSX, CLI, ...args], {
    cwd: options.cwd ?? tempDir(),
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.gid ?? options.uid }),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
