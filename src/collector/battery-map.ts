/**
 * Which pack a TCP connection speaks for. Binary frames carry no pack id, so the collector names
 * the pack of a connection by configuration (COLLECTOR_BATTERY_MAP), as a comma list of rules:
 *
 *   port:23460=pack-1     connections to listening port 23460 are pack-1 (the collector listens
 *                         on every port named here, for binary frames, beside its two main ports)
 *   peer:10.0.0.7=pack-2  connections from address 10.0.0.7 are pack-2 (IPv4 or IPv6)
 *
 * A peer rule wins over a port rule; with neither the pack is "default". JSON messages that carry
 * their own battery_id keep it; the map only names the pack of those that do not.
 */
import { isIP } from 'node:net';
import { ConfigError } from '../config.js';
import { DEFAULT_BATTERY_ID, isBatteryId } from '../records/kinds.js';

export interface BatteryMap {
  byPort: ReadonlyMap<number, string>;
  byPeer: ReadonlyMap<string, string>;
}

export const EMPTY_BATTERY_MAP: BatteryMap = { byPort: new Map(), byPeer: new Map() };

/** `::ffff:10.0.0.7` (an IPv4 client on a dual-stack socket) is 10.0.0.7. */
export function normalizeAddress(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

/** Parses COLLECTOR_BATTERY_MAP; a bad rule throws a ConfigError naming the setting and the rule. */
export function parseBatteryMap(text: string): BatteryMap {
  const byPort = new Map<number, string>();
  const byPeer = new Map<string, string>();
  for (const raw of text.split(',')) {
    const rule = raw.trim();
    if (rule === '') continue;
    const bad = (why: string) => new ConfigError(`COLLECTOR_BATTERY_MAP: ${why} in rule "${rule}" (expected port:23460=pack-1 or peer:10.0.0.7=pack-2)`);
    const colon = rule.indexOf(':');
    const equals = rule.lastIndexOf('=');
    if (colon < 0 || equals < colon) throw bad('no type or no =');
    const type = rule.slice(0, colon).trim().toLowerCase();
    const target = rule.slice(colon + 1, equals).trim();
    const batteryId = rule.slice(equals + 1).trim();
    if (!isBatteryId(batteryId)) throw bad('the battery id must be 1-64 of A-Z a-z 0-9 . _ : -');
    if (type === 'port') {
      const port = Number(target);
      if (!/^\d+$/.test(target) || port < 1 || port > 65535) throw bad('the port must be 1-65535');
      if (byPort.has(port)) throw bad(`port ${port} is mapped twice`);
      byPort.set(port, batteryId);
    } else if (type === 'peer') {
      const address = target.replace(/^\[(.*)\]$/, '$1');
      if (isIP(address) === 0) throw bad('the peer must be an IPv4 or IPv6 address');
      const key = normalizeAddress(address);
      if (byPeer.has(key)) throw bad(`peer ${address} is mapped twice`);
      byPeer.set(key, batteryId);
    } else throw bad(`unknown type "${type}"`);
  }
  return { byPort, byPeer };
}

export function batteryIdFor(map: BatteryMap, peerAddress: string | undefined, localPort: number | undefined): string {
  if (peerAddress !== undefined) {
    const byPeer = map.byPeer.get(normalizeAddress(peerAddress));
    if (byPeer !== undefined) return byPeer;
  }
  if (localPort !== undefined) {
    const byPort = map.byPort.get(localPort);
    if (byPort !== undefined) return byPort;
  }
  return DEFAULT_BATTERY_ID;
}
