/**
 * A TCP proxy in front of a MongoDB-wire server that reads the command name of each message the
 * client sends, and can hold the messages of chosen commands (with whatever follows them on the
 * same connection, so the order on each connection is kept) until the test lets them go. The bytes
 * are forwarded unchanged; the server is real. It stands for a server that is slow to answer one
 * kind of operation, which a test cannot otherwise arrange on a real server.
 *
 *   const proxy = await startMongoProxy(server.uri);
 *   proxy.hold((c) => c.name === 'update' && c.collection === 'battery_summary');
 *   ... openMongoStore({ uri: proxy.uri, ... }) ...
 *   await proxy.nextHeld(); proxy.release();
 *
 * Messages are OP_MSG (opcode 2013): a 16-byte header, 4 bytes of flags, then sections; a kind-0
 * section is one BSON document whose first element is the command, e.g. { update: 'coll', ... }.
 * Other opcodes (and compressed messages) pass through unread.
 */
import net from 'node:net';

export interface ProxiedCommand {
  name: string;
  /** The command's first value when a string: the collection, for CRUD commands. */
  collection: string | undefined;
}

export interface MongoProxy {
  uri: string;
  /** Every command clients sent, in arrival order. */
  readonly commands: ProxiedCommand[];
  /** From now on, holds each command that matches, and what follows it on its connection. */
  hold(match: (command: ProxiedCommand) => boolean): void;
  /** Forwards everything held, in order, and stops holding. */
  release(): void;
  /** Resolves when the next matching command is held (at once if one is held already). */
  nextHeld(): Promise<ProxiedCommand>;
  close(): Promise<void>;
}

const OP_MSG = 2013;

export async function startMongoProxy(serverUri: string): Promise<MongoProxy> {
  const match = /^mongodb:\/\/([^/@,?]+):(\d+)\/?/.exec(serverUri);
  if (match === null) throw new Error('the proxy needs a plain mongodb://host:port URI');
  const [, host, port] = match;

  const commands: ProxiedCommand[] = [];
  let holding: ((command: ProxiedCommand) => boolean) | undefined;
  const held: ProxiedCommand[] = [];
  let heldWaiter: ((command: ProxiedCommand) => void) | undefined;
  const connections = new Set<{ client: net.Socket; server: net.Socket; queue: Buffer[] }>();

  const proxy = net.createServer((client) => {
    const server = net.connect(Number(port), host);
    const connection = { client, server, queue: [] as Buffer[] };
    connections.add(connection);
    let buffered = Buffer.alloc(0);
    server.on('data', (chunk) => client.write(chunk));
    const end = () => {
      connections.delete(connection);
      client.destroy();
      server.destroy();
    };
    client.on('close', end).on('error', end);
    server.on('close', end).on('error', end);
    client.on('data', (chunk) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4) {
        const length = buffered.readInt32LE(0);
        if (buffered.length < length) break;
        const message = buffered.subarray(0, length);
        buffered = buffered.subarray(length);
        const command = commandOf(message);
        if (command !== undefined) commands.push(command);
        if (connection.queue.length > 0) connection.queue.push(message);
        else if (command !== undefined && holding?.(command)) {
          connection.queue.push(message);
          held.push(command);
          heldWaiter?.(command);
          heldWaiter = undefined;
        } else server.write(message);
      }
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address() as net.AddressInfo;

  return {
    uri: `mongodb://127.0.0.1:${address.port}/?directConnection=true`,
    commands,
    hold(predicate) {
      holding = predicate;
    },
    release() {
      holding = undefined;
      held.length = 0;
      for (const connection of connections) {
        for (const message of connection.queue) connection.server.write(message);
        connection.queue = [];
      }
    },
    nextHeld() {
      if (held.length > 0) return Promise.resolve(held[held.length - 1]!);
      return new Promise((resolve) => (heldWaiter = resolve));
    },
    async close() {
      for (const { client, server } of connections) {
        client.destroy();
        server.destroy();
      }
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}

/** The command of an OP_MSG: the first key of its kind-0 section's document. */
function commandOf(message: Buffer): ProxiedCommand | undefined {
  if (message.length < 21 || message.readInt32LE(12) !== OP_MSG) return undefined;
  let at = 20; // header (16) + flagBits (4)
  while (at < message.length) {
    const kind = message[at]!;
    at++;
    if (kind === 1) {
      // A document sequence: int32 size (counting itself), identifier, documents.
      at += message.readInt32LE(at);
      continue;
    }
    if (kind !== 0) return undefined;
    // BSON document: int32 size, then elements (type byte, cstring name, value).
    const type = message[at + 4]!;
    const nameEnd = message.indexOf(0, at + 5);
    const name = message.toString('utf8', at + 5, nameEnd);
    let collection: string | undefined;
    if (type === 0x02) {
      const length = message.readInt32LE(nameEnd + 1);
      collection = message.toString('utf8', nameEnd + 5, nameEnd + 5 + length - 1);
    }
    return { name, collection };
  }
  return undefined;
}
