//! This machine's own bounds, measured in the same run as the broker: raw loopback TCP
//! throughput and the durable file-append rate of the disk under the scratch dir.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Raw loopback throughput: one connection, 1 MiB writes, reader discards.
pub(super) async fn loopback_mib_per_s(total: usize) -> Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let r = s.read(&mut buf).await?;
            if r == 0 {
                return Ok::<usize, std::io::Error>(n);
            }
            n += r;
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).await?;
        sent += chunk.len();
    }
    s.shutdown().await?;
    let got = reader.await??;
    let secs = start.elapsed().as_secs_f64();
    if got != sent {
        bail!("loopback probe: sent {sent} bytes, received {got}");
    }
    Ok(got as f64 / secs / (1024.0 * 1024.0))
}

/// Durable append bound of the disk under `dir`: 64 KiB writes, fdatasync every 5 ms (group
/// commit), the final sync included.
pub(super) fn file_append_mib_per_s(dir: &Path, total: usize) -> Result<f64> {
    let path = dir.join("append-probe");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![7u8; 64 * 1024];
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut written = 0;
    while written < total {
        f.write_all(&chunk)?;
        written += chunk.len();
        if last_sync.elapsed() >= Duration::from_millis(5) {
            f.sync_data()?;
            last_sync = Instant::now();
        }
    }
    f.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(written as f64 / secs / (1024.0 * 1024.0))
}
