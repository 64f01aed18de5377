/**
 * The collector's counters, in Prometheus text format at GET /metrics: on the API in the all-in-one
 * process, on the collector's own small HTTP listener in standalone `collect` mode.
 *
 * No registry is global: each app (and each standalone collector) makes its own, so that several
 * services in one process (the tests) count apart.
 */
import { Counter, Gauge, Registry } from 'prom-client';

export type ListenerName = 'binary' | 'json' | 'v2';

/**
 * Why input was dropped. The first seven are bad input (timestamp_out_of_range: a JSON record valid
 * but for its time, before 2000 or more than MAX_CLOCK_SKEW_SECONDS ahead: a producer's clock is
 * wrong); spool_full and store_failed are ours; store_refused, records the store refused for
 * themselves (their neighbours were stored); api_rejected is a batch the API answered 422 to
 * (the forwarder's, listener "forwarder").
 */
export type RejectReason =
  | 'non_finite'
  | 'partial_frame'
  | 'malformed_json'
  | 'unknown_kind'
  | 'invalid_record'
  | 'timestamp_out_of_range'
  | 'too_large'
  | 'spool_full'
  | 'store_failed'
  | 'store_refused'
  | 'api_rejected'
  | 'bad_crc'
  | 'bad_handshake';

/**
 * Why the collector closed a connection (or the peer did): first_byte_timeout, silent since it
 * opened for COLLECTOR_FIRST_BYTE_TIMEOUT; too_large, a JSON message over 64 KiB (its sender is
 * broken or hostile, and the rest of its stream cannot be trusted to resync).
 */
export type CloseReason = 'peer' | 'idle_timeout' | 'first_byte_timeout' | 'too_large' | 'error' | 'shutdown';

/**
 * Why a connection was refused as it opened: over COLLECTOR_MAX_CONNECTIONS, over
 * COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS, or from a peer outside COLLECTOR_ALLOW.
 */
export type RefuseReason = 'max_connections' | 'per_address' | 'not_allowed';

export interface CollectorMetrics {
  readonly registry: Registry;
  /** Binary frames and JSON messages received, good or bad. */
  readonly framesReceived: Counter<'listener'>;
  readonly bytesReceived: Counter<'listener'>;
  /** Records decoded, valid, and handed to the ingest sink or the spool. */
  readonly recordsAccepted: Counter<'listener' | 'kind'>;
  /** Records durable: in the store (in-process) or in the spool (standalone). */
  readonly recordsStored: Counter<'listener' | 'kind'>;
  readonly rejected: Counter<'listener' | 'reason'>;
  readonly connectionsOpen: Gauge<'listener'>;
  readonly connectionsTotal: Counter<'listener'>;
  readonly connectionsRefused: Counter<'listener' | 'reason'>;
  readonly connectionsClosed: Counter<'listener' | 'reason'>;
  /** 1 while sockets are paused because the ingest sink or the spool is full. */
  readonly backpressure: Gauge;
  readonly spoolRecords: Gauge;
  readonly spoolBytes: Gauge;
  readonly spoolCapacityBytes: Gauge;
  /** Records the API acknowledged (standalone mode). */
  readonly forwardedRecords: Counter<'kind'>;
  readonly forwardRequests: Counter<'outcome'>;
  /** Records a store refused for themselves (not an outage): not stored, reported to their producer. */
  readonly recordsRefused: Counter<'kind' | 'reason'>;
  /** Open /api/stream subscriptions. */
  readonly streamSubscribers: Gauge;
  /** /api/stream subscriptions refused: over STREAM_MAX_SUBSCRIBERS or STREAM_MAX_SUBSCRIBERS_PER_ADDRESS. */
  readonly streamRefused: Counter<'reason'>;
  /** /api/stream subscribers dropped because they did not read what was sent to them. */
  readonly streamDropped: Counter;
  /** Open alarms (active or acknowledged), by severity. */
  readonly alarmsOpen: Gauge<'severity'>;
  /** Alarm changes: raised, escalated, deescalated, acknowledged, cleared. */
  readonly alarmEvents: Counter<'type'>;
  /** Webhook delivery attempts, by outcome (delivered, failed_attempt, gave_up). */
  readonly notifications: Counter<'outcome'>;
  /** v2 frames whose (battery_id, stream, sequence) was stored already: acknowledged, not stored again. */
  readonly v2Duplicates: Counter;
  /** v2 frames whose device time is further than MAX_CLOCK_SKEW_SECONDS from the arrival time (stored all the same). */
  readonly v2ClockSkewed: Counter;
  /** v2 acknowledgements sent (each covers every frame up to its sequence number). */
  readonly v2Acks: Counter;
  /** Leases this instance holds, by what they are for (pack, periodic). */
  readonly leasesHeld: Gauge<'purpose'>;
  /** Leases this instance took over from another (expired) holder, by what they are for. */
  readonly leasesTakenOver: Counter<'purpose'>;
}

