import type { Filter } from "../plan.js";

/**
 * Engines already carrying `limits.requests` open requests, or `limits.prefillRequests` requests in
 * prefill, are out; the store applies both in its atomic step. 0 = no limit.
 */
export const saturationFilter = (limits: { requests: number; prefillRequests: number }): Filter => ({
  apply(plan) {
    plan.maxRequests = limits.requests;
    plan.maxPrefillRequests = limits.prefillRequests;
    return undefined;
  },
});
