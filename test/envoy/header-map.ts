// Envoy's header map as the ext_proc filter sees it, and the header mutation rules it applies
// (source/extensions/filters/http/ext_proc/mutation_utils.cc and
// source/extensions/filters/common/mutation_rules/mutation_rules.cc with default rules).
import type { HeaderMap as HeaderMapProto } from "../../src/gen/envoy/config/core/v3/base.js";
import type { HeaderMutation } from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";

/** Header values are bytes in Envoy; latin1 maps each byte to one char and back without loss. */
const BYTES: BufferEncoding = "latin1";

/** The HTTP connection manager's defaults: max_headers_count 100, max_request_headers_kb 60. */
const MAX_HEADERS_COUNT = 100;
const MAX_HEADERS_BYTES = 60 * 1024;

/** Headers as a client or server passes them: a plain record, or ordered pairs (repeats allowed). */
export type HeaderInput = Readonly<Record<string, string>> | ReadonlyArray<readonly [string, string]>;

export function headerPairs(input: HeaderInput | undefined): Array<[string, string]> {
  if (input === undefined) return [];
  const pairs: ReadonlyArray<readonly [string, string]> = Array.isArray(input)
    ? (input as ReadonlyArray<readonly [string, string]>)
    : Object.entries(input as Readonly<Record<string, string>>);
  return pairs.map(([k, v]) => [k.toLowerCase(), v]);
}

/** An ordered multimap with lower-case keys, like Envoy's HeaderMapImpl. */
export class HeaderMap {
  private entries: Array<[string, string]> = [];

  constructor(pairs: Iterable<readonly [string, string]> = []) {
    for (const [k, v] of pairs) this.add(k, v);
  }

  list(): ReadonlyArray<readonly [string, string]> {
    return this.entries;
  }

  get(name: string): string[] {
    const key = name.toLowerCase();
    return this.entries.filter(([k]) => k === key).map(([, v]) => v);
  }

  first(name: string): string | undefined {
    return this.get(name)[0];
  }

  has(name: string): boolean {
    return this.get(name).length > 0;
  }

  /** addCopy: a repeated header becomes another entry (no header we care about is an inline one). */
  add(name: string, value: string): void {
    this.entries.push([name.toLowerCase(), value]);
  }

  /** setCopy: replaces every existing value with one. */
  set(name: string, value: string): void {
    const key = name.toLowerCase();
    const at = this.entries.findIndex(([k]) => k === key);
    if (at < 0) {
      this.entries.push([key, value]);
      return;
    }
    this.entries[at] = [key, value];
    this.entries = this.entries.filter(([k], i) => k !== key || i === at);
  }

  remove(name: string): void {
    const key = name.toLowerCase();
    this.entries = this.entries.filter(([k]) => k !== key);
  }

  get size(): number {
    return this.entries.length;
  }

  byteSize(): number {
    return this.entries.reduce((n, [k, v]) => n + k.length + v.length, 0);
  }

  /** What Envoy sends with runtime guard send_header_raw_value on: the value in raw_value only. */
  toProto(): HeaderMapProto {
    return {
      headers: this.entries.map(([key, value]) => ({ key, value: "", rawValue: Buffer.from(value, BYTES) })),
    };
  }

  /** Regular headers, one value per name: repeated headers are joined with "," as HTTP allows. */
  toRecord(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of this.entries) {
      if (k.startsWith(":")) continue;
      out[k] = k in out ? `${out[k]},${v}` : v;
    }
    return out;
  }
}

/** RFC 7230 token characters, optionally behind the ':' of a pseudo-header. */
const HEADER_NAME = /^:?[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$/;
const headerNameIsValid = (name: string): boolean => HEADER_NAME.test(name);
const headerValueIsValid = (value: string): boolean => !/[\0\r\n]/.test(value);

type CheckOperation = "SET" | "APPEND" | "REMOVE";

/** Headers the default mutation rules (allow_all_routing false) refuse to set. */
const ROUTING_HEADERS = new Set(["host", ":authority", ":method", ":scheme"]);

/** Checker::check with default HeaderMutationRules: true = apply, false = ignore silently. */
function mutationAllowed(op: CheckOperation, name: string, value: string): boolean {
  if (op === "REMOVE" && (name.startsWith(":") || name === "host")) return false;
  if (ROUTING_HEADERS.has(name)) return false;
  if (name.startsWith(":") && op === "APPEND") return false;
  if (name.startsWith("x-envoy")) return false;
  // (The checker's value-charset test cannot fail here: applyHeaderMutation rejected those already.)
  if (name === ":status") {
    const status = /^\d+$/.test(value) ? Number(value) : NaN;
    if (!(status >= 200)) return false;
  }
  return true;
}

export interface MutationOptions {
  /** CONTINUE_AND_REPLACE lets the server change :method. */
  replacingMessage: boolean;
  /** STREAMED and FULL_DUPLEX_STREAMED: content-length cannot be trusted, so it is never set. */
  removeContentLength: boolean;
}

/**
 * MutationUtils::applyHeaderMutations. Returns an error message when Envoy rejects the whole
 * response (it then answers the client 500), undefined when the mutation was applied (refused
 * individual headers are skipped silently, as Envoy does).
 */
export function applyHeaderMutation(
  mutation: HeaderMutation,
  headers: HeaderMap,
  options: MutationOptions,
): string | undefined {
  if (mutation.removeHeaders.length > MAX_HEADERS_COUNT || mutation.setHeaders.length > MAX_HEADERS_COUNT) {
    return `Header mutation remove header count ${mutation.removeHeaders.length} or set header count ${mutation.setHeaders.length} exceed the HCM header count limit ${MAX_HEADERS_COUNT}`;
  }
  for (const raw of mutation.removeHeaders) {
    if (!headerNameIsValid(raw)) return "Invalid character in remove_headers mutation.";
    const name = raw.toLowerCase();
    if (mutationAllowed("REMOVE", name, "")) headers.remove(name);
  }
  for (const option of mutation.setHeaders) {
    const header = option.header;
    if (header === undefined) continue;
    if (options.removeContentLength && header.key.toLowerCase() === "content-length") continue;
    if (header.value !== "" && header.rawValue.length > 0) {
      return "Only one of value or raw_value in the HeaderValue message should be set.";
    }
    // With send_header_raw_value on, Envoy reads raw_value only: a value-only header sets "".
    const value = Buffer.from(header.rawValue).toString(BYTES);
    if (!headerNameIsValid(header.key) || !headerValueIsValid(value)) {
      return "Invalid character in set_headers mutation.";
    }
    const name = header.key.toLowerCase();
    // Only the deprecated `append` flag is read; unset means overwrite. append_action is ignored.
    const append = option.append ?? false;
    const op: CheckOperation = append && headers.has(name) ? "APPEND" : "SET";
    const allowed = (options.replacingMessage && name === ":method") || mutationAllowed(op, name, value);
    if (!allowed) continue;
    if (append) headers.add(name, value);
    else headers.set(name, value);
  }
  if (headers.size > MAX_HEADERS_COUNT || headers.byteSize() > MAX_HEADERS_BYTES) {
    return `Header mutation causes end result header count ${headers.size} or header size ${headers.byteSize()} bytes, exceeding the count limit ${MAX_HEADERS_COUNT} or the size limit 60 kilobytes`;
  }
  return undefined;
}
