//! The directory's objects as one [`ObjectSet`] (each file's, in file-name order), patched in
//! place where files changed: a change costs the files it touches, not the directory.
use std::{
    collections::BTreeMap,
    ops::Bound,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{ManifestError, ObjectSet};

/// The merged set and where each file's objects lie in it.
#[derive(Debug, Default)]
pub(super) struct Merged {
    /// Handed out shared: the agent drops its handle after the build, so the next patch
    /// finds it unshared and changes it in place (a handle still held costs one copy).
    set: Arc<ObjectSet>,
    /// How many objects of each kind each file gave, in the set's order.
    counts: BTreeMap<PathBuf, Counts>,
}

/// One file's objects: the last version that parsed and the errors of the last read.
pub(super) type FileObjects<'a> = (&'a ObjectSet, &'a [ManifestError]);

/// How many objects of each kind one file gave: errors, then the kinds in [`ObjectSet`]'s
/// order.
type Counts = [u32; KINDS];
const KINDS: usize = 10;

/// `$f!(index, field)` for each kind a file gives (`errors` from the read, the rest from the
/// last good version).
macro_rules! each_kind {
    ($f:ident) => {
        $f!(1, services);
        $f!(2, endpoint_slices);
        $f!(3, acls);
        $f!(4, ingresses);
        $f!(5, ingress_classes);
        $f!(6, alb_configs);
        $f!(7, secrets);
        $f!(8, nodes);
        $f!(9, ignored);
    };
}

fn counts((good, errors): FileObjects<'_>) -> Counts {
    let mut c = [0; KINDS];
    c[0] = errors.len() as u32;
    macro_rules! count {
        ($i:literal, $field:ident) => {
            c[$i] = good.$field.len() as u32
        };
    }
    each_kind!(count);
    c
}

impl Merged {
    /// The merged set, shared.
    pub fn snapshot(&self) -> Arc<ObjectSet> {
        self.set.clone()
    }

    /// Merge every file again (after a full listing, or when many files changed).
    pub fn rebuild<'a>(&mut self, files: impl Iterator<Item = (&'a PathBuf, FileObjects<'a>)>) {
        let mut out = ObjectSet::default();
        self.counts.clear();
        for (path, (good, errors)) in files {
            self.counts.insert(path.clone(), counts((good, errors)));
            out.errors.extend_from_slice(errors);
            macro_rules! extend {
                ($i:literal, $field:ident) => {
                    out.$field.extend(good.$field.iter().cloned())
                };
            }
            each_kind!(extend);
        }
        self.set = Arc::new(out);
    }

    /// Put `path`'s objects in place of those it gave before (`None`: the file is gone).
    pub fn patch(&mut self, path: &Path, now: Option<FileObjects<'_>>) {
        let mut at = [0usize; KINDS];
        for c in self.counts.range::<Path, _>((Bound::Unbounded, Bound::Excluded(path))).map(|(_, c)| c) {
            for (a, n) in at.iter_mut().zip(c) {
                *a += *n as usize;
            }
        }
        let old = self.counts.get(path).copied().unwrap_or_default();
        let set = Arc::make_mut(&mut self.set);
        let no_errors: &[ManifestError] = &[];
        let empty = ObjectSet::default();
        let (good, errors) = now.unwrap_or((&empty, no_errors));
        set.errors.splice(at[0]..at[0] + old[0] as usize, errors.iter().cloned());
        macro_rules! splice {
            ($i:literal, $field:ident) => {
                set.$field.splice(at[$i]..at[$i] + old[$i] as usize, good.$field.iter().cloned())
            };
        }
        each_kind!(splice);
        match now {
            Some(objects) => self.counts.insert(path.to_path_buf(), counts(objects)),
            None => self.counts.remove(path),
        };
    }
}
