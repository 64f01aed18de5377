#!/usr/bin/env node
/**
 * battery-monitor: with no command (or `run`) the API, the TCP collector and the dashboard in one
 * process; `serve` the API and dashboard only; `collect` the collector on its own, forwarding to an
 * API; `simulate` demo traffic. The environment (and .env) is read here, once; every command gets
 * its settings from it.
 */
import { existsSync } from 'node:fs';
import { ConfigError, loadConfig, type Environment } from '../config.js';

const HELP = `Usage: battery-monitor [command] [--help]

Commands:
  (none), run   API, TCP collector and dashboard in one process (embedded SQLite unless MONGODB_URI is set)
  serve         the HTTP API and dashboard only, no TCP collector
  collect       the TCP collector on its own, forwarding to an API (collect --help)
  simulate      send realistic readings to a collector (simulate --help)

Settings come from the environment and a .env file in the working directory (the environment
wins); .env.example lists every one with its default.
`;

/** process.env, after .env in the working directory: variables already set win, as with dotenv. */
function readEnvironment(): Environment {
  if (existsSync('.env')) process.loadEnvFile('.env');
  return process.env;
}

async function main(argv: string[]): Promise<void> {
  const [command = 'run', ...rest] = argv;
  if (command === '--help' || command === '-h' || command === 'help' || (rest.includes('--help') && (command === 'run' || command === 'serve'))) {
    process.stdout.write(HELP);
    return;
  }
  switch (command) {
    case 'run':
    case 'serve':
      return (await import('../server.js')).runService(loadConfig(readEnvironment()), { collector: command === 'run' });
    case 'collect':
      return (await import('./collect.js')).runCollectCommand(rest, readEnvironment());
    case 'simulate':
      return (await import('./simulate.js')).runSimulateCommand(rest, readEnvironment());
    default:
      process.stderr.write(`battery-monitor: unknown command "${command}"\n\n${HELP}`);
      process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  // One line, no stack: a bad setting (ConfigError) or a listener that cannot start (ListenError,
  // naming the setting to change). What had started is closed by then, logs flushed. The message
  // never holds a secret's value.
  process.stderr.write(`battery-monitor: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(error instanceof ConfigError ? 2 : 1);
});
