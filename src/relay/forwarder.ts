/**
 * Standalone mode's sender: takes batches from the spool, in order per kind, and POSTs them to the
 * API (`POST /api/{kind}`, up to 10,000 records each). A batch leaves the spool only once the API
 * answered 2xx. While the API or its database is away (connection refused, 5xx, 503, timeouts) the
 * same batch is retried with exponential backoff; its Idempotency-Key (spool id, kind, position)
 * makes a retry whose first attempt was stored after all a no-op, so a reader of the API sees every
 * record once.
 *
 * Redirects are not followed: a 3xx is reported (once per outage, with its Location) and retried
 * like an outage, the records staying in the spool. Following one would send X-API-Key to wherever
 * the Location points (fetch drops only Authorization on a cross-origin hop), and undici cannot
 * resend a byte body on a 307/308: it re-reads the copy it already sent, whose ArrayBuffer the
 * request stream transferred, and every attempt failed with "detached ArrayBuffer" (the spool's
 * buffer itself is never transferred; each attempt sends it afresh).
 */
import { silentLogger, type CollectorLogger } from '../collector/logger.js';
import type { CollectorMetrics } from '../collector/metrics.js';
import { Backoff } from '../ingest/backoff.js';
import { KIND_NAMES, type KindName } from '../records/kinds.js';
import type { Spool, SpoolBatch } from './spool.js';

export interface ForwarderOptions {
  /** Base URL of the API, e.g. http://host:8000. */
  apiUrl: string;
  spool: Spool;
  /** Sent as X-API-Key when set; never logged. */
  apiKey?: string;
  logger?: CollectorLogger;
  metrics?: CollectorMetrics;
  requestTimeoutMs?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
}

export interface ForwarderHandle {
  /** Records the API acknowledged since start. */
  readonly forwarded: number;
  /** Resolves once the spool holds nothing unacknowledged (tests, benchmarks). */
  idle(): Promise<void>;
  /** Lets requests in flight finish (up to graceMs), then stops. What is left stays in the spool. */
  close(graceMs?: number): Promise<void>;
}

type Outcome =
  | { type: 'stored' }
  | { type: 'rejected'; detail: string }
  /** The API's store refused these records of the batch (422 value_error.store_refused); nothing of it was stored. */
  | { type: 'refused'; rows: number[]; detail: string }
  | { type: 'retry'; why: string; status?: number; location?: string };

/**
 * The rows a 422 names as refused by the store, when that is all it says: the API stores a request
 * all or nothing, so the others can go again without them. Undefined for any other 422.
 */
export function storeRefusedRows(body: string): number[] | undefined {
  let detail: unknown;
  try {
    detail = (JSON.parse(body) as { detail?: unknown }).detail;
  } catch {
    return undefined;
  }
  if (!Array.isArray(detail) || detail.length === 0) return undefined;
  const rows: number[] = [];
  for (const entry of detail as { type?: unknown; loc?: unknown }[]) {
    const row = Array.isArray(entry.loc) ? entry.loc[1] : undefined;
    if (entry.type !== 'value_error.store_refused' || typeof row !== 'number') return undefined;
    rows.push(row);
  }
  return rows;
}

/** The batch without the given rows (its body is a JSON array), under a key of its own. */
function withoutRows(batch: SpoolBatch, rows: readonly number[]): SpoolBatch {
  const refused = new Set(rows);
  const records = (JSON.parse(Buffer.from(batch.body).toString('utf8')) as unknown[]).filter((_, row) => !refused.has(row));
  return { ...batch, body: Buffer.from(JSON.stringify(records)), key: `${batch.key}~${[...refused].sort((a, b) => a - b).join('.')}` };
}

/**
 * A redirect's Location as it may be logged: absolute, without credentials, query or fragment
 * (either could carry a key).
 */
export function loggableLocation(location: string | null, requestUrl: string): string {
  if (location === null || location === '') return '(none)';
  try {
    const url = new URL(location, requestUrl);
    return `${url.origin}${url.pathname}`;
  } catch {
    return '(not a URL)';
  }
}

