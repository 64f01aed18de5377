/**
 * Judging readings against a rule's levels: pure functions over a rule, its state for one pack and a
 * reading (record time, value). No clock, no I/O: the engine (alarm-engine.ts) feeds them, and the
 * tests call them directly with series of values.
 *
 * - A value is past a level when it is above `above` or below `below`; critical is judged first.
 * - Raising waits for the debounce: the condition must hold from one reading to a reading at least
 *   `debounce_seconds` later (record time), every reading between past a level. It raises at the
 *   severity of the reading that completes it.
 * - An open alarm escalates as soon as a reading is past a higher level, and steps down (to warning,
 *   or clears) only once the value is back past the level by the hysteresis: a value hovering at a
 *   level does not flap.
 */
import { rankOf, type Band, type RateSlice, type RuleSettings, type RuleState, type Severity } from './model.js';

/** A rule as the evaluator needs it. */
export type LevelRule = Pick<RuleSettings, 'warning' | 'critical' | 'hysteresis' | 'debounce_seconds'>;

/** What changes, and the value judged (for rate_of_rise: the rise per minute). */
export type Transition = { value: number } & (
  | { type: 'raised'; severity: Severity }
  | { type: 'escalated' | 'deescalated'; severity: Severity; previous: Severity }
  | { type: 'cleared'; previous: Severity }
);

/** Past the band, a margin inside it counting as past (the hysteresis of a level already reached). */
function past(band: Band | null, value: number, margin: number): boolean {
  if (band === null) return false;
  return (band.above !== undefined && value > band.above - margin) || (band.below !== undefined && value < band.below + margin);
}

/** The severity of a value on its own, no hysteresis. */
export function severityOf(rule: LevelRule, value: number): Severity | null {
  if (past(rule.critical, value, 0)) return 'critical';
  if (past(rule.warning, value, 0)) return 'warning';
  return null;
}

/** The severity an open alarm keeps: a level is left only once the value is back past it by the hysteresis. */
function heldSeverity(rule: LevelRule, value: number, current: Severity): Severity | null {
  if (current === 'critical' && past(rule.critical, value, rule.hysteresis)) return 'critical';
  if (past(rule.warning, value, rule.hysteresis)) return 'warning';
  // A rule without a warning level: a critical alarm goes straight to cleared.
  return null;
}

/**
 * Judges one reading. `state.pending_since` is updated in place (the debounce); the open alarm's
 * severity is `open` (null when none is open). Answers what changes, if anything.
 */
export function judge(rule: LevelRule, state: Pick<RuleState, 'pending_since'>, open: Severity | null, at: number, value: number): Transition | null {
  const raw = severityOf(rule, value);
  if (open !== null) {
    state.pending_since = null;
    const held = heldSeverity(rule, value, open);
    const next = rankOf(raw) >= rankOf(held) ? raw : held;
    if (next === open) return null;
    if (next === null) return { type: 'cleared', previous: open, value };
    return { type: rankOf(next) > rankOf(open) ? 'escalated' : 'deescalated', severity: next, previous: open, value };
  }
  if (raw === null) {
    state.pending_since = null;
    return null;
  }
  state.pending_since ??= at;
  if (at - state.pending_since < rule.debounce_seconds) return null;
  state.pending_since = null;
  return { type: 'raised', severity: raw, value };
}

/** A rule as `assess` needs it. */
export type AssessedRule = LevelRule & Pick<RuleSettings, 'type' | 'window_seconds'>;

/**
 * Judges one reading of a rule's field: `judge`, after rate_of_rise has turned the reading into the
 * rise per minute over its window (null while the window is too short to tell). Readings come in
 * timestamp order. This is the whole of a reading's evaluation; the engine keeps the alarms.
 */
export function assess(
  rule: AssessedRule,
  state: Pick<RuleState, 'pending_since' | 'window'>,
  open: Severity | null,
  at: number,
  value: number,
): Transition | null {
  let judged = value;
  if (rule.type === 'rate_of_rise') {
    const rate = addToWindow((state.window ??= []), rule.window_seconds!, at, value);
    if (rate === undefined) return null;
    judged = rate;
  }
  return judge(rule, state, open, at, judged);
}

/**
 * rate_of_rise keeps the window in this many slices, each a sum of the readings in it: its memory is
 * bounded (at most SLICES + 1 slices, whatever the reading rate) and averaging a slice's readings
 * keeps sensor noise from reading as a rise.
 */
export const SLICES = 12;

/**
 * Adds a reading to a rate window and answers the rise per minute over the window: the difference of
 * the mean values of its newest and oldest slices over the time between their mean times. Undefined
 * until the readings in the window span at least half of it (too short a span makes noise a rate).
 * Readings come in timestamp order.
 */
export function addToWindow(window: RateSlice[], windowSeconds: number, at: number, value: number): number | undefined {
  const width = windowSeconds / SLICES;
  const index = Math.floor(at / width);
  const last = window[window.length - 1];
  if (last !== undefined && last.index === index) {
    last.count++;
    last.offsets += at - index * width;
    last.values += value;
  } else if (last === undefined || index > last.index) {
    window.push({ index, count: 1, offsets: at - index * width, values: value });
  } else {
    // Older than the newest slice (equal timestamps never are): the engine never sends one.
    return undefined;
  }
  while (window.length > 0 && window[0]!.index < index - SLICES) window.shift();
  const oldest = window[0]!;
  const newest = window[window.length - 1]!;
  const oldestAt = oldest.index * width + oldest.offsets / oldest.count;
  const newestAt = newest.index * width + newest.offsets / newest.count;
  const span = newestAt - oldestAt;
  if (oldest === newest || span < windowSeconds / 2) return undefined;
  return ((newest.values / newest.count - oldest.values / oldest.count) / span) * 60;
}
