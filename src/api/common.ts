/**
 * What several routes share: the typed instance, query parameters, error answers, who may call
 * (OpenAPI security), and the 405 answer for a known path asked with a method it does not serve.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyInstance, RouteOptions } from 'fastify';
import { Type, type TObject, type TProperties, type TSchema, type TString, type TUnsafe } from 'typebox';
import type { KindName, StoredRecord } from '../records/kinds.js';
import { BatteryId as BatteryIdSchema, recordSchemas, Source as SourceSchema } from '../records/schemas.js';
import type { KeySettings } from './auth.js';

/** The instance a route plugin gets: its request types come from the routes' schemas. */
export type RoutesApp = Parameters<FastifyPluginAsyncTypebox>[0];

/*
 * The kinds table's schemas under the types they describe: they are built at run time from the
 * table, so TypeBox cannot infer them, and the replies the routes type-check against need them.
 */
export const BatteryId = BatteryIdSchema as TSchema as TString;
export const Source = SourceSchema as TSchema as TString;
export const recordSchema = (kind: KindName) => recordSchemas[kind] as TSchema as TUnsafe<StoredRecord>;

export const MAX_HISTORY_LIMIT = 10_000;
/** Ten years: longer than any retention this service keeps. */
export const MAX_HOURS = 87_600;

/**
 * A query string's schema, unknown parameters refused (so that `?battery_id[$ne]=x` and friends
 * answer 422 instead of being ignored). A parameter with a default is typed as present, since the
 * validator fills the default in, and documented as optional, since a client may leave it out.
 */
export function Query<const Properties extends TProperties>(properties: Properties): TObject<Properties> {
  const schema = Type.Object(properties, { additionalProperties: false });
  const required = ((schema.required ?? []) as string[]).filter((name) => (properties[name] as { default?: unknown }).default === undefined);
  const json = schema as { required?: string[] };
  if (required.length > 0) json.required = required;
  else delete json.required;
  return schema;
}

export const Hours = (fallback: number) => Type.Number({ exclusiveMinimum: 0, maximum: MAX_HOURS, default: fallback, description: 'How far back, in hours' });

export const BatteryQuery = Query({ battery_id: Type.Optional(BatteryId) });

/** One pack's records, one producer's, or both: what the reads of a kind filter by. */
export const RecordQuery = Query({ battery_id: Type.Optional(BatteryId), source: Type.Optional(Source) });

export const HistoryQuery = Query({
  hours: Hours(24),
  limit: Type.Integer({ minimum: 1, maximum: MAX_HISTORY_LIMIT, default: 100, description: 'At most this many records' }),
  battery_id: Type.Optional(BatteryId),
  source: Type.Optional(Source),
});

export const ErrorDetail = Type.Object(
  { detail: Type.String({ description: 'What went wrong', example: 'No battery data found' }) },
  { title: 'ErrorDetail' },
);

export const ValidationErrorResponse = Type.Object(
  {
    detail: Type.Array(
      Type.Object({
        loc: Type.Array(Type.Union([Type.String(), Type.Integer()]), { example: ['body', 'pack_voltage'] }),
        msg: Type.String({ example: 'field required' }),
        type: Type.String({ example: 'value_error.missing' }),
      }),
    ),
  },
  { title: 'ValidationError', description: 'One entry per bad field, as the original (Pydantic) answered' },
);

export const errorResponses = {
  401: { ...ErrorDetail, description: 'API key missing or wrong' },
  422: { ...ValidationErrorResponse, description: 'Invalid input' },
  503: { ...ErrorDetail, description: 'The store is unreachable' },
};

/** What an operation with a request body may answer besides: its body too large, or not JSON. */
export const bodyErrorResponses = {
  ...errorResponses,
  413: { ...ErrorDetail, description: 'The body is larger than BODY_LIMIT' },
  415: { ...ErrorDetail, description: 'The body is not JSON' },
};

export const notFound = { ...ErrorDetail, description: 'Nothing stored (for this pack)' };

/** OpenAPI security of an operation: a key in X-API-Key or Authorization: Bearer, or none needed. */
type Security = { [scheme: string]: string[] }[];
const KEYED: Security = [{ apiKey: [] }, { bearer: [] }];
const OPEN: Security = [];

/**
 * What an operation's `security` says, from the settings the service runs with, so that the
 * document promises a 401 exactly where requireKey (auth.ts) answers one: writes need API_KEY when
 * it is set, reads need a key only when READ_API_KEY is set, open routes never.
 */
export function securityOf(settings: KeySettings, access: 'read' | 'write' | 'open'): Security {
  if (access === 'write') return settings.apiKey === undefined ? OPEN : KEYED;
  if (access === 'read') return settings.readApiKey === undefined ? OPEN : KEYED;
  return OPEN;
}

/**
 * The methods each path is served with, collected as routes are added, for 405 answers. Fastify's
 * router answers 404 for a known path with another method; RFC 9110 asks for 405 with `Allow`.
 * Must be called before the routes are registered (an onRoute hook sees only later routes).
 */
export function trackRouteMethods(app: FastifyInstance): (path: string) => string[] {
  const routes: { pattern: RegExp; methods: string[] }[] = [];
  app.addHook('onRoute', (route: RouteOptions) => {
    // The CORS plugin's catch-all OPTIONS route matches every path: it must not turn unknown
    // paths into known ones.
    if (route.url === '*' || route.url === '/*') return;
    const methods = (Array.isArray(route.method) ? route.method : [route.method]).map((method) => method.toUpperCase());
    routes.push({ pattern: patternOf(route.url), methods });
  });
  return (path) => {
    const allowed = new Set<string>();
    for (const route of routes) if (route.pattern.test(path)) for (const method of route.methods) allowed.add(method);
    return [...allowed].sort();
  };
}

/** A Fastify route path as a regular expression: `:name` is one segment, `*` anything. */
function patternOf(url: string): RegExp {
  const source = url
    .split(/(:[A-Za-z0-9_]+(?:\([^)]*\))?|\*)/)
    .map((part) => (part === '*' ? '.*' : part.startsWith(':') ? '[^/]+' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`);
}
