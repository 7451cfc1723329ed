// tunnel.dial transfers in a page, shared by the browser benchmark (browser.mjs) and
// browser-probe.mjs.

/** Longest a transfer may take before its stream is freed (which fails the transfer). */
const TRANSFER_TIMEOUT_MS = 180_000;

/** In the dashboard page: `mib` MiB through `tunnel.dial` to the byte source (e2e/harness.mjs)
 *  on `port`, agent → page (`dir` "down", read to EOF) or page → agent ("up", written in
 *  1 MiB writes until the source counted every byte). Gives the bytes moved, the ms it took
 *  and every pause of over 200 ms between two reads of a download. */
export function dialTransfer(page, port, mib, dir) {
  return page.evaluate(async ({ port, mib, dir, timeoutMs }) => {
    const t = await window.__burrowHost.tunnel("dev");
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
