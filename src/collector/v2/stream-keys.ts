/**
 * A stream and a sequence as text, in idempotency keys, logs and stored positions. Without imports:
 * the side stores' thread loads it (store/sqlite-thread.ts).
 */

/** A stream id: 16 lowercase hex digits. */
export const streamHex = (streamId: bigint): string => streamId.toString(16).padStart(16, '0');

/** A sequence: 20 decimal digits, so that text order is number order (u64 does not fit a double, nor SQLite's signed integer). */
export const sequenceText = (sequence: bigint): string => sequence.toString().padStart(20, '0');
