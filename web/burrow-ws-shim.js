// Inserted by Burrow's service worker as the first script of every app document it serves
// (on the app's own origin): replaces window.WebSocket with one that goes through the app's
// tunnel, held by Burrow's shell window (/.burrow/shell.js) that frames the app (same
// origin: `parent.__burrowShell`, or further up for the app's own frames). A page with no
// shell above it gets its WebSockets brokered by the service worker to a shell. WebSockets
// to any other origin, or to Burrow's reserved /.burrow/ paths, use the browser's own.
// For the app's frame directly under a top-level shell, it also tells the shell where the
// frame is, so the address bar and the title follow the app.
(() => {
  "use strict";
  const Native = window.WebSocket;
  if (Native.__burrow) return;
  const RESERVED = "/.burrow/";

  /** The nearest window above with Burrow's shell (same origin), or null. */
  const shellWindow = () => {
    for (let w = window; w !== w.parent; ) {
      w = w.parent;
      try {
        if (w.__burrowShell) return w;
      } catch {
        return null; // A window of another origin: no shell of this app above it.
      }
    }
    return null;
  };
  const owner = shellWindow();

  if (owner && owner === window.parent) {
    // The app's own frame: the shell mirrors its URL and title (history entries of the
    // frame are the tab's, so back and forward already work).
    const tell = () => owner.__burrowShell.appNavigated(window);
    for (const name of ["pushState", "replaceState"]) {
      const original = history[name];
      history[name] = function (...args) {
        const r = original.apply(this, args);
        tell();
        return r;
      };
    }
    addEventListener("popstate", tell);
    addEventListener("hashchange", tell);
    addEventListener("DOMContentLoaded", () => {
      new MutationObserver(tell).observe(document.head, { childList: true, subtree: true, characterData: true });
      tell();
    }, { once: true });
  }

  // An app's own service worker (code-server's webviews register one under their path): the
  // browser fetches worker scripts from the network, where burrowd has nothing of the app's.
  // So the script is fetched through the tunnel first and staged with burrowd, which then
  // answers the registration with Burrow's worker importing it (web/burrow-sw.js). A worker
  // whose scope would be the whole origin, or Burrow's /.burrow/, is refused: it would
  // displace Burrow's.
  const container = navigator.serviceWorker;
  if (container) {
    const nativeRegister = container.register.bind(container);
    container.register = async (scriptURL, options = {}) => {
      const script = new URL(scriptURL, location.href);
      if (script.origin !== location.origin) return nativeRegister(scriptURL, options);
      const scope = new URL(options.scope ?? "./", script);
      const reserved = (p) => p === "/.burrow" || p.startsWith(RESERVED);
      if (scope.pathname === "/" || reserved(scope.pathname) || reserved(script.pathname)) {
        throw new DOMException(`Burrow's own worker serves ${scope.pathname} on this origin; an app's worker may only have a scope below it`, "SecurityError");
      }
      const src = script.pathname + script.search;
      // The shell stages it: this page's Content-Security-Policy may forbid fetches (a
      // webview's does), the shell's does not.
      const shell = owner?.__burrowShell;
      if (!shell) throw new DOMException("an app's worker registers only in a page under Burrow's shell", "InvalidStateError");
      await shell.stageWorker(src);
      return nativeRegister(scriptURL, options);
    };
  }

  const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
  // How long the owning window gets to take up a WebSocket the service worker brokers.
  const READY_WAIT_MS = 10000;

  // For a page with no shell above it: the service worker passes a port to a shell window,
  // and the WebSocket is driven over it (see serveWebSocket in /.burrow/shell.js). Resolves to an object with the interface
  // the tunnel's WebSocket has, which BurrowWebSocket wraps the same way.
  function viaServiceWorker(sw, path, protocols) {
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
    sw.postMessage({ burrow: "ws-port" }, [ch.port2]);
    line.postMessage({ op: "open", path, protocols });
    return Promise.resolve(inner);
  }

  class BurrowWebSocket extends EventTarget {
    constructor(url, protocols) {
      super();
      const u = new URL(url, location.href);
      const ours = u.host === location.host && /^(wss?|https?):$/.test(u.protocol)
        && !(u.pathname === "/.burrow" || u.pathname.startsWith(RESERVED));
      const shell = owner?.__burrowShell ?? null;
      const sw = navigator.serviceWorker?.controller;
      if (!ours || (!shell && !sw)) return new Native(url, protocols);
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
      // Data handed to the inner object is copied into the shell's realm: the client's
      // type checks (instanceof) would not recognise this frame's ArrayBuffers.
      this._U8 = shell ? owner.Uint8Array : Uint8Array;
      const list = protocols === undefined ? [] : Array.isArray(protocols) ? protocols : [protocols];
      const pathAndQuery = u.pathname + u.search;
      const inner = shell
        ? shell.webSocket(pathAndQuery, list)
        : viaServiceWorker(sw, pathAndQuery, list);
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