export function createCollectorMetrics(registry: Registry = new Registry()): CollectorMetrics {
  const registers = [registry];
  return {
    registry,
    framesReceived: new Counter({ name: 'collector_frames_received_total', help: 'Binary frames and JSON messages received, good or bad', labelNames: ['listener'], registers }),
    bytesReceived: new Counter({ name: 'collector_bytes_received_total', help: 'Bytes received on the TCP listeners', labelNames: ['listener'], registers }),
    recordsAccepted: new Counter({ name: 'collector_records_accepted_total', help: 'Valid records handed to the writer (in-process) or the spool (standalone)', labelNames: ['listener', 'kind'], registers }),
    recordsStored: new Counter({ name: 'collector_records_stored_total', help: 'Records durable in the store (in-process) or in the spool (standalone)', labelNames: ['listener', 'kind'], registers }),
    rejected: new Counter({ name: 'collector_rejected_total', help: 'Frames, messages or records dropped, by reason', labelNames: ['listener', 'reason'], registers }),
    connectionsOpen: new Gauge({ name: 'collector_connections_open', help: 'Open TCP connections', labelNames: ['listener'], registers }),
    connectionsTotal: new Counter({ name: 'collector_connections_total', help: 'TCP connections accepted', labelNames: ['listener'], registers }),
    connectionsRefused: new Counter({
      name: 'collector_connections_refused_total',
      help: 'TCP connections refused, by reason: over COLLECTOR_MAX_CONNECTIONS (max_connections) or COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS (per_address), or outside COLLECTOR_ALLOW (not_allowed)',
      labelNames: ['listener', 'reason'],
      registers,
    }),
    connectionsClosed: new Counter({ name: 'collector_connections_closed_total', help: 'TCP connections closed, by reason', labelNames: ['listener', 'reason'], registers }),
    backpressure: new Gauge({ name: 'collector_backpressure', help: '1 while reading is paused because the writer or spool is behind', registers }),
    spoolRecords: new Gauge({ name: 'collector_spool_records', help: 'Records in the spool not yet acknowledged by the API', registers }),
    spoolBytes: new Gauge({ name: 'collector_spool_bytes', help: 'Bytes of spool segment files on disk', registers }),
    spoolCapacityBytes: new Gauge({ name: 'collector_spool_capacity_bytes', help: 'SPOOL_MAX_BYTES', registers }),
    forwardedRecords: new Counter({ name: 'collector_forwarded_records_total', help: 'Records the API acknowledged', labelNames: ['kind'], registers }),
    forwardRequests: new Counter({ name: 'collector_forward_requests_total', help: 'POSTs to the API, by outcome', labelNames: ['outcome'], registers }),
    recordsRefused: new Counter({
      name: 'ingest_records_refused_total',
      help: 'Records the store refused for themselves (not an outage), by kind and reason; their neighbours were stored',
      labelNames: ['kind', 'reason'],
      registers,
    }),
    streamSubscribers: new Gauge({ name: 'stream_subscribers', help: 'Open /api/stream subscriptions', registers }),
    streamRefused: new Counter({ name: 'stream_subscribers_refused_total', help: '/api/stream subscriptions refused, by limit', labelNames: ['reason'], registers }),
    streamDropped: new Counter({ name: 'stream_subscribers_dropped_total', help: '/api/stream subscribers dropped for not reading what was sent', registers }),
    alarmsOpen: new Gauge({ name: 'alarms_open', help: 'Open alarms (active or acknowledged), by severity', labelNames: ['severity'], registers }),
    alarmEvents: new Counter({ name: 'alarm_events_total', help: 'Alarm changes, by type', labelNames: ['type'], registers }),
    notifications: new Counter({ name: 'alarm_notifications_total', help: 'Webhook delivery attempts, by outcome', labelNames: ['outcome'], registers }),
    v2Duplicates: new Counter({ name: 'collector_v2_duplicates_total', help: 'v2 frames stored already (acknowledged, not stored again)', registers }),
    v2ClockSkewed: new Counter({ name: 'collector_v2_clock_skewed_total', help: 'v2 frames whose device time is off by more than MAX_CLOCK_SKEW_SECONDS', registers }),
    v2Acks: new Counter({ name: 'collector_v2_acks_total', help: 'v2 acknowledgements sent', registers }),
    leasesHeld: new Gauge({ name: 'cluster_leases_held', help: 'Leases this instance holds, by purpose', labelNames: ['purpose'], registers }),
    leasesTakenOver: new Counter({ name: 'cluster_leases_taken_over_total', help: 'Leases taken over from an expired holder, by purpose', labelNames: ['purpose'], registers }),
  };
}

/** Prometheus text of a registry. */
export function renderMetrics(registry: Registry): Promise<string> {
  return registry.metrics();
}

/** Current value of one labelled series (tests, logs); 0 when it was never touched. */
export async function metricValue(metric: Counter<string> | Gauge<string>, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metric.get();
  const wanted = Object.entries(labels);
  let sum = 0;
  for (const value of values) {
    const l = value.labels as Record<string, string | number | undefined>;
    if (wanted.every(([k, v]) => l[k] === v)) sum += value.value;
  }
  return sum;
}
