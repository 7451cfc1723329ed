// One browser measurement alone, for trying a change to the tunnel's bulk path without the
// whole browser half (npm run bench:browser): `tunnel.dial` transfers between headless
// Chromium and the agent (through the tunnel of the byte source's own app origin, its shell
// in a tab of its own, as in the benchmark), one after another, each printed with its rate,
// the datagrams the kernel dropped for full UDP receive buffers meanwhile (RcvbufErrors in
// /proc/net/snmp; the whole machine's count), and every pause of over 200 ms between two
// reads in the page.
// Release burrowd and burrow-agent and the Web packages as they are built (bench/run.sh or
// npm run bench:browser builds them). Prints; asserts nothing; writes no results file.
//
//   PROBE_RUNS=6        transfers per direction
//   PROBE_MIB=256       size of each
//   PROBE_DIRS=down,up  down: agent → page; up: page → agent
//
// The agent inherits RUST_LOG, e.g. RUST_LOG=info,rtc_sctp::association=debug to see its
// SCTP retransmission timeouts in the stack's agent.log (its folder is printed first and
// kept when the probe fails).
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { chromiumArgs, chromiumPath, log, startByteSource, startStack, stopAll, targetDir } from "../e2e/harness.mjs";
import { dialTransfer, openTab } from "./dial.mjs";

const RUNS = Number(process.env.PROBE_RUNS || 6);
const MIB = Number(process.env.PROBE_MIB || 256);
const DIRS = (process.env.PROBE_DIRS || "down,up").split(",");

/** The kernel's count of UDP datagrams dropped for a full receive buffer. */
function udpReceiveDrops() {
  const [names, values] = fs.readFileSync("/proc/net/snmp", "utf8").split("\n").filter((l) => l.startsWith("Udp:"));
  return Number(values.split(/\s+/)[names.split(/\s+/).indexOf("RcvbufErrors")]);
}

let failed = false;
let stack;
let browser;
try {
  const source = await startByteSource();
  stack = await startStack({ binDir: path.join(targetDir, "release"), extraPorts: [source.port] });
  log(`stack up in ${stack.work}`);
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs });
  const context = await browser.newContext();
  const dashboard = await context.newPage();
  await dashboard.goto(`${stack.url}/`);
  await dashboard.locator("#token").fill(stack.token);
  await dashboard.locator("#login button").click();
  await dashboard.locator("#main").waitFor({ state: "visible", timeout: 30000 });
  // An app origin's tunnel reaches its own port only: the byte source is opened as an app
  // of its own, and its shell's tunnel makes the transfers.
  const page = await openTab(context, dashboard, source.port);
  const p = await page.evaluate(() => window.__burrowShell.tunnel().then((t) => t.stats()).then((s) => s.path));
  log(`tunnel path: ${p}`);
  for (let i = 0; i < RUNS; i++) {
    for (const dir of DIRS) {
      const before = udpReceiveDrops();
      const r = await dialTransfer(page, source.port, MIB, dir);
      if (r.bytes !== MIB * 1024 * 1024) throw new Error(`${dir}: ${r.bytes} bytes, expected ${MIB * 1024 * 1024}`);
      const pauses = r.pauses.length ? r.pauses.join(", ") : "none";
      log(`${dir} ${i + 1}/${RUNS}: ${(r.bytes / 1e6 / (r.ms / 1000)).toFixed(1)} MB/s, ${udpReceiveDrops() - before} datagrams dropped, pauses over 200 ms: ${pauses}`);
    }
  }
} catch (e) {
  failed = true;
  log(`probe failed: ${e.stack || e}`);
} finally {
  await browser?.close().catch(() => {});
  await stopAll();
  if (stack && !failed) fs.rmSync(stack.work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
