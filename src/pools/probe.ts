import { connect } from "node:net";
import { splitAddress } from "./pools.js";

/** Asks an engine itself whether it can be reached; never rejects. */
export type EngineProbe = (engine: string) => Promise<boolean>;

/**
 * True when something at the engine's `ip:port` accepts a TCP connection within `timeoutMs`.
 * That is what Envoy's connection to it needs: refused, unroutable or silent past the timeout are
 * the engine's evidence; a client that gave up is not.
 */
export function tcpProbe(timeoutMs: number): EngineProbe {
  return (engine) =>
    new Promise((resolve) => {
      const { ip, port } = splitAddress(engine);
      let socket: ReturnType<typeof connect>;
      const done = (reachable: boolean): void => {
        socket.destroy();
        resolve(reachable);
      };
      try {
        socket = connect({ host: ip, port, timeout: timeoutMs });
      } catch {
        resolve(false);
        return;
      }
      socket.once("connect", () => done(true));
      socket.once("timeout", () => done(false));
      socket.once("error", () => done(false));
    });
}
