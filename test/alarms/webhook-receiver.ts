/**
 * A real local HTTP server receiving webhooks, for the tests: it keeps every request (headers and raw
 * body) and answers as `answer` says at the time (200, a failure status, or holding the request
 * unanswered, as a receiver that hangs).
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  json: any;
  url: string;
}

export type Answer = number | 'hold';

export interface Receiver {
  url: string;
  received: Received[];
  /** What the next requests get. */
  answer: Answer;
  /** Requests held unanswered ('hold'). */
  held: ServerResponse[];
  /** Polls until `check` holds over what was received; fails after `ms`. */
  until(check: (received: Received[]) => boolean, what: string, ms?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startReceiver(path = '/hook'): Promise<Receiver> {
  const receiver: Receiver = {
    url: '',
    received: [],
    answer: 200,
    held: [],
    async until(check, what, ms = 20_000) {
      const deadline = Date.now() + ms;
      while (!check(receiver.received)) {
        if (Date.now() > deadline) throw new Error(`gave up waiting: ${what} (received ${receiver.received.length})`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const response of receiver.held.splice(0)) response.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const answer = receiver.answer;
      if (answer === 'hold') {
        receiver.held.push(response);
        return;
      }
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      receiver.received.push({ headers: request.headers, body, json, url: request.url ?? '' });
      // A redirect points back here, at a path of its own: a client that follows it shows up with that path.
      const location = answer >= 300 && answer < 400 ? { location: `${receiver.url}/moved` } : {};
      response.writeHead(answer, { 'content-type': 'text/plain', ...location }).end(answer < 300 ? 'ok' : 'no');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`;
  return receiver;
}
