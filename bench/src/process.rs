//! Child processes the suite starts, and what the bench reads about processes from `/proc`.
//!
//! Invariant: every process the suite starts dies before the suite returns, also on error or
//! Ctrl-C. Three layers make that hold:
//! 1. each child runs in its own process group and [`Child`] kills that group when dropped;
//! 2. the bench makes itself a child subreaper, so a grandchild whose parent died (say the stdio
//!    upstream of a gateway that crashed) is re-parented to the bench instead of to init;
//! 3. [`sweep_orphans`] kills whatever is still a child of the bench at the end. Every such
//!    process was started by the bench, directly or through a child, so nothing else is touched.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long a child gets between SIGTERM and SIGKILL: enough for the gateway to stop its stdio
/// upstreams (they run in its own process groups, out of reach of our `killpg`).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A process started by the suite, stdout and stderr going to a log file.
#[derive(Debug)]
pub(crate) struct Child {
    name: String,
    child: tokio::process::Child,
    /// Also the process group id, since the child leads its own group.
    pid: Pid,
    log: PathBuf,
    /// Set once the process is known to be reaped, so `Drop` signals nothing (its pid and
    /// group id may already belong to someone else).
    reaped: bool,
}

impl Child {
    /// Starts `program args…` in a new process group, logging to `log_dir/<name>.log`.
    pub(crate) fn spawn(name: &str, program: &Path, args: &[&str], log_dir: &Path) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            // It would replace the store the config names with whatever database it points at.
            .env_remove("DATABASE_URL")
            .stdout(out)
            .stderr(err)
            // Own group: `killpg` then reaches helpers the child forks, and a terminal Ctrl-C
            // reaches only the bench, which stops everything in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        let raw = child
            .id()
            .with_context(|| format!("{name} exited before its pid was read"))?;
        let pid = Pid::from_raw(i32::try_from(raw)?);
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log,
            reaped: false,
        })
    }

    /// Returns the process id (for `/proc` reads).
    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Returns the exit status if the process has already exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        if status.is_some() {
            self.reaped = true;
        }
        status
    }

    /// Returns the last `max` bytes of the process's output, for error messages.
    pub(crate) fn log_tail(&self, max: u64) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(&self.log)?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        };
        read().unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Stops the process: SIGTERM to its group, then SIGKILL if it outlives [`STOP_GRACE`].
    pub(crate) async fn stop(mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = killpg(self.pid, Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "{} ignored SIGTERM for {STOP_GRACE:?}; killing it",
                self.name
            );
            let _ = killpg(self.pid, Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
        self.reaped = true;
        // The group may still hold helpers that outlived the leader.
        let _ = killpg(self.pid, Signal::SIGKILL);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped && self.exited().is_none() {
            // No time for a graceful stop here (this runs while unwinding an error); tokio reaps
            // the zombie in the background.
            let _ = killpg(self.pid, Signal::SIGKILL);
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }
}

/// Makes the bench adopt orphaned descendants (see the module docs).
pub(crate) fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")
}

/// Kills and reaps every process whose parent is the bench; returns how many there were.
///
/// Call only after every [`Child`] was stopped or dropped: then whatever is left is a
/// descendant that escaped, adopted thanks to [`become_subreaper`].
pub(crate) fn sweep_orphans() -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(me) {
            let pid = Pid::from_raw(pid);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            killed += 1;
        }
    }
    killed
}

/// Returns the ppid field of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may contain spaces or parentheses itself, so fields are counted from the
/// last `)`.
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Returns a port that was free a moment ago on 127.0.0.1 (bind port 0, read it, release it).
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Returns the resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Returns the CPU time (user + system, all threads) `pid` has used so far.
pub(crate) fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    // After the command name: state is field 3, utime field 14 and stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next().context("no utime")?.parse()?;
    let stime: u64 = fields.next().context("no stime")?.parse()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Ok(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// Returns the CPU time (user + system) the bench itself has used so far.
pub(crate) fn own_cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec().unsigned_abs())
                + Duration::from_micros(t.tv_usec().unsigned_abs())
        };
        tv(u.user_time()) + tv(u.system_time())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_found_after_odd_command_names() {
        assert_eq!(parent_of("123 (a b) c) S 77 123 123 0"), Some(77));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        cpu_time(me).unwrap();
    }
}
