// Renders benchmark results as a Markdown table and an SVG plot (latency of one endpoint change, and
// server CPU per change, against the number of proxies K and of services S).
import type { RunResult } from "./run.js";

export function renderMarkdown(meta: Record<string, unknown>, results: RunResult[]): string {
  const lines = [
    `# vmpilot benchmark (${meta.date})`,
    "",
    `Machine: ${meta.cpus} cores (${meta.cpuModel}), ${meta.memGb} GiB, Node ${meta.node}. Server and load generator in separate processes on loopback.`,
    "Latencies are milliseconds from the file write (or connect) to the proxy's receipt, after which it ACKs at once.",
    "",
    "`subscribed` counts the proxies that asked for the changed resource; `missed` those of them that got nothing within 30 s; `others pushed` the proxies that did not ask for it but were sent that type anyway.",
    "",
    "| S | E | K | style | connect storm p50 / p99 / max ms | unconverged | server CPU ms (storm) | endpoint change p50 / p99 / max ms | subscribed | missed | others pushed | bytes/proxy (change) | server CPU ms (change) | routing change p99 ms | server CPU ms (routing) | RSS idle / connected MB | KB per proxy | heap used / external MB |",
    "|---:|---:|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
  ];
  for (const r of results) {
    const c = r.connectStorm;
    const e = r.endpointChange;
    lines.push(
      `| ${r.services} | ${r.endpoints} | ${r.proxies} | ${r.style} | ${c.p50} / ${c.p99} / ${c.max} | ${c.unconverged} | ${r.serverCpuMsConnectStorm} | ${e.p50} / ${e.p99} / ${e.max} | ${e.subscribed} | ${e.missing} | ${e.unaffectedPushed} | ${e.bytesPerProxy} | ${e.serverCpuMs} | ${r.routingChange ? r.routingChange.p99 : "-"} | ${r.routingChange ? r.routingChange.serverCpuMs : "-"} | ${r.serverRssMb.idle} / ${r.serverRssMb.connected} | ${r.serverRssMb.perProxyKb} | ${r.serverHeapMb ? `${r.serverHeapMb.used} / ${r.serverHeapMb.external}` : "-"} |`,
    );
  }
  return lines.join("\n") + "\n";
}

interface Series {
  label: string;
  points: [number, number][];
  color: string;
}

function panel(x0: number, title: string, xLabel: string, series: Series[]): string {
  const w = 420;
  const h = 260;
  const pad = 48;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  if (xs.length === 0) return "";
  const xMax = Math.max(...xs) * 1.05;
  const yMax = Math.max(1, ...ys) * 1.15;
  const sx = (x: number) => x0 + pad + (x / xMax) * (w - pad - 10);
  const sy = (y: number) => h - pad + 10 - (y / yMax) * (h - pad - 20);
  const out = [
    `<text x="${x0 + w / 2}" y="16" text-anchor="middle" font-size="13">${title}</text>`,
    `<line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(xMax)}" y2="${sy(0)}" stroke="#333"/>`,
    `<line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(0)}" y2="${sy(yMax)}" stroke="#333"/>`,
    `<text x="${x0 + w / 2}" y="${h - 8}" text-anchor="middle" font-size="11">${xLabel}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const y = (yMax * i) / 4;
    out.push(`<text x="${sx(0) - 4}" y="${sy(y) + 4}" text-anchor="end" font-size="10">${Math.round(y)}</text>`);
  }
  series.forEach((s, k) => {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" ")}"/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${sx(x)}" cy="${sy(y)}" r="3" fill="${s.color}"><title>${s.label}: ${x} -> ${y}</title></circle>`);
    out.push(`<text x="${x0 + pad + 8}" y="${36 + 14 * k}" font-size="11" fill="${s.color}">${s.label}</text>`);
  });
  return out.join("\n");
}

export function renderSvg(results: RunResult[]): string {
  const sotw = results.filter((r) => r.style === "envoy-sotw");
  const maxS = Math.max(...sotw.map((r) => r.services));
  const byK = sotw.filter((r) => r.services === maxS);
  const kCounts = new Map<number, number>();
  for (const r of sotw) kCounts.set(r.proxies, (kCounts.get(r.proxies) ?? 0) + 1);
  const fixedK = [...kCounts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  const byS = sotw.filter((r) => r.proxies === fixedK);
  const left = panel(0, `one endpoint change vs proxies K (S=${maxS})`, "proxies K", [
    { label: "p99 ms", color: "#c0392b", points: byK.map((r) => [r.proxies, r.endpointChange.p99]) },
    { label: "p50 ms", color: "#2980b9", points: byK.map((r) => [r.proxies, r.endpointChange.p50]) },
    { label: "server CPU ms", color: "#27ae60", points: byK.map((r) => [r.proxies, r.endpointChange.serverCpuMs]) },
  ]);
  const right = panel(440, `one endpoint change vs services S (K=${fixedK})`, "services S", [
    { label: "p99 ms", color: "#c0392b", points: byS.map((r) => [r.services, r.endpointChange.p99]) },
    { label: "p50 ms", color: "#2980b9", points: byS.map((r) => [r.services, r.endpointChange.p50]) },
    { label: "server CPU ms", color: "#27ae60", points: byS.map((r) => [r.services, r.endpointChange.serverCpuMs]) },
  ]);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="880" height="270" font-family="sans-serif">\n<rect width="880" height="270" fill="white"/>\n${left}\n${right}\n</svg>\n`;
}
