//! The agent's allocator: jemalloc, with unused pages handed back once a burst is over.
//!
//! An agent lives for weeks in a workspace and mostly idles between bursts (a build's
//! download, a hundred editor requests at once). Whatever a burst freed should not stay
//! resident. Measured on the benchmark's burst (100 streams echoing 256 KiB each, then idle):
//!
//! - glibc's malloc kept the freed pages in its per-thread arenas: 32 MB resident with the
//!   streams idle, 29 MB after they closed, against 12 MB before;
//! - jemalloc with its defaults kept them as "dirty" pages for its 10 s decay, and its
//!   background purge runs only once an arena holds about 4 MB of them, which a burst
//!   spread over several arenas never reaches: 38 MB, for good;
//! - releasing eagerly on every free (jemalloc's decay at 0, or glibc's mmap threshold at
//!   32 KiB) came back to 15 MB but cost the agent 60–100 % more CPU per megabyte of a bulk
//!   download, because every 64 KiB buffer was then unmapped and faulted in again.
//!
//! So pages stay cached while traffic flows and are purged when it pauses: once a second,
//! [`spawn_purger`] looks at how many unused dirty pages jemalloc holds and, above
//! [`PURGE_ABOVE`], purges them. During a transfer freed pages are reused at once and the
//! dirty count stays low, so the check costs a few reads a second.
//!
//! What a burst leaves behind once its memory is freed is then jemalloc's own bookkeeping:
//! slabs that stay partly used because a few of their blocks are still held, spread over
//! one arena per thread and over the thread caches, which keep freed blocks of up to 32 KiB
//! for reuse. Measured with the benchmark's probe (`burrow-bench probe agent-memory`,
//! resident set with one tunnel open and 5 s after 100 streams closed), after webrtc-rs'
//! queues were made to give back their capacity (third_party/rtc/BURROW.md), with
//! [`PURGE_ABOVE`] at 128 KiB, 3 to 6 runs each:
//!
//! | jemalloc options | after close, over one open tunnel |
//! |---|---|
//! | defaults (eight arenas, caches up to 32 KiB) | +9–14 % |
//! | `narenas:1` | +9–20 % |
//! | `tcache_max:4096` | +5–7 % |
//! | both | +4–7 % |
//!
//! So the agent runs with both (`.cargo/config.toml` builds them into jemalloc). Blocks
//! over 4 KiB now come from the arena, under its lock: A/B of the benchmark's native half,
//! alternating, 4 runs each, measured no cost (one stream 183–230 MB/s with the defaults,
//! 190–214 with these; 100 streams 258–291 and 290–319).
//!
//! jemalloc's own purge call (`arena.<i>.purge`) takes no value, which the safe
//! `tikv-jemalloc-ctl` accessors cannot express, and this workspace has no unsafe code. An
//! arena's `dirty_decay_ms` set to 0 purges all of its unused dirty pages at once (writing
//! the same value back does not: jemalloc 5.3 keeps its purge limit until the next decay
//! epoch), so the purger sets 0 and then restores the arena's own value.

use std::time::Duration;

use tikv_jemalloc_ctl::{Access as _, AsName as _, arenas, epoch};

/// The process's allocator.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often the purger looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Unused dirty bytes the purger leaves alone: less than this is not worth the system calls
/// and the page faults of using them again. The queues webrtc-rs gives back after a burst
/// free 0.5–1 MB, which a threshold of 1 MiB left resident.
const PURGE_ABOVE: usize = 128 << 10;

/// jemalloc's index for "all arenas merged" in `stats.arenas.<i>.*` keys.
const ALL_ARENAS: u32 = 4096;

/// Starts the task that hands unused pages back to the kernel (see the module docs).
pub fn spawn_purger() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match dirty_bytes() {
                Ok(dirty) if dirty > PURGE_ABOVE => {
                    let purged = purge();
                    tracing::debug!(dirty, purged, "returned unused allocator pages");
                }
                Ok(_) => {}
                Err(e) => {
                    // Only a jemalloc without these keys gets here; nothing to do
                    // about it at run time, so say so once and stop.
                    tracing::warn!(error = %e, "cannot read allocator statistics; not purging");
                    return;
                }
            }
        }
    });
}

/// Bytes in unused dirty pages, all arenas together.
fn dirty_bytes() -> tikv_jemalloc_ctl::Result<usize> {
    // Statistics are snapshots, refreshed by advancing the epoch.
    epoch::advance()?;
    let pages: usize = format!("stats.arenas.{ALL_ARENAS}.pdirty\0")
        .as_bytes()
        .name()
        .read()?;
    let page: usize = b"arenas.page\0".name().read()?;
    Ok(pages.saturating_mul(page))
}

/// Purges every arena's unused dirty pages; returns how many arenas were purged.
fn purge() -> usize {
    let Ok(n) = arenas::narenas::read() else {
        return 0;
    };
    (0..n)
        .filter(|i| {
            let key = format!("arena.{i}.dirty_decay_ms\0");
            let name = key.as_bytes().name();
            // Arenas that were never used have no state and refuse the key: skip them.
            let Ok(ms): tikv_jemalloc_ctl::Result<isize> = name.read() else {
                return false;
            };
            // Zero purges everything unused at once; the arena's own decay time then comes
            // back, so it keeps caching freed pages until the next pause.
            name.write(0isize).is_ok() && name.write(ms).is_ok()
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_built_with_one_arena_and_thread_caches_for_small_blocks_only()
    -> tikv_jemalloc_ctl::Result<()> {
        // .cargo/config.toml passes these to jemalloc's build; a build without them (another
        // config, a changed variable name) would silently lose what the module docs measured.
        let narenas: u32 = b"opt.narenas\0".name().read()?;
        let tcache_max: usize = b"opt.tcache_max\0".name().read()?;
        assert_eq!((narenas, tcache_max), (1, 4096));
        Ok(())
    }

    #[test]
    fn purging_returns_freed_pages_to_the_kernel() -> tikv_jemalloc_ctl::Result<()> {
        // Many mid-sized blocks, freed: jemalloc keeps their pages dirty for its decay time.
        let blocks: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 64 * 1024]).collect();
        drop(blocks);
        let before = dirty_bytes()?;
        assert!(
            before > PURGE_ABOVE,
            "only {before} dirty bytes after freeing 16 MiB"
        );
        assert!(purge() > 0);
        let after = dirty_bytes()?;
        assert!(after < before / 4, "{after} dirty bytes left of {before}");
        Ok(())
    }
}
