/** A JSON call to the sidecar's HTTP API and its parsed envelope. */
export interface Envelope<T = unknown> {
  httpStatus: number;
  status: "OK" | "ERROR";
  error: { code: number; message: string; reason: string } | null;
  data: T;
  trace_id: string;
}

export function apiClient(port: number) {
  return async function call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Envelope<T>> {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    return { httpStatus: response.status, ...((await response.json()) as Omit<Envelope<T>, "httpStatus">) };
  };
}
