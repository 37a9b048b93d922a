import type { Cluster, Redis } from "ioredis";

/**
 * A Redis pub/sub channel among the replicas. Messages go out on the store's own connection and
 * come in on one of their own, made on the first subscribe: a subscribed connection takes no
 * other command. ioredis subscribes again after a reconnect; what was sent meanwhile is lost.
 */
export class RedisBroadcast {
  private subscriber: Redis | Cluster | undefined;

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly channel: string,
    private readonly failed: (error: unknown) => void,
  ) {}

  publish(message: string): Promise<unknown> {
    return this.redis.publish(this.channel, message);
  }

  subscribe(onMessage: (message: string) => void): void {
    const subscriber = this.redis.duplicate();
    this.subscriber = subscriber;
    subscriber.on("error", this.failed);
    subscriber.on("message", (channel: string, message: string) => {
      if (channel === this.channel) onMessage(message);
    });
    // The store's connections queue nothing while down (fail open): subscribe once this one is ready.
    subscriber.once("ready", () => {
      subscriber.subscribe(this.channel).catch(this.failed);
    });
  }

  close(): void {
    this.subscriber?.disconnect();
  }
}
