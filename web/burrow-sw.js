// Burrow's service worker bootstrap. The logic is Rust (worker/, built into /pkg/worker/);
// this only registers the listeners, which must exist when the script's first run ends.
"use strict";
importScripts("/pkg/worker/burrow_worker.js");
const ready = wasm_bindgen({ module_or_path: "/pkg/worker/burrow_worker_bg.wasm" });
// The same test as worker/src/scope.rs, done here because respondWith must be called
// synchronously, before the Wasm module may be ready.
const APP_PATH = /^\/@[^/]+\/apps\/\d+(?:\/|$)/;

self.addEventListener("install", (e) => e.waitUntil(ready.then(() => self.skipWaiting())));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("message", (e) => e.waitUntil(ready.then(() => wasm_bindgen.handleMessage(e))));
self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (url.origin !== self.location.origin || !APP_PATH.test(url.pathname)) return;
  e.respondWith(ready.then(() => wasm_bindgen.handleFetch(e)));
});
