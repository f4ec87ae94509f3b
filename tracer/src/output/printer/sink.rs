//! Where the printer's records go, one drain's batch at a time. A batch is
//! all or nothing where the output is a regular file: when a write fails
//! half-way (a full disk), the file is cut back to the end of the last
//! complete batch, so what was written before stays whole, readable lines.

use std::{
    fs::File,
    io::{self, Seek as _, SeekFrom, Write},
    mem::ManuallyDrop,
    os::fd::FromRawFd as _,
};

pub trait Sink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()>;
}

/// Any writer, with no rollback.
pub struct Plain(pub Box<dyn Write>);

impl Sink for Plain {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.0.write_all(batch)?;
        self.0.flush()
    }
}

/// Standard output written directly (no buffer of std's left to flush at
/// exit), cut back to the last complete batch on failure if it is a file.
pub struct Stdout {
    file: ManuallyDrop<File>,
    /// Where the last complete batch ended, when stdout is a regular file.
    committed: Option<u64>,
}

impl Stdout {
    /// Fd 1, as the process got it.
    pub fn open() -> Self {
        // SAFETY: fd 1 stays open for the process's life; ManuallyDrop
        // never closes it.
        let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(libc::STDOUT_FILENO) });
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let committed = if regular {
            file.stream_position().ok()
        } else {
            None
        };
        Self { file, committed }
    }
}

impl Sink for Stdout {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self.file.write_all(batch) {
            Ok(()) => {
                if self.committed.is_some() {
                    self.committed = self.file.stream_position().ok();
                }
                Ok(())
            }
            Err(e) => {
                if let Some(end) = self.committed {
                    let _ = self.file.set_len(end);
                    let _ = self.file.seek(SeekFrom::Start(end));
                }
                Err(e)
            }
        }
    }
}
