#!/usr/bin/env node
/**
 * battery-monitor: `serve` (API), `collect` (standalone TCP collector forwarding to an API),
 * `simulate` (demo traffic), or with no command everything in one process.
 */
import { constants } from 'node:os';
import { ConfigError } from './config.js';
import { startService, type Service } from './service.js';

const HELP = `Usage: battery-monitor [command] [--help]

Commands:
  (none), run   API, TCP collector and dashboard in one process (embedded SQLite unless MONGODB_URI is set)
  serve         the HTTP API and dashboard only, no TCP collector
  collect       the TCP collector on its own, forwarding to an API (collect --help)
  simulate      send realistic readings to a collector (simulate --help)

Settings come from the environment and a .env file in the working directory: see the README.
`;

async function serve(collector: boolean): Promise<void> {
  // Listening for signals before starting: a Ctrl-C right after the "listening" lines (or during a
  // slow start, a store far away) stops cleanly once started; a second one does not wait.
  let service: Service | undefined;
  let requested: NodeJS.Signals | undefined;
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (service === undefined) {
      if (requested !== undefined) process.exit(128 + (constants.signals[signal] ?? 0));
      requested = signal;
      return;
    }
    if (stopping) return;
    stopping = true;
    const { app } = service;
    app.log.info({ signal }, 'stopping: finishing in-flight writes');
    service.close().then(
      () => process.exit(0),
      (error: unknown) => {
        app.log.error({ err: error }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  service = await startService({}, { collector });
  if (requested !== undefined) stop(requested);
}

async function main(argv: string[]): Promise<void> {
  const [command = 'run', ...rest] = argv;
  if (command === '--help' || command === '-h' || command === 'help' || (rest.includes('--help') && (command === 'run' || command === 'serve'))) {
    process.stdout.write(HELP);
    return;
  }
  switch (command) {
    case 'run':
      return serve(true);
    case 'serve':
      return serve(false);
    case 'collect':
      return (await import('./collector/collect.js')).runCollectCommand(rest);
    case 'simulate':
      return (await import('./simulator/simulate.js')).runSimulateCommand(rest);
    default:
      process.stderr.write(`battery-monitor: unknown command "${command}"\n\n${HELP}`);
      process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  // One line, no stack: a bad setting (ConfigError) or a listener that cannot start (ListenError,
  // naming the setting to change). What had started is closed by then, logs flushed. The message
  // never holds a secret's value.
  const message = error instanceof ConfigError ? error.message : error instanceof Error ? error.message : String(error);
  process.stderr.write(`battery-monitor: ${message}\n`);
  process.exit(error instanceof ConfigError ? 2 : 1);
});
