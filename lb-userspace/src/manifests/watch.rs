//! inotify on a manifest directory and its subdirectories: which files changed since the last
//! look, or that only a full listing can say (the queue overflowed, a directory changed, or a
//! ConfigMap mount swapped its `..data` link).
use std::{
    collections::{BTreeSet, HashMap},
    os::fd::{AsFd, AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor},
};
use tokio::io::unix::AsyncFd;

/// What changed since the last [`DirWatch::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Changes {
    /// These files (possibly none).
    Files(BTreeSet<PathBuf>),
    /// Something only a full listing can tell.
    Unknown,
}

/// The inotify instance, registered with tokio once the first wait needs it (a source made
/// outside a runtime, as in tests, still works by polling).
enum Fd {
    Plain(Inotify),
    Async(AsyncFd<Raw>),
    /// Between the two (never seen outside `readable`).
    Moving,
}

struct Raw(Inotify);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct DirWatch {
    fd: Fd,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch").field("dirs", &self.dirs.len()).finish()
    }
}

/// The events that can change what a directory's manifests say. A file's writes are taken
/// when it is closed (not at each write: a half-written file is not read). Not attribute
/// changes: `cp` and `std::fs::copy` set the mode of a file they have just truncated, before
/// writing it, and reading it then took its objects away until the close (a permission that
/// makes a file readable is seen at the next full listing, within a minute).
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

impl DirWatch {
    pub fn new() -> nix::Result<DirWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        Ok(DirWatch { fd: Fd::Plain(inotify), dirs: HashMap::new() })
    }

    fn inotify(&self) -> &Inotify {
        match &self.fd {
            Fd::Plain(i) => i,
            Fd::Async(a) => &a.get_ref().0,
            Fd::Moving => unreachable!("only inside readable"),
        }
    }

    /// Watch `dir` too (again: the same watch).
    pub fn add(&mut self, dir: &Path) -> nix::Result<()> {
        let wd = self.inotify().add_watch(dir, mask())?;
        self.dirs.insert(wd, dir.to_path_buf());
        Ok(())
    }

    /// Resolves when inotify has events to take.
    pub async fn readable(&mut self) {
        if let Fd::Plain(_) = self.fd
            && let Fd::Plain(inotify) = std::mem::replace(&mut self.fd, Fd::Moving)
        {
            // SAFETY: `Raw` owns the inotify descriptor and gives that same descriptor for as
            // long as it lives, which is as long as the AsyncFd that owns it.
            match unsafe { AsyncFd::register_with_interest(Raw(inotify), tokio::io::Interest::READABLE) } {
                Ok(fd) => self.fd = Fd::Async(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot wait for inotify: the directory is looked at on the poll timer");
                    return std::future::pending().await;
                }
            }
        }
        if let Fd::Async(fd) = &self.fd {
            match fd.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// The changes since the last call.
    pub fn take(&mut self) -> Changes {
        let mut files = BTreeSet::new();
        let mut unknown = false;
        loop {
            match self.inotify().read_events() {
                Ok(events) => {
                    for event in events {
                        match self.classify(&event) {
                            Some(Some(path)) => {
                                files.insert(path);
                            }
                            Some(None) => {}
                            None => unknown = true,
                        }
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    unknown = true;
                    break;
                }
            }
        }
        if unknown { Changes::Unknown } else { Changes::Files(files) }
    }

    /// The file `event` is about (`Some(None)`: nothing that matters), or `None` when only a
    /// full listing can say.
    fn classify(&self, event: &InotifyEvent) -> Option<Option<PathBuf>> {
        let whole = AddWatchFlags::IN_Q_OVERFLOW
            | AddWatchFlags::IN_ISDIR
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_IGNORED
            | AddWatchFlags::IN_UNMOUNT;
        if event.mask.intersects(whole) {
            return None;
        }
        let dir = self.dirs.get(&event.wd)?;
        let name = event.name.as_ref()?.to_string_lossy().into_owned();
        if name.starts_with("..") {
            // A ConfigMap mount's links (`..data`): its files changed behind their symlinks.
            return None;
        }
        if name.starts_with('.') {
            // Hidden files are not read (an atomic write's temporary file).
            return Some(None);
        }
        let path = dir.join(name);
        if event.mask.contains(AddWatchFlags::IN_CREATE) {
            // A new regular file is taken when it is closed; a new symlink now.
            let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            return Some(link.then_some(path));
        }
        Some(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(c: Changes) -> Vec<String> {
        match c {
            Changes::Files(f) => f.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect(),
            Changes::Unknown => panic!("a full listing asked for"),
        }
    }

    /// Written, renamed-over (an atomic write), removed files are named; a temporary hidden
    /// file is not; a new directory or a ConfigMap's `..data` swap asks for a full listing.
    #[test]
    fn names_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DirWatch::new().unwrap();
        w.add(dir.path()).unwrap();
        assert_eq!(w.take(), Changes::Files(BTreeSet::new()));
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        std::fs::write(dir.path().join(".b.yaml.tmp"), "y").unwrap();
        std::fs::rename(dir.path().join(".b.yaml.tmp"), dir.path().join("b.yaml")).unwrap();
        assert_eq!(files(w.take()), ["a.yaml", "b.yaml"]);
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert_eq!(files(w.take()), ["a.yaml"]);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(w.take(), Changes::Unknown);
        std::os::unix::fs::symlink("sub", dir.path().join("..data")).unwrap();
        assert_eq!(w.take(), Changes::Unknown);
    }

    /// A file copied over an existing one (truncated, its mode set, then written) is named
    /// once it is closed, not while it is empty.
    #[test]
    fn a_file_copied_over_is_named_when_written() {
        use std::{io::Write, os::unix::fs::PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.yaml");
        std::fs::write(&path, "old").unwrap();
        let mut w = DirWatch::new().unwrap();
        w.add(dir.path()).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(w.take(), Changes::Files(BTreeSet::new()), "nothing to read while it is empty");
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(files(w.take()), ["service.yaml"]);
    }
}
