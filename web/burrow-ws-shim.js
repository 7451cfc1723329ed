// Inserted by Burrow's service worker as the first script of every app page it serves
// (/@WORKSPACE/apps/PORT/...): replaces window.WebSocket with one that goes through the
// dashboard's tunnel. The app page does not own the tunnel; the dashboard window that
// frames it does (window.top.__burrowHost, same origin). WebSockets to anywhere other
// than an app scope on this origin, or with no dashboard above, use the browser's own.
(() => {
  "use strict";
  const Native = window.WebSocket;
  if (Native.__burrow) return;
  const APP = /^\/@([^/]+)\/apps\/(\d+)(\/[^#]*)?$/;
  if (!APP.test(location.pathname)) return;
  // The boot page (web/app.html) notes when it reloads into the worker; we got here.
  try { sessionStorage.removeItem("burrow.boot:" + location.pathname); } catch {}

  const ownerHost = () => {
    try {
      return window.top.__burrowHost || null;
    } catch {
      return null;
    }
  };

  const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
  // How long the owning window gets to take up a WebSocket the service worker brokers.
  const READY_WAIT_MS = 10000;

  // For a page that is not framed by the dashboard (its own tab): the service worker passes
  // a port to the window that owns the workspace's tunnel, and the WebSocket is driven over
  // it (see serveWebSocket in /burrow-host.js). Resolves to an object with the interface
  // the tunnel's WebSocket has, which BurrowWebSocket wraps the same way.
  function viaServiceWorker(sw, workspace, port, path, protocols) {
    const ch = new MessageChannel();
    const line = ch.port1;
    const inner = {
      binaryType: "arraybuffer", readyState: CONNECTING, bufferedAmount: 0, protocol: "", extensions: "",
      onopen: null, onmessage: null, onerror: null, onclose: null,
      send(data) {
        this.bufferedAmount += typeof data === "string" ? new TextEncoder().encode(data).byteLength : data.byteLength;
        line.postMessage({ op: "send", data }, typeof data === "string" ? [] : [data]);
      },
      close(code, reason) {
        this.readyState = CLOSING;
        line.postMessage({ op: "close", code, reason });
      },
    };
    const fail = () => {
      if (inner.readyState === CLOSED) return;
      inner.readyState = CLOSED;
      inner.onerror?.(new Event("error"));
      inner.onclose?.({ code: 1006, reason: "", wasClean: false });
      line.close();
    };
    const timer = setTimeout(fail, READY_WAIT_MS);
    line.onmessage = (e) => {
      const d = e.data;
      if (d.ev === "ready") clearTimeout(timer);
      else if (d.ev === "open") {
        inner.readyState = OPEN;
        inner.protocol = d.protocol || "";
        inner.extensions = d.extensions || "";
        inner.onopen?.(new Event("open"));
      } else if (d.ev === "message") inner.onmessage?.({ data: d.data });
      else if (d.ev === "buffered") inner.bufferedAmount = d.amount;
      else if (d.ev === "error") inner.onerror?.(new Event("error"));
      else if (d.ev === "close") {
        clearTimeout(timer);
        inner.readyState = CLOSED;
        inner.onclose?.({ code: d.code, reason: d.reason, wasClean: d.wasClean });
        line.close();
      } else if (d.ev === "fail") {
        clearTimeout(timer);
        console.warn("burrow:", d.message);
        fail();
      }
    };
    sw.postMessage({ burrow: "ws-port", workspace }, [ch.port2]);
    line.postMessage({ op: "open", port, path, protocols });
    return Promise.resolve(inner);
  }

  class BurrowWebSocket extends EventTarget {
    constructor(url, protocols) {
      super();
      const u = new URL(url, location.href);
      const m = u.host === location.host && /^(wss?|https?):$/.test(u.protocol) ? APP.exec(u.pathname) : null;
      const host = ownerHost();
      const sw = navigator.serviceWorker?.controller;
      if (!m || (!host && !sw)) return new Native(url, protocols);
      if (u.protocol === "http:") u.protocol = "ws:";
      if (u.protocol === "https:") u.protocol = "wss:";
      this._url = u.href;
      this._state = CONNECTING;
      this._binaryType = "blob";
      this._protocol = "";
      this._extensions = "";
      this._inner = null;
      this._handlers = {};
      this._closeAfterOpen = null;
      // Data handed to the inner object is copied into the dashboard's realm: the client's
      // type checks (instanceof) would not recognise this frame's ArrayBuffers.
      this._U8 = host ? window.top.Uint8Array : Uint8Array;
      const list = protocols === undefined ? [] : Array.isArray(protocols) ? protocols : [protocols];
      const pathAndQuery = (m[3] || "/") + u.search;
      const inner = host
        ? host.webSocket(m[1], Number(m[2]), pathAndQuery, list)
        : viaServiceWorker(sw, m[1], Number(m[2]), pathAndQuery, list);
      inner.then(
        (inner) => this._attach(inner),
        (err) => {
          console.warn("burrow: tunnelled WebSocket failed:", err);
          this._finish(1006, "", false, true);
        },
      );
    }

    _attach(inner) {
      this._inner = inner;
      inner.binaryType = "arraybuffer";
      inner.onopen = () => {
        if (this._state === CLOSED) return;
        this._protocol = inner.protocol || "";
        this._extensions = inner.extensions || "";
        if (this._closeAfterOpen) {
          const [code, reason] = this._closeAfterOpen;
          inner.close(code, reason);
          return;
        }
        this._state = OPEN;
        this._fire(new Event("open"));
      };
      inner.onmessage = (e) => {
        if (this._state === CLOSED) return;
        let data = e.data;
        if (typeof data !== "string") {
          const src = new Uint8Array(data);
          const copy = new Uint8Array(src.byteLength);
          copy.set(src);
          data = this._binaryType === "arraybuffer" ? copy.buffer : new Blob([copy]);
        }
        this._fire(new MessageEvent("message", { data, origin: new URL(this._url).origin }));
      };
      inner.onerror = () => {
        if (this._state !== CLOSED) this._fire(new Event("error"));
      };
      inner.onclose = (e) => this._finish(e.code, e.reason, e.wasClean, false);
    }

    _finish(code, reason, wasClean, withError) {
      if (this._state === CLOSED) return;
      this._state = CLOSED;
      if (withError) this._fire(new Event("error"));
      this._fire(new CloseEvent("close", { code, reason, wasClean }));
    }

    _fire(event) {
      this.dispatchEvent(event);
    }

    get url() { return this._url; }
    get readyState() { return this._state; }
    get protocol() { return this._protocol; }
    get extensions() { return this._extensions; }
    get bufferedAmount() { return this._inner ? this._inner.bufferedAmount : 0; }
    get binaryType() { return this._binaryType; }
    set binaryType(v) {
      if (v === "blob" || v === "arraybuffer") this._binaryType = v;
    }

    send(data) {
      if (this._state === CONNECTING) {
        throw new DOMException("Still in CONNECTING state.", "InvalidStateError");
      }
      if (this._state !== OPEN) return;
      if (typeof data === "string") {
        this._inner.send(data);
      } else if (data instanceof Blob) {
        // Rare in apps; read it first (the send keeps its place only among Blob sends).
        data.arrayBuffer().then((b) => this._sendBytes(new Uint8Array(b)));
      } else if (ArrayBuffer.isView(data)) {
        this._sendBytes(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } else {
        this._sendBytes(new Uint8Array(data));
      }
    }

    _sendBytes(bytes) {
      if (this._state !== OPEN) return;
      const copy = new this._U8(bytes.byteLength);
      copy.set(bytes);
      this._inner.send(copy.buffer);
    }

    close(code, reason) {
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw new DOMException(`The close code must be 1000 or in 3000-4999: ${code}`, "InvalidAccessError");
      }
      if (this._state === CLOSING || this._state === CLOSED) return;
      this._state = CLOSING;
      if (this._inner && this._inner.readyState === OPEN) this._inner.close(code, reason);
      else this._closeAfterOpen = [code, reason];
    }
  }

  for (const type of ["open", "message", "error", "close"]) {
    Object.defineProperty(BurrowWebSocket.prototype, "on" + type, {
      get() { return this._handlers[type] ?? null; },
      set(fn) {
        if (this._handlers[type]) this.removeEventListener(type, this._handlers[type]);
        this._handlers[type] = typeof fn === "function" ? fn : null;
        if (this._handlers[type]) this.addEventListener(type, this._handlers[type]);
      },
    });
  }
  for (const [name, value] of Object.entries({ CONNECTING, OPEN, CLOSING, CLOSED })) {
    Object.defineProperty(BurrowWebSocket, name, { value });
    Object.defineProperty(BurrowWebSocket.prototype, name, { value });
  }
  Object.defineProperty(BurrowWebSocket, "__burrow", { value: true });
  window.WebSocket = BurrowWebSocket;
})();
