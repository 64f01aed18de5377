/**
 * Alarm changes on the live stream (/api/stream): each change, once stored, as a Server-Sent Event
 * `event: alarm` whose data is `{"event": …, "alarm": …}` (the alarm right after the change). The
 * stream's filters apply: `battery_id` keeps one pack's alarms, `kind` the alarms of rules on that kind.
 * No `id:` line: the stream's ids are the records' (what a reconnecting EventSource resumes from).
 */
import { MAX_QUEUED_BYTES } from '../ingest/live-feed.js';
import type { KindName } from '../records/kinds.js';
import type { AlarmChange } from './model.js';

export interface AlarmStreamFilter {
  batteryId?: string | undefined;
  kind?: KindName | undefined;
}

export interface AlarmStreamSubscriber extends AlarmStreamFilter {
  /** Writes SSE text to the client; answers the bytes still queued for it. */
  write(text: string): number;
  /** The client is too far behind: end its stream (EventSource reconnects by itself). */
  drop(): void;
}

export function alarmEventText(change: AlarmChange): string {
  return `event: alarm\ndata: ${JSON.stringify({ event: change.event, alarm: change.alarm })}\n\n`;
}

/** Subscribes a stream's client to alarm changes; answers the unsubscribe. */
export function subscribeAlarmEvents(
  alarms: { onChange(listener: (changes: readonly AlarmChange[]) => void): () => void },
  subscriber: AlarmStreamSubscriber,
): () => void {
  const { batteryId, kind } = subscriber;
  let dropped = false;
  return alarms.onChange((changes) => {
    if (dropped) return;
    let text = '';
    for (const change of changes) {
      if (batteryId !== undefined && change.alarm.battery_id !== batteryId) continue;
      if (kind !== undefined && change.alarm.kind !== kind) continue;
      text += alarmEventText(change);
    }
    if (text === '') return;
    if (subscriber.write(text) > MAX_QUEUED_BYTES) {
      dropped = true;
      subscriber.drop();
    }
  });
}
