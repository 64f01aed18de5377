/**
 * JSON messages from the AI predictor (TCP port 23457): a byte stream of JSON objects,
 * newline-delimited or back to back (`{..}{..}`), possibly pretty-printed over several lines.
 *
 * JsonSplitter finds message boundaries with a byte-level JSON syntax checker (strings, escapes,
 * nesting, literals), so a brace inside a string never cuts a message, and a broken message is
 * found at the byte where it breaks, not at the end of the next one: `{"a": 1, \n{"pack_voltage"...`
 * loses only the first message. After a syntax error it resyncs at the offending byte when that is
 * a `{`, else at the next newline or `{`. Messages over 64 KiB are counted `too_large` and skipped to
 * their end without being held in memory (the collector closes such a connection at once instead:
 * connection.ts). Cost: one pass over each byte; a message that spans
 * reads is assembled once from the slices of its reads (no per-read concatenation).
 *
 * decodeMessage parses, routes (kindOfMessage) and validates (validateRecord) one message, with the
 * same rules as the HTTP API, plausible time included (a timestamp before 2000 or more than
 * MAX_CLOCK_SKEW_SECONDS ahead is rejected as `timestamp_out_of_range`). A battery-data message may
 * carry per-cell readings (`cell_voltages`, `cell_temps`: up to 1,024 finite numbers each, validated
 * like the rest; a bad array makes the message an `invalid_record`, which costs only that message).
 * The size limit leaves room for them: two full arrays of the longest doubles JSON can print (24
 * characters, "-2.2250738585072014e-308") take about 51 KB.
 */
import { kindOfMessage, type KindName, type RecordInput } from '../records/kinds.js';
import { DEFAULT_CLOCK_BOUND, validateRecord, type ClockBound, type ValidationDetail } from '../records/validate.js';

export const MAX_MESSAGE_BYTES = 64 * 1024;
/** Records are flat objects; deeper nesting is refused as malformed (and bounds the parser's stack). */
const MAX_DEPTH = 64;

export type JsonRejection = 'malformed_json' | 'unknown_kind' | 'invalid_record' | 'timestamp_out_of_range' | 'too_large';

export type SplitEvent =
  | { type: 'message'; text: string }
  | { type: 'rejected'; reason: 'malformed_json' | 'too_large'; excerpt: string };

export type DecodedMessage =
  | { ok: true; kind: KindName; record: RecordInput }
  | { ok: false; reason: JsonRejection; excerpt: string; detail?: ValidationDetail[] };

const enum Mode {
  /** Between messages. */
  Idle,
  /** Inside a message, holding its bytes. */
  Message,
  /** Inside a message over the size limit: checking syntax only, to find its end. */
  Oversize,
  /** After a syntax error: dropping bytes until a newline or a `{`. */
  Resync,
}

const enum Expect {
  Value,
  ValueOrClose,
  KeyOrClose,
  Key,
  Colon,
  CommaOrClose,
}

const enum Lex {
  None,
  String,
  Escape,
  Unicode,
  Number,
  Literal,
}

const OBJECT = 1;
const ARRAY = 2;

