import type { Cluster, Redis } from "ioredis";
import type { Logger } from "../../log.js";
import type { RedisLoadStore } from "./redis-store.js";

/** How often some replica looks for sidecars that stopped renewing. */
const REAP_EVERY_MS = 500;

/**
 * This sidecar's lease on its reservations in the shared store: renewed about every third of
 * `leaseSeconds`. A sidecar that stops renewing (killed, cut off) has its reservations released
 * by whichever replica next finds its lease expired: within leaseSeconds + REAP_EVERY_MS.
 */
export class SidecarLease {
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly store: RedisLoadStore,
    private readonly prefix: string,
    private readonly leaseSeconds: number,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** The store's lease: every reservation it makes carries it. */
  get id(): string {
    return this.store.lease;
  }

  private get leases(): string {
    return `${this.prefix}leases`;
  }

  /** Starts renewing and reaping; a shared store that is out now is tried again on the next round. */
  start(): void {
    const every = (ms: number, task: () => Promise<void>): void => {
      const timer = setInterval(() => task().catch((error: unknown) => this.log.debug({ err: error }, "lease round failed; the shared store may be out")), ms);
      timer.unref();
      this.timers.push(timer);
    };
    void this.renew().catch(() => undefined);
    every((this.leaseSeconds * 1000) / 3, () => this.renew());
    every(REAP_EVERY_MS, () => this.reap());
  }

  private async renew(): Promise<void> {
    await this.redis.zadd(this.leases, this.now() + this.leaseSeconds * 1000, this.id);
  }

  private async reap(): Promise<void> {
    if (!(await this.store.claim("reaper", REAP_EVERY_MS))) return;
    const dead = (await this.redis.zrangebyscore(this.leases, "-inf", this.now())).filter((lease) => lease !== this.id);
    if (dead.length === 0) return;
    const { reaped } = await this.store.sweep(-1, dead);
    await this.redis.zrem(this.leases, ...dead);
    this.log.warn({ leases: dead, reservations: reaped }, "released the reservations of sidecars that stopped renewing their lease");
  }

  /** Stops renewing and gives the lease up (its reservations were released by the shutdown). */
  async stop(): Promise<void> {
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    await this.redis.zrem(this.leases, this.id).catch(() => undefined);
  }
}
