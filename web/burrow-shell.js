// Burrow's shell on an app's own origin (http://PORT--WORKSPACE--USER.APPS_DOMAIN): the
// window that holds the app's tunnel and shows the app in a frame.
//
// burrowd serves shell.html for every top-level document of the origin (and at
// /.burrow/shell.html for the dashboard's view). The shell connects with the origin's
// HttpOnly cookie (burrowd grants sessions to this one app's port, and the agent refuses
// any other), registers Burrow's service worker, and loads the app's URL into a frame; the
// worker hands each of the frame's requests to this window over a MessagePort, and the
// shim in the app's pages (/.burrow/shim.js) opens WebSockets through `__burrowShell`.
// Everything here is the app's own: its script can reach this window (same origin), and so
// nothing more than the app itself.
import init, { connect } from "/.burrow/pkg/client/burrow_client.js";

/** How long a request may take before the worker is told it is in hand (its ACK_WAIT is
 *  3 s), and how often it is reminded after that (its BEAT_WAIT is 6 s). */
const ACCEPT_AFTER_MS = 500;
const HEARTBEAT_MS = 2000;
const SHELL_PATH = "/.burrow/shell.html";
const RESERVED = "/.burrow/";
/** A reload for a fresh credential that lands here again this soon does not loop. */
const REAUTH_WINDOW_MS = 10000;

/** The app's workspace port: the number that starts this origin's first label (the rule of
 *  `app_port` in worker/src/scope.rs). */
function appPortOf(hostname) {
  const m = /^(\d{1,5})--/.exec(hostname);
  const port = m ? Number(m[1]) : 0;
  return port >= 1 && port <= 65535 ? port : null;
}

/** A path of the app's (never Burrow's reserved prefix), else "/". */
function appPath(path) {
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) return "/";
  if (path === "/.burrow" || path.startsWith(RESERVED)) return "/";
  return path;
}

class Shell {
  constructor() {
    this.appPort = appPortOf(location.hostname);
    this.embedded = location.pathname === SHELL_PATH;
    const hash = new URLSearchParams(location.hash.slice(1));
    this.forceRelay = this.embedded && hash.get("relay") === "1";
    this.appUrl = this.embedded
      ? appPath(new URLSearchParams(location.search).get("next"))
      : location.pathname + location.search + location.hash;
    /** @type {Promise<any> | null} */
    this.current = null;
    this.ports = new Set();
    /** What went through the tunnel, for the dashboard and the tests. */
    this.counters = { requests: 0, failures: 0, webSockets: 0 };
    /** The cookies copied into document.cookie: "name\npath" -> [name, path]. */
    this.mirrored = new Map();
    this.frame = null;
    this.status = document.getElementById("burrow-status");
    this.onServiceWorkerMessage = (e) => this.answer(e);
    // The dashboard that frames this shell gets the tunnel's stats (nothing secret); the
    // frame-ancestors policy burrowd sends lets only it and this origin frame the shell.
    this.parentOrigin = this.embedded ? (location.ancestorOrigins?.[0] ?? null) : null;
  }

  async start() {
    if (!this.appPort) return this.fail("this is not an app origin");
    navigator.serviceWorker.addEventListener("message", this.onServiceWorkerMessage);
    navigator.serviceWorker.startMessages();
    const wasm = init();
    const worker = navigator.serviceWorker
      .register("/.burrow/sw.js", { scope: "/" })
      .then(() => navigator.serviceWorker.ready);
    // The tunnel and the worker come up side by side; the frame's first request waits for
    // the tunnel in `serve`.
    await wasm;
    this.tunnel().catch(() => {});
    try {
      await worker;
    } catch (e) {
      return this.fail(`Could not start Burrow's service worker: ${e.message}`);
    }
    this.showApp();
    if (this.parentOrigin) this.reportStats();
  }

  showApp() {
    const frame = document.createElement("iframe");
    frame.id = "burrow-app";
    frame.title = "app";
    frame.allow = "clipboard-read; clipboard-write; fullscreen";
    frame.addEventListener("load", () => this.appNavigated(frame.contentWindow));
    frame.src = this.appUrl;
    document.body.append(frame);
    this.frame = frame;
  }

  /** Keeps the address bar and title on what the app's frame shows (a top-level shell). */
  appNavigated(win) {
    if (this.embedded || !win || win !== this.frame?.contentWindow) return;
    let href, title;
    try {
      href = win.location.href;
      title = win.document.title;
    } catch {
      return; // The frame left the origin.
    }
    const url = new URL(href);
    if (url.origin === location.origin && url.href !== location.href && !url.pathname.startsWith(RESERVED)) {
      history.replaceState(history.state, "", url.href);
    }
    if (title && title !== document.title) document.title = title;
  }

