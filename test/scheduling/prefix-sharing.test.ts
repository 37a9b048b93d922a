import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PrefixIndex } from "../../src/scheduling/prefix-index.js";
import { PrefixSharing, type Broadcast } from "../../src/scheduling/prefix-sharing.js";

/** A broadcast in this process: every message reaches every subscriber, in order. */
class Bus {
  readonly sent: string[] = [];
  private readonly subscribers: Array<(message: string) => void> = [];

  member(): Broadcast {
    return {
      publish: async (message) => {
        this.sent.push(message);
        for (const subscriber of this.subscribers) subscriber(message);
      },
      subscribe: (onMessage) => void this.subscribers.push(onMessage),
    };
  }

  deliver(message: string): void {
    for (const subscriber of this.subscribers) subscriber(message);
  }
}

const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 40));

describe("PrefixSharing", () => {
  it("hands each replica's records to the others, in batches, not back to itself", async () => {
    const bus = new Bus();
    const [a, b] = [new PrefixIndex(), new PrefixIndex()];
    const sharing = [new PrefixSharing(a, bus.member(), () => undefined), new PrefixSharing(b, bus.member(), () => undefined)];
    for (let i = 0; i < 10; i += 1) a.record(`10.0.0.${i}:8000`, [1, 2, 3, i + 100]);
    expect(b.matched("10.0.0.3:8000", [1, 2, 3, 103])).toBe(0);
    await settle();
    expect(bus.sent).toHaveLength(1);
    for (let i = 0; i < 10; i += 1) expect(b.matched(`10.0.0.${i}:8000`, [1, 2, 3, i + 100])).toBe(4);
    // What b learnt is not shared again: one message in all.
    expect(bus.sent).toHaveLength(1);
    for (const member of sharing) member.close();
  });

  it("drops malformed messages and the malformed records of a message, keeping the good ones", async () => {
    const bus = new Bus();
    const index = new PrefixIndex();
    new PrefixSharing(index, bus.member(), () => undefined).close();
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (message) => {
        expect(() => bus.deliver(message)).not.toThrow();
      }),
    );
    bus.deliver(JSON.stringify({ from: "peer", records: [["good:1", [5, 6]], ["bad", [-1]], [7, [1]], ["big", [2 ** 60]], "nope"] }));
    expect(index.matched("good:1", [5, 6])).toBe(2);
    expect(index.matched("bad", [-1])).toBe(0);
    expect(index.matched("big", [2 ** 60])).toBe(0);
  });

  it("reports a publish that failed and goes on", async () => {
    const index = new PrefixIndex();
    const failures: unknown[] = [];
    const sharing = new PrefixSharing(index, { publish: () => Promise.reject(new Error("redis down")), subscribe: () => undefined }, (error) => failures.push(error));
    index.record("e:1", [1]);
    await settle();
    expect(failures).toEqual([new Error("redis down")]);
    expect(index.matched("e:1", [1])).toBe(1);
    sharing.close();
  });
});
