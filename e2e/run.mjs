// Browser end-to-end tests (npm run e2e): the dashboard, the service worker and code-server
// through a real tunnel, in headless Chromium. See e2e/harness.mjs for what is started.
//
// Each test prints PASS or FAIL; the exit status is 1 if any failed. Nothing is skipped.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import {
  artifactsDir, audit, chromiumArgs, chromiumPath, hostRequest, log, root, rssKiB, run, startOtherSite, startStack,
  stopAll, tail, waitFor,
} from "./harness.mjs";

// Tolerances of the memory test: after 1,000 fetches and a forced GC, the page's JS heap and
// the agent's RSS must be back within these of where they were after the warm-up.
const HEAP_TOLERANCE_BYTES = 8 * 1024 * 1024;
const AGENT_RSS_TOLERANCE_KIB = 24 * 1024;
const DOWNLOAD_MIB = 100;
// A closed page's streams end within this: far under the agent's 30 s idle timeout, which
// is what ended them before the page said it was going.
const PROMPT_END_MS = 10000;
// KNOWN GAP (issue 19, stop 13's note): through the relay, the tunnel of an app's shell in
// the dashboard's view (a frame of another process) is often still ended by that 30 s
// timeout when the page closes: Chrome ends the frame's process before the ABORT pc.close()
// queues reaches the agent through the relay. Bounded here by the timeout plus slack, so the
// streams must still end, until the shell's close is made to get through.
const RELAYED_VIEW_END_MS = 40000;

const results = [];
// For working on one test: E2E_ONLY=<regex>. The run then fails (exit 1) so a filtered run
// is never mistaken for a full pass.
const only = process.env.E2E_ONLY ? new RegExp(process.env.E2E_ONLY) : null;
async function test(name, fn) {
  if (only && !only.test(name)) {
    results.push([`${name} (not selected by E2E_ONLY)`, false, null]);
    return;
  }
  const started = Date.now();
  log(`RUN  ${name}`);
  try {
    await fn();
    results.push([name, true, null]);
    log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push([name, false, firstLine(e)]);
    log(`FAIL ${name}: ${e.stack || e}`);
  }
}