  fail(message) {
    this.status.textContent = message;
    this.status.hidden = false;
    this.post({ burrow: "state", state: "failed", message });
  }

  post(msg) {
    if (this.parentOrigin) parent.postMessage(msg, this.parentOrigin);
  }

  /** The app's tunnel, connecting it on first use (and again after it closed). */
  tunnel() {
    let t = this.current;
    if (!t) {
      t = connect({ sessionUrl: "/.burrow/session", forceRelay: this.forceRelay });
      this.current = t;
      t.then(
        (tunnel) => {
          // The tunnel reconnects on its own; once "closed" it is dropped, and the next
          // request connects a new one.
          tunnel.onstatechange = () => {
            if (tunnel.closed && this.current === t) this.current = null;
          };
        },
        (err) => {
          if (this.current === t) this.current = null;
          this.refused(err);
        },
      );
    }
    return t.then((tunnel) => {
      if (tunnel.closed) {
        if (this.current === t) this.current = null;
        return this.tunnel();
      }
      return tunnel;
    });
  }

  /** burrowd would not grant a session: the origin's credential is missing or expired. */
  refused(err) {
    if (err?.code !== "unauthorized") {
      this.fail(`The tunnel to the app failed: ${err?.message ?? err}`);
      return;
    }
    if (this.embedded) {
      this.fail("This view of the app has expired: open it again from the Burrow dashboard.");
      return;
    }
    // A top-level reload is sent to the dashboard for a fresh credential (burrowd redirects
    // a document request that has none).
    const last = Number(sessionStorage.getItem("burrow.reauth") || 0);
    if (Date.now() - last < REAUTH_WINDOW_MS) {
      this.fail("Burrow could not authorize this app: open it from the Burrow dashboard.");
      return;
    }
    sessionStorage.setItem("burrow.reauth", String(Date.now()));
    location.reload();
  }

  reportStats() {
    let last = null;
    const tick = async () => {
      try {
        const t = await this.tunnel();
        const s = await t.stats();
        const now = performance.now();
        const rate = last
          ? {
              downPerSec: Math.max(0, (s.bytesReceived - last.s.bytesReceived) / ((now - last.now) / 1000)),
              upPerSec: Math.max(0, (s.bytesSent - last.s.bytesSent) / ((now - last.now) / 1000)),
            }
          : {};
        last = { s, now };
        this.post({ burrow: "stats", ...s, ...rate });
      } catch {
        // `tunnel()` reported it.
      }
    };
    tick();
    setInterval(tick, 1000);
  }

  answer(e) {
    const d = e.data;
    if (!d || d.burrow !== "port-request") return;
    const channel = new MessageChannel();
    const port = channel.port1;
    this.ports.add(port);
    port.onmessage = (m) => this.serve(m);
    e.source.postMessage({ burrow: "port" }, [channel.port2]);
  }

  async serve(m) {
    const d = m.data;
    const reply = m.ports[0];
    if (d?.burrow === "ws-connect" && reply) return this.serveWebSocket(reply);
    if (!d || d.burrow !== "fetch" || !reply) return;
    // The worker counts a window dead when it hears nothing about a request for a few
    // seconds. A quick answer is its own acknowledgement; only a slow one is preceded by
    // "accepted" and then heartbeats, which keeps two thread hops off every small fetch.
    let beat = null;
    const slow = setTimeout(() => {
      reply.postMessage({ type: "accepted" });
      beat = setInterval(() => reply.postMessage({ type: "waiting" }), HEARTBEAT_MS);
    }, ACCEPT_AFTER_MS);
    try {
      const tunnel = await this.tunnel();
      const request = new Request(d.url, {
        method: d.method,
        headers: d.headers,
        body: d.body,
        redirect: d.redirect,
      });
      const response = await tunnel.fetchParts(request, { host: location.host });
      clearTimeout(slow);
      clearInterval(beat);
      this.counters.requests++;
      // The jar changes only with a Set-Cookie, which a redirect on the way may have had.
      if (response.redirected || response.headers.some(([name]) => name === "set-cookie")) {
        this.mirrorCookies(tunnel);
      }
      // A body that arrived whole is a Uint8Array: its buffer moves to the worker in this
      // one message, where a stream would cost the worker a round trip per read.
      const body = response.body;
      const transfer = body instanceof Uint8Array ? [body.buffer] : body ? [body] : [];
      reply.postMessage({ type: "response", ...response }, transfer);
    } catch (err) {
      clearTimeout(slow);
      clearInterval(beat);
      this.counters.failures++;
      reply.postMessage({ type: "error", message: String(err?.message ?? err) });
    }
    // The reply port is left for the worker to close: closing it here could let its
    // "close" event overtake the response message.
  }

