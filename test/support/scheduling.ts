import { parseConfig } from "../../src/config/load.js";
import type { PickerSettings } from "../../src/scheduling/picker.js";

/** The `scheduling` section as a config that leaves it out gets it. */
export const schedulingDefaults: PickerSettings = parseConfig(
  "pools: [{ name: p, models: [m], endpoints: ['127.0.0.1:1'] }]",
  "defaults",
).scheduling;