const CH_LBRACE = 0x7b;
const CH_RBRACE = 0x7d;
const CH_LBRACKET = 0x5b;
const CH_RBRACKET = 0x5d;
const CH_QUOTE = 0x22;
const CH_BACKSLASH = 0x5c;
const CH_COLON = 0x3a;
const CH_COMMA = 0x2c;
const CH_NEWLINE = 0x0a;

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
const isHex = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
const isNumberChar = (c: number) => (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45;
const LITERALS: Record<number, Uint8Array> = {
  0x74: Buffer.from('true'),
  0x66: Buffer.from('false'),
  0x6e: Buffer.from('null'),
};
const ESCAPES = new Set([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);

const EXCERPT_CHARS = 80;
/** The start of a bad message for a log line: never the whole of it. */
export function excerptOf(text: string): string {
  return text.length <= EXCERPT_CHARS ? text : `${text.slice(0, EXCERPT_CHARS)}… (${text.length} chars)`;
}

export type SplitSink = (event: SplitEvent) => void;

/** Splits a byte stream into JSON messages. One per connection. */
export class JsonSplitter {
  readonly #maxBytes: number;
  #mode = Mode.Idle;
  #expect = Expect.Value;
  #lex = Lex.None;
  readonly #stack = new Uint8Array(MAX_DEPTH);
  #depth = 0;
  #literal: Uint8Array | undefined;
  #literalIndex = 0;
  #unicodeLeft = 0;
  #stringIsKey = false;
  /** A newline came since the last token. */
  #newline = false;
  /** Slices of earlier reads holding the start of the current message. */
  #parts: Buffer[] = [];
  #partsBytes = 0;

  constructor(maxBytes: number = MAX_MESSAGE_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /** True while a message (or a run of bad bytes) is incomplete. */
  get midMessage(): boolean {
    return this.#mode !== Mode.Idle;
  }

  push(chunk: Buffer, sink: SplitSink): void {
    let start = 0; // where the current message starts in this chunk
    const length = chunk.length;
    for (let i = 0; i < length; i++) {
      const c = chunk[i]!;
      switch (this.#mode) {
        case Mode.Idle:
          if (isSpace(c)) continue;
          if (c === CH_LBRACE || c === CH_LBRACKET) {
            this.#begin(c);
            start = i;
            continue;
          }
          // Bytes outside any message: one count per run, up to the next newline or `{`.
          this.#mode = Mode.Resync;
          sink({ type: 'rejected', reason: 'malformed_json', excerpt: excerptOf(chunk.toString('utf8', i, Math.min(length, i + EXCERPT_CHARS + 1))) });
          continue;
        case Mode.Resync:
          if (c === CH_NEWLINE) this.#mode = Mode.Idle;
          else if (c === CH_LBRACE) {
            this.#begin(c);
            start = i;
          }
          continue;
        case Mode.Message:
        case Mode.Oversize: {
          const step = this.#step(c);
          if (step === Step.More) {
            if (this.#mode === Mode.Message && this.#partsBytes + (i - start + 1) > this.#maxBytes) {
              sink({ type: 'rejected', reason: 'too_large', excerpt: this.#excerptOfHeld(chunk, start, i + 1) });
              this.#parts = [];
              this.#partsBytes = 0;
              this.#mode = Mode.Oversize;
            }
            continue;
          }
          if (step === Step.Done) {
            if (this.#mode === Mode.Message) {
              if (this.#partsBytes + (i - start + 1) > this.#maxBytes) {
                sink({ type: 'rejected', reason: 'too_large', excerpt: this.#excerptOfHeld(chunk, start, i + 1) });
              } else sink({ type: 'message', text: this.#text(chunk, start, i + 1) });
            }
            this.#parts = [];
            this.#partsBytes = 0;
            this.#mode = Mode.Idle;
            continue;
          }
          // Syntax error at byte i.
          if (this.#mode === Mode.Message) {
            sink({ type: 'rejected', reason: 'malformed_json', excerpt: this.#excerptOfHeld(chunk, start, i + 1) });
          }
          this.#parts = [];
          this.#partsBytes = 0;
          if (c === CH_LBRACE) {
            this.#begin(c);
            start = i;
          } else this.#mode = c === CH_NEWLINE ? Mode.Idle : Mode.Resync;
          continue;
        }
      }
    }
    if (this.#mode === Mode.Message && start < length) {
      this.#parts.push(chunk.subarray(start));
      this.#partsBytes += length - start;
    }
  }

  /** End of stream: an incomplete message is malformed. */
  end(sink: SplitSink): void {
    if (this.#mode === Mode.Message) {
      const held = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts);
      sink({ type: 'rejected', reason: 'malformed_json', excerpt: excerptOf(held.toString('utf8', 0, EXCERPT_CHARS + 1)) });
    }
    this.#parts = [];
    this.#partsBytes = 0;
    this.#mode = Mode.Idle;
  }

  #begin(c: number): void {
    this.#mode = Mode.Message;
    this.#depth = 1;
    this.#stack[0] = c === CH_LBRACE ? OBJECT : ARRAY;
    this.#expect = c === CH_LBRACE ? Expect.KeyOrClose : Expect.ValueOrClose;
    this.#lex = Lex.None;
    this.#newline = false;
  }

  #text(chunk: Buffer, start: number, end: number): string {
    if (this.#parts.length === 0) return chunk.toString('utf8', start, end);
    return Buffer.concat([...this.#parts, chunk.subarray(start, end)]).toString('utf8');
  }

  #excerptOfHeld(chunk: Buffer, start: number, end: number): string {
    const head = this.#parts.length > 0 ? Buffer.concat(this.#parts.slice(0, 4)) : chunk.subarray(start, end);
    return excerptOf(head.toString('utf8', 0, Math.min(head.length, EXCERPT_CHARS + 1)));
  }

  /** Advances the syntax checker by one byte of a message. */
  #step(c: number): Step {
    switch (this.#lex) {
      case Lex.String:
        if (c === CH_QUOTE) {
          this.#lex = Lex.None;
          this.#expect = this.#stringIsKey ? Expect.Colon : Expect.CommaOrClose;
          return Step.More;
        }
        if (c === CH_BACKSLASH) {
          this.#lex = Lex.Escape;
          return Step.More;
        }
        return c < 0x20 ? Step.Error : Step.More;
      case Lex.Escape:
        if (c === 0x75) {
          this.#lex = Lex.Unicode;
          this.#unicodeLeft = 4;
          return Step.More;
        }
        if (!ESCAPES.has(c)) return Step.Error;
        this.#lex = Lex.String;
        return Step.More;
      case Lex.Unicode:
        if (!isHex(c)) return Step.Error;
        if (--this.#unicodeLeft === 0) this.#lex = Lex.String;
        return Step.More;
      case Lex.Literal:
        if (c !== this.#literal![this.#literalIndex]) return Step.Error;
        if (++this.#literalIndex === this.#literal!.length) {
          this.#lex = Lex.None;
          this.#expect = Expect.CommaOrClose;
        }
        return Step.More;
      case Lex.Number:
        if (isNumberChar(c)) return Step.More;
        this.#lex = Lex.None;
        this.#expect = Expect.CommaOrClose;
        return this.#structural(c);
      case Lex.None:
        return this.#structural(c);
    }
  }

  #structural(c: number): Step {
    if (isSpace(c)) {
      if (c === CH_NEWLINE) this.#newline = true;
      return Step.More;
    }
    const newline = this.#newline;
    this.#newline = false;
    switch (this.#expect) {
      case Expect.KeyOrClose:
        if (c === CH_RBRACE) return this.#close(OBJECT);
      // falls through
      case Expect.Key:
        if (c !== CH_QUOTE) return Step.Error;
        this.#lex = Lex.String;
        this.#stringIsKey = true;
        return Step.More;
      case Expect.Colon:
        if (c !== CH_COLON) return Step.Error;
        this.#expect = Expect.Value;
        return Step.More;
      case Expect.CommaOrClose:
        if (c === CH_COMMA) {
          this.#expect = this.#stack[this.#depth - 1] === OBJECT ? Expect.Key : Expect.Value;
          return Step.More;
        }
        if (c === CH_RBRACE) return this.#close(OBJECT);
        if (c === CH_RBRACKET) return this.#close(ARRAY);
        return Step.Error;
      case Expect.ValueOrClose:
        if (c === CH_RBRACKET) return this.#close(ARRAY);
      // falls through
      case Expect.Value:
        return this.#value(c, newline);
    }
  }

  #value(c: number, newline: boolean): Step {
    if (c === CH_QUOTE) {
      this.#lex = Lex.String;
      this.#stringIsKey = false;
      return Step.More;
    }
    if (c === CH_LBRACE || c === CH_LBRACKET) {
      if (this.#depth === MAX_DEPTH) return Step.Error;
      // A member value that opens a line with `{` is no pretty-printer's output (they keep it on
      // the key's line) but a new message after one cut short at `"key":`; treat it so.
      if (c === CH_LBRACE && newline && this.#stack[this.#depth - 1] === OBJECT) return Step.Error;
      this.#stack[this.#depth++] = c === CH_LBRACE ? OBJECT : ARRAY;
      this.#expect = c === CH_LBRACE ? Expect.KeyOrClose : Expect.ValueOrClose;
      return Step.More;
    }
    if ((c >= 0x30 && c <= 0x39) || c === 0x2d) {
      this.#lex = Lex.Number;
      return Step.More;
    }
    const literal = LITERALS[c];
    if (literal !== undefined) {
      this.#lex = Lex.Literal;
      this.#literal = literal;
      this.#literalIndex = 1;
      return Step.More;
    }
    return Step.Error;
  }

  #close(container: number): Step {
    if (this.#stack[this.#depth - 1] !== container) return Step.Error;
    this.#depth--;
    this.#expect = Expect.CommaOrClose;
    return this.#depth === 0 ? Step.Done : Step.More;
  }
}

const enum Step {
  More,
  Done,
  Error,
}

/** Parses, routes and validates one message's text; `clock` bounds its timestamp (MAX_CLOCK_SKEW_SECONDS). */
export function decodeMessage(text: string, clock: ClockBound = DEFAULT_CLOCK_BOUND): DecodedMessage {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'malformed_json', excerpt: excerptOf(text) };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, reason: 'unknown_kind', excerpt: excerptOf(text) };
  }
  const kind = kindOfMessage(value as Record<string, unknown>);
  if (kind === undefined) return { ok: false, reason: 'unknown_kind', excerpt: excerptOf(text) };
  const validation = validateRecord(kind, value, [], clock);
  if (!validation.ok) {
    // A record whose only fault is its time is counted apart: it points at a producer's clock, not its code.
    const reason = validation.timestampOutOfRange ? 'timestamp_out_of_range' : 'invalid_record';
    return { ok: false, reason, excerpt: excerptOf(text), detail: validation.detail };
  }
  return { ok: true, kind, record: validation.record };
}

export type MessageSink = (message: DecodedMessage) => void;

/** Splitter and decoder together: bytes in, routed and validated records (or rejections) out. */
export class JsonDecoder {
  readonly #splitter: JsonSplitter;
  readonly #clock: ClockBound;
  #sink: MessageSink = () => {};
  readonly #onEvent: SplitSink = (event) => {
    if (event.type === 'message') this.#sink(decodeMessage(event.text, this.#clock));
    else this.#sink({ ok: false, reason: event.reason, excerpt: event.excerpt });
  };

  /** `clock` carries MAX_CLOCK_SKEW_SECONDS; its `now`, if set, is fixed (tests), else each message reads the clock. */
  constructor(maxBytes: number = MAX_MESSAGE_BYTES, clock: ClockBound = DEFAULT_CLOCK_BOUND) {
    this.#splitter = new JsonSplitter(maxBytes);
    this.#clock = clock;
  }

  get midMessage(): boolean {
    return this.#splitter.midMessage;
  }

  push(chunk: Buffer, sink: MessageSink): void {
    this.#sink = sink;
    this.#splitter.push(chunk, this.#onEvent);
  }

  end(sink: MessageSink): void {
    this.#sink = sink;
    this.#splitter.end(this.#onEvent);
  }
}

/** Decodes a whole byte sequence given as chunks (tests, tools). */
export function decodeJsonChunks(chunks: Iterable<Buffer>, maxBytes?: number, clock?: ClockBound): DecodedMessage[] {
  const decoder = new JsonDecoder(maxBytes, clock);
  const out: DecodedMessage[] = [];
  const sink: MessageSink = (message) => out.push(message);
  for (const chunk of chunks) decoder.push(chunk, sink);
  decoder.end(sink);
  return out;
}
