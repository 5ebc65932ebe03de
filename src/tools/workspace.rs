//! The path sandbox of the file tools: every path is relative to the
//! workspace, and what it names must really be inside it.
//!
//! Three checks, because each alone has a hole: `..` is resolved lexically
//! (never handed to the OS, where it would follow a symlink first); the
//! result is canonicalized and must lie under the canonical root (symlinks
//! pointing out); and the file is opened without following a final symlink
//! and its real path re-read from `/proc/self/fd`, so a symlink swapped in
//! between the check and the open cannot escape either.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::Fail;

const LEAVES: &str = "path leaves the workspace";

#[derive(Clone)]
pub(super) struct Workspace {
    /// Canonical.
    root: Arc<Path>,
}

impl Workspace {
    pub(super) fn create(path: &Path) -> Result<Workspace, String> {
        fs::create_dir_all(path)
            .map_err(|e| format!("cannot create the workspace {}: {e}", path.display()))?;
        let root = fs::canonicalize(path)
            .map_err(|e| format!("cannot resolve the workspace {}: {e}", path.display()))?;
        Ok(Workspace { root: root.into() })
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// `path` made relative to the root without touching the filesystem.
    /// Empty for the root itself.
    pub(super) fn lexical(&self, path: &str) -> Result<PathBuf, Fail> {
        if path.contains('\0') {
            return Err(Fail::error("a path cannot contain NUL"));
        }
        let mut out = PathBuf::new();
        for part in Path::new(path).components() {
            match part {
                Component::Normal(name) => out.push(name),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !out.pop() {
                        return Err(Fail::refused(LEAVES));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(Fail::refused(
                        "absolute path (paths are relative to the workspace)",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The canonical path of an existing file or folder inside the workspace.
    pub(super) fn existing(&self, path: &str) -> Result<PathBuf, Fail> {
        let relative = self.lexical(path)?;
        let real = fs::canonicalize(self.root.join(&relative)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.missing(&relative, path),
            _ => Fail::error(format!("cannot open {path}: {e}")),
        })?;
        self.inside(&real)?;
        Ok(real)
    }

    /// A missing path is refused, not "not found", when the part of it that
    /// exists already leads out: what is outside is none of the model's
    /// business, not even whether it exists.
    fn missing(&self, relative: &Path, path: &str) -> Fail {
        let outside = relative
            .ancestors()
            .skip(1)
            .find_map(|a| fs::canonicalize(self.root.join(a)).ok())
            .is_some_and(|real| !real.starts_with(&self.root));
        if outside {
            Fail::refused(LEAVES)
        } else {
            Fail::error(format!("no such file or folder: {path}"))
        }
    }

    fn inside(&self, real: &Path) -> Result<(), Fail> {
        if real.starts_with(&self.root) {
            Ok(())
        } else {
            Err(Fail::refused(LEAVES))
        }
    }

    /// The path as the model should see it: relative to the root.
    pub(super) fn show(&self, real: &Path) -> String {
        match real.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => real.display().to_string(),
        }
    }

    /// Opens an existing regular file for reading.
    pub(super) fn open_read(&self, path: &str) -> Result<File, Fail> {
        let real = self.existing(path)?;
        // Non-blocking, so a FIFO planted in the workspace cannot hang the open.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&real)
            .map_err(|e| open_error(path, e))?;
        self.opened_inside(&file, &real)?;
        let meta = file
            .metadata()
            .map_err(|e| Fail::error(format!("cannot read {path}: {e}")))?;
        if meta.is_dir() {
            return Err(Fail::error(format!("{path} is a folder")));
        }
        if !meta.is_file() {
            return Err(Fail::error(format!("{path} is not a regular file")));
        }
        Ok(file)
    }

    /// Opens `path` for writing (not truncated yet: the caller truncates once
    /// the file is known to be inside), creating missing folders one at a
    /// time, each inside a folder already checked, so no folder is ever
    /// created through a symlink that points out. Returns the file and the
    /// path relative to the root.
    pub(super) fn open_write(&self, path: &str) -> Result<(File, String), Fail> {
        let relative = self.lexical(path)?;
        let Some(name) = relative.file_name() else {
            return Err(Fail::error(format!("{path} is a folder")));
        };
        let mut dir = self.root.to_path_buf();
        if let Some(parent) = relative.parent() {
            for part in parent.components() {
                dir = self.step(&dir.join(part))?;
            }
        }
        let mut target = dir.join(name);
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // A symlink that resolves nowhere would create its target,
                // wherever that is.
                target = fs::canonicalize(&target).map_err(|_| {
                    Fail::refused(format!("{path} is a symlink that does not resolve"))
                })?;
                self.inside(&target)?;
            }
            Ok(meta) if meta.is_dir() => return Err(Fail::error(format!("{path} is a folder"))),
            _ => {}
        }
        // Non-blocking: opening a FIFO without a reader fails instead of waiting.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&target)
            .map_err(|e| open_error(path, e))?;
        self.opened_inside(&file, &target)?;
        let meta = file
            .metadata()
            .map_err(|e| Fail::error(format!("cannot write {path}: {e}")))?;
        if !meta.is_file() {
            return Err(Fail::error(format!("{path} is not a regular file")));
        }
        // A hard link is the one way a file inside can be a file outside.
        if meta.nlink() > 1 {
            return Err(Fail::refused(format!("{path} has other hard links")));
        }
        Ok((file, self.show(&target)))
    }

    /// One folder of a path being written: an existing folder (through a
    /// symlink only if it stays inside) or a new one.
    fn step(&self, next: &Path) -> Result<PathBuf, Fail> {
        match fs::symlink_metadata(next) {
            Ok(meta) if meta.is_dir() => Ok(next.to_path_buf()),
            Ok(meta) if meta.file_type().is_symlink() => {
                let real = fs::canonicalize(next).map_err(|_| {
                    Fail::refused(format!(
                        "{} is a symlink that does not resolve",
                        self.show(next)
                    ))
                })?;
                self.inside(&real)?;
                if !real.is_dir() {
                    return Err(Fail::error(format!("{} is not a folder", self.show(next))));
                }
                Ok(real)
            }
            Ok(_) => Err(Fail::error(format!("{} is not a folder", self.show(next)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::create_dir(next) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Fail::error(format!(
                            "cannot create {}: {e}",
                            self.show(next)
                        )))
                    }
                }
                // Whatever is there now (a racing symlink?) is checked again.
                let real = fs::canonicalize(next)
                    .map_err(|e| Fail::error(format!("cannot create {}: {e}", self.show(next))))?;
                self.inside(&real)?;
                Ok(real)
            }
            Err(e) => Err(Fail::error(format!("cannot open {}: {e}", self.show(next)))),
        }
    }

    /// Whether an opened file really is inside: its path as the kernel knows
    /// it, or, without /proc, the identity of the checked path.
    pub(super) fn opened_inside(&self, file: &File, checked: &Path) -> Result<(), Fail> {
        match fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            Ok(real) => self.inside(&real),
            Err(_) => {
                let (opened, expected) = (file.metadata(), fs::metadata(checked));
                match (opened, expected) {
                    (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino() => Ok(()),
                    _ => Err(Fail::refused(LEAVES)),
                }
            }
        }
    }
}

fn open_error(path: &str, e: io::Error) -> Fail {
    // O_NOFOLLOW met a symlink put there after the path was checked.
    if e.raw_os_error() == Some(libc::ELOOP) {
        return Fail::refused(format!("{path} became a symlink"));
    }
    match e.kind() {
        io::ErrorKind::NotFound => Fail::error(format!("no such file or folder: {path}")),
        _ => Fail::error(format!("cannot open {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Outcome;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(dir.path()).unwrap();
        (dir, ws)
    }

    #[test]
    fn dot_dot_is_resolved_without_the_filesystem() {
        let (_dir, ws) = ws();
        assert_eq!(ws.lexical("a/../b/./c").unwrap(), PathBuf::from("b/c"));
        assert_eq!(ws.lexical(".").unwrap(), PathBuf::new());
        let fail = ws.lexical("a/../../etc").unwrap_err();
        assert_eq!(fail.outcome, Outcome::Refused);
        assert_eq!(fail.message, "refused: path leaves the workspace");
        assert_eq!(ws.lexical("/etc").unwrap_err().outcome, Outcome::Refused);
    }

    #[test]
    fn a_symlink_to_an_inside_folder_may_be_written_through() {
        let (dir, ws) = ws();
        fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("alias")).unwrap();
        let (_, shown) = ws.open_write("alias/new/file.txt").unwrap();
        assert_eq!(shown, "real/new/file.txt");
        assert!(dir.path().join("real/new/file.txt").is_file());
    }

    #[test]
    fn a_dangling_symlink_is_not_written_through() {
        let (dir, ws) = ws();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("created");
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let fail = ws.open_write("link").unwrap_err();
        assert_eq!(fail.outcome, Outcome::Refused);
        assert!(!target.exists());
    }

    #[test]
    fn a_hard_link_is_not_written_through() {
        let (dir, ws) = ws();
        fs::write(dir.path().join("a"), "x").unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(ws.open_write("b").unwrap_err().outcome, Outcome::Refused);
    }
}
