/**
 * One Server-Sent Events connection to /api/stream for the whole page. EventSource reconnects by
 * itself after a dropped connection; when the server answers with an error instead (the browser
 * then gives up for good), this class opens a new one with back-off. Listeners get every record
 * and a signal after each reconnect, so views can refetch what they missed while offline.
 */
import { KINDS, streamUrl, type Alarm, type AlarmEvent, type Kind, type RecordOf } from './api';

export type ConnectionState = 'connecting' | 'open' | 'down';

export type LiveRecord = { [K in Kind]: { kind: K; record: RecordOf[K] } }[Kind];

/** `event: alarm` on the stream: an alarm change, with the alarm right after it. */
export interface LiveAlarm {
  event: AlarmEvent;
  alarm: Alarm;
}

type RecordListener = (event: LiveRecord) => void;
type AlarmListener = (change: LiveAlarm) => void;
type StateListener = (state: ConnectionState) => void;

/** How long an error may last before the page says the API is unreachable (avoids flicker). */
const DOWN_AFTER_MS = 2500;
const MAX_BACKOFF_MS = 15_000;

export class LiveFeed {
  private source: EventSource | null = null;
  private state: ConnectionState = 'connecting';
  private downTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private backoff = 1000;
  private everOpened = false;
  private readonly recordListeners = new Set<RecordListener>();
  private readonly alarmListeners = new Set<AlarmListener>();
  private readonly stateListeners = new Set<StateListener>();
  private readonly reconnectListeners = new Set<() => void>();
  private readonly refusedListeners = new Set<() => void>();

  constructor(private readonly url = streamUrl()) {}

  start(): void {
    if (this.source) return;
    const source = new EventSource(this.url);
    this.source = source;
    source.onopen = () => {
      clearTimeout(this.downTimer);
      this.downTimer = undefined;
      this.backoff = 1000;
      const wasOpened = this.everOpened;
      this.everOpened = true;
      this.setState('open');
      if (wasOpened) for (const listener of this.reconnectListeners) listener();
    };
    source.onerror = () => {
      if (this.state === 'open') this.setState('connecting');
      if (this.downTimer === undefined && this.state !== 'down') {
        this.downTimer = setTimeout(() => {
          this.downTimer = undefined;
          if (this.source?.readyState !== EventSource.OPEN) this.setState('down');
        }, DOWN_AFTER_MS);
      }
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (HTTP error or wrong content type): retry ourselves. A 401 looks the
        // same from here (EventSource hides the status), so listeners may ask whether the session
        // ended; told last, so that one stopping the feed also cancels the retry.
        source.close();
        this.source = null;
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.start(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
        for (const listener of this.refusedListeners) listener();
      }
    };
    for (const kind of KINDS) {
      source.addEventListener(kind, (event) => this.deliver(kind, (event as MessageEvent<string>).data));
    }
    source.addEventListener('alarm', (event) => this.deliverAlarm((event as MessageEvent<string>).data));
  }

  stop(): void {
    clearTimeout(this.downTimer);
    clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = null;
  }

  getState = (): ConnectionState => this.state;

  onRecord(listener: RecordListener): () => void {
    this.recordListeners.add(listener);
    return () => this.recordListeners.delete(listener);
  }

  onAlarm(listener: AlarmListener): () => void {
    this.alarmListeners.add(listener);
    return () => this.alarmListeners.delete(listener);
  }

  onState(listener: StateListener): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  onReconnect(listener: () => void): () => void {
    this.reconnectListeners.add(listener);
    return () => this.reconnectListeners.delete(listener);
  }

  /** The server answered the stream with an error status (a 401 among them). */
  onRefused(listener: () => void): () => void {
    this.refusedListeners.add(listener);
    return () => this.refusedListeners.delete(listener);
  }

  private deliver(kind: Kind, data: string): void {
    let record: unknown;
    try {
      record = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof record !== 'object' || record === null || typeof (record as { battery_id?: unknown }).battery_id !== 'string') return;
    const event = { kind, record } as LiveRecord;
    for (const listener of this.recordListeners) listener(event);
  }

  private deliverAlarm(data: string): void {
    let change: LiveAlarm;
    try {
      change = JSON.parse(data) as LiveAlarm;
    } catch {
      return;
    }
    if (typeof change?.alarm?.id !== 'string' || typeof change.event?.type !== 'string') return;
    for (const listener of this.alarmListeners) listener(change);
  }

  private setState(state: ConnectionState): void {
    if (state === this.state) return;
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }
}
