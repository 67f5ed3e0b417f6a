//! Debian packages for the box, for either architecture, without touching
//! the build host: a private apt state under the cache (its own sources,
//! lists and architecture), `apt-get download`, `dpkg-deb -x`. Nothing is
//! installed and no root is needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{run, step};

pub struct Apt {
    dir: PathBuf,
    cache: PathBuf,
    /// Debian's name for the architecture: amd64, arm64.
    pub arch: &'static str,
}

/// The host's Debian release (the one whose tools build the image).
fn codename() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string())))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

impl Apt {
    pub fn new(cache: &Path, arch: &'static str) -> Result<Apt> {
        let dir = cache.join(format!("apt-{arch}"));
        for d in ["lists/partial", "archives/partial", "sources.list.d", "preferences.d"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let release = codename();
        let key = "/usr/share/keyrings/debian-archive-keyring.gpg";
        // non-free-firmware: the Raspberry Pi's boot firmware
        fs::write(
            dir.join("sources.list"),
            format!(
                "deb [arch={arch} signed-by={key}] http://deb.debian.org/debian {release} main non-free-firmware\n\
                 deb [arch={arch} signed-by={key}] http://deb.debian.org/debian {release}-updates main\n\
                 deb [arch={arch} signed-by={key}] http://deb.debian.org/debian-security {release}-security main\n"
            ),
        )?;
        if !dir.join("status").exists() {
            fs::write(dir.join("status"), "")?;
        }
        let apt = Apt { dir, cache: cache.to_path_buf(), arch };
        let has_lists = fs::read_dir(apt.dir.join("lists"))?.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("_Packages")));
        if !has_lists {
            apt.update()?;
        }
        Ok(apt)
    }

    fn cmd(&self, tool: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(tool);
        for o in [
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}"),
            format!("Dir::Cache::archives={d}/archives"),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
            format!("Dir::Etc::Preferences={d}/preferences"),
            format!("Dir::Etc::PreferencesParts={d}/preferences.d"),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            "APT::Sandbox::User=root".into(),
        ] {
            c.arg("-o").arg(o);
        }
        c
    }

    fn update(&self) -> Result<()> {
        step(&format!("apt: package lists for {}", self.arch));
        run(self.cmd("apt-get").args(["-q", "update"]))?;
        Ok(())
    }

    /// The kernel package Debian's `linux-image-<arch>` points at now.
    pub fn kernel_package(&self) -> Result<String> {
        let deps = run(self.cmd("apt-cache").args(["depends", &format!("linux-image-{}", self.arch)]))?;
        deps.lines()
            .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|d| d.starts_with("linux-image-")).map(str::to_string))
            .with_context(|| format!("apt knows no linux-image-{}", self.arch))
    }

    /// Downloads (once) and unpacks (once) a package; returns its tree.
    pub fn package(&self, name: &str) -> Result<PathBuf> {
        let tree = self.cache.join(format!("{name}_{}.d", self.arch));
        if tree.is_dir() {
            return Ok(tree);
        }
        let debs = self.cache.join(format!("debs-{}", self.arch));
        fs::create_dir_all(&debs)?;
        let find = || -> Result<Option<PathBuf>> {
            Ok(fs::read_dir(&debs)?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(&format!("{name}_")) && f.ends_with(".deb"))
            }))
        };
        let deb = match find()? {
            Some(d) => d,
            None => {
                step(&format!("downloading {name} ({})", self.arch));
                if run(self.cmd("apt-get").args(["-q", "download", name]).current_dir(&debs)).is_err() {
                    // lists too old for the mirror (security updates move on)
                    self.update()?;
                    run(self.cmd("apt-get").args(["-q", "download", name]).current_dir(&debs))?;
                }
                find()?.with_context(|| format!("apt-get download {name} left no .deb"))?
            }
        };
        let tmp = self.cache.join(format!("{name}_{}.tmp", self.arch));
        let _ = fs::remove_dir_all(&tmp);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
        fs::rename(&tmp, &tree)?;
        Ok(tree)
    }
}

/// Copies `wanted` modules (and what they depend on) from the unpacked
/// kernel into the initramfs tree, then lets depmod index them there
/// (modules.dep, modules.alias). Returns how many were copied.
pub fn modules(kernel: &Path, version: &str, wanted: &[&str], root: &Path) -> Result<usize> {
    run(Command::new("depmod").arg("-b").arg(kernel).arg(version))?;
    let mut files = std::collections::BTreeSet::new();
    for m in wanted {
        let out = run(Command::new("modprobe").arg("-d").arg(kernel).args(["-S", version, "--show-depends", m]))
            .with_context(|| format!("module {m} is not in kernel {version}"))?;
        for line in out.lines() {
            if let Some(path) = line.strip_prefix("insmod ") {
                files.insert(path.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    }
    let base = kernel.join("lib/modules").join(version);
    for f in &files {
        let rel = Path::new(f).strip_prefix(&base).with_context(|| format!("{f} is outside {}", base.display()))?;
        let dest = root.join("lib/modules").join(version).join(rel);
        fs::create_dir_all(dest.parent().expect("has parent"))?;
        fs::copy(f, &dest)?;
    }
    for f in ["modules.builtin", "modules.builtin.modinfo", "modules.order"] {
        let _ = fs::copy(base.join(f), root.join("lib/modules").join(version).join(f));
    }
    run(Command::new("depmod").arg("-b").arg(root).arg(version))?;
    Ok(files.len())
}
