import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

const HealthClient = grpc.makeGenericClientConstructor(healthService, "Health");
type Check = (request: { service: string }, done: (error: grpc.ServiceError | null, response?: { status: string }) => void) => void;

/**
 * One gRPC health check on a connection of its own; resolves to the status name, or "error: …"
 * when the call fails. Plaintext to 127.0.0.1 unless told otherwise; `sni`: the TLS server name.
 */
export function healthStatus(
  port: number,
  service: string,
  options: { host?: string; credentials?: grpc.ChannelCredentials; sni?: string } = {},
): Promise<string> {
  const client = new HealthClient(`${options.host ?? "127.0.0.1"}:${port}`, options.credentials ?? grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
    ...(options.sni === undefined ? {} : { "grpc.ssl_target_name_override": options.sni }),
  });
  const check = (client as unknown as { check: Check }).check.bind(client);
  return new Promise((resolve) => {
    check({ service }, (error, response) => {
      client.close();
      resolve(error ? `error: ${error.message}` : (response?.status ?? ""));
    });
  });
}
