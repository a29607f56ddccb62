//! The exec handler: runs a command with the batch as JSON lines on its stdin. Exit 0: handled.
//! Exit 65 (EX_DATAERR): permanent, the batch goes to the dead-letter topic with the command's
//! stderr as the reason. Any other exit, a signal, a failure to start or a timeout: transient,
//! retried with backoff.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pipeline::{Event, Handler, HandlerError};

/// Exit status meaning "these events are bad" (sysexits.h EX_DATAERR).
pub const EXIT_PERMANENT: i32 = 65;
/// Longest a run may take before it is killed and counted as a transient failure.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Most stderr bytes kept for a reason.
const MAX_STDERR: u64 = 4096;

/// Runs `program args...` per batch.
#[derive(Debug, Clone)]
pub struct Exec {
    name: String,
    argv: Vec<String>,
}

impl Exec {
    /// `argv[0]` is the program, the rest its arguments (no shell). Use `["sh", "-c", "..."]`
    /// for a shell command line.
    pub fn new(name: &str, argv: Vec<String>) -> anyhow::Result<Exec> {
        if argv.is_empty() {
            anyhow::bail!("exec handler {name}: empty command");
        }
        Ok(Exec {
            name: name.to_string(),
            argv,
        })
    }

    async fn run(&self, input: Vec<u8>) -> Result<(std::process::ExitStatus, String), String> {
        let mut child = tokio::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.argv[0]))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let writer = async move {
            // A command that exits without reading everything closes the pipe: not an error here.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let reader = async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut buf).await;
            // Drain the rest so the child never blocks on a full pipe.
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            String::from_utf8_lossy(&buf).trim().to_string()
        };
        let run = async {
            let ((), err) = tokio::join!(writer, reader);
            let status = child
                .wait()
                .await
                .map_err(|e| format!("waiting for the command: {e}"))?;
            Ok::<_, String>((status, err))
        };
        match tokio::time::timeout(TIMEOUT, run).await {
            Ok(r) => r,
            Err(_) => Err(format!("command timed out after {TIMEOUT:?}")),
        }
    }
}

#[async_trait::async_trait]
impl Handler for Exec {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        let mut input = Vec::new();
        for e in events {
            serde_json::to_writer(&mut input, &super::event_json(e))
                .map_err(|e| HandlerError::Permanent(format!("cannot encode events: {e}")))?;
            input.push(b'\n');
        }
        match self.run(input).await {
            Err(reason) => Err(HandlerError::Transient(reason)),
            Ok((status, _)) if status.success() => Ok(()),
            Ok((status, stderr)) if status.code() == Some(EXIT_PERMANENT) => Err(
                HandlerError::Permanent(format!("exit {EXIT_PERMANENT}: {stderr}")),
            ),
            Ok((status, stderr)) => Err(HandlerError::Transient(format!("{status}: {stderr}"))),
        }
    }
}
