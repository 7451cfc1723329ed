// The window side of Burrow's app view: owns one tunnel per workspace and serves the
// service worker's requests (and the apps' WebSockets) through it.
//
// The service worker (worker/, /burrow-sw.js) cannot hold an RTCPeerConnection, so it asks
// a window for a MessagePort per workspace; this module answers with a fresh
// MessageChannel port and runs each request it gets on that port with tunnel.fetch. Apps
// shown in same-origin frames reach `window.top.__burrowHost.webSocket(...)` through the
// shim in /burrow-ws-shim.js.
import init, { connect } from "/pkg/client/burrow_client.js";

let wasmReady;

/** How long a request may take before the worker is told it is in hand (its ACK_WAIT is
 *  3 s), and how often it is reminded after that (its BEAT_WAIT is 6 s). */
const ACCEPT_AFTER_MS = 500;
const HEARTBEAT_MS = 2000;

export class BurrowHost {
  /** @param {{url: string, token: string, forceRelay?: boolean}} options */
  constructor({ url, token, forceRelay = false }) {
    this.url = url;
    this.token = token;
    this.forceRelay = forceRelay;
    /** Workspaces this window answers for (the user's, as listed by the API). */
    this.workspaces = new Set();
    /** @type {Map<string, Promise<any>>} workspace -> Promise<Tunnel> */
    this.tunnels = new Map();
    /** The ports handed to the service worker; kept so their listeners live. */
    this.ports = new Set();
    /** What went through the tunnels, for the dashboard and the tests. */
    this.counters = { requests: 0, failures: 0, webSockets: 0 };
    this.listeners = new Set();
    this.onServiceWorkerMessage = (e) => this.answer(e);
  }

  /** Loads the client, registers the service worker and starts answering it. */
  async start() {
    wasmReady ??= init();
    await wasmReady;
    navigator.serviceWorker.addEventListener("message", this.onServiceWorkerMessage);
    navigator.serviceWorker.startMessages();
    await navigator.serviceWorker.register("/burrow-sw.js", { scope: "/" });
    await navigator.serviceWorker.ready;
    window.__burrowHost = this;
  }

  /** Stops answering and closes every tunnel. */
  stop() {
    navigator.serviceWorker.removeEventListener("message", this.onServiceWorkerMessage);
    for (const p of this.ports) p.close();
    this.ports.clear();
    for (const t of this.tunnels.values()) t.then((t) => t.close(), () => {});
    this.tunnels.clear();
    if (window.__burrowHost === this) delete window.__burrowHost;
  }

  /** Calls `fn(workspace, tunnel)` whenever a tunnel connects or changes state. */
  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** The workspace's tunnel, connecting it on first use (and again after it closed). */
  tunnel(workspace) {
    let t = this.tunnels.get(workspace);
    if (!t) {
      t = connect({ url: this.url, token: this.token, workspace, forceRelay: this.forceRelay });
      this.tunnels.set(workspace, t);
      t.then(
        (tunnel) => {
          // The tunnel reconnects on its own; once "closed" it is dropped, and the next
          // request connects a new one.
          tunnel.onstatechange = () => {
            if (tunnel.closed && this.tunnels.get(workspace) === t) this.tunnels.delete(workspace);
            this.listeners.forEach((fn) => fn(workspace, tunnel));
          };
          this.listeners.forEach((fn) => fn(workspace, tunnel));
        },
        () => {
          if (this.tunnels.get(workspace) === t) this.tunnels.delete(workspace);
        },
      );
    }
    return t.then((tunnel) => {
      if (tunnel.closed) {
        if (this.tunnels.get(workspace) === t) this.tunnels.delete(workspace);
        return this.tunnel(workspace);
      }
      return tunnel;
    });
  }

  /** A tunnelled WebSocket-compatible object (the shim in app frames wraps it). */
  async webSocket(workspace, port, pathAndQuery, protocols) {
    const tunnel = await this.tunnel(workspace);
    this.counters.webSockets++;
    return tunnel.webSocket(`ws://localhost:${port}${pathAndQuery}`, protocols, {
      host: location.host,
      origin: location.origin,
    });
  }

  answer(e) {
    const d = e.data;
    if (!d || d.burrow !== "port-request" || !this.workspaces.has(d.workspace)) return;
    const channel = new MessageChannel();
    const port = channel.port1;
    this.ports.add(port);
    port.onmessage = (m) => this.serve(m);
    e.source.postMessage({ burrow: "port", workspace: d.workspace }, [channel.port2]);
  }

  async serve(m) {
    const d = m.data;
    const reply = m.ports[0];
    if (d?.burrow === "ws-connect" && reply) return this.serveWebSocket(d.workspace, reply);
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
      const tunnel = await this.tunnel(d.workspace);
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
        this.mirrorCookies(tunnel, d.workspace, d.port);
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

  // A WebSocket for an app page that is not in a frame of this window (its own tab): the
  // page's shim talks to this window over `line`, a port the service worker passed on.
  //   page -> here: {op: "open", port, path, protocols} | {op: "send", data} | {op: "close", code, reason}
  //   here -> page: {ev: "ready"} | {ev: "open", protocol, extensions} | {ev: "message", data}
  //                 | {ev: "buffered", amount} | {ev: "error"} | {ev: "close", code, reason, wasClean}
  serveWebSocket(workspace, line) {
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
          ws = await this.webSocket(workspace, d.port, d.path, d.protocols);
        } catch (err) {
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
  // browser never sees the app's Set-Cookie), so non-HttpOnly ones are copied into
  // document.cookie under the app's scope.
  mirrorCookies(tunnel, workspace, port) {
    let jar;
    try {
      jar = tunnel.cookies?.(port);
    } catch {
      return;
    }
    for (const c of jar ?? []) {
      if (c.httpOnly) continue;
      const path = `/@${workspace}/apps/${port}${c.path && c.path.startsWith("/") ? c.path : "/"}`;
      let cookie = `${c.name}=${c.value}; path=${path}`;
      if (c.expires) cookie += `; expires=${new Date(c.expires).toUTCString()}`;
      if (c.sameSite) cookie += `; samesite=${c.sameSite}`;
      document.cookie = cookie;
    }
  }
}
