/**
 * `battery-monitor simulate`: its flags, and progress lines while the simulation (simulator/simulate.ts)
 * runs. Settings give the defaults: COLLECTOR_HOST, the ports, COLLECTOR_BATTERY_MAP.
 */
import { loadConfig, type Environment } from '../config.js';
import { SCENARIOS, type Scenario } from '../simulator/pack-model.js';
import { sendJsonMessages, simulateCycling, type CyclingRunOptions } from '../simulator/cycling.js';
import { startSimulation, type FramesVia, type SimulationOptions } from '../simulator/simulate.js';
import { parseFlags } from './flags.js';

const HELP = `Usage: battery-monitor simulate [options]

Sends simulated battery packs' readings to the collector: binary frames (battery-data) and JSON
messages (performance every 10th reading, predictions every 30th).

Options:
  -s, --scenario NAME   ${SCENARIOS.join(' | ')} | cycling (default normal)
  -n, --packs N         packs at once, each on its own connections, ids pack-1..N (default 1)
  -r, --rate N          readings per second per pack (default 1)
  -d, --duration SEC    stop after SEC seconds (default: until Ctrl-C)
  -c, --count N         stop after N readings per pack
      --frames HOW      auto | binary | json: how battery-data readings travel (default auto)
      --host HOST       collector host (default COLLECTOR_HOST, 127.0.0.1 when that is 0.0.0.0)
      --binary-port N   default COLLECTOR_BINARY_PORT (23456)
      --json-port N     default COLLECTOR_JSON_PORT (23457)
      --seed N          random seed (default 1)
      --cells N         send per-cell readings: N cell voltages (1-1024) and one temperature per
                        module of up to 12 cells with each reading, as JSON (frames cannot carry them)
      --cell-outlier MV with --cells: one weak cell MV millivolts below the others (default 0: none)
  -h, --help            this text

Cycling (--scenario cycling): packs cycled full to empty in simulated time, ageing with a known
truth, their readings (stamped to end now) sent as fast as the JSON port takes them; the truth is
printed at the end, to compare with GET /api/batteries/{battery_id}/health.
      --cycles N        discharges per pack (default 200)
      --fade PCT        state of health lost per 100 equivalent cycles at 25 °C (default 5)
      --interval SEC    simulated seconds between readings (default 30)
      --c-rate C        charge and discharge current, fraction of capacity per hour (default 0.5)
      --offset A        current-sensor offset in amperes (default 0.2)
      --ambient C       ambient temperature in °C (default 25)

Binary frames carry no pack id: the collector names the pack of a frame connection from
COLLECTOR_BATTERY_MAP (e.g. port:23460=pack-1,port:23461=pack-2), and the simulator reads the same
setting. With --frames auto, one pack sends frames; several packs send frames when each has a
port rule, and otherwise send their readings as JSON messages carrying battery_id, so the
dashboard shows them apart.`;

function positiveNumber(name: string, raw: string | undefined, fallback: number | undefined, integer: boolean): number | undefined {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new UsageError(`--${name} must be a positive ${integer ? 'whole number' : 'number'}, got "${raw}"`);
  }
  return value;
}

class UsageError extends Error {}

const CYCLING = 'cycling' as Scenario;