export function startForwarder(options: ForwarderOptions): ForwarderHandle {
  const log = options.logger ?? silentLogger;
  const metrics = options.metrics;
  const spool = options.spool;
  const base = options.apiUrl.replace(/\/+$/, '');
  const timeoutMs = options.requestTimeoutMs ?? 60_000;
  const retryMin = options.retryMinMs ?? 200;
  const retryMax = options.retryMaxMs ?? 10_000;
  /** Aborted by close(): wakes loops that sleep or wait for records. */
  const stop = new AbortController();
  /** Aborted graceMs after close(): cuts requests still in flight (their batches stay in the spool). */
  const abortRequests = new AbortController();
  let stopped = false;
  let forwarded = 0;
  /** Per kind: the outage being reported (logged once when it starts and once when it ends). */
  const outage = new Map<KindName, { since: number; why: string }>();

  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.apiKey !== undefined) headers['x-api-key'] = options.apiKey;

  async function post(batch: SpoolBatch): Promise<Outcome> {
    const url = `${base}/api/${batch.kind}`;
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { ...headers, 'idempotency-key': batch.key },
        body: batch.body as Uint8Array<ArrayBuffer>,
        redirect: 'manual',
        signal: AbortSignal.any([abortRequests.signal, AbortSignal.timeout(timeoutMs)]),
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      return { type: 'retry', why: cause?.code ?? cause?.message ?? (error as Error).message };
    }
    // Read the answer in full either way, so the connection is kept for the next request.
    const text = await response.text().catch(() => '');
    if (response.ok) return { type: 'stored' };
    if (response.status === 422) {
      const rows = storeRefusedRows(text);
      return rows === undefined ? { type: 'rejected', detail: text.slice(0, 500) } : { type: 'refused', rows, detail: text.slice(0, 500) };
    }
    if (response.status >= 300 && response.status < 400) {
      const location = loggableLocation(response.headers.get('location'), url);
      return {
        type: 'retry',
        status: response.status,
        location,
        why: `the API answered a redirect (HTTP ${response.status}) to ${location}, which the collector does not follow: set --api to the address the API is served at`,
      };
    }
    if (response.status === 401 || response.status === 403) {
      return { type: 'retry', status: response.status, why: `the API refused the key (HTTP ${response.status}): set API_KEY to the API's write key` };
    }
    return { type: 'retry', status: response.status, why: `HTTP ${response.status} ${text.slice(0, 200)}` };
  }

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (stopped) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        stop.signal.removeEventListener('abort', done);
        resolve();
      }
      stop.signal.addEventListener('abort', done);
    });

  const backoff = () => new Backoff({ minMs: retryMin, maxMs: retryMax });

  async function deliver(batch: SpoolBatch): Promise<void> {
    const retry = backoff();
    // What is sent: the batch, less the records the store refused in an earlier answer.
    let sending = batch;
    let refused = 0;
    while (!stopped) {
      const outcome = await post(sending);
      if (outcome.type === 'retry') {
        if (stopped) return;
        metrics?.forwardRequests.inc({ outcome: 'retry' });
        if (!outage.has(batch.kind)) {
          outage.set(batch.kind, { since: Date.now(), why: outcome.why });
          // A refused key or a redirect will not heal by waiting: someone has to change a setting.
          const level = outcome.status !== undefined && (outcome.status < 400 || outcome.status === 401 || outcome.status === 403) ? 'error' : 'warn';
          log[level](
            {
              api: base,
              kind: batch.kind,
              why: outcome.why,
              ...(outcome.location === undefined ? {} : { status: outcome.status, location: outcome.location }),
              waiting: spool.depth().byKind[batch.kind],
            },
            'the API does not take records; they wait in the spool and are retried',
          );
        }
        await sleep(retry.next());
        continue;
      }
      const down = outage.get(batch.kind);
      if (down !== undefined) {
        outage.delete(batch.kind);
        log.info({ api: base, kind: batch.kind, downForMs: Date.now() - down.since, waiting: spool.depth().byKind[batch.kind] }, 'the API takes records again; delivering the spool');
      }
      if (outcome.type === 'refused') {
        // One bad record must not cost its 9,999 neighbours: they go again without it.
        metrics?.rejected.inc({ listener: 'forwarder', reason: 'store_refused' }, outcome.rows.length);
        log.error({ kind: batch.kind, start: batch.start, records: outcome.rows.length, detail: outcome.detail }, "the API's store refused records (422); they are dropped, the rest of the batch goes again");
        refused += outcome.rows.length;
        sending = withoutRows(sending, outcome.rows);
        if (batch.end - batch.start > refused) continue;
      } else if (outcome.type === 'rejected') {
        // The same validator passed them here, so this is a version mismatch; holding them would stop the queue for good.
        metrics?.forwardRequests.inc({ outcome: 'rejected' });
        metrics?.rejected.inc({ listener: 'forwarder', reason: 'api_rejected' }, batch.end - batch.start);
        log.error({ kind: batch.kind, start: batch.start, records: batch.end - batch.start, detail: outcome.detail }, 'the API refused a batch as invalid (422); it is dropped');
      } else if (outcome.type === 'stored') {
        metrics?.forwardRequests.inc({ outcome: 'stored' });
        metrics?.forwardedRecords.inc({ kind: batch.kind }, batch.end - batch.start - refused);
        forwarded += batch.end - batch.start - refused;
      }
      await spool.ack(batch);
      return;
    }
  }

  async function run(kind: KindName): Promise<void> {
    const retry = backoff();
    while (!stopped) {
      let batch: SpoolBatch | null;
      try {
        batch = await spool.nextBatch(kind);
        retry.reset();
      } catch (error) {
        log.error({ err: error, kind }, 'cannot read the spool; retrying');
        await sleep(retry.next());
        continue;
      }
      if (batch === null) {
        await Promise.race([spool.waitForRecords(kind), new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }))]);
        continue;
      }
      try {
        await deliver(batch);
      } catch (error) {
        log.error({ err: error, kind }, 'forwarding failed; retrying');
        await sleep(retry.next());
      }
    }
  }

  const loops = KIND_NAMES.map((kind) => run(kind));

  return {
    get forwarded() {
      return forwarded;
    },
    idle() {
      return spool.whenEmpty();
    },
    async close(graceMs = 5000) {
      stopped = true;
      stop.abort();
      const timer = setTimeout(() => abortRequests.abort(), graceMs);
      await Promise.all(loops);
      clearTimeout(timer);
    },
  };
}
