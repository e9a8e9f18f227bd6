//! Child processes this crate spawns, counted until they are reaped.
//!
//! Gateways that leak child processes do so quietly: a crash-looping server
//! leaves zombies or orphaned grandchildren behind, and nothing notices until
//! the process table fills. Every child therefore lives in a
//! [`ChildProcess`], which counts it in [`live_processes`] from spawn until
//! its exit status is collected, and which kills and reaps it even when it is
//! dropped without a proper stop.

use std::io;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::task::TaskTracker;

/// Children spawned by this crate, in this process, not reaped yet.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Returns how many child processes this crate has spawned (across all
/// upstreams of this process) whose exit has not been collected yet.
///
/// A count that only grows means leaked processes; after every upstream has
/// shut down it is back where it started.
pub fn live_processes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// One spawned child in its own process group, counted until reaped.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    /// `None` only once `Drop` has handed the child to a reaper task.
    child: Option<Child>,
    /// Also the process group id (the child is spawned with
    /// `process_group(0)`).
    pid: Option<u32>,
    /// Whether the exit status was collected (and the count decremented).
    reaped: bool,
    /// Where a dropped, unreaped child's reaper runs, so the upstream's
    /// shutdown waits for it.
    tracker: TaskTracker,
}

impl ChildProcess {
    /// Spawns `cmd`, which must have been set up with `process_group(0)`.
    pub(crate) fn spawn(cmd: &mut Command, tracker: &TaskTracker) -> io::Result<Self> {
        let child = cmd.spawn()?;
        LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            pid: child.id(),
            child: Some(child),
            reaped: false,
            tracker: tracker.clone(),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The child's pipes, for the transport to take.
    pub(crate) fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Waits for the child to exit and collects its status.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("child already released"));
        };
        let status = child.wait().await;
        if status.is_ok() {
            self.mark_reaped();
        }
        status
    }

    /// Whether the child has exited (collecting its status if so).
    pub(crate) fn has_exited(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited {
            self.mark_reaped();
        }
        exited
    }

    /// Kills the whole group with SIGKILL and collects the child's status.
    /// SIGKILL also ends a stopped (SIGSTOP) process, so this is bounded.
    pub(crate) async fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if let Some(child) = self.child.as_mut() {
            // `Child::kill` sends SIGKILL to the child itself and waits.
            if child.kill().await.is_ok() || matches!(child.try_wait(), Ok(Some(_))) {
                self.mark_reaped();
            }
        }
    }

    /// Signals the child's whole process group.
    pub(crate) fn signal_group(&self, signal: Signal) {
        let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        // ESRCH (group already gone) is the common, harmless case.
        let _ = killpg(Pid::from_raw(pid), signal);
    }

    fn mark_reaped(&mut self) {
        if !self.reaped {
            self.reaped = true;
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ChildProcess {
    /// Dropped without a stop (a connect attempt abandoned at shutdown, a
    /// failed setup): kill the group now and reap the child in the
    /// background, so neither a zombie nor an orphaned grandchild remains.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.signal_group(Signal::SIGKILL);
        let Some(mut child) = self.child.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tracker.spawn(async move {
                let _ = child.start_kill();
                let _ = child.wait().await;
                LIVE.fetch_sub(1, Ordering::Relaxed);
            });
        } else {
            // No runtime to wait on: `kill_on_drop` and tokio's orphan
            // reaper collect it; it can no longer be counted here.
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The churn test lives here, in the library's unit-test binary, rather than
/// in `tests/it`: [`live_processes`] is process-wide, and the integration
/// binary runs many process-spawning tests in parallel, so only a binary in
/// which this is the one test that spawns children can assert the count
/// returns to where it started. Keep it that way: other tests in `src/`
/// must not spawn processes.
#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use switchboard_config::{StdioConfig, TransportConfig, UpstreamConfig};
    use tokio::sync::mpsc;

    use super::*;
    use crate::{Backoff, CallOptions, Upstream};

    /// Bound on each wait; only there so a broken test fails instead of
    /// hanging, never asserted as a duration.
    const SOON: Duration = Duration::from_secs(20);
    const RESTARTS: u64 = 12;

    /// target/debug/deps/<this test> → target/debug/switchboard-fake-upstream
    fn fake_bin() -> PathBuf {
        if let Some(p) = std::env::var_os("FAKE_UPSTREAM_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(|d| d.parent())
            .unwrap()
            .join("switchboard-fake-upstream");
        assert!(
            bin.is_file(),
            "{} not found: build it with `cargo build -p switchboard-testkit --bins` (same target dir) or set FAKE_UPSTREAM_BIN",
            bin.display()
        );
        bin
    }

    /// The config crate's defaults (new fields need no edit here), with a
    /// stdio transport for `program`.
    fn config(program: PathBuf) -> UpstreamConfig {
        let text = "[[upstreams]]\nname = \"churn\"\ncommand = [\"placeholder\"]\nretries = 0\nhealth_check_interval = \"0s\"\n";
        let mut cfg = switchboard_config::parse(text, "test")
            .unwrap()
            .upstreams
            .remove(0);
        cfg.transport = TransportConfig::Stdio(StdioConfig {
            program: program.to_string_lossy().into_owned(),
            args: vec![],
            env: vec![],
            cwd: None,
            pool: Default::default(),
            limits: None,
        });
        cfg.timeout = Duration::from_secs(15);
        cfg.connect_timeout = Duration::from_secs(15);
        cfg.max_response_bytes = 1024 * 1024;
        cfg.max_timeout = Duration::from_secs(60);
        cfg
    }

    /// Pids of processes (zombies included) whose parent is this test
    /// process and whose command name is the start of `program`'s file name
    /// (the kernel keeps 15 bytes of it).
    fn children_running(program: &std::path::Path) -> Vec<u32> {
        let me = std::process::id();
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // A process may end between listing and reading.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            // After ") ": state, then the parent pid.
            let ppid = stat[close + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(me) && !comm.is_empty() && name.starts_with(comm) {
                found.push(pid);
            }
        }
        found
    }

    /// Waits until the upstream is Ready on a process other than `old`.
    async fn next_process(up: &Upstream, old: Option<u32>) -> u32 {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            if let (Some(pid), crate::Status::Ready(_)) = (up.process_id(), up.status()) {
                if Some(pid) != old {
                    return pid;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no restart after {old:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn crash_churn_leaves_no_process_behind() {
        let program = fake_bin();
        let before = live_processes();
        // Room for every Ready/Down event, so status reports never wait.
        let (tx, _events) = mpsc::channel(4 * RESTARTS as usize);
        let fast = Backoff {
            start: Duration::from_millis(10),
            max: Duration::from_millis(50),
            reset_after: Duration::from_secs(60),
        };
        let up = Upstream::start_with(config(program.clone()), tx, fast);
        let mut pid = next_process(&up, None).await;
        for _ in 0..RESTARTS {
            assert_eq!(live_processes(), before + 1, "one child while ready");
            let crash = serde_json::json!({"name": "crash", "arguments": {}});
            let err = up
                .request(
                    "tools/call",
                    Some(switchboard_protocol::to_raw(&crash)),
                    CallOptions::default(),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, crate::CallError::Unavailable { .. }),
                "{err:?}"
            );
            pid = next_process(&up, Some(pid)).await;
        }
        assert_eq!(up.health_stats().restarts, RESTARTS);
        assert_eq!(children_running(&program), vec![pid], "only the live child");
        up.shutdown().await;
        assert_eq!(live_processes(), before, "every child reaped");
        assert_eq!(children_running(&program), Vec::<u32>::new());
    }
}
