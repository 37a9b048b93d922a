import type { EngineAvailability, Filter } from "../plan.js";

/**
 * Ejected engines out. With every engine ejected, all are kept (Envoy's panic routing): errors
 * that hit every engine at once are more likely the requests' fault than all engines'.
 */
export const healthFilter = (availability: EngineAvailability): Filter => ({
  apply(plan) {
    const healthy = plan.candidates.filter((engine) => availability.eligible(engine));
    if (healthy.length > 0) plan.candidates = healthy;
    return undefined;
  },
});