function finiteNumber(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${name} must be a number, got "${raw}"`);
  return value;
}

/** The cycling scenario: simulate each pack's whole run, send it, print the truth to compare with. */
async function runCycling(parsed: Record<string, string | boolean | undefined>, config: ReturnType<typeof loadConfig>): Promise<void> {
  const text = (name: string) => parsed[name] as string | undefined;
  const host = text('host') ?? (['0.0.0.0', '::'].includes(config.collectorHost) ? '127.0.0.1' : config.collectorHost);
  const port = positiveNumber('json-port', text('json-port'), config.collectorJsonPort, true)!;
  if (port > 65535) throw new UsageError('--json-port must be at most 65535');
  const packs = positiveNumber('packs', text('packs'), 1, true)!;
  const options: CyclingRunOptions = {
    batteryIds: Array.from({ length: packs }, (_, i) => `pack-${i + 1}`),
    cycles: positiveNumber('cycles', text('cycles'), 200, true)!,
    seed: positiveNumber('seed', text('seed'), 1, true)!,
    fadePer100Cycles: finiteNumber('fade', text('fade'), 5),
    intervalSeconds: positiveNumber('interval', text('interval'), 30, false)!,
    cRate: positiveNumber('c-rate', text('c-rate'), 0.5, false)!,
    currentOffsetA: finiteNumber('offset', text('offset'), 0.2),
    ambientC: finiteNumber('ambient', text('ambient'), 25),
  };
  if (options.fadePer100Cycles! < 0) throw new UsageError('--fade must not be negative');
  const runs = simulateCycling(options);
  for (const run of runs) {
    console.log(`${run.batteryId}: ${run.messages.length} readings over ${(run.truth.time / 86_400).toFixed(1)} simulated days, JSON to ${host}:${port}`);
    await sendJsonMessages(host, port, run.messages);
  }
  for (const { batteryId, truth } of runs) {
    console.log(
      `${batteryId} truth: soh ${truth.soh.toFixed(2)} %, capacity ${truth.capacity_ah.toFixed(2)} Ah, equivalent cycles ${truth.equivalent_cycles.toFixed(1)}, ` +
        `soc ${truth.soc.toFixed(1)} %, remaining cycles to 80 % ${truth.remainingCycles(80).toFixed(0)}`,
    );
  }
}

export async function runSimulateCommand(args: string[], env: Environment): Promise<void> {
  const parsed = parseFlags(
    args,
    {
      scenario: { type: 'string', short: 's' },
      packs: { type: 'string', short: 'n' },
      rate: { type: 'string', short: 'r' },
      duration: { type: 'string', short: 'd' },
      count: { type: 'string', short: 'c' },
      frames: { type: 'string' },
      host: { type: 'string' },
      'binary-port': { type: 'string' },
      'json-port': { type: 'string' },
      seed: { type: 'string' },
      cells: { type: 'string' },
      'cell-outlier': { type: 'string' },
      cycles: { type: 'string' },
      fade: { type: 'string' },
      interval: { type: 'string' },
      'c-rate': { type: 'string' },
      offset: { type: 'string' },
      ambient: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    HELP,
  );
  if (parsed === undefined) return;
  let options: SimulationOptions;
  try {
    const config = loadConfig(env);
    const scenario = (parsed.scenario ?? 'normal') as Scenario;
    if (scenario === CYCLING) {
      if (parsed.cells !== undefined) throw new UsageError('--cells is not available with --scenario cycling');
      await runCycling(parsed, config);
      return;
    }
    if (!SCENARIOS.includes(scenario)) throw new UsageError(`--scenario must be one of ${[...SCENARIOS, CYCLING].join(', ')}, got "${scenario}"`);
    const frames = (parsed.frames ?? 'auto') as FramesVia;
    if (!['auto', 'binary', 'json'].includes(frames)) throw new UsageError(`--frames must be auto, binary or json, got "${frames}"`);
    const cells = positiveNumber('cells', parsed.cells, undefined, true);
    if (cells !== undefined && cells > 1024) throw new UsageError(`--cells must be at most 1024, got "${parsed.cells}"`);
    if (cells !== undefined && frames === 'binary') throw new UsageError('--cells needs JSON messages: binary frames cannot carry cells (drop --frames binary)');
    if (parsed['cell-outlier'] !== undefined && cells === undefined) throw new UsageError('--cell-outlier needs --cells');
    const cellOutlierMv = finiteNumber('cell-outlier', parsed['cell-outlier'], 0);
    if (cellOutlierMv < 0) throw new UsageError('--cell-outlier must not be negative');
    const host = parsed.host ?? (['0.0.0.0', '::'].includes(config.collectorHost) ? '127.0.0.1' : config.collectorHost);
    const port = (name: string, raw: string | undefined, fallback: number) => {
      const value = positiveNumber(name, raw, fallback, true)!;
      if (value > 65535) throw new UsageError(`--${name} must be at most 65535`);
      return value;
    };
    options = {
      host,
      binaryPort: port('binary-port', parsed['binary-port'], config.collectorBinaryPort),
      jsonPort: port('json-port', parsed['json-port'], config.collectorJsonPort),
      scenario,
      packs: positiveNumber('packs', parsed.packs, 1, true)!,
      rate: positiveNumber('rate', parsed.rate, 1, false)!,
      durationSeconds: positiveNumber('duration', parsed.duration, undefined, false),
      count: positiveNumber('count', parsed.count, undefined, true),
      frames,
      batteryMap: config.collectorBatteryMap,
      seed: positiveNumber('seed', parsed.seed, 1, true),
      cells,
      cellOutlierMv,
      log: (line) => console.log(line),
    };
  } catch (error) {
    console.error(error instanceof UsageError ? `${error.message}\n\nbattery-monitor simulate --help shows the options` : (error as Error).message);
    process.exitCode = 2;
    return;
  }

  const simulation = await startSimulation(options);
  for (const pack of simulation.plan) {
    console.log(
      pack.via === 'binary'
        ? `${pack.batteryId}: ${options.scenario}, frames to ${options.host}:${pack.framePort} (pack id from the collector's battery map), JSON to ${options.host}:${options.jsonPort}`
        : `${pack.batteryId}: ${options.scenario}, JSON messages with battery_id${options.cells === undefined ? '' : ` and ${options.cells} cells`} to ${options.host}:${options.jsonPort}`,
    );
  }
  console.log(`${options.rate} reading(s)/s per pack; ${options.durationSeconds !== undefined ? `for ${options.durationSeconds} s` : options.count !== undefined ? `${options.count} per pack` : 'Ctrl-C stops'}`);
  let last = simulation.stats();
  const progress = setInterval(() => {
    const now = simulation.stats();
    const skipped = now.skipped - last.skipped;
    console.log(`sent ${now.readings} readings (${((now.readings - last.readings) / 5).toFixed(1)}/s), ${now.messages} JSON messages${skipped > 0 ? `; ${skipped} skipped: collector unreachable` : ''}`);
    last = now;
  }, 5000);
  const onSignal = () => void simulation.stop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const totals = await simulation.done;
    console.log(`done: ${totals.readings} readings, ${totals.frames} frames, ${totals.messages} JSON messages, ${totals.skipped} skipped`);
  } finally {
    clearInterval(progress);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
