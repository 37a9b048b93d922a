import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { chromiumMissing, launchChromium } from "../support/chromium.js";
import { tempFolder } from "../support/temp.js";
import { chat, chatRequest, startRig, type Rig } from "./harness.js";

let browser: Browser | undefined;
let rig: Rig | undefined;
beforeAll(async () => {
  if (chromiumMissing === undefined) browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  await rig?.expectIdle();
  await rig?.close();
  rig = undefined;
});

/** The number the page shows for one engine's field. */
const shown = (page: Page, engine: string, field: string): Promise<string | null> =>
  page.locator(`tr[data-engine="${engine}"] td[data-field="${field}"]`).textContent({ timeout: 5000 });

describe.skipIf(chromiumMissing !== undefined)(`GET /dashboard${chromiumMissing === undefined ? "" : ` (skipped: ${chromiumMissing})`}`, () => {
  it("shows each pool's engines with their load moving live, picks per second and TTFT, loading nothing from elsewhere", async () => {
    rig = await startRig({ engines: 3 });
    const r = rig;
    const page = await browser!.newPage({ viewport: { width: 1000, height: 420 } });
    const outside: string[] = [];
    page.on("request", (request) => {
      if (!request.url().startsWith(`http://127.0.0.1:${r.sidecar.ports.http}/`)) outside.push(request.url());
    });
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(message.text());
    });
    await page.goto(`http://127.0.0.1:${r.sidecar.ports.http}/dashboard`);
    await expect.poll(() => page.locator("#status").textContent()).toBe("live");
    const engines = r.engines.map((engine) => engine.address);
    for (const engine of engines) expect(await shown(page, engine, "requests")).toBe("0");

    const hold = new AbortController();
    const held = r.exchange({ request: chatRequest(chat("llama", "stay open", { stream: true }), { [FAULT_HEADER]: "hang" }), signal: hold.signal }).catch(() => undefined);
    await expect.poll(async () => (await Promise.all(engines.map((engine) => shown(page, engine, "requests")))).sort().join(",")).toBe("0,0,1");
    for (let i = 0; i < 6; i += 1) expect((await r.exchange({ request: chatRequest(chat("llama", `hello ${i}`)) })).status).toBe(200);
    await expect.poll(async () => Number(await page.locator("#picks").textContent()), { timeout: 5000 }).toBeGreaterThan(0);
    await expect.poll(() => page.locator("#ttft").textContent(), { timeout: 5000 }).toMatch(/^\d+ ms$/);
    const screenshot = process.env["METADATA_CENTER_SCREENSHOT"] ?? join(tempFolder("mc-dashboard-"), "dashboard.png");
    await page.screenshot({ path: screenshot });

    hold.abort();
    await held;
    await expect.poll(async () => (await Promise.all(engines.map((engine) => shown(page, engine, "requests")))).join(",")).toBe("0,0,0");
    expect(outside).toEqual([]);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("sets pool and engine names as text: a name that looks like markup is shown, not run", async () => {
    rig = await startRig({ engines: 1 });
    const name = `<img src=x onerror="document.title='owned'">`;
    const added = await fetch(`http://127.0.0.1:${rig.sidecar.ports.http}/v1/load/stats`, {
      method: "POST",
      body: JSON.stringify({ cluster: name, request_id: "markup", prompt_length: 5, ip: "10.9.9.9" }),
    });
    expect(added.status).toBe(200);
    const page = await browser!.newPage();
    await page.goto(`http://127.0.0.1:${rig.sidecar.ports.http}/dashboard`);
    await expect.poll(() => page.locator("h2", { hasText: "<img" }).count()).toBe(1);
    expect(await page.title()).toBe("metadata-center");
    expect(await page.locator("main img").count()).toBe(0);
    await fetch(`http://127.0.0.1:${rig.sidecar.ports.http}/v1/load/stats`, { method: "DELETE", body: JSON.stringify({ request_id: "markup" }) });
    await page.close();
  });
});
