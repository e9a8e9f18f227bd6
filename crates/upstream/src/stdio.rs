//! stdio upstreams: a child process speaking newline-delimited JSON.
//!
//! The child runs in its own process group so that stopping it also stops
//! whatever it spawned (`npx` → `node` → ...). Its stdout is read with a
//! bounded line reader; its stderr is logged line by line.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use switchboard_config::StdioConfig;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::line::{scan_id, Line, LineReader};
use crate::peer::Peer;
use crate::process::ChildProcess;
use crate::route::Shared;

/// Longest stderr line logged whole; longer ones are cut.
const MAX_STDERR_LINE: usize = 4096;
/// How long a child gets to exit on its own after stdin closes.
const STDIN_CLOSE_GRACE: Duration = Duration::from_millis(500);
/// How long a child gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A running child process and the connection over its pipes.
#[derive(Debug)]
pub(crate) struct StdioLink {
    child: ChildProcess,
    pub(crate) peer: Arc<Peer>,
    /// Fired to make the writer drop stdin, the polite way to ask a stdio
    /// server to exit.
    close_stdin: CancellationToken,
}

/// Spawns the child and its reader, writer and stderr tasks.
pub(crate) fn spawn(shared: &Arc<Shared>, cfg: &StdioConfig) -> Result<StdioLink, String> {
    // Limits, when configured, put the launcher in front of the program.
    let mut cmd = crate::limits::command(cfg);
    cmd.envs(cfg.env.iter().map(|(k, v)| (k, v.expose())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &cfg.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = ChildProcess::spawn(&mut cmd, &shared.tracker)
        .map_err(|e| format!("cannot start {:?}: {e}", cfg.program))?;
    // On error the child is dropped, which kills and reaps it.
    let Some((Some(stdin), Some(stdout), Some(stderr))) = child
        .child_mut()
        .map(|c| (c.stdin.take(), c.stdout.take(), c.stderr.take()))
    else {
        return Err("child pipes missing".into());
    };
    let (peer, out) = Peer::new(shared.clone());
    let close_stdin = CancellationToken::new();
    shared
        .tracker
        .spawn(write_loop(peer.clone(), stdin, out, close_stdin.clone()));
    shared.tracker.spawn(read_loop(peer.clone(), stdout));
    shared.tracker.spawn(stderr_loop(
        shared.name.clone(),
        stderr,
        peer.closed().clone(),
    ));
    Ok(StdioLink {
        child,
        peer,
        close_stdin,
    })
}

async fn write_loop(
    peer: Arc<Peer>,
    mut stdin: ChildStdin,
    mut out: mpsc::Receiver<Vec<u8>>,
    close_stdin: CancellationToken,
) {
    loop {
        let mut bytes = tokio::select! {
            m = out.recv() => match m {
                Some(b) => b,
                None => break,
            },
            _ = close_stdin.cancelled() => break,
            _ = peer.closed().cancelled() => break,
        };
        bytes.push(b'\n');
        let written = async {
            stdin.write_all(&bytes).await?;
            stdin.flush().await
        };
        if let Err(e) = written.await {
            peer.close(format!("write to stdin failed: {e}"));
            break;
        }
    }
    // Dropping stdin closes the pipe.
}

async fn read_loop(peer: Arc<Peer>, stdout: tokio::process::ChildStdout) {
    let max = peer.shared.max_bytes;
    let mut lines = LineReader::new(BufReader::new(stdout), max);
    loop {
        let next = tokio::select! {
            l = lines.next_line() => l,
            _ = peer.closed().cancelled() => return,
        };
        match next {
            Ok(Some(Line::Full(line))) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                peer.handle_message(&line);
            }
            Ok(Some(Line::TooLong { head })) => {
                let failed =
                    scan_id(&head).is_some_and(|id| peer.fail(id, peer.shared.too_large()));
                tracing::warn!(upstream = %peer.shared.name, limit = max, failed_request = failed, "discarded a message over the size limit");
            }
            Ok(None) => {
                peer.close("stdout closed");
                return;
            }
            Err(e) => {
                peer.close(format!("read from stdout failed: {e}"));
                return;
            }
        }
    }
}

async fn stderr_loop(
    name: Arc<str>,
    stderr: tokio::process::ChildStderr,
    closed: CancellationToken,
) {
    let mut lines = LineReader::new(BufReader::new(stderr), MAX_STDERR_LINE);
    loop {
        // Keep draining after the peer closes until EOF, but not forever:
        // the child is killed shortly after, which ends the pipe.
        let next = tokio::select! {
            l = lines.next_line() => l,
            _ = async { closed.cancelled().await; tokio::time::sleep(TERM_GRACE * 2).await } => return,
        };
        match next {
            Ok(Some(Line::Full(line))) => {
                let line = String::from_utf8_lossy(&line);
                tracing::info!(upstream = %name, "{line}");
            }
            Ok(Some(Line::TooLong { head })) => {
                let line = String::from_utf8_lossy(&head);
                tracing::info!(upstream = %name, "{line} [truncated]");
            }
            Ok(None) | Err(_) => return,
        }
    }
}

impl StdioLink {
    /// The child's pid, which is also its process group id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Waits until the child exits or the connection breaks; returns why.
    pub(crate) async fn lost(&mut self) -> String {
        tokio::select! {
            status = self.child.wait() => {
                let reason = match status {
                    Ok(s) => format!("process exited ({s})"),
                    Err(e) => format!("process wait failed: {e}"),
                };
                self.peer.close(reason.clone());
                reason
            }
            _ = self.peer.closed().cancelled() => self.peer.close_reason(),
        }
    }

    /// Stops the child: close stdin, wait briefly, SIGTERM the group, wait
    /// the grace period, SIGKILL the group. Also cleans up the group after a
    /// crash, where children of the child may still run.
    pub(crate) async fn stop(mut self) {
        self.close_stdin.cancel();
        let exited = self.child.has_exited()
            || tokio::time::timeout(STDIN_CLOSE_GRACE, self.child.wait())
                .await
                .is_ok();
        if !exited {
            self.child.signal_group(Signal::SIGTERM);
            if tokio::time::timeout(TERM_GRACE, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(upstream = %self.peer.shared.name, "process ignored SIGTERM; killing it");
            }
        }
        // Whatever is left of the group (the child's own children).
        self.child.kill().await;
        self.peer.close("upstream stopped");
    }

    /// Kills the group at once, without the polite steps: for a child that
    /// stopped answering, which would only use up the grace periods.
    pub(crate) async fn kill(mut self, reason: &str) {
        self.peer.close(reason);
        self.child.kill().await;
    }
}
