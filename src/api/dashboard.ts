import { createHash } from "node:crypto";

// `GET /dashboard`: one page, nothing loaded from anywhere but this sidecar. It reads
// /debug/pools once a second: each engine's four load numbers, and the traffic totals it turns
// into picks per second and the mean time to first token of the last second. Names from the
// config or the HTTP API are set as text, never as markup.

const SCRIPT = `
const $ = (id) => document.getElementById(id);
const cell = (row, text, className) => {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
};
const NUMBERS = [["requests", "requests"], ["prefill_requests", "in prefill"], ["prefill_tokens", "prefill tokens"], ["tokens_held", "tokens held"]];
let last;

function render(view) {
  const now = performance.now();
  if (last !== undefined) {
    const seconds = (now - last.at) / 1000;
    const picks = view.traffic.picks - last.traffic.picks;
    const firsts = view.traffic.first_tokens - last.traffic.first_tokens;
    $("picks").textContent = (picks / seconds).toFixed(1);
    $("ttft").textContent = firsts > 0 ? ((view.traffic.ttft_seconds - last.traffic.ttft_seconds) / firsts * 1000).toFixed(0) + " ms" : "–";
  }
  last = { at: now, traffic: view.traffic };
  $("ledger").textContent = String(view.ledger);
  const pools = document.createElement("div");
  for (const pool of view.pools) {
    const section = document.createElement("section");
    const title = document.createElement("h2");
    title.textContent = pool.name;
    const models = document.createElement("span");
    models.className = "models";
    models.textContent = pool.models.length > 0 ? pool.models.join(", ") : "reported through the HTTP API";
    title.append(" ", models);
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const name of ["engine", ...NUMBERS.map(([, label]) => label)]) cell(head, name);
    const body = table.createTBody();
    const top = Object.fromEntries(NUMBERS.map(([key]) => [key, Math.max(1, ...pool.engines.map((engine) => engine[key]))]));
    for (const engine of pool.engines) {
      const row = body.insertRow();
      row.dataset.engine = engine.engine;
      cell(row, engine.engine, "engine");
      for (const [key] of NUMBERS) {
        const td = cell(row, String(engine[key]), "number");
        td.dataset.field = key;
        td.style.setProperty("--share", String(engine[key] / top[key]));
      }
    }
    section.append(title, table);
    pools.append(section);
  }
  $("pools").replaceChildren(...pools.children);
}

async function poll() {
  try {
    const response = await fetch("/debug/pools", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render((await response.json()).data);
    $("status").textContent = "live";
    $("status").className = "live";
  } catch (error) {
    $("status").textContent = "unreachable (" + error.message + ")";
    $("status").className = "down";
  }
  setTimeout(poll, 1000);
}
poll();
`;

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 12px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
h1 { font-size: 18px; margin: 0; }
header b { font-variant-numeric: tabular-nums; }
.live { color: #7ee2a8; } .down { color: #ff8a80; }
main { padding: 12px 20px; }
h2 { font-size: 15px; margin: 18px 0 6px; } .models { font-weight: normal; color: #667; }
table { border-collapse: collapse; background: #fff; min-width: 640px; }
td { padding: 4px 12px; border-bottom: 1px solid #e6e8ec; }
thead td { font-weight: 600; color: #445; }
td.engine { font-family: ui-monospace, monospace; }
td.number { text-align: right; font-variant-numeric: tabular-nums;
  background: linear-gradient(to right, #cfe3ff calc(var(--share, 0) * 100%), transparent 0); }
`;

export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>metadata-center</title>
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>metadata-center</h1>
  <span>picks/s <b id="picks">–</b></span>
  <span>TTFT, mean of the last second <b id="ttft">–</b></span>
  <span>open requests <b id="ledger">–</b></span>
  <span id="status">connecting…</span>
</header>
<main id="pools"></main>
<script>${SCRIPT}</script>
</body>
</html>
`;

const digest = (text: string): string => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

/** Only this page's own script and style run, and it talks to this sidecar alone. */
export const DASHBOARD_POLICY = `default-src 'none'; script-src ${digest(SCRIPT)}; style-src ${digest(STYLE)}; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;
