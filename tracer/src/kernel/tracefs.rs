//! Finding (or mounting) tracefs and reading tracepoint formats from it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::format::{FormatError, TracepointFormat};

/// Where tracefs lives on current kernels, and where older setups reach it.
const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it on /sys/kernel/tracing failed ({0}); \
         mount it with `mount -t tracefs nodev /sys/kernel/tracing` (needs CAP_SYS_ADMIN), \
         or in a container mount the host's /sys/kernel/tracing"
    )]
    NotMounted(io::Error),
    #[error("tracepoint {0} does not exist on this kernel")]
    MissingTracepoint(String),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        error: io::Error,
    },
    #[error("cannot parse {path}")]
    Parse {
        path: String,
        #[source]
        error: FormatError,
    },
}

/// A directory holding `events/<system>/<event>/format`: live tracefs, or a
/// recorded copy for tests.
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
    /// True when we mounted it (and so `check` can say so).
    pub mounted_by_us: bool,
}

impl Tracefs {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            mounted_by_us: false,
        }
    }

    /// The live tracefs, mounting it when nothing is mounted and we may.
    pub fn locate_or_mount() -> Result<Self, TracefsError> {
        if let Some(found) = Self::locate() {
            return Ok(found);
        }
        mount_tracefs(Path::new(MOUNT_POINTS[0])).map_err(TracefsError::NotMounted)?;
        tracing::info!("mounted tracefs on {}", MOUNT_POINTS[0]);
        Ok(Self {
            root: MOUNT_POINTS[0].into(),
            mounted_by_us: true,
        })
    }

    /// The live tracefs if it is mounted.
    pub fn locate() -> Option<Self> {
        MOUNT_POINTS
            .iter()
            .map(Path::new)
            .find(|p| p.join("events").is_dir())
            .map(Self::at)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `system/event`, e.g. `sock/inet_sock_set_state`.
    pub fn format(&self, tracepoint: &str) -> Result<TracepointFormat, TracefsError> {
        let path = self.root.join("events").join(tracepoint).join("format");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TracefsError::MissingTracepoint(tracepoint.to_owned()));
            }
            Err(error) => {
                return Err(TracefsError::Read {
                    path: path.display().to_string(),
                    error,
                });
            }
        };
        TracepointFormat::parse(&text).map_err(|error| TracefsError::Parse {
            path: path.display().to_string(),
            error,
        })
    }
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    super::mount::mount_pseudo_fs("tracefs", target)
}
