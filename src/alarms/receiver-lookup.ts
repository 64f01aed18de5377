/**
 * Host names of webhook receivers, looked up without taking libuv's thread pool from the rest of the
 * service.
 *
 * fetch looks names up with dns.lookup: getaddrinfo, which runs on the pool's 4 threads, the threads
 * the service's file reads and writes, zlib and crypto share. A name whose DNS server does not answer
 * holds a thread until the system resolver gives up (10 s on this machine). Fuzzed webhooks naming
 * made-up hosts once held all four for minutes, and every file operation of the service waited
 * behind them.
 *
 * So: at most MAX_LOOKUPS at once (half the pool), one lookup per name for everyone waiting on it,
 * and its answer kept for CACHE_MS, a failure too. Written here because cacheable-lookup, the known
 * library, asks c-ares first but falls back to dns.lookup on any failure, timeouts included, with no
 * bound: the very case above. The system's lookup is kept (not c-ares alone) so that /etc/hosts and
 * the rest of nsswitch still name receivers.
 */
import dns, { type LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';

/** Lookups at once: half of libuv's default pool of 4. */
export const MAX_LOOKUPS = 2;
/** How long an answer (or a failure) is kept. getaddrinfo gives no TTL; receivers rarely move. */
export const CACHE_MS = 30_000;

export interface ReceiverLookupOptions {
  maxLookups?: number;
  cacheMs?: number;
  /** The system's lookup of all addresses of a name (tests wrap it to hold it). */
  lookupAll?: (hostname: string) => Promise<LookupAddress[]>;
  now?: () => number;
}

const systemLookupAll = (hostname: string) => dns.promises.lookup(hostname, { all: true, order: 'verbatim' });

/** A lookup function for net.connect (undici's `connect.lookup`), bounded and cached as above. */
export function receiverLookup(options: ReceiverLookupOptions = {}): LookupFunction {
  const maxLookups = options.maxLookups ?? MAX_LOOKUPS;
  const cacheMs = options.cacheMs ?? CACHE_MS;
  const lookupAll = options.lookupAll ?? systemLookupAll;
  const now = options.now ?? Date.now;
  const cache = new Map<string, { at: number; addresses: Promise<LookupAddress[]> }>();
  const waiting: (() => void)[] = [];
  let running = 0;

  async function inLane(hostname: string): Promise<LookupAddress[]> {
    if (running >= maxLookups) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await lookupAll(hostname);
    } finally {
      running--;
      waiting.shift()?.();
    }
  }

  function addressesOf(hostname: string): Promise<LookupAddress[]> {
    const at = now();
    const cached = cache.get(hostname);
    if (cached !== undefined && at - cached.at < cacheMs) return cached.addresses;
    for (const [name, entry] of cache) if (at - entry.at >= cacheMs) cache.delete(name);
    const addresses = inLane(hostname);
    addresses.catch(() => {}); // a failure is kept and handed to each caller; none is unhandled
    cache.set(hostname, { at, addresses });
    return addresses;
  }

  return (hostname, lookupOptions, callback) => {
    addressesOf(hostname).then(
      (all) => {
        const family = lookupOptions.family === 4 || lookupOptions.family === 'IPv4' ? 4 : lookupOptions.family === 6 || lookupOptions.family === 'IPv6' ? 6 : 0;
        const addresses = family === 0 ? all : all.filter((address) => address.family === family);
        if (addresses.length === 0) {
          const error: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
          error.code = 'ENOTFOUND';
          callback(error, '', 0);
        } else if (lookupOptions.all === true) callback(null, addresses);
        else callback(null, addresses[0]!.address, addresses[0]!.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, '', 0),
    );
  };
}
