/**
 * A listener's counters with their labels bound once: a labelled inc() per chunk or batch, not a
 * label look-up per frame.
 */
import type { KindName } from '../records/kinds.js';
import type { CloseReason, CollectorMetrics, ListenerName, RefuseReason, RejectReason } from './metrics.js';

interface Inc {
  inc(n?: number): void;
}

export interface ListenerCounters {
  readonly frames: Inc;
  readonly bytes: Inc;
  readonly open: Inc & { dec(n?: number): void };
  readonly total: Inc;
  refused(reason: RefuseReason): Inc;
  rejected(reason: RejectReason): Inc;
  accepted(kind: KindName): Inc;
  stored(kind: KindName): Inc;
  closed(reason: CloseReason): Inc;
}

export function listenerCounters(metrics: CollectorMetrics, listener: ListenerName): ListenerCounters {
  const cached = <K extends string>(make: (key: K) => Inc) => {
    const children = new Map<K, Inc>();
    return (key: K): Inc => {
      let child = children.get(key);
      if (child === undefined) {
        child = make(key);
        children.set(key, child);
      }
      return child;
    };
  };
  return {
    frames: metrics.framesReceived.labels(listener),
    bytes: metrics.bytesReceived.labels(listener),
    open: metrics.connectionsOpen.labels(listener),
    total: metrics.connectionsTotal.labels(listener),
    refused: cached((reason: RefuseReason) => metrics.connectionsRefused.labels(listener, reason)),
    rejected: cached((reason: RejectReason) => metrics.rejected.labels(listener, reason)),
    accepted: cached((kind: KindName) => metrics.recordsAccepted.labels(listener, kind)),
    stored: cached((kind: KindName) => metrics.recordsStored.labels(listener, kind)),
    closed: cached((reason: CloseReason) => metrics.connectionsClosed.labels(listener, reason)),
  };
}
