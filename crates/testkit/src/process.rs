//! One node's process: started with its stdout and stderr appended to its log file (a marker
//! line per start, so restarts are visible in one file), signalled and reaped by pid, and
//! killed when dropped, so no test and no chaos run leaves a process behind.
//!
//! A child is signalled only while it is not reaped yet, so its pid cannot have been reused
//! by another process. Nothing here panics: the tests' [`crate::Cluster`] turns errors into
//! failures with logs, chaos into findings.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::try_wait_exit;

/// The signals the harness sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Asks for a clean shutdown.
    Term,
    /// `kill -9`.
    Kill,
    /// Freezes the process (a pause fault).
    Stop,
    /// Resumes a stopped process.
    Cont,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// Sends `signal` to a child that is not reaped yet. If it exited on its own just now the
/// signal is lost, which the caller's next wait tells.
pub fn signal(child: &Child, signal: Signal) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes two integers and touches no memory of ours; the pid is our
    // unreaped child's, so it names no other process.
    unsafe {
        libc::kill(pid, signal.number());
    }
}

/// SIGTERM to a child that is not reaped yet.
pub fn sigterm(child: &Child) {
    signal(child, Signal::Term);
}

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("node {0} is already running")]
    AlreadyRunning(u64),
    #[error("open {}: {source}", path.display())]
    OpenLog { path: PathBuf, source: io::Error },
    #[error("clone log handle: {0}")]
    CloneLog(io::Error),
    #[error("spawn {program}: {source}")]
    Spawn { program: String, source: io::Error },
}

/// Node `id`'s process slot: its log file and, while it runs, its child.
pub struct NodeProcess {
    id: u64,
    log_path: PathBuf,
    /// Who starts it, named in the log's marker lines (`harness`, `chaos`).
    starter: &'static str,
    child: Option<Child>,
    starts: u32,
}

impl NodeProcess {
    pub fn new(id: u64, log_path: PathBuf, starter: &'static str) -> NodeProcess {
        NodeProcess {
            id,
            log_path,
            starter,
            child: None,
            starts: 0,
        }
    }

    /// Starts `cmd` (program, arguments, working dir and process group are the caller's)
    /// with stdin closed, stdout and stderr appended to the log after a marker line that
    /// shows `shown` (the command line), and `RUST_BACKTRACE=1`.
    pub fn start(&mut self, mut cmd: Command, shown: &str) -> Result<(), SpawnError> {
        if self.child.is_some() {
            return Err(SpawnError::AlreadyRunning(self.id));
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|source| SpawnError::OpenLog {
                path: self.log_path.clone(),
                source,
            })?;
        // The marker only helps a reader of the log: a node whose log cannot take it still
        // runs (and its own first write tells).
        let _ = writeln!(
            log,
            "=== {}: start #{} of node {}: {shown}",
            self.starter, self.starts, self.id
        );
        let stderr = log.try_clone().map_err(SpawnError::CloneLog)?;
        let child = cmd
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| SpawnError::Spawn {
                program: cmd.get_program().to_string_lossy().into_owned(),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Started and not seen to exit.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far, as text (empty if it cannot be read).
    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Sends `sig` if it is running.
    pub fn signal(&self, sig: Signal) {
        if let Some(child) = &self.child {
            signal(child, sig);
        }
    }

    /// SIGKILL, then reaps it. Nothing happens if it is not running.
    pub fn kill(&mut self) -> io::Result<()> {
        match self.child.take() {
            Some(mut child) => {
                // Fails only if it exited already; the wait reaps it either way.
                let _ = child.kill();
                child.wait().map(drop)
            }
            None => Ok(()),
        }
    }

    /// Its exit status if it has exited (and is reaped now); `Ok(None)` if it runs or was
    /// never started.
    pub fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Waits up to `timeout` for it to exit; `Ok(None)` if it still runs (or never started).
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = try_wait_exit(child, timeout)?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
