/**
 * Keeping a MongoDB URI's secrets out of logs and errors. A URI may carry `user:password@`; driver
 * errors rarely echo it, but a redacted message costs nothing, so every message the store passes
 * on goes through redactor() first.
 */
import { MongoClient, type MongoClientOptions } from 'mongodb';

const SCHEME_AND_CREDENTIALS = /^(mongodb(?:\+srv)?:\/\/)(?:([^@/?#]*)@)?([^/?#]*)/i;

/** `mongodb+srv://***@cluster0.abcde.mongodb.net`: scheme and hosts, credentials masked, no path or options. */
export function maskMongoUri(uri: string): string {
  const match = SCHEME_AND_CREDENTIALS.exec(uri.trim());
  if (match === null) return '(not a mongodb:// URI)';
  const [, scheme, credentials, hosts] = match;
  return `${scheme}${credentials === undefined ? '' : '***@'}${hosts}`;
}

/** The option names (lower case) set in the URI's query string, so that defaults never override them. */
export function uriOptionNames(uri: string): Set<string> {
  const query = uri.split('?')[1] ?? '';
  return new Set(
    query
      .split('&')
      .map((pair) => decodeURIComponent(pair.split('=')[0] ?? '').toLowerCase())
      .filter((name) => name !== ''),
  );
}

/** A function that removes the URI, its credentials and its password from a message. */
export function redactor(uri: string): (message: string) => string {
  const secrets = new Set<string>();
  const trimmed = uri.trim();
  secrets.add(trimmed);
  const credentials = SCHEME_AND_CREDENTIALS.exec(trimmed)?.[2];
  if (credentials !== undefined && credentials !== '') {
    secrets.add(credentials);
    const colon = credentials.indexOf(':');
    const password = colon === -1 ? '' : credentials.slice(colon + 1);
    // Very short passwords would blank out ordinary words; the generic pattern below still catches user:pass@.
    if (password.length >= 4) {
      secrets.add(password);
      try {
        secrets.add(decodeURIComponent(password));
      } catch {
        // Not valid percent-encoding: the raw form is already covered.
      }
    }
  }
  const ordered = [...secrets].filter((s) => s !== '').sort((a, b) => b.length - a.length);
  return (message: string) => {
    let out = message;
    for (const secret of ordered) out = out.split(secret).join('***');
    // Any other URI with credentials that a message might quote.
    return out.replace(/(mongodb(?:\+srv)?:\/\/)[^@\s/]+@/gi, '$1***@');
  };
}

/**
 * A client of its own for a store beside the records (alarms, analytics): short server-selection and
 * connect timeouts unless the URI sets them, and a malformed URI's error without the URI in it.
 */
export function sideClient(uri: string, appName: string, label: string, selectionTimeoutMs: number): MongoClient {
  const set = uriOptionNames(uri);
  const options: MongoClientOptions = { appName, ignoreUndefined: true };
  if (!set.has('serverselectiontimeoutms')) options.serverSelectionTimeoutMS = selectionTimeoutMs;
  if (!set.has('connecttimeoutms')) options.connectTimeoutMS = selectionTimeoutMs;
  try {
    return new MongoClient(uri, options);
  } catch (error) {
    // A malformed URI: the parse error may quote it.
    throw new Error(`${label}: ${redactor(uri)((error as Error).message)}`);
  }
}
