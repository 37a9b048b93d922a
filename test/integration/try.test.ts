import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { root } from "../support/process.js";

/** `npm run try`'s program, on free ports; resolves with the two URLs it prints. */
function startTry() {
  const child = spawn(process.execPath, ["--import", "tsx", "test/demo/try.ts"], {
    cwd: root,
    env: { ...process.env, TRY_PORT: "0", TRY_HTTP_PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exit = new Promise<number | null>((resolve) => child.on("exit", resolve));
  const printed: string[] = [];
  const urls = new Promise<{ envoy: string; stats: string }>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      printed.push(line);
      const text = printed.join("\n");
      const envoy = /stand-in for Envoy at (http:\/\/127\.0\.0\.1:\d+)/.exec(text)?.[1];
      const stats = /curl -s '(http:\/\/127\.0\.0\.1:\d+\/v1\/load\/stats\?cluster=[^']+)'/.exec(text)?.[1];
      if (envoy !== undefined && stats !== undefined && line.startsWith("Ctrl-C")) resolve({ envoy, stats });
    });
    void exit.then((code) => reject(new Error(`exited with ${code} before it was ready:\n${printed.join("\n")}`)));
  });
  return { child, exit, urls, printed };
}

const inFlight = async (stats: string): Promise<number> => {
  const { data } = (await (await fetch(stats)).json()) as { data: Array<{ queued_req_num: number }> };
  return data.reduce((sum, engine) => sum + engine.queued_req_num, 0);
};

describe("npm run try", () => {
  it("prints the curl to send through a stand-in for Envoy; the load view moves while the request streams, and Ctrl-C stops it all", async () => {
    const tried = startTry();
    try {
      const { envoy, stats } = await tried.urls;
      const curl = tried.printed.find((line) => line.includes("-d '"));
      const body = /-d '(.*)'$/.exec(curl ?? "")?.[1];
      expect(body).toBeDefined();
      const response = await fetch(`${envoy}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body });
      expect(response.status).toBe(200);
      const reader = response.body!.getReader();
      expect((await reader.read()).done).toBe(false);
      expect(await inFlight(stats)).toBe(1);
      let text = "";
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += Buffer.from(chunk.value).toString("utf8");
      expect(text).toContain("data: [DONE]");
      await expect.poll(() => inFlight(stats)).toBe(0);
      tried.child.kill("SIGINT");
      expect(await tried.exit).toBe(0);
    } finally {
      tried.child.kill("SIGKILL");
    }
  }, 30_000);
});
