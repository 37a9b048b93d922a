import type { Filter } from "../plan.js";

/** The gateway's subset hint: only the engines it names; none of the pool's named is a refusal. */
export const subsetFilter: Filter = {
  apply(plan, request) {
    if (request.subset === undefined) return undefined;
    const allowed = new Set(request.subset);
    plan.candidates = plan.candidates.filter((engine) => allowed.has(engine));
    return plan.candidates.length === 0 ? { kind: "outside_subset" } : undefined;
  },
};
