// Burrow's service worker bootstrap, registered by the shell page (/.burrow/shell.js) at
// /.burrow/sw.js with scope "/" on an app's own origin. The logic is Rust (worker/, built
// into /.burrow/pkg/worker/); this only registers the listeners, which must exist when the
// script's first run ends.
"use strict";
importScripts("/.burrow/pkg/worker/burrow_worker.js");
const ready = wasm_bindgen({ module_or_path: "/.burrow/pkg/worker/burrow_worker_bg.wasm" });
// The same test as worker/src/scope.rs (is_app_path), done here because respondWith must be
// called synchronously, before the Wasm module may be ready.
const RESERVED = "/.burrow/";

self.addEventListener("install", (e) => e.waitUntil(ready.then(() => self.skipWaiting())));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("message", (e) => e.waitUntil(ready.then(() => wasm_bindgen.handleMessage(e))));
self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (url.origin !== self.location.origin) return;
  // Burrow's own files come from burrowd.
  if (url.pathname === "/.burrow" || url.pathname.startsWith(RESERVED)) return;
  // A top-level document is Burrow's shell page, from burrowd: it holds the tunnel and shows
  // the app in a frame, whose navigation comes back here as an "iframe" request.
  if (e.request.mode === "navigate" && e.request.destination === "document") return;
  e.respondWith(ready.then(() => wasm_bindgen.handleFetch(e)));
});
