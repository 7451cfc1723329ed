//! `burrow speedtest`: round trip, download and upload through a tunnel, against the
//! agent's built-in speed test (see `burrow_proto::speedtest`), so nothing has to run in
//! the workspace.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use burrow_peer::tunnel::ClientTunnel;
use burrow_proto::speedtest::{
    Pattern, REPORT_LEN, Request, SPEEDTEST_PORT, UploadReport, Verifier,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Chunks the upload is written in: the tunnel's own chunk size.
const WRITE_CHUNK: usize = 64 * 1024;

/// What one direction measured.
pub struct Transfer {
    /// Bytes moved (and checked).
    pub bytes: u64,
    /// From the request to the last byte (download) or the agent's report (upload).
    pub elapsed: Duration,
}

impl Transfer {
    /// "64.0 MiB in 0.52 s: 129.1 MB/s (1032.8 Mbit/s)"
    pub fn describe(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let rate = self.bytes as f64 / secs;
        format!(
            "{:.1} MiB in {:.2} s: {:.1} MB/s ({:.1} Mbit/s)",
            self.bytes as f64 / (1024.0 * 1024.0),
            secs,
            rate / 1e6,
            rate * 8.0 / 1e6
        )
    }
}

/// One ping, given up after 5 s.
pub async fn ping_once(tunnel: &ClientTunnel) -> anyhow::Result<Duration> {
    tokio::time::timeout(Duration::from_secs(5), tunnel.ping())
        .await
        .context("ping timed out")?
        .context("ping failed")
}

/// The median of `count` pings.
pub async fn round_trip(tunnel: &ClientTunnel, count: u32) -> anyhow::Result<Duration> {
    let mut rtts = Vec::new();
    for _ in 0..count.max(1) {
        rtts.push(ping_once(tunnel).await?);
    }
    rtts.sort();
    Ok(rtts[rtts.len() / 2])
}

/// The agent sends `bytes`; every one is checked against the pattern.
pub async fn download(tunnel: &ClientTunnel, bytes: u64) -> anyhow::Result<Transfer> {
    let mut stream = tunnel
        .open(SPEEDTEST_PORT)
        .await
        .context("opening the agent's speed test")?;
    let started = Instant::now();
    stream
        .write_all(&Request::Download { bytes }.encode())
        .await
        .context("sending the download request")?;
    // Nothing more goes up: the agent may end the stream as soon as its bytes are out.
    stream.shutdown().await.context("half-closing")?;
    let mut verifier = Verifier::new();
    let mut buf = vec![0; WRITE_CHUNK];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .context("reading the download")?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]);
        if !verifier.intact() {
            bail!(
                "the download was corrupted within bytes {}..{}",
                verifier.received() - n as u64,
                verifier.received()
            );
        }
    }
    let elapsed = started.elapsed();
    if verifier.received() != bytes {
        bail!(
            "the download ended after {} of {bytes} bytes",
            verifier.received()
        );
    }
    Ok(Transfer { bytes, elapsed })
}

/// The client sends `bytes`; the agent checks them and reports.
pub async fn upload(tunnel: &ClientTunnel, bytes: u64) -> anyhow::Result<Transfer> {
    let stream = tunnel
        .open(SPEEDTEST_PORT)
        .await
        .context("opening the agent's speed test")?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let started = Instant::now();
    let send = async {
        writer
            .write_all(&Request::Upload { bytes }.encode())
            .await
            .context("sending the upload request")?;
        let pattern = Pattern::new();
        let mut chunk = vec![0; WRITE_CHUNK];
        let mut sent = 0u64;
        while sent < bytes {
            let n = usize::try_from(bytes - sent)
                .unwrap_or(usize::MAX)
                .min(WRITE_CHUNK);
            pattern.fill(sent, &mut chunk[..n]);
            writer.write_all(&chunk[..n]).await.context("uploading")?;
            sent += n as u64;
        }
        writer.shutdown().await.context("half-closing")?;
        anyhow::Ok(())
    };
    // Read concurrently: a refusal (a reset) must end the upload, not wait behind it.
    let receive = async {
        let mut answer = Vec::with_capacity(REPORT_LEN);
        reader
            .read_to_end(&mut answer)
            .await
            .context("reading the agent's report")?;
        anyhow::Ok(answer)
    };
    let (sent, answer) = tokio::join!(send, receive);
    let answer = answer?;
    sent?;
    let elapsed = started.elapsed();
    let report = UploadReport::decode(&answer).context("reading the agent's report")?;
    if report.received != bytes {
        bail!(
            "the agent received {} of the {bytes} bytes uploaded",
            report.received
        );
    }
    if !report.intact {
        bail!("the agent found the upload corrupted");
    }
    Ok(Transfer { bytes, elapsed })
}
