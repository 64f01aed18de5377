/** Shared by the v2 listener tests: the service with its collector on free ports, and what it stored. */
import net from 'node:net';
import { metricValue } from '../../src/collector/metrics.js';
import type { Config } from '../../src/config.js';
import type { KindName, StoredRecord } from '../../src/records/kinds.js';
import type { Service } from '../../src/server.js';
import { startTestService } from '../support/service.js';
import { allRecords, closed, connect, within } from './helpers.js';

export interface V2Service extends Service {
  v2Port: number;
}

export async function startV2Service(t: { after(fn: () => Promise<void>): void }, overrides: Partial<Config> = {}): Promise<V2Service> {
  const service = await startTestService({ logLevel: 'silent', collectorV2Port: 0, ...overrides }, { collector: true });
  t.after(() => service.close());
  return { ...service, v2Port: service.collector!.v2Port! };
}

/** A pack's records of a kind, oldest first. */
export function stored(service: Service, kind: KindName, batteryId: string): Promise<StoredRecord[]> {
  return allRecords(service.app.store, kind, batteryId);
}

export function v2Metric(service: Service, name: 'v2Duplicates' | 'v2ClockSkewed' | 'v2Acks'): Promise<number> {
  return metricValue(service.app.metrics[name]);
}

export function rejected(service: Service, reason: string): Promise<number> {
  return metricValue(service.app.metrics.rejected, { listener: 'v2', reason });
}

/** Sends `bytes` on a new connection and answers everything the server sent until it closed (bounded). */
export async function exchange(port: number, bytes: Buffer, what: string): Promise<Buffer> {
  const socket = await connect(port);
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.write(bytes);
  await within(closed(socket), `${what}: the server closes`);
  return Buffer.concat(received);
}

/** A raw connection: what it received so far, and waiting for a number of bytes. */
export async function rawConnection(port: number): Promise<{ socket: net.Socket; received: () => Buffer; bytes: (n: number, what: string) => Promise<Buffer> }> {
  const socket = await connect(port);
  let received = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  return {
    socket,
    received: () => received,
    bytes: async (n, what) => {
      const deadline = Date.now() + 20_000;
      while (received.length < n) {
        if (Date.now() > deadline || socket.destroyed) throw new Error(`gave up waiting: ${what} (${received.length} of ${n} bytes)`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return received;
    },
  };
}
