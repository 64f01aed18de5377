/**
 * A listener that cannot start says which setting to change, in one line: "port 23456
 * (COLLECTOR_BINARY_PORT) on 0.0.0.0 is already in use; set COLLECTOR_BINARY_PORT to a free port".
 * Node's own message ("listen EADDRINUSE: address already in use 0.0.0.0:23456") names neither the
 * listener nor the setting, and the process has several listeners.
 */
import net from 'node:net';

/** A listening socket in the words of the settings that place it. */
export interface ListenTarget {
  host: string;
  port: number;
  /** What sets the port: `API_PORT`, `COLLECTOR_BATTERY_MAP rule "port:23460=pack-1"`, `--metrics-port`. */
  portSetting: string;
  /** What sets the address: `API_HOST`, `COLLECTOR_HOST`, `--metrics-host`. */
  hostSetting: string;
  /** How to pick another port; default `set <portSetting> to a free port`. */
  portFix?: string;
}

export class ListenError extends Error {
  readonly code: string | undefined;
  readonly target: ListenTarget;

  constructor(target: ListenTarget, cause: NodeJS.ErrnoException) {
    super(explainListenError(target, cause), { cause });
    this.name = 'ListenError';
    this.code = cause.code;
    this.target = target;
  }
}

export function explainListenError(target: ListenTarget, error: NodeJS.ErrnoException): string {
  const { host, port, portSetting, hostSetting } = target;
  const fix = target.portFix ?? `set ${portSetting} to a free port`;
  const where = `port ${port} (${portSetting}) on ${host}`;
  switch (error.code) {
    case 'EADDRINUSE':
      return `${where} is already in use; ${fix}`;
    case 'EACCES':
      return port < 1024
        ? `${where} is not allowed: ports below 1024 need root or CAP_NET_BIND_SERVICE; set ${portSetting} to a port from 1024 to 65535`
        : `${where} is not allowed for this user (${error.message}); ${fix}`;
    case 'EADDRNOTAVAIL':
      return `address ${host} (${hostSetting}) is not an address of this machine; set ${hostSetting} to one of its addresses, or 0.0.0.0 for all`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NONAME':
      return `host "${host}" (${hostSetting}) does not resolve to an address; set ${hostSetting} to an address of this machine, or 0.0.0.0 for all`;
    case 'EAFNOSUPPORT':
      return `address ${host} (${hostSetting}): this machine has no ${net.isIPv6(host) ? 'IPv6' : 'such address family'}; set ${hostSetting} to 0.0.0.0`;
    default:
      return `cannot listen on ${where} (${hostSetting}): ${error.message}`;
  }
}

/** `server.listen` as a promise that rejects with a ListenError naming the settings. */
export function listenOn(server: net.Server, target: ListenTarget): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => reject(new ListenError(target, error));
    server.once('error', onError);
    server.listen({ host: target.host, port: target.port }, () => {
      server.off('error', onError);
      resolve(server.address() as net.AddressInfo);
    });
  });
}
