/**
 * `battery-monitor simulate`: packs that send what real edge devices send, so a new user sees data
 * flow without hardware. Each pack has its own TCP connections: binary frames to the binary port
 * (battery-data readings) and JSON messages to the JSON port (performance every 10th reading,
 * predictions every 30th, each with the pack's battery_id).
 *
 * Several packs and binary frames: a frame carries no pack id, the collector names the pack of a
 * connection from COLLECTOR_BATTERY_MAP (listening port or peer address). The simulator reads the
 * same setting: a pack with a `port:P=pack-k` rule sends its frames to port P, so they are stored as
 * pack-k. With `--frames auto` (the default), one pack sends frames (named by the map, normally
 * "default"); several packs send frames when every pack has a port rule, and otherwise send their
 * readings as JSON battery-data messages carrying battery_id, which is the only way several packs on
 * one port can be told apart. `--frames binary|json` chooses explicitly.
 *
 * Per-cell readings (`--cells N`, cell-model.ts): each battery-data reading carries `cell_voltages`
 * and `cell_temps`. A binary frame has a fixed 16-byte layout with no room for them, so with cells
 * every pack sends its readings as JSON messages.
 */
import net from 'node:net';
import { encodeFrame, FRAME_BYTES } from '../collector/binary-decoder.js';
import { batteryIdFor, parseBatteryMap, type BatteryMap } from '../collector/battery-map.js';
import { CellModel, type CellReadings } from './cell-model.js';
import { PackModel, SCENARIOS, type Reading, type Scenario } from './pack-model.js';

export type FramesVia = 'auto' | 'binary' | 'json';

export interface SimulationOptions {
  host: string;
  binaryPort: number;
  jsonPort: number;
  scenario: Scenario;
  packs: number;
  /** Readings per second per pack. */
  rate: number;
  /** Stop after this long (seconds); with neither this nor `count`, run until stop(). */
  durationSeconds?: number;
  /** Stop after this many readings per pack. */
  count?: number;
  frames?: FramesVia;
  batteryMap?: BatteryMap;
  seed?: number;
  /** Pack time per reading, seconds (default 1: one reading is one second of the pack's life). */
  secondsPerReading?: number;
  /** Cells in series per pack (1-1,024): readings carry per-cell voltages and module temperatures, as JSON. */
  cells?: number;
  /** With cells: one weak cell this many millivolts below the others (cell-model.ts); 0 or unset for none. */
  cellOutlierMv?: number;
  /** Called with every reading sent (tests), with its cells when it has them. */
  onReading?: (batteryId: string, via: 'binary' | 'json', reading: Reading, cells?: CellReadings) => void;
  /** Progress lines; default none. */
  log?: (line: string) => void;
}

export interface PackPlan {
  batteryId: string;
  /** How its battery-data readings travel. */
  via: 'binary' | 'json';
  /** Port the frames go to (binary only). */
  framePort?: number;
}

export interface SimulationStats {
  readings: number;
  frames: number;
  messages: number;
  /** Readings not sent because the collector was unreachable or not reading. */
  skipped: number;
}

export interface SimulationHandle {
  readonly plan: readonly PackPlan[];
  stats(): SimulationStats;
  /** Settles when `count` or `durationSeconds` is reached, or after stop(). */
  readonly done: Promise<SimulationStats>;
  stop(): Promise<SimulationStats>;
}

/**
 * Decides per pack its battery id and whether its readings travel as frames or JSON. Readings with
 * cells travel as JSON whatever `frames` says: a frame cannot carry them.
 */
export function planPacks(options: Pick<SimulationOptions, 'packs' | 'frames' | 'batteryMap' | 'binaryPort' | 'cells'>): PackPlan[] {
  const map = options.batteryMap ?? parseBatteryMap('');
  const portOf = new Map([...map.byPort].map(([port, id]) => [id, port]));
  const frames = (options.cells ?? 0) > 0 ? 'json' : (options.frames ?? 'auto');
  if (options.packs === 1) {
    const ownPort = portOf.get('pack-1');
    const batteryId = ownPort !== undefined ? 'pack-1' : batteryIdFor(map, undefined, options.binaryPort);
    if (frames === 'json') return [{ batteryId: 'pack-1', via: 'json' }];
    return [{ batteryId, via: 'binary', framePort: ownPort ?? options.binaryPort }];
  }
  const ids = Array.from({ length: options.packs }, (_, i) => `pack-${i + 1}`);
  const allMapped = ids.every((id) => portOf.has(id));
  return ids.map((batteryId) => {
    const port = portOf.get(batteryId);
    const binary = frames === 'binary' || (frames === 'auto' && allMapped);
    if (!binary) return { batteryId, via: 'json' };
    // Unmapped packs forced to frames land on the main port: the collector names them, not us.
    return { batteryId: port !== undefined ? batteryId : batteryIdFor(map, undefined, options.binaryPort), via: 'binary', framePort: port ?? options.binaryPort };
  });
}

/** A TCP connection that reconnects with backoff; writes are skipped while it is down or full. */
class Link {
  #socket: net.Socket | undefined;
  #connected = false;
  #stopped = false;
  #delay = 250;
  #timer: NodeJS.Timeout | undefined;
  #warned = false;
  readonly ready: Promise<void>;
  #markReady!: () => void;

