//! One daemon per node: an exclusive `flock` on a lock file, held for the
//! daemon's life. The kernel drops it when the process ends, however it
//! ends (SIGKILL, OOM), so a restart after a crash always gets it.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another conntracer daemon ({holder}) already traces this node (lock {path} is held): \
         stop it first, or use `conntracer trace` for an ad-hoc session next to it"
    )]
    Held { path: String, holder: String },
}

/// The held lock; released when dropped or when the process ends.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock at `path`. A file that cannot be created (a read-only
    /// root filesystem) leaves the daemon unlocked, with a warning: the
    /// lock guards against a mistake, it is not needed to trace.
    pub fn acquire(path: &Path) -> Result<Option<Self>, LockError> {
        let mut file = match open(path) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(
                    "cannot open the instance lock {} ({e}): a second daemon on this node would not be refused",
                    path.display()
                );
                return Ok(None);
            }
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "pid unknown".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(LockError::Held {
                path: path.display().to_string(),
                holder,
            });
        }
        // The holder's pid, for the next one's message.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Some(Self { _file: file }))
    }
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// `--lock-file`'s value, `none` for no lock.
pub fn lock_path(flag: &Path) -> Option<PathBuf> {
    (flag != Path::new("none")).then(|| flag.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let path =
            std::env::temp_dir().join(format!("conntracer-lock-{}/d.lock", std::process::id()));
        let first = InstanceLock::acquire(&path).unwrap().expect("lock taken");
        // flock locks belong to the open file description: a second open is refused.
        let err = InstanceLock::acquire(&path).err().expect("refused");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(InstanceLock::acquire(&path).unwrap().is_some());
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
