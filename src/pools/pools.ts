import { isIP } from "node:net";

/** `ip:port` (IPv6 as `[addr]:port`), or a bare IP reported over the write API without a port (port 0). */
export function splitAddress(endpoint: string): { ip: string; port: number } {
  if (isIP(endpoint) !== 0) return { ip: endpoint, port: 0 };
  const colon = endpoint.lastIndexOf(":");
  return { ip: endpoint.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(endpoint.slice(colon + 1)) };
}

/** A set of engines serving the same models (the Go metadata-center's "cluster"). */
export interface Pool {
  readonly name: string;
  readonly models: readonly string[];
  /** Engines as literal `ip:port`, the form Envoy's ORIGINAL_DST cluster routes to. */
  readonly endpoints: readonly string[];
}

export const CATCH_ALL = "*";

/** Which pool serves which model. Immutable: a config reload builds a new one. */
export class PoolDirectory {
  private readonly byModel = new Map<string, Pool>();
  private readonly byName = new Map<string, Pool>();
  private readonly catchAll: Pool | undefined;

  constructor(readonly pools: readonly Pool[]) {
    let catchAll: Pool | undefined;
    for (const pool of pools) {
      this.byName.set(pool.name, pool);
      for (const model of pool.models) {
        if (model === CATCH_ALL) catchAll ??= pool;
        else if (!this.byModel.has(model)) this.byModel.set(model, pool);
      }
    }
    this.catchAll = catchAll;
  }

  /** The pool serving a model; the catch-all pool when none names it or there is no model. */
  forModel(model: string | undefined): Pool | undefined {
    return (model === undefined ? undefined : this.byModel.get(model)) ?? this.catchAll;
  }

  named(name: string): Pool | undefined {
    return this.byName.get(name);
  }
}
