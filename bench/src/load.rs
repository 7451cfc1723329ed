//! Load generators and the loopback services they talk to: a sink that counts what it
//! receives and reports the count, and an echo server. Blocking std I/O on threads: the
//! generators must cost the same whatever path (raw TCP, Burrow, `ssh -L`) they measure.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

/// Size of the buffers the sink reads into and the uploads write from.
const BUF: usize = 1 << 20;

/// Starts a sink on 127.0.0.1: every connection is read to EOF, then the sink writes the
/// number of bytes it received (u64, big endian) and closes. Returns its port.
pub fn start_sink() -> anyhow::Result<u16> {
    serve(|mut conn| {
        let mut buf = vec![0u8; BUF];
        let mut total: u64 = 0;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        let _ = conn.write_all(&total.to_be_bytes());
    })
}

/// Starts an echo server on 127.0.0.1 (every byte received is sent back). Returns its port.
pub fn start_echo() -> anyhow::Result<u16> {
    serve(|mut conn| {
        let _ = conn.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

fn serve(handle: fn(TcpStream)) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || handle(conn));
        }
    });
    Ok(port)
}

/// Bytes that no link layer could compress away.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Time left before `deadline`, or an error naming what ran out of time.
fn remaining(deadline: Instant, what: &str, limit: Duration) -> anyhow::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("{what} aborted: not done within {limit:?}");
    }
    Ok(left)
}

/// Uploads `bytes` to the sink behind `port`, half-closes and waits for the sink's count.
/// Returns the time from connect to the count; fails past `limit`.
pub fn upload(port: u16, bytes: u64, limit: Duration) -> anyhow::Result<Duration> {
    let buf = pattern(BUF);
    let start = Instant::now();
    let conn = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
    upload_on(conn, &buf, bytes, start, limit)
}

fn upload_on(
    mut conn: TcpStream,
    buf: &[u8],
    bytes: u64,
    start: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let deadline = start + limit;
    let mut sent: u64 = 0;
    while sent < bytes {
        conn.set_write_timeout(Some(remaining(deadline, "upload", limit)?))?;
        let n = buf.len().min((bytes - sent) as usize);
        conn.write_all(&buf[..n])
            .with_context(|| format!("writing after {sent} bytes"))?;
        sent += n as u64;
    }
    conn.shutdown(Shutdown::Write).context("half-closing")?;
    conn.set_read_timeout(Some(remaining(deadline, "upload", limit)?))?;
    let mut count = [0u8; 8];
    conn.read_exact(&mut count)
        .context("reading the sink's count")?;
    let got = u64::from_be_bytes(count);
    ensure!(got == bytes, "the sink received {got} bytes of {bytes}");
    Ok(start.elapsed())
}

/// What `streams` concurrent uploads of `bytes_each` measured.
pub struct Parallel {
    /// From the common start to the last stream's count.
    pub total: Duration,
    /// Each stream's time from the common start to its count.
    pub per_stream: Vec<Duration>,
}

/// Opens `streams` connections to the sink behind `port`, then starts all their uploads
/// at once. Fails if any stream fails or the whole takes longer than `limit`.
pub fn parallel_upload(
    port: u16,
    streams: usize,
    bytes_each: u64,
    limit: Duration,
) -> anyhow::Result<Parallel> {
    let buf = Arc::new(pattern(BUF));
    let barrier = Arc::new(Barrier::new(streams + 1));
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let start_rx = Arc::new(std::sync::Mutex::new(rx));
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let buf = Arc::clone(&buf);
            let barrier = Arc::clone(&barrier);
            let start_rx = Arc::clone(&start_rx);
            thread::spawn(move || -> anyhow::Result<Duration> {
                let conn = TcpStream::connect(("127.0.0.1", port));
                // Every thread reaches the barrier, even after a failed connect.
                barrier.wait();
                let start = start_rx
                    .lock()
                    .map_err(|_| anyhow::anyhow!("start lock poisoned"))?
                    .recv()
                    .context("no start time")?;
                upload_on(conn.context("connecting")?, &buf, bytes_each, start, limit)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for _ in 0..streams {
        tx.send(start).context("workers gone")?;
    }
    let mut per_stream = Vec::with_capacity(streams);
    let mut first_error = None;
    for w in workers {
        match w.join() {
            Ok(Ok(d)) => per_stream.push(d),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("an upload thread panicked"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Parallel {
        total: start.elapsed(),
        per_stream,
    })
}

/// Round trips of `size`-byte messages through the echo server behind `port`: `warmup`
/// unmeasured, then `count` measured ones. Fails past `limit`.
pub fn echo_round_trips(
    port: u16,
    size: usize,
    warmup: usize,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + limit;
    let mut conn = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
    conn.set_nodelay(true)?;
    let msg = pattern(size);
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let left = remaining(deadline, "echo", limit)?;
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
        let t = Instant::now();
        conn.write_all(&msg).context("writing")?;
        conn.read_exact(&mut back).context("reading the echo")?;
        if i >= warmup {
            rtts.push(t.elapsed());
        }
        ensure!(back == msg, "the echo differs from what was sent");
    }
    Ok(rtts)
}

/// Holds `n` connections to the echo server behind `port` open after one round trip of
/// `bytes` on each, so every stream on the way has carried data.
pub fn open_echo_streams(port: u16, n: usize, bytes: usize) -> anyhow::Result<Vec<TcpStream>> {
    let msg = pattern(bytes);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let conn = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        conn.set_write_timeout(Some(Duration::from_secs(30)))?;
        conns.push(conn);
    }
    // Writers and readers on separate threads: a message larger than the socket buffers
    // would otherwise block on its own echo.
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let msg = msg.clone();
            thread::spawn(move || -> anyhow::Result<TcpStream> {
                let mut writer = conn.try_clone()?;
                let w = thread::spawn(move || writer.write_all(&msg));
                let mut back = vec![0u8; bytes];
                conn.read_exact(&mut back).context("reading the echo")?;
                w.join()
                    .map_err(|_| anyhow::anyhow!("writer panicked"))?
                    .context("writing")?;
                Ok(conn)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("an echo thread panicked"))?
        })
        .collect()
}
