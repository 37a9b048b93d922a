import { Resolver } from "node:dns/promises";
import { isIP } from "node:net";
import type { Logger } from "../log.js";

/** A pool whose engines are the A/AAAA records of a name, re-resolved on an interval. */
export interface DnsSource {
  name: string;
  port: number;
  intervalSeconds: number;
  /** DNS servers (`ip` or `ip:port`); the system's when unset. */
  servers?: string[] | undefined;
}

/** `ip:port` as ORIGINAL_DST routes to it: IPv6 in brackets. */
const endpointOf = (address: string, port: number): string => (isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`);

/** One lookup of both families: sorted `ip:port`s, or undefined when neither family answered. */
export async function resolveEngines(source: DnsSource, resolver: Resolver): Promise<string[] | undefined> {
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(source.name), resolver.resolve6(source.name)]);
  if (v4.status === "rejected" && v6.status === "rejected") return undefined;
  const addresses = [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
  return [...new Set(addresses.map((address) => endpointOf(address, source.port)))].sort();
}

/**
 * Keeps one DNS pool's engines current. A failed lookup keeps the last answer: a DNS outage
 * must not empty a pool that was serving.
 */
export class DnsPoolWatcher {
  private readonly resolver: Resolver;
  private timer: NodeJS.Timeout | undefined;
  private last: string[] | undefined;
  private stopped = false;

  constructor(
    private readonly pool: string,
    private readonly source: DnsSource,
    private readonly onChange: (pool: string, engines: string[]) => void,
    private readonly log: Logger,
  ) {
    this.resolver = new Resolver({ timeout: 2000, tries: 2 });
    if (source.servers !== undefined) this.resolver.setServers(source.servers);
  }

  /** Resolves once (so the pool is filled before serving), then on the interval. */
  async start(): Promise<void> {
    await this.refresh();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.resolver.cancel();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(
      () =>
        void this.refresh()
          .catch((error: unknown) => this.log.error({ pool: this.pool, err: error }, "DNS refresh failed; keeping the last engines"))
          .finally(() => this.schedule()),
      this.source.intervalSeconds * 1000,
    );
    this.timer.unref();
  }

  private async refresh(): Promise<void> {
    const engines = await resolveEngines(this.source, this.resolver);
    if (this.stopped) return;
    if (engines === undefined) {
      this.log.warn({ pool: this.pool, name: this.source.name }, "DNS lookup failed; keeping the last engines");
      return;
    }
    if (this.last !== undefined && engines.join() === this.last.join()) return;
    this.last = engines;
    this.log.info({ pool: this.pool, name: this.source.name, engines }, "DNS pool engines");
    this.onChange(this.pool, engines);
  }
}
