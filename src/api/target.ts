/** A request target as the routes read it: the percent-decoded path, and the query parsed when asked for. */
export type RequestTarget =
  | { ok: true; path: string; query: () => URLSearchParams }
  /** Not a target any route could match; `reason` is shown to the caller with a 400. */
  | { ok: false; reason: string };

const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

/**
 * Reads any request target without throwing. Go's net/http (which the Go metadata-center serves
 * with) matches routes on the path percent-decoded, without collapsing slashes or dot segments;
 * so do we. Origin-form (`/path?query`) and absolute-form (`http://host/path`) are read; a path
 * with a malformed escape, or a target of neither form, is refused. `*` (OPTIONS) is a path no
 * route has.
 */
export function parseTarget(raw: string): RequestTarget {
  const hash = raw.indexOf("#");
  const target = hash === -1 ? raw : raw.slice(0, hash);
  const mark = target.indexOf("?");
  let path = mark === -1 ? target : target.slice(0, mark);
  const search = mark === -1 ? "" : target.slice(mark + 1);
  if (ABSOLUTE_FORM.test(path)) {
    const afterScheme = path.indexOf("//") + 2;
    const slash = path.indexOf("/", afterScheme);
    path = slash === -1 ? "/" : path.slice(slash);
  } else if (!path.startsWith("/") && path !== "*") {
    return { ok: false, reason: `request target ${JSON.stringify(raw.slice(0, 200))} is neither a path nor an absolute URL` };
  }
  if (BAD_ESCAPE.test(path)) return { ok: false, reason: `request target ${JSON.stringify(raw.slice(0, 200))} has a malformed percent-escape` };
  let query: URLSearchParams | undefined;
  return { ok: true, path: percentDecoded(path), query: () => (query ??= new URLSearchParams(search)) };
}

/** Escapes decoded to bytes, read as UTF-8 (a byte sequence that is not UTF-8 becomes U+FFFD, matching no route). */
function percentDecoded(path: string): string {
  if (!path.includes("%")) return path;
  const bytes = path.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  return Buffer.from(bytes, "latin1").toString("utf8");
}