  constructor(
    readonly host: string,
    readonly port: number,
    readonly log: (line: string) => void,
  ) {
    this.ready = new Promise((resolve) => (this.#markReady = resolve));
    this.#connect();
  }

  #connect(): void {
    const socket = net.connect({ host: this.host, port: this.port });
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on('connect', () => {
      this.#connected = true;
      this.#delay = 250;
      if (this.#warned) this.log(`connected to ${this.host}:${this.port}`);
      this.#warned = false;
      this.#markReady();
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!this.#warned && !this.#stopped) {
        this.log(`cannot reach the collector at ${this.host}:${this.port} (${error.code ?? error.message}); retrying`);
        this.#warned = true;
      }
    });
    socket.on('close', () => {
      this.#connected = false;
      this.#markReady();
      if (this.#stopped) return;
      this.#timer = setTimeout(() => this.#connect(), this.#delay);
      this.#delay = Math.min(5000, this.#delay * 2);
    });
  }

  /** Answers false when the bytes were not sent (down, or over 1 MiB waiting in the socket). */
  write(bytes: Buffer | string): boolean {
    if (!this.#connected || this.#socket === undefined || this.#socket.writableLength > 1024 * 1024) return false;
    this.#socket.write(bytes);
    return true;
  }

  /** Sends what is queued, then closes. */
  async close(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const socket = this.#socket;
    if (socket === undefined || socket.destroyed) return;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      if (this.#connected) socket.end();
      else socket.destroy();
    });
  }
}

interface SimPack {
  plan: PackPlan;
  model: PackModel;
  cells: CellModel | undefined;
  frames: Link | undefined;
  json: Link;
  sent: number;
}

export async function startSimulation(options: SimulationOptions): Promise<SimulationHandle> {
  if (!SCENARIOS.includes(options.scenario)) throw new Error(`unknown scenario "${options.scenario}"; one of ${SCENARIOS.join(', ')}`);
  const log = options.log ?? (() => {});
  const plan = planPacks(options);
  const secondsPerReading = options.secondsPerReading ?? 1;
  const seed = options.seed ?? 1;
  const packs: SimPack[] = plan.map((p, i) => ({
    plan: p,
    model: new PackModel(options.scenario, seed + i * 7919),
    cells: (options.cells ?? 0) > 0 ? new CellModel({ count: options.cells!, outlierMv: options.cellOutlierMv, seed: seed + i * 7919 }) : undefined,
    frames: p.via === 'binary' ? new Link(options.host, p.framePort!, log) : undefined,
    json: new Link(options.host, options.jsonPort, log),
    sent: 0,
  }));
  // Give the first connections a moment, so a short run does not start by skipping readings.
  await Promise.race([Promise.all(packs.flatMap((p) => [p.json.ready, p.frames?.ready])), new Promise((resolve) => setTimeout(resolve, 2000))]);

  const stats: SimulationStats = { readings: 0, frames: 0, messages: 0, skipped: 0 };
  const started = performance.now();
  const tickMs = Math.min(100, Math.max(5, 1000 / options.rate));
  let finish!: (stats: SimulationStats) => void;
  const done = new Promise<SimulationStats>((resolve) => (finish = resolve));
  let stopping: Promise<SimulationStats> | undefined;

  const tick = () => {
    const elapsed = (performance.now() - started) / 1000;
    let due = Math.floor(elapsed * options.rate) + 1;
    if (options.count !== undefined) due = Math.min(due, options.count);
    for (const pack of packs) {
      const n = due - pack.sent;
      if (n > 0) sendReadings(pack, n);
    }
    const timeUp = options.durationSeconds !== undefined && elapsed >= options.durationSeconds;
    const countDone = options.count !== undefined && packs.every((p) => p.sent >= options.count!);
    if (timeUp || countDone) void stop();
  };

  const sendReadings = (pack: SimPack, n: number) => {
    const frames = pack.plan.via === 'binary' ? Buffer.allocUnsafe(n * FRAME_BYTES) : undefined;
    const lines: string[] = [];
    const now = Date.now() / 1000;
    const id = pack.plan.batteryId;
    for (let i = 0; i < n; i++) {
      const reading = pack.model.next(secondsPerReading);
      const cells = pack.cells?.readings(reading);
      pack.sent++;
      options.onReading?.(id, pack.plan.via, reading, cells);
      if (frames !== undefined) encodeFrame(reading, frames, i * FRAME_BYTES);
      else {
        const { device_time: _deviceTime, ...values } = reading;
        lines.push(JSON.stringify({ timestamp: now, battery_id: id, ...values, ...cells }));
      }
      // From the first reading on: a link silent before its first byte is closed by the collector (COLLECTOR_FIRST_BYTE_TIMEOUT).
      if (pack.sent % 10 === 1) lines.push(JSON.stringify({ timestamp: now, battery_id: id, ...pack.model.performance(reading) }));
      if (pack.sent % 30 === 1) lines.push(JSON.stringify({ timestamp: now, battery_id: id, ...pack.model.prediction() }));
    }
    stats.readings += n;
    if (frames !== undefined) {
      if (pack.frames!.write(frames)) stats.frames += n;
      else stats.skipped += n;
    }
    if (lines.length > 0) {
      const dataLines = frames === undefined ? n : 0;
      if (pack.json.write(`${lines.join('\n')}\n`)) stats.messages += lines.length;
      else stats.skipped += dataLines;
    }
  };

  const timer = setInterval(tick, tickMs);
  tick();

  async function stop(): Promise<SimulationStats> {
    return (stopping ??= (async () => {
      clearInterval(timer);
      await Promise.all(packs.flatMap((p) => [p.json.close(), p.frames?.close()]));
      finish({ ...stats });
      return { ...stats };
    })());
  }

  return { plan, stats: () => ({ ...stats }), done, stop };
}
