import type { Filter } from "../plan.js";

/** Engines already carrying `limit` open requests are out; the store applies it in its atomic step. 0 = no limit. */
export const saturationFilter = (limit: number): Filter => ({
  apply(plan) {
    plan.maxRequests = limit;
    return undefined;
  },
});