// CI shows only the end of the output, so the summary repeats why each test failed.
// Playwright's timeouts say what they waited for on their second and third lines.
function firstLine(e) {
  return String(e?.message ?? e).split("\n").map((l) => l.trim()).filter(Boolean).slice(0, 3).join(" | ").slice(0, 400);
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

let stack;
let browser;

function watch(page, name) {
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") log(`${name} console.${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => log(`${name} pageerror: ${e.message}`));
}

/** A fresh browser context with the dashboard logged in through its form. */
async function newDashboard({ relay = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  watch(page, "dashboard");
  await page.goto(`${stack.url}/${relay ? "#relay=1" : ""}`);
  await page.locator("#token").fill(stack.token);
  await page.locator("#login button").click();
  await page.locator("#main").waitFor({ state: "visible", timeout: 30000 });
  return { context, page };
}

/** Presses a port's button: the app opens in the dashboard's view, on its own origin. */
async function openApp(page, port) {
  const button = page.locator(`button[data-open="dev:${port}"]`);
  await button.waitFor({ state: "visible", timeout: 30000 });
  await waitFor("the workspace online in the dashboard", () => button.isEnabled(), 30000);
  await button.click();
  await appFrame(page, port);
  return page.frameLocator("#app").frameLocator("#burrow-app");
}

/** Presses a port's tab button: the app opens at its own URL in a tab of its own. */
async function openTab(context, page, port) {
  const button = page.locator(`button[data-tab="dev:${port}"]`);
  await waitFor("the workspace online in the dashboard", () => button.isEnabled(), 30000);
  const [tab] = await Promise.all([context.waitForEvent("page"), button.click()]);
  watch(tab, "tab");
  return tab;
}

const isShell = (f, port) => f.url().startsWith(`${stack.appOrigin(port)}/`) && f.evaluate(() => !!window.__burrowShell).catch(() => false);

/** The shell window of the app's origin: the frame in the dashboard's view, or the tab. */
async function shellFrame(page, port) {
  return waitFor("the app's shell", async () => {
    for (const f of page.frames()) if (!f.isDetached() && await isShell(f, port)) return f;
    return null;
  }, 30000);
}

/** The app's own frame: the shell's child, on the app's origin. */
async function appFrame(page, port) {
  const shell = await shellFrame(page, port);
  return waitFor("the app frame", () => shell.childFrames().find((f) => !f.isDetached() && f.url().startsWith(`${stack.appOrigin(port)}/`)), 30000);
}

/** Opens README.md's markdown preview, a webview with a service worker of its own, and
 *  waits for its heading to render. */
async function markdownPreview(page, frame) {
  await frame.locator(".explorer-folders-view .monaco-list-row", { hasText: "README.md" }).click();
  await frame.locator(".monaco-editor .view-line", { hasText: "# e2e workspace" }).waitFor({ timeout: 60000 });
  await frame.locator(".editor-instance .monaco-editor .view-lines").click();
  await page.keyboard.press("Control+Shift+V");
  const heading = await waitFor("the markdown preview's heading", async () => {
    for (const f of page.frames()) {
      if (f.isDetached()) continue;
      const h = await f.evaluate(() => document.querySelector("h1")?.textContent ?? null).catch(() => null);
      if (h === "e2e workspace") return h;
    }
    return null;
  }, 60000);
  assert(heading === "e2e workspace", "the preview renders README.md's heading");
}

async function codeServerThroughTunnel({ relay }) {
  const { context, page } = await newDashboard({ relay });
  let closedAt;
  try {
    const frame = await openApp(page, stack.codeServerPort);
    // The workbench renders and its explorer lists the workspace's files.
    await frame.locator(".monaco-workbench").waitFor({ timeout: 120000 });
    const fileRow = frame.locator(".explorer-folders-view .monaco-list-row", { hasText: "hello.txt" });
    await fileRow.waitFor({ timeout: 120000 });
    assert(await frame.locator(".explorer-folders-view .monaco-list-row", { hasText: "README.md" }).count() === 1,
      "README.md in the explorer");

    // Open, edit, save; the file on disk changes.
    const marker = `edited through burrow ${relay ? "relay" : "direct"} ${Date.now()}`;
    await fileRow.click();
    const editor = frame.locator(".editor-instance .monaco-editor .view-lines");
    await editor.waitFor({ timeout: 60000 });
    await frame.locator(".monaco-editor .view-line", { hasText: "hello from the workspace" }).waitFor({ timeout: 60000 });
    await editor.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(marker);
    await page.keyboard.press("Control+s");
    const file = path.join(stack.folder, "hello.txt");
    await waitFor("the saved file on disk", () => fs.readFileSync(file, "utf8").includes(marker), 30000);

    // A command typed into the integrated terminal runs in the workspace.
    const made = `from-terminal-${relay ? "relay" : "direct"}-${Date.now()}`;
    await page.keyboard.press("Control+Backquote");
    const term = frame.locator(".terminal-wrapper .xterm");
    await term.waitFor({ timeout: 60000 });
    await term.click();
    // The terminal draws on a canvas (no text to wait on for the prompt) and keystrokes typed
    // before its shell runs can be lost, so the command is typed again, a bounded number of
    // times, until its file appears (touch is idempotent).
    let created = false;
    for (let attempt = 0; attempt < 6 && !created; attempt++) {
      await term.click();
      await page.keyboard.type(`touch ${made}`);
      await page.keyboard.press("Enter");
      created = await waitFor("the file the terminal created", () => fs.existsSync(path.join(stack.folder, made)), 10000)
        .then(() => true, () => false);
    }
    assert(created, `the terminal command created ${made} in the workspace`);

    await markdownPreview(page, frame);

    // Everything went through the tunnel: the frame's WebSocket is the tunnelled one, the shell
    // served the frame's requests and both of code-server's WebSockets, the path is as asked.
    const f = await appFrame(page, stack.codeServerPort);
    assert(await f.evaluate(() => window.WebSocket.__burrow === true), "the frame's WebSocket is the tunnelled one");
    const shell = await shellFrame(page, stack.codeServerPort);
    const counters = await shell.evaluate(() => ({ ...window.__burrowShell.counters }));
    log("shell counters", JSON.stringify(counters));
    assert(counters.requests >= 20, `code-server's HTTP requests went through the tunnel (${counters.requests})`);
    assert(counters.webSockets >= 2, `both code-server WebSockets went through the tunnel (${counters.webSockets})`);
    const pathShown = await page.locator("#conn-path").getAttribute("data-path");
    assert(pathShown === (relay ? "relay" : "direct"), `the dashboard shows path ${pathShown}`);
    const stats = await shell.evaluate(() => window.__burrowShell.tunnel().then((t) => t.stats()));
    assert(stats.path === (relay ? "relay" : "direct"), `tunnel path ${stats.path}`);
    assert(stats.bytesReceived > 1_000_000, `tunnel received ${stats.bytesReceived} bytes`);

    if (!relay) {
      fs.mkdirSync(artifactsDir, { recursive: true });
      const shot = path.join(artifactsDir, "dashboard.png");
      await page.screenshot({ path: shot });
      console.log(`dashboard screenshot: ${shot}`);
    }
  } finally {
    closedAt = Date.now();
    await context.close();
  }
  // Closing the page ended the tunnel: the agent reports its streams, and burrowd's audit log
  // shows streams to code-server's port that carried the workbench (bytes both ways). The
  // streams still open (code-server's WebSockets) ended when the page went, not when the
  // agent's idle timeout (30 s) would have noticed: the page closes its channel on pagehide.
  const rows = await waitFor("audit rows for code-server's port", () => {
    const r = audit(stack).filter((a) => a.port === stack.codeServerPort && a.path === (relay ? "relay" : "direct"));
    const ended = r.filter((a) => a.outcome.startsWith("tunnel closed"));
    if (ended.length === 0) return null;
    const late = ended.filter((a) => a.ended_at_ms - closedAt > (relay ? RELAYED_VIEW_END_MS : PROMPT_END_MS));
    assert(late.length === 0, `streams open when the page closed ended ${late.map((a) => a.ended_at_ms - closedAt)} ms after it (${late[0]?.outcome})`);
    return r.some((a) => a.bytes_to_client > 100_000) && r.length >= 2 ? r : null;
  }, relay ? 60000 : 45000);
  log(`the tunnel's streams ended with ${JSON.stringify([...new Set(rows.map((a) => a.outcome))])}`);
  log(`audit: ${rows.length} ${relay ? "relayed" : "direct"} streams to code-server, ${rows.reduce((n, a) => n + a.bytes_to_client, 0)} bytes to the browser`);
}

async function main() {
  // E2E_NO_BUILD=1 uses what is built (for iterating on the tests); E2E_BIN_DIR=DIR takes
  // burrowd and burrow-agent from DIR (e.g. the release build the benchmarks made).
  if (!process.env.E2E_NO_BUILD) {
    log("building burrowd, burrow-agent and the web packages");
    if (!process.env.E2E_BIN_DIR) {
      run("cargo", ["build", "--bins", "-p", "burrow-server", "-p", "burrow-agent"], { cwd: root, stdio: "inherit" });
    }
    run("bash", ["scripts/build-web.sh"], { cwd: root, stdio: "inherit" });
  }
  stack = await startStack(process.env.E2E_BIN_DIR ? { binDir: process.env.E2E_BIN_DIR } : {});
  log(`stack up: burrowd ${stack.url}, code-server :${stack.codeServerPort}, test app :${stack.app.port}, work ${stack.work}`);
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs });

  await test("burrowd has no route that reaches an app, and no path-based apps", async () => {
    // A plain HTTP client (no service worker) asking burrowd for an app origin's paths gets
    // Burrow's shell page, a redirect to the dashboard, or a 404: never a byte of the app.
    const shell = fs.readFileSync(path.join(root, "web/shell.html"), "utf8");
    for (const port of [stack.codeServerPort, stack.app.port]) {
      const origin = stack.appOrigin(port);
      for (const p of ["/", "/healthz", "/static/x.js", "/bytes?mib=1", "/hostile"]) {
        const framed = await hostRequest(stack, origin, p, { headers: { "sec-fetch-dest": "iframe" } });
        assert(framed.status === 200 && framed.body === shell, `${origin}${p} in a frame is the shell (${framed.status})`);
        const top = await hostRequest(stack, origin, p, { headers: { "sec-fetch-dest": "document" } });
        assert(top.status === 302 && top.headers.location.startsWith(`${stack.url}/apps/authorize?`),
          `${origin}${p} without a credential goes to the dashboard (${top.status} ${top.headers.location})`);
        for (const dest of ["script", "serviceworker", "empty", "image"]) {
          const sub = await hostRequest(stack, origin, p, { headers: { "sec-fetch-dest": dest } });
          assert(sub.status === 404 && !sub.body.includes("test app"), `${origin}${p} as ${dest}: ${sub.status}`);
        }
      }
      const post = await hostRequest(stack, origin, "/echo", { method: "POST", body: "x", headers: { "sec-fetch-dest": "empty" } });
      assert(post.status === 404 || post.status === 405, `POST to an app path is refused (${post.status})`);
      // The dashboard's API is not on app origins.
      const api = await hostRequest(stack, origin, "/api/v1/workspaces", { headers: { authorization: `Bearer ${stack.token}` } });
      assert(!api.body.includes('"allowed_ports"'), `${origin} does not serve the dashboard's API (${api.status})`);
    }
    // Path-based apps are gone from the dashboard's origin.
    for (const p of [`/@dev/apps/${stack.app.port}/`, "/burrow-sw.js", "/burrow-ws-shim.js"]) {
      const r = await fetch(`${stack.url}${p}`, { redirect: "manual" });
      assert(r.status === 404, `${p} on the dashboard's origin: ${r.status}`);
    }
  });

  await test("HTTP semantics through the service worker, in a tab of its own: methods, bodies, redirects, cookies, gzip, HEAD, status", async () => {
    const { context, page } = await newDashboard();
    try {
      const tab = await openTab(context, page, stack.app.port);
      const f = await appFrame(tab, stack.app.port);
      await f.locator("#hello").waitFor({ timeout: 60000 });
      const r = await f.evaluate(async () => {
        const out = {};
        const echo = await fetch("echo", { method: "POST", body: "ping through the tunnel", headers: { "content-type": "text/x-test" } });
        out.echo = [echo.status, await echo.text(), echo.headers.get("content-type")];
        const put = await fetch("echo", { method: "PUT", body: new Uint8Array([1, 2, 3]) });
        out.put = [...new Uint8Array(await put.arrayBuffer())];
        const gz = await fetch("gzip");
        out.gzip = [(await gz.text()).startsWith("decoded by the tunnel"), gz.headers.get("content-encoding")];
        const br = await fetch("br");
        out.br = [br.status, await br.text() === "decoded from brotli ".repeat(500)];
        const red = await fetch("redirect");
        out.redirect = [red.status, red.redirected, new URL(red.url).pathname, (await red.arrayBuffer()).byteLength];
        // An absolute Location on the app's public host, as an app behind a proxy sends.
        const abs = await fetch("redirect-abs");
        out.redirectAbs = [abs.status, abs.redirected, abs.url === `${location.origin}/small`, (await abs.arrayBuffer()).byteLength];
        const manual = await fetch("redirect", { redirect: "manual" });
        out.manual = manual.type;
        const head = await fetch("small", { method: "HEAD" });
        out.head = [head.status, (await head.arrayBuffer()).byteLength];
        const missing = await fetch("nope");
        out.missing = missing.status;
        await fetch("cookie");
        const again = await fetch("cookie");
        out.cookieSent = await again.text();
        out.documentCookie = document.cookie;
        await fetch("cookie-delete");
        out.afterDelete = [document.cookie, await (await fetch("cookie")).text()];
        out.shim = window.WebSocket.__burrow === true;
        // Only documents get the shim: the same HTML fetched by a script is the app's bytes.
        out.fetchedHtml = await (await fetch("./")).text();
        return out;
      });
      log("http results", JSON.stringify(r));
      assert(r.echo[0] === 200 && r.echo[1] === "ping through the tunnel" && r.echo[2] === "text/x-test", "POST echo");
      assert(JSON.stringify(r.put) === "[1,2,3]", "PUT echo");
      assert(r.gzip[0] && r.gzip[1] === null, "gzip decoded, Content-Encoding dropped");
      assert(r.br[0] === 200 && r.br[1], "br decoded");
      // The same requests made directly to the app, for comparison.
      const direct = await context.newPage();
      await direct.goto(`http://127.0.0.1:${stack.app.port}/`);
      const d = await direct.evaluate(async () => {
        const red = await fetch("redirect");
        const abs = await fetch("redirect-abs");
        const br = await fetch("br");
        return {
          br: [br.status, await br.text() === "decoded from brotli ".repeat(500)],
          redirect: [red.status, red.redirected, new URL(red.url).pathname, (await red.arrayBuffer()).byteLength],
          redirectAbs: [abs.status, abs.redirected, abs.url === `${location.origin}/small`, (await abs.arrayBuffer()).byteLength],
        };
      });
      for (const k of ["redirect", "redirectAbs", "br"]) {
        assert(JSON.stringify(r[k]) === JSON.stringify(d[k]), `${k} through the tunnel ${JSON.stringify(r[k])} as directly ${JSON.stringify(d[k])}`);
      }
      assert(r.redirect[1] === true && r.redirect[2] === "/small", "the page sees the redirect");
      assert(r.manual === "opaqueredirect", "manual redirect");
      assert(r.head[0] === 200 && r.head[1] === 0, "HEAD has no body");
      assert(r.missing === 404, "404 passes through");
      assert(r.cookieSent.includes("visible=yes") && r.cookieSent.includes("secret=no"), "the jar sends cookies back");
      assert(r.documentCookie.includes("visible=yes") && !r.documentCookie.includes("secret"), "non-HttpOnly cookies mirrored");
      assert(!r.afterDelete[0].includes("visible"), `a cookie the app deleted leaves document.cookie (${r.afterDelete[0]})`);
      assert(r.shim, "the page got the WebSocket shim");
      assert(!r.fetchedHtml.includes("/.burrow/shim.js") && r.fetchedHtml.includes("<h1 id=hello>"),
        `HTML fetched by a script is not changed (${r.fetchedHtml.slice(0, 120)})`);
    } finally {
      await context.close();
    }
  });

  await test("the service worker's HTTP cache: fresh answers from it (also after the worker restarted), no-cache revalidated (304), no-store answers not stored, a redirect followed by the browser to a stored target", async () => {
    const { context, page } = await newDashboard();
    try {
      await openApp(page, stack.app.port);
      const f = await appFrame(page, stack.app.port);
      await f.locator("#hello").waitFor({ timeout: 60000 });
      stack.app.hits.clear();
      const r = await f.evaluate(async () => {
        const get = async (path, init) => {
          const res = await fetch(path, init);
          return { status: res.status, body: await res.text(), internal: res.headers.get("x-burrow-received-at") };
        };
        const out = {};
        for (const route of ["fresh", "revalidate", "no-store", "gzip"]) {
          out[route] = [await get(`cache/${route}`), await get(`cache/${route}`)];
        }
        out.noCacheMode = await get("cache/fresh", { cache: "no-cache" });
        out.reload = await get("cache/fresh", { cache: "reload" });
        out.afterReload = await get("cache/fresh");
        out.noStoreMode = await get("cache/fresh", { cache: "no-store" });
        out.moved = [await get("cache/moved"), await get("cache/moved")];
        return out;
      });
      const hits = Object.fromEntries(stack.app.hits);
      log("cache results", JSON.stringify(hits));
      const body = (route) => `${route} body `.repeat(200);
      for (const route of ["fresh", "revalidate", "no-store", "gzip"]) {
        for (const [i, got] of r[route].entries()) {
          assert(got.status === 200 && got.body === body(route), `${route} #${i + 1}: 200 with the app's body (got ${got.status}, ${got.body.length} chars)`);
          assert(got.internal === null, `${route} #${i + 1}: the cache's own header is not shown to the page`);
        }
      }
      for (const k of ["noCacheMode", "reload", "afterReload", "noStoreMode"]) {
        assert(r[k].status === 200 && r[k].body === body("fresh"), `${k}: 200 with the app's body`);
      }
      // fresh: stored by the first fetch, served to the second and (after the reload stored it
      // again) to the one after; no-cache asked with If-None-Match; reload and no-store fetched anew.
      // (The two redirects below end at it too, and are served from the cache.)
      assert(hits["fresh 200"] === 3, `fresh: 3 full answers (first, reload, no-store), got ${hits["fresh 200"]}`);
      assert(hits["fresh 304"] === 1, `fresh: 1 revalidation (cache: no-cache), got ${hits["fresh 304"]}`);
      assert(hits["revalidate 200"] === 1 && hits["revalidate 304"] === 1, "no-cache: stored, then revalidated with a 304");
      assert(hits["no-store 200"] === 2, "no-store: asked both times");
      for (const got of r.moved) assert(got.status === 200 && got.body === body("fresh"), "a redirect is followed to its target");
      // The browser follows the temporary redirect (not stored: it said nothing of its
      // freshness), and its target is a request of its own, answered from the cache.
      assert(hits["moved 302"] === 2 && hits["fresh 200"] === 3, `the redirect asked each time, its target from the cache (${hits["moved 302"]} redirects, ${hits["fresh 200"]} fresh answers)`);
      assert(hits["gzip 200"] === 1, "a gzip body of unknown decoded length: stored decoded, served from the cache");

      // A worker started anew knows what the cache holds only once it has read the cache's
      // keys: stored answers are served from the cache before and after that.
      const cdp = await context.newCDPSession(page);
      await cdp.send("ServiceWorker.enable");
      await cdp.send("ServiceWorker.stopAllWorkers");
      const restarted = await f.evaluate(async () => {
        const text = async (path) => (await fetch(path)).text();
        const first = await text("cache/fresh");
        await new Promise((resolve) => setTimeout(resolve, 500));
        return [first, await text("cache/fresh"), await text("cache/gzip")];
      });
      assert(restarted[0] === body("fresh") && restarted[1] === body("fresh") && restarted[2] === body("gzip"),
        "the stored answers after the worker restarted");
      assert(stack.app.hits.get("fresh 200") === 3 && stack.app.hits.get("gzip 200") === 1,
        `and they came from the cache (fresh ${stack.app.hits.get("fresh 200")}, gzip ${stack.app.hits.get("gzip 200")} answers from the app)`);
    } finally {
      await context.close();
    }
  });

  await test("code-server through the tunnel (direct): explorer, edit+save, terminal, markdown preview", () => codeServerThroughTunnel({ relay: false }));
  await test("code-server through the tunnel (forced relay): explorer, edit+save, terminal, markdown preview", () => codeServerThroughTunnel({ relay: true }));

  await test("code-server at its own URL in a tab of its own: markdown preview, its WebSockets through that tab's tunnel, the address bar on the app", async () => {
    const { context, page } = await newDashboard();
    try {
      const started = Date.now();
      const tab = await openTab(context, page, stack.codeServerPort);
      // What a slow load waited for, so that a slow run in CI says so.
      const begun = new Map();
      const took = [];
      tab.on("request", (r) => begun.set(r, Date.now()));
      const ended = (r) => begun.has(r) && took.push([Date.now() - begun.get(r), r.url()]);
      tab.on("requestfinished", ended);
      tab.on("requestfailed", ended);
      const f = await appFrame(tab, stack.codeServerPort);
      // The same budget as the dashboard's view: the workbench's 19 MB script comes agent →
      // page (bench/findings.md); this test is about where it runs, a slow load is measured
      // by the benchmark.
      await f.locator(".monaco-workbench").waitFor({ timeout: 120000 });
      await f.locator(".explorer-folders-view .monaco-list-row", { hasText: "hello.txt" }).waitFor({ timeout: 120000 });
      const loadMs = Date.now() - started;
      log(`the tab's workbench after ${loadMs} ms`);
      if (loadMs > 10000) {
        const slowest = took.sort((a, b) => b[0] - a[0]).slice(0, 5).map(([ms, u]) => `${ms} ms ${u}`);
        log(`slowest of its ${took.length} requests: ${slowest.join("; ")}`);
      }
      assert(await f.evaluate(() => window.WebSocket.__burrow === true), "the app's frame has the tunnelled WebSocket");
      const counters = await tab.evaluate(() => ({ ...window.__burrowShell.counters }));
      assert(counters.webSockets >= 2, `the tab's WebSockets went through its own tunnel (${counters.webSockets})`);
      await markdownPreview(tab, tab.frameLocator("#burrow-app"));
      const url = new URL(tab.url());
      assert(url.origin === stack.appOrigin(stack.codeServerPort) && !url.pathname.startsWith("/.burrow"),
        `the address bar shows the app's own URL (${tab.url()})`);
      assert((await tab.title()) !== "Burrow", `the tab's title is the app's (${await tab.title()})`);
      // A reload of the tab comes back to the app (its credential is the origin's cookie).
      await tab.reload();
      const again = await appFrame(tab, stack.codeServerPort);
      await again.locator(".explorer-folders-view .monaco-list-row", { hasText: "hello.txt" }).waitFor({ timeout: 120000 });
    } finally {
      await context.close();
    }
  });

  await test("a deep link to an app without a credential goes through the dashboard: log in first, then a click opens it", async () => {
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      watch(tab, "deep link");
      const deep = `${stack.appOrigin(stack.app.port)}/?from=bookmark`;
      await tab.goto(deep);
      assert(tab.url().startsWith(`${stack.url}/apps/authorize?`), `sent to the dashboard (${tab.url()})`);
      await tab.locator("#what a").waitFor({ timeout: 10000 });
      assert(await tab.locator("#open").isHidden(), "nothing to open before logging in");
      // Logged in, the same link asks for a click (another site can send a user here, but
      // cannot make them open anything), then lands on the app at the deep path.
      const login = await context.newPage();
      await login.goto(stack.url);
      await login.locator("#token").fill(stack.token);
      await login.locator("#login button").click();
      await login.locator("#main").waitFor({ state: "visible", timeout: 30000 });
      await tab.goto(deep);
      await tab.locator("#open").click();
      await tab.waitForURL((u) => u.href === deep, { timeout: 30000 });
      const f = await appFrame(tab, stack.app.port);
      await waitFor("the deep path in the app's frame", () => f.url() === deep, 30000);
      await f.locator("#hello").waitFor({ timeout: 30000 });
    } finally {
      await context.close();
    }
  });

  await test("a stopped service worker gets its port again from the shell", async () => {
    const { context, page } = await newDashboard();
    try {
      await openApp(page, stack.app.port);
      const f = await appFrame(page, stack.app.port);
      await f.locator("#hello").waitFor({ timeout: 60000 });
      // Chrome stops idle service workers; the next request starts a fresh one with no ports.
      const cdp = await context.newCDPSession(page);
      await cdp.send("ServiceWorker.enable");
      await cdp.send("ServiceWorker.stopAllWorkers");
      const again = await f.evaluate(async () => {
        const r = await fetch("small");
        return [r.status, (await r.arrayBuffer()).byteLength];
      });
      assert(again[0] === 200 && again[1] === 1024, `after the worker stopped: ${again}`);
    } finally {
      await context.close();
    }
  });

  await test("a hostile app reaches nothing but itself: no token, no other app, no other port, no worker of its own, no dashboard", async () => {
    const { context, page } = await newDashboard();
    try {
      // code-server opened first, so there is another app of the same user to go after.
      await openApp(page, stack.codeServerPort);
      const cs = stack.appOrigin(stack.codeServerPort);
      await page.locator("#app-close").click();
      await openApp(page, stack.app.port);
      const f = await appFrame(page, stack.app.port);
      await f.goto(`${stack.appOrigin(stack.app.port)}/hostile`);
      await f.locator("#hostile").waitFor({ timeout: 30000 });
      const r = await f.evaluate(async ({ token, csOrigin, csPort, dashboard }) => {
        const out = {};
        const attempt = async (name, fn) => {
          try {
            out[name] = { ok: true, value: await fn() };
          } catch (e) {
            out[name] = { ok: false, error: String(e?.message ?? e).slice(0, 200) };
          }
        };
        // 1. The token, anywhere this script can read: every reachable window's globals and
        // documents, storage, cookies.
        const seen = [];
        const look = (label, v) => { try { if (String(v).includes(token)) seen.push(label); } catch {} };
        const windows = [["self", window], ["parent", window.parent], ["top", window.top], ["opener", window.opener]];
        for (const [label, w] of windows) {
          if (!w) continue;
          try {
            for (const k of Object.getOwnPropertyNames(w)) {
              let v;
              try { v = w[k]; } catch { continue; }
              if (typeof v === "string") look(`${label}.${k}`, v);
              else if (v && typeof v === "object" && !(v instanceof w.Node)) {
                try { look(`${label}.${k}`, JSON.stringify(v)); } catch {}
              }
            }
            look(`${label}.document`, w.document.documentElement.outerHTML);
            look(`${label}.sessionStorage`, JSON.stringify({ ...w.sessionStorage }));
            look(`${label}.localStorage`, JSON.stringify({ ...w.localStorage }));
            look(`${label}.cookie`, w.document.cookie);
            out[`${label} readable`] = true;
          } catch {
            out[`${label} readable`] = false;
          }
        }
        out.tokenSeen = seen;
        out.cookie = document.cookie;
        // 2. Another app's origin and the dashboard's API, with credentials.
        await attempt("fetch other app", async () => (await fetch(`${csOrigin}/`, { credentials: "include" })).text());
        await attempt("fetch other app no-cors", async () => {
          const res = await fetch(`${csOrigin}/`, { mode: "no-cors", credentials: "include" });
          return [res.type, (await res.text()).length];
        });
        await attempt("fetch dashboard api", async () => (await fetch(`${dashboard}/api/v1/workspaces`, { credentials: "include" })).text());
        await attempt("fetch other app session", async () => {
          const res = await fetch(`${csOrigin}/.burrow/session`, { method: "POST", credentials: "include", body: "{}" });
          return [res.status, await res.text()];
        });
        // 3. Another port through this app's own tunnel (the agent allows code-server's port).
        const t = await window.parent.__burrowShell.tunnel();
        await attempt("dial other port", async () => { const st = await t.dial(csPort); return (await st.read())?.length ?? "eof"; });
        await attempt("fetch other port", async () => (await t.fetch(`http://localhost:${csPort}/`)).status);
        await attempt("dial speed test", async () => { const st = await t.dial(0); return (await st.read())?.length ?? "eof"; });
        // 4. A service worker of its own at the root, displacing Burrow's.
        // Through the shim, and around it (the browser's own register, after staging the
        // script with burrowd as the shim would).
        await attempt("register root worker", async () => (await navigator.serviceWorker.register("/evil-sw.js", { scope: "/" })).scope);
        await attempt("register root worker around the shim", async () => {
          const staged = await fetch(`/.burrow/app-worker?src=${encodeURIComponent("/evil-sw.js")}`, { method: "PUT", body: "self.onfetch = (e) => e.respondWith(new Response('owned'))" });
          const reg = await ServiceWorkerContainer.prototype.register.call(navigator.serviceWorker, "/evil-sw.js", { scope: "/" });
          return [staged.status, reg.scope];
        });
        await attempt("register burrow's scope", async () => (await navigator.serviceWorker.register("/x/evil-sw.js", { scope: "/.burrow/" })).scope);
        out.registrations = (await navigator.serviceWorker.getRegistrations()).map((g) => (g.active || g.installing || g.waiting)?.scriptURL);
        // 5. Another app's window: its shell's globals.
        await attempt("other app's window", async () => {
          const w = window.open(`${csOrigin}/`, "_blank");
          await new Promise((res) => setTimeout(res, 1500));
          try { return typeof w.__burrowShell; } finally { w.close(); }
        });
        // 6. Poison the caches: what this origin can write is this origin's alone.
        await attempt("poison cache", async () => {
          const names = await caches.keys();
          const c = await caches.open(names[0] ?? "burrow-http-cache");
          await c.put(`${location.origin}/small`, new Response("poisoned", { headers: { "cache-control": "max-age=600" } }));
          return names;
        });
        // 7. Frame the dashboard.
        await attempt("frame dashboard", () => new Promise((resolve) => {
          const fr = document.createElement("iframe");
          fr.src = `${dashboard}/`;
          fr.onload = () => { try { resolve(fr.contentDocument?.body?.innerText ?? "cross-origin"); } catch { resolve("cross-origin"); } };
          document.body.append(fr);
        }));
        return out;
      }, { token: stack.token, csOrigin: cs, csPort: stack.codeServerPort, dashboard: stack.url });
      log("hostile app:", JSON.stringify(r).slice(0, 3000));
      assert(r.tokenSeen.length === 0, `the token is readable at ${r.tokenSeen}`);
      assert(r["top readable"] === false, "the dashboard window (top) is not readable from the app");
      assert(!/burrow_(app|session)/.test(r.cookie), `Burrow's cookies are not in document.cookie (${r.cookie})`);
      assert(!r["fetch other app"].ok, `another app's origin cannot be read (${JSON.stringify(r["fetch other app"])})`);
      assert(!r["fetch other app no-cors"].ok || r["fetch other app no-cors"].value[1] === 0, "a no-cors fetch of another app is opaque");
      assert(!r["fetch dashboard api"].ok, "the dashboard's API cannot be read from an app");
      assert(!r["fetch other app session"].ok, `another app's session endpoint cannot be read (${JSON.stringify(r["fetch other app session"])})`);
      for (const k of ["dial other port", "fetch other port", "dial speed test"]) {
        assert(!r[k].ok, `${k}: refused by the agent (${JSON.stringify(r[k])})`);
      }
      for (const k of ["register root worker", "register root worker around the shim", "register burrow's scope"]) {
        assert(!r[k].ok, `${k}: refused (${JSON.stringify(r[k])})`);
      }
      assert(r.registrations.length === 1 && r.registrations[0] === `${stack.appOrigin(stack.app.port)}/.burrow/sw.js`,
        `only Burrow's worker controls the origin (${r.registrations})`);
      assert(r["other app's window"].ok && r["other app's window"].value === undefined || !r["other app's window"].ok,
        `another app's window is not readable (${JSON.stringify(r["other app's window"])})`);
      assert(r["frame dashboard"].value === "cross-origin" || !r["frame dashboard"].value?.includes("workspaces"),
        "the dashboard cannot be framed");
      const blocked = page.frames().find((fr) => fr.url().startsWith(`${stack.url}/`) && fr !== page.mainFrame());
      assert(!blocked || !(await blocked.locator("#main").count().catch(() => 0)), "the framed dashboard did not render");
      // The other app is unharmed: code-server still answers through its own origin.
      await page.locator("#app-close").click();
      const csFrame = await openApp(page, stack.codeServerPort);
      await csFrame.locator(".monaco-workbench").waitFor({ timeout: 120000 });
    } finally {
      await context.close();
    }
  });

  await test("another site cannot log the user in or out, open an app, POST into an app, or frame the dashboard", async () => {
    const attacker = run(stack.burrowd, ["admin", "--data-dir", stack.data, "user", "add", `mallory${Date.now()}`]);
    const site = await startOtherSite({
      "/attack": () => `<!doctype html><body><script>
        const out = {};
        const go = async (name, url, init) => {
          try { const r = await fetch(url, { mode: "no-cors", credentials: "include", ...init }); out[name] = r.type; }
          catch (e) { out[name] = "error " + e.message; }
        };
        (async () => {
          await go("login", "${stack.url}/api/v1/login", { method: "POST", headers: { "content-type": "text/plain" }, body: JSON.stringify({ token: "${attacker}" }) });
          await go("logout", "${stack.url}/api/v1/logout", { method: "POST" });
          await go("launch", "${stack.url}/api/v1/workspaces/dev/apps/${stack.app.port}/launch", { method: "POST", headers: { "content-type": "text/plain" }, body: "{}" });
          await go("app post", "${stack.appOrigin(stack.app.port)}/csrf-target", { method: "POST", body: "x" });
          await go("app session", "${stack.appOrigin(stack.app.port)}/.burrow/session", { method: "POST", body: "{}" });
          window.done = out;
        })();
      </script><iframe id="dash" src="${stack.url}/"></iframe>
      <form id="f" method="POST" action="${stack.appOrigin(stack.app.port)}/csrf-target" target="sink"><input name="a" value="b"></form>
      <iframe name="sink"></iframe></body>`,
    });
    const { context, page } = await newDashboard();
    try {
      // The victim has the app open (a credential on its origin) and is logged in.
      const tab = await openTab(context, page, stack.app.port);
      await (await appFrame(tab, stack.app.port)).locator("#hello").waitFor({ timeout: 60000 });
      stack.app.hits.clear();
      const evil = await context.newPage();
      await evil.goto(`${site.origin}/attack`);
      await evil.waitForFunction(() => window.done, null, { timeout: 30000 });
      await evil.evaluate(() => document.getElementById("f").submit());
      await new Promise((r) => setTimeout(r, 2000));
      const me = await page.evaluate(async () => (await fetch("/api/v1/me")).json());
      assert(me.user === "alice", `still logged in as alice, not the attacker's account (${JSON.stringify(me)})`);
      assert(!stack.app.hits.get("csrf POST"), `no cross-site POST reached the app (${stack.app.hits.get("csrf POST")})`);
      const dash = evil.frames().find((fr) => fr.name() === "dash" || fr.url().startsWith(stack.url));
      assert(!dash || !(await dash.locator("#login, #main").count().catch(() => 0)), "the dashboard did not render in another site's frame");
      const rows = audit(stack).filter((a) => /origin/i.test(a.outcome));
      assert(rows.length >= 2, `the refused cross-site requests are audited (${rows.map((a) => a.outcome)})`);
    } finally {
      await context.close();
    }
  });

  await test(`a ${DOWNLOAD_MIB} MiB download through the service worker arrives intact and streamed`, async () => {
    const { context, page } = await newDashboard();
    try {
      await openApp(page, stack.app.port);
      const f = await appFrame(page, stack.app.port);
      await f.locator("#hello").waitFor({ timeout: 60000 });
      await f.addScriptTag({ content: SHA256_JS });
      // The app sends the first MiB and holds the rest until /go: if the service worker or
      // the tunnel buffered the whole body, the page would never see a byte and this would
      // time out.
      const r = await f.evaluate(async (mib) => {
        const id = String(Math.random());
        const started = performance.now();
        const res = await fetch(`bytes?mib=${mib}&id=${id}`);
        const reader = res.body.getReader();
        const hash = new self.Sha256();
        let n = 0, firstAt = 0, released = false;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (!firstAt) firstAt = performance.now() - started;
          hash.update(value);
          n += value.byteLength;
          if (!released && n >= 1024 * 1024) {
            released = true;
            const go = await fetch(`go?id=${id}`);
            if (go.status !== 204) throw new Error(`go: ${go.status}`);
          }
        }
        return { n, firstAt, total: performance.now() - started, sha256: hash.hex() };
      }, DOWNLOAD_MIB);
      log(`download: ${r.n} bytes, first bytes after ${r.firstAt.toFixed(0)} ms, all after ${r.total.toFixed(0)} ms (${(r.n / 1048576 / (r.total / 1000)).toFixed(1)} MiB/s)`);
      assert(r.n === DOWNLOAD_MIB * 1024 * 1024, `received ${r.n} bytes`);
      assert(r.sha256 === stack.app.expectedDigest(DOWNLOAD_MIB), "sha256 matches");
      // For comparison (logged, not asserted): the same bytes read with tunnel.fetch in the
      // shell window, without the service worker hop.
      const shell = await shellFrame(page, stack.app.port);
      const direct = await shell.evaluate(async ({ port, mib }) => {
        const t = await window.__burrowShell.tunnel();
        const id = String(Math.random());
        const started = performance.now();
        const res = await t.fetch(`http://localhost:${port}/bytes?mib=${mib}&id=${id}`);
        const reader = res.body.getReader();
        let n = 0, released = false;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          n += value.byteLength;
          if (!released && n >= 1024 * 1024) {
            released = true;
            await t.fetch(`http://localhost:${port}/go?id=${id}`);
          }
        }
        return { n, total: performance.now() - started };
      }, { port: stack.app.port, mib: 32 });
      log(`tunnel.fetch in the window, no service worker: ${direct.n} bytes in ${direct.total.toFixed(0)} ms (${(direct.n / 1048576 / (direct.total / 1000)).toFixed(1)} MiB/s)`);
    } finally {
      await context.close();
    }
  });

  await test("after 1,000 fetches the page heap and the agent's RSS are back near the start", async () => {
    const { context, page } = await newDashboard();
    try {
      // In a tab: the shell and the app's frame share its process, whose heap is measured.
      const tab = await openTab(context, page, stack.app.port);
      const f = await appFrame(tab, stack.app.port);
      await f.locator("#hello").waitFor({ timeout: 60000 });
      const cdp = await context.newCDPSession(tab);
      await cdp.send("HeapProfiler.enable");
      const burst = (count) => f.evaluate(async (count) => {
        for (let i = 0; i < count; i += 10) {
          const batch = [];
          for (let j = 0; j < 10; j++) batch.push(fetch(`small?i=${i + j}`).then((r) => r.arrayBuffer()));
          for (const b of await Promise.all(batch)) if (b.byteLength !== 1024) throw new Error("short body");
        }
      }, count);
      const measure = async () => {
        for (let i = 0; i < 3; i++) await cdp.send("HeapProfiler.collectGarbage");
        const { usedSize } = await cdp.send("Runtime.getHeapUsage");
        return { heap: usedSize, rss: rssKiB(stack.agent.pid) };
      };
      await burst(100); // warm-up: code paths compiled, pools filled
      const before = await measure();
      await burst(1000);
      const after = await measure();
      log(`memory: page heap ${before.heap} -> ${after.heap} bytes, agent RSS ${before.rss} -> ${after.rss} KiB`);
      assert(after.heap - before.heap < HEAP_TOLERANCE_BYTES, `page heap grew ${after.heap - before.heap} bytes (tolerance ${HEAP_TOLERANCE_BYTES})`);
      assert(after.rss - before.rss < AGENT_RSS_TOLERANCE_KIB, `agent RSS grew ${after.rss - before.rss} KiB (tolerance ${AGENT_RSS_TOLERANCE_KIB})`);
    } finally {
      await context.close();
    }
  });
}

