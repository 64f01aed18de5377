/**
 * How long an HTTP client may hold a connection, and when it is closed. Without these a client that
 * sends one byte every few seconds, or announces a 16 MB body it never sends, keeps its socket (and
 * the memory of a half-read request) for as long as it likes, and enough of them lock everyone out.
 *
 * - API_REQUEST_TIMEOUT: the whole request, headers and body, must arrive within it; then 408 and closed.
 * - API_IDLE_TIMEOUT: a connection that moves no bytes either way for that long is closed, between
 *   requests (keep-alive) as well as during one; /api/stream must write its keep-alive comment more often.
 * - API_MAX_CONNECTIONS: connections past it are closed as soon as they are accepted.
 * - A request answered before its body was read (401, 413, 415…) is answered with Connection: close
 *   instead of Node reading and discarding the rest of the body to reuse the connection.
 */
import type { ServerOptions } from 'node:http';
import type { Socket } from 'node:net';
import type { ConnectionError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';

export type ConnectionSettings = Pick<Config, 'apiRequestTimeoutSeconds' | 'apiIdleTimeoutSeconds'>;

/**
 * How often Node looks for requests past their timeout (its default is 30 s, which would let a slow
 * request live up to 30 s past API_REQUEST_TIMEOUT). The check walks only the requests in progress.
 */
const TIMEOUT_CHECK_INTERVAL_MS = 1000;

/** Fastify's and Node's options for the timeouts above. */
export function connectionOptions(settings: ConnectionSettings) {
  const requestTimeout = settings.apiRequestTimeoutSeconds * 1000;
  const idleTimeout = settings.apiIdleTimeoutSeconds * 1000;
  // Node checks these when the server is made, before Fastify sets its own options on it: headers
  // must come within the request's time (a header timeout above it is refused).
  const http: ServerOptions = { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS };
  return {
    requestTimeout,
    // Fastify's connectionTimeout is the socket's idle timeout while a request is in progress;
    // keepAliveTimeout the one between requests.
    connectionTimeout: idleTimeout,
    keepAliveTimeout: idleTimeout,
    http,
    clientErrorHandler,
  };
}

function refusal(code: string | undefined, requestTimeoutMs: number): { status: number; reason: string; detail: string } {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return { status: 408, reason: 'Request Timeout', detail: `The whole request (headers and body) must arrive within ${requestTimeoutMs / 1000} s` };
  }
  if (code === 'HPE_HEADER_OVERFLOW') return { status: 431, reason: 'Request Header Fields Too Large', detail: 'The request headers are too large' };
  return { status: 400, reason: 'Bad Request', detail: 'Malformed HTTP request' };
}

/**
 * What a connection gets when Node gives up on its request (a timeout, a malformed request): as
 * Fastify's default handler, with the API's `{"detail": …}` body. Nothing is written when an answer
 * to that connection has already begun (Node's own rule), so no answer is ever corrupted.
 */
function clientErrorHandler(this: FastifyInstance, error: ConnectionError, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  this.log.trace({ err: error }, 'client error');
  const answering = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && answering?.headersSent !== true) {
    const { status, reason, detail } = refusal(error.code, this.server.requestTimeout);
    const body = JSON.stringify({ detail });
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}

/** Whether the request announces a body (a length above zero, or chunks). */
function announcesBody(request: FastifyRequest): boolean {
  const { headers } = request;
  return headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0');
}

/**
 * An onSend hook: a request answered before its body was read, and every 401 and 413 (which are
 * answered before the body is read, at least when they come from a hook), closes its connection.
 * Otherwise Node would read and discard the rest of the body to keep the connection, and a client
 * announcing 16 MB would hold its socket for as long as it takes to (not) send them.
 */
export function closeUnreadConnections(request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (error: null, payload: unknown) => void): void {
  const status = reply.statusCode;
  if (status === 401 || status === 413 || (!request.raw.complete && announcesBody(request))) reply.header('connection', 'close');
  done(null, payload);
}
