import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

const HealthClient = grpc.makeGenericClientConstructor(healthService, "Health");
type Check = (request: { service: string }, done: (error: grpc.ServiceError | null, response?: { status: string }) => void) => void;

/** One gRPC health check; resolves to the status name, or "error: …" when the call fails. */
export function healthStatus(port: number, service: string, host = "127.0.0.1"): Promise<string> {
  const client = new HealthClient(`${host}:${port}`, grpc.credentials.createInsecure());
  const check = (client as unknown as { check: Check }).check.bind(client);
  return new Promise((resolve) => {
    check({ service }, (error, response) => {
      client.close();
      resolve(error ? `error: ${error.message}` : (response?.status ?? ""));
    });
  });
}
