import { isIP } from "node:net";
import { createServer, Packet } from "dns2";

/** A real DNS server on loopback UDP (dns2, in this process) serving hosts-file lines. */
export interface DnsServer {
  /** `127.0.0.1:port`, for node:dns `setServers`. */
  address: string;
  /** Replaces the served records (hosts-file lines: `address name`); answers change at once. */
  setRecords(lines: string[]): Promise<void>;
  stop(): Promise<void>;
}

/** RFC 1035's "name error": no such name (dns2's types leave out its RCODE table). */
const NXDOMAIN = 3;

/** Hosts-file lines as the addresses of each name. */
function recordsOf(lines: readonly string[]): Map<string, string[]> {
  const records = new Map<string, string[]>();
  for (const line of lines) {
    const [address, ...names] = line.trim().split(/\s+/);
    if (address === undefined || isIP(address) === 0) throw new Error(`not a hosts-file line: ${JSON.stringify(line)}`);
    for (const name of names) records.set(name.toLowerCase(), [...(records.get(name.toLowerCase()) ?? []), address]);
  }
  return records;
}

/** Starts a DNS server on a free loopback port: A and AAAA answers from the lines, NXDOMAIN for other names. */
export async function startDnsServer(lines: string[]): Promise<DnsServer> {
  let records = recordsOf(lines);
  const server = createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const [question] = request.questions;
      const addresses = question === undefined ? undefined : records.get(question.name.toLowerCase());
      if (question === undefined || addresses === undefined) {
        response.header.rcode = NXDOMAIN;
        send(response);
        return;
      }
      const family = question.type === Packet.TYPE.AAAA ? 6 : question.type === Packet.TYPE.A ? 4 : 0;
      for (const address of addresses.filter((candidate) => isIP(candidate) === family)) {
        response.answers.push(Packet.createResourceFromQuestion(question, { ttl: 1, address }));
      }
      send(response);
    },
  });
  const listening = await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
  const port = listening.udp?.port ?? server.addresses().udp?.port;
  if (port === undefined) throw new Error("the DNS server did not say which port it listens on");
  let stopped: Promise<void> | undefined;
  return {
    address: `127.0.0.1:${port}`,
    async setRecords(next) {
      records = recordsOf(next);
    },
    /** Idempotent: a test may take the server down before its cleanup does. */
    stop() {
      stopped ??= server.close();
      return stopped;
    },
  };
}
