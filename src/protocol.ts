// The names of the protocols the sidecar speaks, for the code that speaks them and for the config
// that chooses among them: Envoy ext_proc's body modes, and the endpoint-picker protocol's (GIE)
// headers and metadata keys that carry routing.

/** How Envoy sends a body (ProcessingMode.BodySendMode), BUFFERED_PARTIAL read as BUFFERED. */
export type BodyMode = "NONE" | "STREAMED" | "BUFFERED" | "FULL_DUPLEX_STREAMED";
export const bodyModes: readonly BodyMode[] = ["NONE", "STREAMED", "BUFFERED", "FULL_DUPLEX_STREAMED"];

/** The routing header Envoy's ORIGINAL_DST cluster reads (GIE endpoint-picker protocol). */
export const DESTINATION_HEADER = "x-gateway-destination-endpoint";
/** Where the gateway restricts the pick: `filter_metadata[SUBSET_NAMESPACE][SUBSET_KEY]`, a list of ip:port. */
export const SUBSET_NAMESPACE = "envoy.lb.subset_hint";
export const SUBSET_KEY = "x-gateway-destination-endpoint-subset";
/**
 * The load-balancing metadata namespace: the chosen engine and its fallbacks go out in it (keyed
 * by DESTINATION_HEADER), an earlier picker's choice comes in it, and so does, on the response
 * path, the engine that actually served (SERVED_KEY).
 */
export const LB_NAMESPACE = "envoy.lb";
export const SERVED_KEY = "x-gateway-destination-endpoint-served";
/** Header that names the model instead of the body's `model` (GIE convention): a routing input, read only when trusted. */
export const MODEL_REWRITE_HEADER = "x-gateway-model-name-rewrite";
/** The request headers that steer routing; a client can send any of them, so each is read only when the config trusts it. */
export const ROUTING_HEADERS = [MODEL_REWRITE_HEADER, DESTINATION_HEADER] as const;
export type RoutingHeader = (typeof ROUTING_HEADERS)[number];
