import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LruSet } from "../../src/scheduling/lru.js";

describe("LruSet", () => {
  it("gives keys back least recently used first, whatever the touches and deletes (against a plain list)", () => {
    const op = fc.oneof(fc.record({ touch: fc.nat(20) }), fc.record({ remove: fc.nat(20) }), fc.constant("take" as const));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const lru = new LruSet<number>();
        let model: number[] = [];
        for (const step of ops) {
          if (step === "take") expect(lru.takeOldest()).toBe(model.shift());
          else if ("touch" in step) {
            lru.touch(step.touch);
            model = [...model.filter((key) => key !== step.touch), step.touch];
          } else {
            expect(lru.delete(step.remove)).toBe(model.includes(step.remove));
            model = model.filter((key) => key !== step.remove);
          }
          expect(lru.size).toBe(model.length);
        }
      }),
      { numRuns: 300 },
    );
  });
});
