/**
 * A TCP proxy on 127.0.0.1 for fault tests: each connection it accepts is forwarded to a target
 * port, and the test may tamper with the bytes of either direction (flip, drop, swallow) or cut the
 * connection after some of them. It keeps what each client sent, before any tampering, so a test
 * knows exactly what a device put on the wire.
 */
import net from 'node:net';

/** What to forward in place of a chunk; `cut` closes both sides once those bytes are written. */
export interface Tampered {
  bytes: Buffer;
  cut?: boolean;
}

/** Called with each chunk of one direction of a connection and the offset of its first byte in that direction. */
export type Tamper = (chunk: Buffer, offset: number) => Tampered;

export interface ConnectionFaults {
  /** Client to target. */
  toTarget?: Tamper;
  /** Target to client. */
  toClient?: Tamper;
}

export class TcpProxy {
  readonly port: number;
  /** Per connection, in accept order: every byte its client sent, as sent (before tampering); re-concatenated per chunk, fine for a test's few kilobytes. */
  readonly fromClient: Buffer[] = [];
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();

  private constructor(server: net.Server) {
    this.#server = server;
    this.port = (server.address() as net.AddressInfo).port;
  }

  /** Listens on a free port; `faults(n)` says what to do to the n-th connection (from 0). */
  static async start(targetPort: number, faults: (connection: number) => ConnectionFaults = () => ({})): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (client) => proxy!.#accept(client, targetPort, faults));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: 0 }, resolve);
    });
    proxy = new TcpProxy(server);
    return proxy;
  }

  /** Connections accepted so far. */
  get connections(): number {
    return this.fromClient.length;
  }

  /** Stops listening and closes every connection at once. */
  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #accept(client: net.Socket, targetPort: number, faults: (connection: number) => ConnectionFaults): void {
    const index = this.fromClient.length;
    this.fromClient.push(Buffer.alloc(0));
    const { toTarget, toClient } = faults(index);
    const target = net.connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true });
    for (const socket of [client, target]) {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    }
    this.#pipe(client, target, toTarget, (chunk) => (this.fromClient[index] = Buffer.concat([this.fromClient[index]!, chunk])));
    this.#pipe(target, client, toClient);
  }

  #pipe(from: net.Socket, to: net.Socket, tamper: Tamper | undefined, seen?: (chunk: Buffer) => void): void {
    let offset = 0;
    from.on('data', (chunk: Buffer) => {
      seen?.(chunk);
      const { bytes, cut } = tamper === undefined ? { bytes: chunk } : tamper(chunk, offset);
      offset += chunk.length;
      if (to.destroyed || to.writableEnded) return;
      if (cut) {
        // What came before the cut reaches the far side, then its end; the near side goes at once.
        to.end(bytes);
        from.destroy();
        return;
      }
      if (bytes.length > 0) to.write(bytes);
    });
    from.once('end', () => {
      if (!to.destroyed) to.end();
    });
    // A reset (or a connection to the target refused) ends both.
    from.on('error', () => to.destroy());
  }
}
