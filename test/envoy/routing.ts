// The ORIGINAL_DST cluster with use_http_header: which endpoint the router connects to
// (source/extensions/clusters/original_dst/original_dst_cluster.cc, requestOverrideHost).
import { isIPv4, isIPv6 } from "node:net";
import type { FilterConfig } from "./config.js";
import type { HeaderMap } from "./header-map.js";

export interface Endpoint {
  host: string;
  port: number;
  /** ip:port, [ip6]:port for IPv6. */
  address: string;
}

/** Network::Utility::parseInternetAddressAndPortNoThrow: a literal address and port, nothing else. */
export function parseIpPort(value: string): Endpoint | undefined {
  let host: string;
  let port: string;
  if (value.startsWith("[")) {
    const close = value.indexOf("]:");
    if (close < 0) return undefined;
    host = value.slice(1, close);
    port = value.slice(close + 2);
    if (!isIPv6(host)) return undefined;
  } else {
    const colon = value.lastIndexOf(":");
    if (colon < 0) return undefined;
    host = value.slice(0, colon);
    port = value.slice(colon + 1);
    if (!isIPv4(host)) return undefined;
  }
  if (!/^\d+$/.test(port) || Number(port) > 65535) return undefined;
  const address = isIPv6(host) ? `[${host}]:${Number(port)}` : `${host}:${Number(port)}`;
  return { host, port: Number(port), address };
}

/**
 * Only the first header entry counts. Without a usable value there is no host: the listener has
 * no restored original destination to fall back to, so the router answers 503.
 */
export function pickOriginalDst(headers: HeaderMap, config: FilterConfig): Endpoint | undefined {
  const value = headers.first(config.routingHeader);
  if (value === undefined) return undefined;
  const candidate = config.routingHeaderValue === "first-of-list" ? (value.split(",")[0] ?? "").trim() : value;
  return parseIpPort(candidate);
}
