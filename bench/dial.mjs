// tunnel.dial transfers in a page, shared by the browser benchmark (browser.mjs) and
// browser-probe.mjs, and the tab of its own that holds their tunnel.
import { waitFor } from "../e2e/harness.mjs";

/** Longest a transfer may take before its stream is freed (which fails the transfer). */
const TRANSFER_TIMEOUT_MS = 180_000;

/** Presses the ↗ button of `port` on the logged-in dashboard `dashboard` (a page of
 *  `context`): the app opens at its own origin in a tab of its own. Gives that tab once its
 *  top-level shell is up (`window.__burrowShell`, whose tunnel reaches that port only). The
 *  byte source's port is opened this way for `dialTransfer`: it speaks no HTTP, so the
 *  shell's frame of it shows an error page, and the shell's tunnel is all that is used. */
export async function openTab(context, dashboard, port) {
  const button = dashboard.locator(`button[data-tab="dev:${port}"]`);
  await button.waitFor({ state: "visible", timeout: 30000 });
  await waitFor("the workspace online in the dashboard", () => button.isEnabled(), 30000);
  const [tab] = await Promise.all([context.waitForEvent("page"), button.click()]);
  // The shell makes its frame once its Wasm and its service worker are ready, so its
  // `tunnel()` can be called from then on.
  await waitFor("the app's shell in its tab", () => tab.evaluate(() => !!window.__burrowShell?.frame), 60000);
  return tab;
}

/** In `shell` (a window of the byte source's app origin, see `openTab`): `mib` MiB through
 *  its tunnel's `dial` to the byte source (e2e/harness.mjs) on `port`, agent → page (`dir`
 *  "down", read to EOF) or page → agent ("up", written in 1 MiB writes until the source
 *  counted every byte). Gives the bytes moved, the ms it took and every pause of over 200 ms
 *  between two reads of a download. */
export function dialTransfer(shell, port, mib, dir) {
  return shell.evaluate(async ({ port, mib, dir, timeoutMs }) => {
    const t = await window.__burrowShell.tunnel();
    const s = await t.dial(port);
    const timer = setTimeout(() => s.free(), timeoutMs);
    const started = performance.now();
    const pauses = [];
    try {
      let bytes = 0;
      if (dir === "down") {
        await s.write(new TextEncoder().encode(`down ${mib}\n`));
        let last = started;
        for (let b; (b = await s.read()) !== undefined;) {
          bytes += b.byteLength;
          const now = performance.now();
          if (now - last > 200) pauses.push(Math.round(now - last));
          last = now;
        }
      } else {
        const chunk = new Uint8Array(1024 * 1024).fill(0x5a);
        await s.write(new TextEncoder().encode(`up ${mib}\n`));
        for (let i = 0; i < mib; i++) await s.write(chunk);
        s.closeWrite();
        let answer = "";
        for (let b; (b = await s.read()) !== undefined;) answer += new TextDecoder().decode(b);
        const m = /^ok (\d+)/.exec(answer);
        if (!m) throw new Error(`the byte source answered ${JSON.stringify(answer)}`);
        bytes = Number(m[1]);
      }
      return { bytes, ms: performance.now() - started, pauses };
    } finally {
      clearTimeout(timer);
      s.free();
    }
  }, { port, mib, dir, timeoutMs: TRANSFER_TIMEOUT_MS });
}
