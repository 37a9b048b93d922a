import { mulberry32 } from "./random.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import type { LoadStore } from "../../src/load/store.js";

/** throw: the call throws synchronously; reject: it returns a rejected promise; hang: a promise that never settles. */
export type Fault = "throw" | "reject" | "hang";
export type StoreCall = keyof LoadStore;

/** Decides, per call, whether it fails and how; undefined lets it through. */
export type FaultPlan = (call: StoreCall) => Fault | undefined;

export interface InjectedFault {
  call: StoreCall;
  fault: Fault;
  /** The reservation the call concerned, for the calls that name one. */
  id: string | undefined;
}

export class InjectedStoreError extends Error {
  override readonly name = "InjectedStoreError";
}

const CALLS: readonly StoreCall[] = [
  "pickAndReserve",
  "reserve",
  "has",
  "firstToken",
  "addGenerated",
  "reconcile",
  "move",
  "release",
  "loads",
  "pools",
  "poolLoads",
  "expire",
  "size",
];

/** Calls that name a reservation by id as their first argument (pickAndReserve and reserve inside a request). */
function idOf(call: StoreCall, args: unknown[]): string | undefined {
  const first = args[0];
  if (typeof first === "string" && call !== "poolLoads") return first;
  if (typeof first === "object" && first !== null && "id" in first && typeof first.id === "string") return first.id;
  return undefined;
}

/**
 * A memory store that fails where the plan says. A failed call is not applied: the inner store
 * never sees it, so whatever the faults, the inner store's counters stay the exact sum of its open
 * ledger entries — any drift is the caller's. `faults` lists what was injected.
 */
export class FaultyStore {
  readonly inner = new MemoryLoadStore();
  readonly faults: InjectedFault[] = [];
  /** The store's interface, each call passing through the plan first. */
  readonly store: LoadStore;
  private plan: FaultPlan;

  constructor(plan: FaultPlan) {
    this.plan = plan;
    const inner = this.inner as unknown as Record<StoreCall, (...args: unknown[]) => unknown>;
    const wrapped = {} as Record<StoreCall, (...args: unknown[]) => unknown>;
    for (const call of CALLS) {
      wrapped[call] = (...args: unknown[]) => {
        const fault = this.plan(call);
        if (fault === undefined) return inner[call].apply(this.inner, args);
        this.faults.push({ call, fault, id: idOf(call, args) });
        const error = new InjectedStoreError(`injected ${fault} in ${call}`);
        if (fault === "throw") throw error;
        if (fault === "reject") return Promise.reject(error);
        return new Promise(() => undefined);
      };
    }
    this.store = wrapped as unknown as LoadStore;
  }

  /** Change the plan (e.g. stop injecting before checking the counters). */
  use(plan: FaultPlan): void {
    this.plan = plan;
  }

  /** Ids whose release was injected a fault: they stay open until the TTL sweep, by design. */
  unreleased(): Set<string> {
    return new Set(this.faults.filter((fault) => fault.call === "release" && fault.id !== undefined).map((fault) => fault.id as string));
  }
}

/** No faults. */
export const noFaults: FaultPlan = () => undefined;

/** Each call listed (every call when none are) fails with probability `rate`, with a fault drawn from `kinds`; seeded. */
export function randomFaults(options: { seed: number; rate: number; calls?: readonly StoreCall[]; kinds?: readonly Fault[] }): FaultPlan {
  const random = mulberry32(options.seed);
  const calls = new Set(options.calls ?? CALLS);
  const kinds = options.kinds ?? (["throw", "reject", "hang"] as const);
  return (call) => {
    if (!calls.has(call) || random() >= options.rate) return undefined;
    return kinds[Math.floor(random() * kinds.length)];
  };
}

/** Exactly these calls fail, always, the way named. */
export const faultsAt = (rules: Partial<Record<StoreCall, Fault>>): FaultPlan => (call) => rules[call];
