//! Resource limits for stdio children, without `unsafe`.
//!
//! Limits must hold from the program's first instruction, so they are set
//! between `fork` and the program's `exec`. `Command::pre_exec` would do that
//! but is `unsafe`, and `prlimit` on the child's pid after spawn races with
//! the child (a fast allocator wins). Instead the child is the switchboard
//! binary itself, run as `switchboard exec-limited [limits] -- program args`:
//! it sets its own rlimits and `execvp`s the program, which inherits them.
//! The pid, the process group and the pipes stay the same across the exec,
//! so supervision does not notice the extra step.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use switchboard_config::{ProcessLimits, StdioConfig};

/// The hidden subcommand of the switchboard binary that applies limits.
pub const EXEC_LIMITED: &str = "exec-limited";

const MEMORY: &str = "--memory";
const CPU_SECONDS: &str = "--cpu-seconds";
const OPEN_FILES: &str = "--open-files";

/// What `exec-limited` is asked to do: set these limits, then run `program`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitArgs {
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub open_files: Option<u64>,
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Why the `exec-limited` arguments or the limits could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error("exec-limited: {0}; usage: exec-limited [--memory BYTES] [--cpu-seconds N] [--open-files N] -- PROGRAM [ARGS...]")]
    Usage(String),
    #[error("exec-limited: cannot set {resource}: {source}")]
    Set {
        resource: &'static str,
        source: nix::Error,
    },
    #[error("exec-limited: cannot run {program:?}: {source}")]
    Exec { program: String, source: nix::Error },
}

impl LimitArgs {
    /// Parses what follows `exec-limited` on the command line.
    pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Self, LimitError> {
        let mut it = args.into_iter();
        let (mut memory_bytes, mut cpu_seconds, mut open_files) = (None, None, None);
        loop {
            let Some(flag) = it.next() else {
                return Err(LimitError::Usage("missing `-- PROGRAM`".into()));
            };
            let slot = match flag.to_str() {
                Some("--") => break,
                Some(MEMORY) => &mut memory_bytes,
                Some(CPU_SECONDS) => &mut cpu_seconds,
                Some(OPEN_FILES) => &mut open_files,
                _ => return Err(LimitError::Usage(format!("unknown argument {flag:?}"))),
            };
            let value = it
                .next()
                .and_then(|v| v.to_str().and_then(|v| v.parse::<u64>().ok()))
                .ok_or_else(|| LimitError::Usage(format!("{flag:?} needs a whole number")))?;
            *slot = Some(value);
        }
        let program = it
            .next()
            .ok_or_else(|| LimitError::Usage("missing PROGRAM after `--`".into()))?;
        Ok(Self {
            memory_bytes,
            cpu_seconds,
            open_files,
            program,
            args: it.collect(),
        })
    }

    /// The command line that [`LimitArgs::parse`] reads back, subcommand
    /// first.
    pub(crate) fn to_command_line(&self) -> Vec<OsString> {
        let mut line: Vec<OsString> = vec![EXEC_LIMITED.into()];
        for (flag, value) in [
            (MEMORY, self.memory_bytes),
            (CPU_SECONDS, self.cpu_seconds),
            (OPEN_FILES, self.open_files),
        ] {
            if let Some(v) = value {
                line.push(flag.into());
                line.push(v.to_string().into());
            }
        }
        line.push("--".into());
        line.push(self.program.clone());
        line.extend(self.args.iter().cloned());
        line
    }

    pub(crate) fn new(limits: &ProcessLimits, program: &str, args: &[String]) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            cpu_seconds: limits.cpu_seconds,
            open_files: limits.open_files,
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
        }
    }
}

/// The command that runs `cfg`'s program: directly, or through the launcher
/// when limits are configured.
pub(crate) fn command(cfg: &StdioConfig) -> tokio::process::Command {
    match &cfg.limits {
        None => {
            let mut cmd = tokio::process::Command::new(&cfg.program);
            cmd.args(&cfg.args);
            cmd
        }
        Some(limits) => {
            let mut cmd = tokio::process::Command::new(&limits.launcher);
            cmd.args(LimitArgs::new(limits, &cfg.program, &cfg.args).to_command_line());
            cmd
        }
    }
}

/// Sets this process's limits and replaces it with the program; returns only
/// when that fails. Called by the switchboard binary's `exec-limited`
/// command, in the child, before anything else runs.
pub fn exec_limited(args: &LimitArgs) -> LimitError {
    match apply_and_exec(args) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn apply_and_exec(args: &LimitArgs) -> Result<std::convert::Infallible, LimitError> {
    let set = |resource: Resource, name: &'static str, value: u64| {
        // Lowering is always allowed; raising the hard limit is not, so a
        // value above the inherited hard limit is clamped to it.
        let (_, hard) = getrlimit(resource).map_err(|source| LimitError::Set {
            resource: name,
            source,
        })?;
        let value = value.min(hard);
        setrlimit(resource, value, value).map_err(|source| LimitError::Set {
            resource: name,
            source,
        })
    };
    if let Some(v) = args.memory_bytes {
        set(Resource::RLIMIT_AS, "RLIMIT_AS", v)?;
    }
    if let Some(v) = args.cpu_seconds {
        set(Resource::RLIMIT_CPU, "RLIMIT_CPU", v)?;
    }
    if let Some(v) = args.open_files {
        set(Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", v)?;
    }
    let c = |s: &OsStr| {
        CString::new(s.as_bytes())
            .map_err(|_| LimitError::Usage(format!("{s:?} contains a NUL byte")))
    };
    let program = c(&args.program)?;
    let mut argv = vec![program.clone()];
    for a in &args.args {
        argv.push(c(a)?);
    }
    nix::unistd::execvp(&program, &argv).map_err(|source| LimitError::Exec {
        program: args.program.to_string_lossy().into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_reads_back_to_the_same_limits() {
        let limits = ProcessLimits {
            memory_bytes: Some(64 << 20),
            cpu_seconds: None,
            open_files: Some(256),
            launcher: "/usr/bin/switchboard".into(),
        };
        let args = LimitArgs::new(&limits, "node", &["server.js".into(), "--".into()]);
        let line = args.to_command_line();
        assert_eq!(
            line,
            os(&[
                "exec-limited",
                "--memory",
                "67108864",
                "--open-files",
                "256",
                "--",
                "node",
                "server.js",
                "--"
            ])
        );
        assert_eq!(LimitArgs::parse(line.into_iter().skip(1)).unwrap(), args);
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["--memory", "lots", "--", "x"], "needs a whole number"),
            (&["--stack", "1", "--", "x"], "unknown argument"),
            (&["--memory", "1"], "missing `-- PROGRAM`"),
            (&["--"], "missing PROGRAM"),
        ];
        for (line, needle) in cases {
            let err = LimitArgs::parse(os(line)).unwrap_err().to_string();
            assert!(err.contains(needle), "{line:?}: {err}");
            assert!(err.contains("usage: exec-limited"), "{err}");
        }
    }
}
