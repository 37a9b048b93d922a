import { pino } from "pino";
import type { ExchangeEvents, LifecycleContext } from "../../src/inference/lifecycle.js";
import { EngineSteps } from "../../src/scheduling/engine-steps.js";

/** Events nobody listens to. */
export const unheardEvents = (): ExchangeEvents => ({ picked: () => undefined, refused: () => undefined, firstToken: () => undefined, prefillEstimated: () => undefined, finished: () => undefined });

/** An exchange's context for tests: the parts given, and quiet defaults for the rest (no health, no log, picker role). */
export function lifecycleContext(parts: Pick<LifecycleContext, "store" | "picker" | "parser" | "tokens"> & Partial<LifecycleContext>): LifecycleContext {
  return {
    health: { succeeded: () => undefined, failed: () => undefined, unanswered: () => undefined },
    log: pino({ level: "silent" }),
    maxJsonResponseBytes: 1 << 20,
    forceIncludeUsage: false,
    events: unheardEvents(),
    steps: new EngineSteps(),
    observe: undefined,
    ...parts,
  };
}