// A streaming SHA-256 for the page (WebCrypto digests only whole buffers).
const SHA256_JS = `
self.Sha256 = class {
  constructor() {
    this.h = new Uint32Array([0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19]);
    this.buf = new Uint8Array(64); this.fill = 0; this.len = 0; this.w = new Uint32Array(64);
  }
  static K = new Uint32Array([0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2]);
  block(p, o) {
    const w = this.w, K = Sha256.K, h = this.h;
    for (let i = 0; i < 16; i++) w[i] = (p[o+4*i]<<24)|(p[o+4*i+1]<<16)|(p[o+4*i+2]<<8)|p[o+4*i+3];
    for (let i = 16; i < 64; i++) {
      const a = w[i-15], b = w[i-2];
      const s0 = ((a>>>7)|(a<<25))^((a>>>18)|(a<<14))^(a>>>3);
      const s1 = ((b>>>17)|(b<<15))^((b>>>19)|(b<<13))^(b>>>10);
      w[i] = (w[i-16] + s0 + w[i-7] + s1) | 0;
    }
    let A=h[0],B=h[1],C=h[2],D=h[3],E=h[4],F=h[5],G=h[6],H=h[7];
    for (let i = 0; i < 64; i++) {
      const S1 = ((E>>>6)|(E<<26))^((E>>>11)|(E<<21))^((E>>>25)|(E<<7));
      const t1 = (H + S1 + ((E&F)^(~E&G)) + K[i] + w[i]) | 0;
      const S0 = ((A>>>2)|(A<<30))^((A>>>13)|(A<<19))^((A>>>22)|(A<<10));
      const t2 = (S0 + ((A&B)^(A&C)^(B&C))) | 0;
      H=G; G=F; F=E; E=(D+t1)|0; D=C; C=B; B=A; A=(t1+t2)|0;
    }
    h[0]+=A; h[1]+=B; h[2]+=C; h[3]+=D; h[4]+=E; h[5]+=F; h[6]+=G; h[7]+=H;
  }
  update(d) {
    let i = 0; this.len += d.length;
    if (this.fill) {
      while (this.fill < 64 && i < d.length) this.buf[this.fill++] = d[i++];
      if (this.fill < 64) return;
      this.block(this.buf, 0); this.fill = 0;
    }
    for (; i + 64 <= d.length; i += 64) this.block(d, i);
    while (i < d.length) this.buf[this.fill++] = d[i++];
  }
  hex() {
    const bits = this.len * 8;
    const pad = new Uint8Array(((this.fill < 56) ? 56 : 120) - this.fill + 8);
    pad[0] = 0x80;
    const hi = Math.floor(bits / 2**32), lo = bits >>> 0;
    const n = pad.length;
    pad[n-8]=hi>>>24; pad[n-7]=hi>>>16; pad[n-6]=hi>>>8; pad[n-5]=hi; pad[n-4]=lo>>>24; pad[n-3]=lo>>>16; pad[n-2]=lo>>>8; pad[n-1]=lo;
    this.update(pad);
    return [...this.h].map((x) => (x>>>0).toString(16).padStart(8, "0")).join("");
  }
};`;

let failed = false;
let harnessError = null;
try {
  await main();
} catch (e) {
  failed = true;
  harnessError = firstLine(e);
  log(`harness failed: ${e.stack || e}`);
} finally {
  await browser?.close().catch(() => {});
  if (stack && (failed || results.some(([, ok]) => !ok))) {
    // The agent's and burrowd's logs come last (next to the summary): CI shows only the end.
    for (const [c, lines] of [[stack.codeServer, 15], [stack.server, 25], [stack.agent, 40]]) {
      console.log(`\n--- last lines of ${c.logPath} ---\n${tail(c.logPath, lines)}`);
    }
  }
  await stopAll();
  if (stack && !failed && results.every(([, ok]) => ok)) fs.rmSync(stack.work, { recursive: true, force: true });
}
console.log("\nbrowser e2e results:");
for (const [name, ok, why] of results) {
  console.log(`  ${ok ? "PASS" : "FAIL"}  ${name}`);
  if (why) console.log(`        ${why}`);
}
if (harnessError) console.log(`  the harness failed: ${harnessError}`);
process.exit(failed || results.length === 0 || results.some(([, ok]) => !ok) ? 1 : 0);
