/**
 * The `cycling` scenario: packs cycled full to empty for a given number of cycles in simulated time
 * (cycling-model.ts), their readings stamped so that the last one is now, sent as JSON battery-data
 * messages (each with its timestamp and battery_id) to the collector's JSON port as fast as it takes
 * them. Months of a pack's life arrive in seconds; the truth of each pack at the end is known, to
 * compare with GET /api/batteries/{battery_id}/health.
 */
import net from 'node:net';
import { CyclingPack, type CyclingOptions, type CyclingTruth } from './cycling-model.js';

export interface CyclingRunOptions extends Omit<CyclingOptions, 'seed'> {
  /** Pack ids; each its own model, seeded apart. */
  batteryIds: readonly string[];
  cycles: number;
  seed?: number;
  /** Unix seconds of the last reading (default: now). */
  endAt?: number;
}

export interface CyclingMessage {
  timestamp: number;
  battery_id: string;
  pack_voltage: number;
  pack_current: number;
  cell_temp: number;
}

export interface CyclingPackRun {
  batteryId: string;
  model: CyclingPack;
  /** In timestamp order. */
  messages: CyclingMessage[];
  /** The truth after the last reading. */
  truth: CyclingTruth;
}

/** Runs each pack's model for `cycles` discharges and stamps its readings to end at `endAt`. */
export function simulateCycling(options: CyclingRunOptions): CyclingPackRun[] {
  const { batteryIds, cycles, seed = 1, endAt = Math.floor(Date.now() / 1000), ...model } = options;
  return batteryIds.map((batteryId, index) => {
    const pack = new CyclingPack({ ...model, seed: seed + index * 7919 });
    const readings = [];
    while (pack.truth().cycles < cycles) readings.push(pack.next());
    const truth = pack.truth();
    const offset = endAt - truth.time;
    const messages = readings.map((reading) => ({
      timestamp: Math.round((offset + reading.time) * 1000) / 1000,
      battery_id: batteryId,
      pack_voltage: reading.pack_voltage,
      pack_current: reading.pack_current,
      cell_temp: reading.cell_temp,
    }));
    return { batteryId, model: pack, messages, truth };
  });
}

/**
 * Sends messages as newline-delimited JSON over one TCP connection, waiting whenever the socket's
 * buffer is full, and resolves once the collector has them all (the connection closed in order).
 */
export async function sendJsonMessages(host: string, port: number, messages: readonly object[]): Promise<void> {
  const socket = net.connect({ host, port });
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const failed = new Promise<never>((_, reject) => socket.once('error', reject));
  failed.catch(() => undefined);
  const CHUNK = 500;
  for (let i = 0; i < messages.length; i += CHUNK) {
    const text = `${messages
      .slice(i, i + CHUNK)
      .map((message) => JSON.stringify(message))
      .join('\n')}\n`;
    if (!socket.write(text)) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), failed]);
  }
  await Promise.race([
    new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.end();
    }),
    failed,
  ]);
}
