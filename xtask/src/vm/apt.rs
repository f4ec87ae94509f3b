//! Debian's kernel packages, through an apt configuration of our own (sources,
//! lists and cache under target/vm/apt) so the system's sources stay untouched.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::setup::run;

/// Every suite one of the kernel series comes from; the newest build of a
/// series may be in the security or backports suite rather than the release.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
";

pub struct Apt {
    dir: PathBuf,
    updated: bool,
}

/// One downloadable build: package name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub version: String,
}

impl Apt {
    pub fn new(dir: &Path) -> Result<Self> {
        for sub in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("sources.list"), SOURCES)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            updated: false,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = &self.dir;
        for (key, value) in [
            ("Dir::Etc::sourcelist", d.join("sources.list")),
            ("Dir::Etc::sourceparts", d.join("sources.list.d")),
            ("Dir::State::Lists", d.join("lists")),
            ("Dir::Cache", d.join("cache")),
        ] {
            cmd.arg("-o").arg(format!("{key}={}", value.display()));
        }
        // Downloads land in directories _apt may not enter; we are root anyway.
        cmd.args(["-o", "APT::Sandbox::User=root", "-q"]);
        cmd
    }

    /// Fetches the indexes once per run.
    pub fn update(&mut self) -> Result<()> {
        if !self.updated {
            run(self.command("apt-get").arg("update"))?;
            self.updated = true;
        }
        Ok(())
    }

    /// Every build of the packages whose names match `pattern` (an apt-cache
    /// regex), newest first.
    pub fn candidates(&mut self, pattern: &str) -> Result<Vec<Candidate>> {
        self.update()?;
        let names = output(
            self.command("apt-cache")
                .args(["search", "--names-only", pattern]),
        )?;
        let mut found = Vec::new();
        for name in names.lines().filter_map(|l| l.split(" - ").next()) {
            let madison = output(self.command("apt-cache").args(["madison", name]))?;
            for line in madison.lines() {
                if let Some(version) = line.split('|').nth(1) {
                    found.push(Candidate {
                        name: name.trim().to_owned(),
                        version: version.trim().to_owned(),
                    });
                }
            }
        }
        found.sort_by_key(|c| std::cmp::Reverse(version_key(&c.version)));
        found.dedup();
        Ok(found)
    }

    /// Downloads one build into `into`; returns the .deb's path.
    pub fn download(&self, candidate: &Candidate, into: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(into)?;
        let spec = format!("{}={}", candidate.name, candidate.version);
        run(self
            .command("apt-get")
            .args(["download", &spec])
            .current_dir(into))?;
        // apt names the file NAME_VERSION_ARCH.deb, with ':' escaped.
        let prefix = format!("{}_", candidate.name);
        std::fs::read_dir(into)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download {spec} left no .deb"))
    }
}

/// Orders Debian kernel versions (`6.1.192-3`, `6.12.117-1~deb12u1`,
/// `6.12.95-1~bpo12+1`) by their numbers: enough for one series' builds.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::version_key;

    #[test]
    fn newer_builds_sort_higher() {
        assert!(version_key("6.1.192-3") > version_key("6.1.176-1"));
        assert!(version_key("6.12.117-1~deb12u1") > version_key("6.12.95-1~bpo12+1"));
        assert!(version_key("5.10.262-1") > version_key("5.10.251-5"));
    }
}
