/**
 * Peer and listen addresses as the collector and the relay judge them: who may connect
 * (COLLECTOR_ALLOW, matched with node's BlockList), whose connections count together for
 * COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS, and whether an address is reachable only from this machine.
 *
 * A dual-stack listener (`::`) sees IPv4 peers as IPv4-mapped IPv6 addresses (::ffff:10.0.0.7):
 * BlockList matches those against IPv4 networks, and they count as the IPv4 address they are.
 */
import net from 'node:net';
import type { Network } from '../config.js';

const MAPPED_IPV4 = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/** The address a peer's connections are counted under: an IPv4-mapped IPv6 address as its IPv4 address. */
export function canonicalAddress(address: string): string {
  return MAPPED_IPV4.exec(address)?.[1] ?? address;
}

const familyOf = (address: string) => (net.isIPv6(address) ? 'ipv6' : 'ipv4');

/** A test of peer addresses against COLLECTOR_ALLOW; undefined when the list is empty (every peer may connect). */
export function peerAllowList(networks: readonly Network[]): ((address: string) => boolean) | undefined {
  if (networks.length === 0) return undefined;
  const list = new net.BlockList();
  for (const network of networks) list.addSubnet(network.address, network.prefix, network.family);
  return (address) => net.isIP(address) !== 0 && list.check(address, familyOf(address));
}

const loopback = new net.BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/**
 * True when an address (or `localhost`) is reachable from this machine only. 0.0.0.0, ::, a LAN
 * address or a host name other than localhost may be reachable from other hosts.
 */
export function isLoopback(host: string): boolean {
  const address = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (address.toLowerCase() === 'localhost') return true;
  return net.isIP(address) !== 0 && loopback.check(address, familyOf(address));
}
