// Burrow's service worker bootstrap, registered by the shell page (/.burrow/shell.js) at
// /.burrow/sw.js with scope "/" on an app's own origin. The logic is Rust (worker/, built
// into /.burrow/pkg/worker/); this only registers the listeners, which must exist when the
// script's first run ends.
"use strict";
// The same script is burrowd's answer to an app's own worker registration (code-server's
// webviews register one under their path): then the app's script, which the page's shim
// fetched through the tunnel and staged with burrowd, is imported first, so its listeners
// run before Burrow's, and Burrow's serve whatever the app's worker leaves to the network.
if (self.location.pathname !== "/.burrow/sw.js") {
  importScripts(`/.burrow/app-worker?src=${encodeURIComponent(self.location.pathname + self.location.search)}`);
}
importScripts("/.burrow/pkg/worker/burrow_worker.js");
// A block, so that none of these names can clash with an app worker's own.
{
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
  try {
    e.respondWith(ready.then(() => wasm_bindgen.handleFetch(e)));
  } catch {
    // The app's own worker (imported above) answered it already.
  }
});
}
