import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { isLoopbackHost } from "../config/schema.js";

const digest = (text: string): Buffer => createHash("sha256").update(text).digest();

/**
 * Who may change state over HTTP. On loopback only this host can connect, so writes are open;
 * on any other address they need `Authorization: Bearer <token>` (config guarantees a token).
 */
export class WriteAccess {
  private readonly expected: Buffer | undefined;

  constructor(host: string, token: string | undefined) {
    this.expected = isLoopbackHost(host) ? undefined : digest(token ?? "");
  }

  allows(request: IncomingMessage): boolean {
    if (this.expected === undefined) return true;
    const match = /^Bearer (.+)$/.exec(request.headers.authorization ?? "");
    // Digests have equal length, so the comparison takes the same time whatever was sent.
    return match?.[1] !== undefined && timingSafeEqual(digest(match[1]), this.expected);
  }
}
