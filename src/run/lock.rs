//! The lock of an output folder: `<dir>/.mri-ad-lock` names the process that writes the folder (its pid,
//! its start time and its host), so that a second run into the same folder is refused at once instead of
//! both writing it.
//!
//! Input: a folder. Output: a [`FolderLock`] held for as long as the run writes; dropping it removes the
//! file. A lock left behind by a process that no longer runs (killed, or the machine restarted) is taken
//! over with a notice.
//!
//! Traps: the file is created with `create_new` (atomic on local filesystems: of two runs starting at once
//! exactly one gets it). A pid alone can be reused by another process, so the holder is alive only when a
//! process with that pid *and* that start time exists (`/proc/<pid>/stat`, field 22). A lock of another
//! host cannot be checked from here: it is treated as held, and the message says which file to delete if
//! that run is gone. Where `/proc` is missing every lock counts as held.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::messages::Reporter;
use crate::{Error, Result};

/// The lock file's name inside the folder it locks.
pub const LOCK_FILE: &str = ".mri-ad-lock";

/// A held lock; dropping it removes the lock file.
#[must_use = "the folder is unlocked when the lock is dropped"]
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who holds a lock, as its file records.
#[derive(Debug, Clone, PartialEq)]
struct Holder {
    pid: u32,
    start: Option<u64>,
    host: String,
}

impl Holder {
    fn this_process() -> Holder {
        let pid = std::process::id();
        Holder {
            pid,
            start: start_time(pid),
            host: host_name(),
        }
    }

    fn read(path: &Path) -> Option<Holder> {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        Some(Holder {
            pid: u32::try_from(doc.get("pid")?.as_u64()?).ok()?,
            start: doc.get("start_ticks").and_then(Value::as_u64),
            host: doc.get("host")?.as_str()?.to_string(),
        })
    }

    /// Whether the process is known to be gone: same host, and no process with its pid and start time.
    fn is_gone(&self) -> bool {
        if self.host != host_name() || !Path::new("/proc/self/stat").exists() {
            return false;
        }
        match start_time(self.pid) {
            None => true,
            Some(now) => self.start.is_some_and(|then| then != now),
        }
    }

    fn describe(&self) -> String {
        format!("process {} on {}", self.pid, self.host)
    }
}

/// A process's start time in clock ticks after boot (`/proc/<pid>/stat` field 22), `None` when there is
/// no such process (or no `/proc`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}

/// The refusal of a folder whose lock is held by `holder` (or by a process its file does not name).
fn in_use(dir: &Path, path: &Path, holder: Option<&Holder>) -> Error {
    let who = holder.map_or("another process".to_string(), Holder::describe);
    Error::BadOutput {
        path: dir.into(),
        problem: format!(
            "this folder is in use by {who} (lock {}); wait for that run to finish, or give another --out. \
             If that run is gone, delete the lock file",
            path.display()
        ),
    }
}

/// Refuses `dir` when another live process holds its lock; a lock of a process that is gone is left for
/// [`acquire`] to take over, and one this process holds is not in the way. For the early checks of a
/// run, before any slow work.
pub fn refuse_if_in_use(dir: &Path) -> Result<()> {
    let path = dir.join(LOCK_FILE);
    if !path.exists() {
        return Ok(());
    }
    match Holder::read(&path) {
        Some(h) if h.is_gone() || h == Holder::this_process() => Ok(()),
        h => Err(in_use(dir, &path, h.as_ref())),
    }
}

/// Takes the lock of the existing folder `dir`: refused with exit 2 when a live process holds it, taken
/// over with a notice when its holder is gone.
pub fn acquire(dir: &Path, report: &Reporter) -> Result<FolderLock> {
    acquire_named(dir, LOCK_FILE, report)
}

/// [`acquire`] with the lock file `name` (a part of a folder that several processes write at once, each
/// its own part: the shards of `extract`).
pub fn acquire_named(dir: &Path, name: &str, report: &Reporter) -> Result<FolderLock> {
    let path = dir.join(name);
    let me = Holder::this_process();
    let record = json!({
        "pid": me.pid,
        "start_ticks": me.start,
        "host": me.host,
        "started_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(record.to_string().as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::io(&path, e))?;
                return Ok(FolderLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = Holder::read(&path);
                match &holder {
                    Some(h) if h.is_gone() => {
                        report.notice(format!(
                            "taking over the lock of {}, which no longer runs ({})",
                            h.describe(),
                            path.display()
                        ));
                        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    }
                    _ => return Err(in_use(dir, &path, holder.as_ref())),
                }
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Err(in_use(dir, &path, Holder::read(&path).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_holder_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let report = Reporter::silent();
        let lock = acquire(dir.path(), &report).unwrap();
        let err = acquire(dir.path(), &report).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        // This process's own lock is not in the way; another live process's is.
        refuse_if_in_use(dir.path()).unwrap();
        let parent = json!({"pid": std::os::unix::process::parent_id(), "host": host_name()});
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(LOCK_FILE), parent.to_string()).unwrap();
        assert!(refuse_if_in_use(other.path()).is_err());
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        refuse_if_in_use(dir.path()).unwrap();
        let _again = acquire(dir.path(), &report).unwrap();
    }

    #[test]
    fn a_lock_of_a_process_that_is_gone_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A child that has exited: its pid names no process (or, if reused, one with another start time).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let stale = json!({"pid": pid, "start_ticks": 1, "host": host_name()});
        std::fs::write(dir.path().join(LOCK_FILE), stale.to_string()).unwrap();
        refuse_if_in_use(dir.path()).unwrap();
        let (report, lines) = Reporter::collecting();
        let _lock = acquire(dir.path(), &report).unwrap();
        assert!(lines.lock().unwrap()[0].contains("taking over the lock of process"));
        let holder = Holder::read(&dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(holder.pid, std::process::id());
        // Negative control: a lock of another host is never taken over.
        drop(_lock);
        let other = json!({"pid": pid, "host": "elsewhere"});
        std::fs::write(dir.path().join(LOCK_FILE), other.to_string()).unwrap();
        let err = acquire(dir.path(), &Reporter::silent()).unwrap_err();
        assert!(err.to_string().contains("on elsewhere"), "{err}");
    }
}
