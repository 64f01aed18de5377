/**
 * JSON request bodies, parsed only when their shape is one records can have. A body is a record or
 * an array of records, and a record's fields are scalars. V8's JSON.parse has no limit of its own:
 * an 8 MB `[[[…]]]` becomes millions of nested arrays (1.4 s of event loop, ~280 MB here), and so
 * does an 8 MB `[[[[]]],[[[]]],…]` four levels deep (0.9 s, ~240 MB): what costs is the number of
 * arrays and objects, whatever their depth. So the bytes are scanned first, counting both, and a body
 * past either limit is refused before anything is built; 100,000 arrays cost about 16 ms.
 *
 * Hand-written: no well-kept library parses JSON with such limits (secure-json-parse, bourne and
 * destr bound prototype keys, not shape). After the scan, the body goes to Fastify's own JSON parser
 * (secure-json-parse, with the instance's onProtoPoisoning/onConstructorPoisoning), so everything
 * else about parsing stays as it was.
 */
import type { FastifyInstance } from 'fastify';
import { MAX_BATCH_RECORDS } from '../records/schemas.js';

export interface JsonLimits {
  /** Levels of arrays and objects inside one another. */
  maxDepth: number;
  /** Arrays and objects in the whole body. */
  maxContainers: number;
}

export const JSON_LIMITS: JsonLimits = {
  // A batch of records is two levels; the per-cell arrays planned for records make three. Unknown
  // fields are accepted and ignored (docs/decisions/0005), and a producer's may hold a small nested
  // block (firmware { version { … } }): room for that, far below where depth costs anything.
  maxDepth: 8,
  // Ten per record: the record itself, its per-cell arrays to come, and unknown fields' arrays and
  // objects. A full batch of plain records holds 10,001.
  maxContainers: 10 * MAX_BATCH_RECORDS,
};

/** Where a body first goes past a limit, and which. */
export interface JsonExcess {
  limit: keyof JsonLimits;
  /** Byte offset of the `[` or `{` that went past it. */
  offset: number;
}

/** A body past JSON_LIMITS: a SyntaxError, so the API answers it as any JSON decode error (422). */
export class JsonTooComplexError extends SyntaxError {
  override name = 'JsonTooComplexError';
  constructor({ limit, offset }: JsonExcess, limits: JsonLimits) {
    super(
      limit === 'maxDepth'
        ? `arrays and objects nested deeper than ${limits.maxDepth} levels (at byte ${offset}); a body is a record or an array of records`
        : `more than ${limits.maxContainers} arrays and objects (at byte ${offset}); a body is a record or an array of up to ${MAX_BATCH_RECORDS} records`,
    );
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/**
 * The first `[` or `{` (outside strings) past a limit, or undefined. One pass over the bytes,
 * nothing allocated; malformed JSON is left for the parser to report. About a third of JSON.parse's
 * time on a batch of records.
 */
export function jsonExcess(bytes: Uint8Array, limits: JsonLimits = JSON_LIMITS): JsonExcess | undefined {
  const { maxDepth, maxContainers } = limits;
  let depth = 0;
  let containers = 0;
  const length = bytes.length;
  for (let i = 0; i < length; i++) {
    const byte = bytes[i];
    if (byte === QUOTE) {
      // Skip the string; an escaped character (\" among them) is skipped with its backslash.
      for (i++; i < length; i++) {
        const inString = bytes[i];
        if (inString === QUOTE) break;
        if (inString === BACKSLASH) i++;
      }
    } else if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > maxDepth) return { limit: 'maxDepth', offset: i };
      if (++containers > maxContainers) return { limit: 'maxContainers', offset: i };
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
      depth--;
    }
  }
  return undefined;
}

/**
 * Replaces the instance's application/json parser with the limited one. The body limit stays the
 * instance's (bodyLimit); the bytes are scanned before they are decoded, then parsed by Fastify's
 * default JSON parser, so an empty or malformed body fails as before (FST_ERR_CTP_*).
 */
export function useLimitedJsonParser(app: FastifyInstance, limits: JsonLimits = JSON_LIMITS): void {
  const { onProtoPoisoning = 'error', onConstructorPoisoning = 'error' } = app.initialConfig;
  const parseJson = app.getDefaultJsonParser(onProtoPoisoning, onConstructorPoisoning);
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body: Buffer, done) => {
    const excess = jsonExcess(body, limits);
    if (excess !== undefined) return done(new JsonTooComplexError(excess, limits), undefined);
    parseJson(request, body.toString('utf8'), done);
  });
}