  /** Fetches an app's service-worker script (path and query) through the tunnel and stages
   *  it with burrowd for this origin, for the shim's `register` (see web/burrow-sw.js). */
  async stageWorker(src) {
    const tunnel = await this.tunnel();
    const res = await tunnel.fetch(`http://localhost:${this.appPort}${src}`, { host: location.host });
    if (!res.ok) throw new TypeError(`the app's worker script ${src}: HTTP ${res.status}`);
    const staged = await fetch(`/.burrow/app-worker?src=${encodeURIComponent(src)}`, {
      method: "PUT",
      body: await res.arrayBuffer(),
      headers: { "content-type": "text/javascript" },
    });
    if (!staged.ok) throw new TypeError(`Burrow could not stage the app's worker ${src}: ${staged.status} ${await staged.text()}`);
  }

  /** A tunnelled WebSocket-compatible object to the app (the shim wraps it). */
  async webSocket(pathAndQuery, protocols) {
    const tunnel = await this.tunnel();
    this.counters.webSockets++;
    return tunnel.webSocket(`ws://localhost:${this.appPort}${pathAndQuery}`, protocols, {
      host: location.host,
      origin: location.origin,
    });
  }

  // A WebSocket for an app page with no shell above it: the page's shim talks to this
  // window over `line`, a port the service worker passed on.
  //   page -> here: {op: "open", path, protocols} | {op: "send", data} | {op: "close", code, reason}
  //   here -> page: {ev: "ready"} | {ev: "open", protocol, extensions} | {ev: "message", data}
  //                 | {ev: "buffered", amount} | {ev: "error"} | {ev: "close", code, reason, wasClean}
  serveWebSocket(line) {
    let ws = null;
    let watching = false;
    let closeAsked = null;
    const reportBuffered = () => {
      if (!ws) return;
      line.postMessage({ ev: "buffered", amount: ws.bufferedAmount });
      // Keep reporting while data waits, so the page sees its bufferedAmount drain.
      if (ws.bufferedAmount > 0 && !watching) {
        watching = true;
        setTimeout(() => { watching = false; reportBuffered(); }, 50);
      }
    };
    line.onmessage = async (e) => {
      const d = e.data;
      if (d.op === "open") {
        try {
          ws = await this.webSocket(d.path, d.protocols);
        } catch {
          line.postMessage({ ev: "error" });
          line.postMessage({ ev: "close", code: 1006, reason: "", wasClean: false });
          line.close();
          return;
        }
        ws.binaryType = "arraybuffer";
        ws.onopen = () => line.postMessage({ ev: "open", protocol: ws.protocol, extensions: ws.extensions });
        ws.onmessage = (ev) => {
          const data = ev.data;
          line.postMessage({ ev: "message", data }, typeof data === "string" ? [] : [data]);
        };
        ws.onerror = () => line.postMessage({ ev: "error" });
        ws.onclose = (ev) => {
          line.postMessage({ ev: "close", code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
          line.close();
        };
        if (closeAsked) ws.close(...closeAsked);
      } else if (d.op === "send" && ws) {
        ws.send(d.data);
        reportBuffered();
      } else if (d.op === "close") {
        if (ws) ws.close(d.code, d.reason);
        else closeAsked = [d.code, d.reason];
      }
    };
    line.postMessage({ ev: "ready" });
  }

  // Apps' scripts read their cookies from document.cookie; the tunnel's jar has them (the
  // browser never sees the app's Set-Cookie), so non-HttpOnly ones are copied into this
  // origin's document.cookie, which is the app's alone.
  // A cookie the jar no longer has (the app deleted it, or it expired) is deleted from
  // document.cookie too.
  mirrorCookies(tunnel) {
    let jar;
    try {
      jar = tunnel.cookies?.(this.appPort);
    } catch {
      return;
    }
    const now = new Map();
    for (const c of jar ?? []) {
      if (c.httpOnly) continue;
      const path = c.path && c.path.startsWith("/") ? c.path : "/";
      let cookie = `${c.name}=${c.value}; path=${path}`;
      if (c.expires) cookie += `; expires=${new Date(c.expires).toUTCString()}`;
      if (c.sameSite) cookie += `; samesite=${c.sameSite}`;
      document.cookie = cookie;
      now.set(`${c.name}\n${path}`, [c.name, path]);
    }
    for (const [key, [name, path]] of this.mirrored) {
      if (!now.has(key)) document.cookie = `${name}=; path=${path}; max-age=0`;
    }
    this.mirrored = now;
  }
}

const shell = new Shell();
window.__burrowShell = shell;
shell.start();
