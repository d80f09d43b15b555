//! The datapath pinned in bpffs, so it outlives `lb`: flow state shared by every
//! generation of the programs, the current generation's listener and backend ids, and the
//! links that attach the programs to interfaces.
//!
//! Layout, under `--pin-dir` (default `/sys/fs/bpf/lb`):
//!
//! - `v<PIN_LAYOUT>/maps/<NAME>` — the flow state ([`PINNED_STATE`]): a restarted or upgraded
//!   `lb` loads its programs on these very maps.
//! - `v<PIN_LAYOUT>/config/{LISTENERS,BACKENDS}` — the running generation's listener and
//!   backend ids (flows name them): a new generation gives each listener and backend the id
//!   it had ([`Seeds`]), and its tail-call program arrays (pinned, they stay filled while no
//!   `lb` runs). A new generation stages its own under `config-next` and exchanges it with
//!   `config` once its programs are in the links.
//! - `v<PIN_LAYOUT>/links/<iface>:<program>` — XDP and tc links: they keep the programs
//!   attached while no `lb` runs, and a new generation swaps its programs into them
//!   (`bpf_link_update`, atomic: no packet meets no program).
//!
//! A directory of another layout is not adopted: its programs are detached and its flows
//! dropped, with a log line (see docs/datapath.md, "Restarts and upgrades").
use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, MapInfo},
};
use lb_common::{
    Backend, CtEntry, FlowKey, ListenerKey, PIN_LAYOUT, PersistEntry, PersistKey, RevEntry,
    map_names::{self as names, PINNED_STATE},
};

use super::{
    error::{DataplaneError, Result, map_err},
    maps::{map_mut, words_addr},
};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory of this layout.
#[derive(Debug, Clone)]
pub struct PinDir {
    base: PathBuf,
    root: PathBuf,
    /// The base directory, locked for as long as this process runs: two `lb` on one pin
    /// directory would take each other's links.
    _lock: std::sync::Arc<fs::File>,
}

/// The ids the running generation gave listeners and backends, read from its pins.
#[derive(Debug, Default, Clone)]
pub struct Seeds {
    pub listeners: Vec<(ListenerKey, u32)>,
    pub backends: Vec<((IpAddr, u16), u32)>,
}

/// A pinned state map whose size changed (`--conntrack-entries`, `--half-open-entries`): its
/// entries are copied into the new one once it exists.
pub struct Resized {
    pub name: &'static str,
    old: MapData,
}

impl PinDir {
    /// `base/v<PIN_LAYOUT>`, created if missing; `base` must be on a bpffs.
    pub fn open(base: &Path) -> Result<PinDir> {
        check_base(base)?;
        let root = base.join(format!("v{PIN_LAYOUT}"));
        for dir in ["maps", "links"] {
            fs::create_dir_all(root.join(dir)).map_err(io_err(&root.join(dir)))?;
        }
        let lock = std::sync::Arc::new(lock(base)?);
        Ok(PinDir { base: base.to_path_buf(), root, _lock: lock })
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    /// `links/<iface>:<program>`: bpffs refuses dots in names (reserved), and interface
    /// names have no colons, so a dot (a VLAN's `eth0.100`) becomes one.
    pub fn link(&self, iface: &str, program: &str) -> PathBuf {
        self.root.join("links").join(format!("{}:{program}", iface.replace('.', ":")))
    }

    /// Every link pinned now.
    pub fn links(&self) -> Vec<PathBuf> {
        let dir = self.root.join("links");
        fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect()
    }

    /// Whether an earlier generation left this layout's flow state here.
    pub fn has_state(&self) -> bool {
        self.map(names::CONNTRACK).exists()
    }

    /// Directories of other layouts under the base.
    pub fn other_layouts(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p != &self.root && is_layout_dir(p))
            .collect()
    }

    /// Check each pinned state map against the shape this `lb` gives it (`expected`: map
    /// type, key size, value size, max entries). A map of another size is unpinned and
    /// returned for its entries to be copied; one of another shape is unpinned and dropped.
    pub fn check_state(&self, expected: impl Fn(&str) -> Option<(u32, u32, u32, u32)>) -> Result<Vec<Resized>> {
        let mut resized = Vec::new();
        for name in PINNED_STATE {
            let path = self.map(name);
            let Ok(info) = MapInfo::from_pin(&path) else { continue };
            let Some((kind, key, value, entries)) = expected(name) else { continue };
            let shape = (info.map_type().map(|t| t as u32).unwrap_or(u32::MAX), info.key_size(), info.value_size());
            if shape != (kind, key, value) {
                tracing::warn!(
                    map = name,
                    pinned = ?shape,
                    expected = ?(kind, key, value),
                    "a pinned map of another shape under this layout: its flows are dropped"
                );
                fs::remove_file(&path).map_err(io_err(&path))?;
            } else if info.max_entries() != entries {
                tracing::info!(
                    map = name,
                    from = info.max_entries(),
                    to = entries,
                    "pinned map resized: its entries are copied into the new one"
                );
                let old = MapData::from_pin(&path).map_err(|e| DataplaneError::Pin(format!("{name}: {e}")))?;
                fs::remove_file(&path).map_err(io_err(&path))?;
                resized.push(Resized { name, old });
            }
        }
        Ok(resized)
    }

    /// The ids of the generation whose pins are here (none on a first start).
    pub fn seeds(&self) -> Seeds {
        let mut seeds = Seeds::default();
        let dir = self.root.join("config");
        if let Ok(data) = MapData::from_pin(dir.join(names::LISTENERS))
            && let Ok(map) = BpfHashMap::<_, ListenerKey, u32>::try_from(Map::HashMap(data))
        {
            seeds.listeners = map.iter().flatten().collect();
        }
        if let Ok(data) = MapData::from_pin(dir.join(names::BACKENDS))
            && let Ok(map) = Array::<_, Backend>::try_from(Map::Array(data))
        {
            seeds.backends = (0..map.len())
                .filter_map(|id| map.get(&id, 0).ok().filter(|b| b.family != 0).map(|b| (b, id)))
                .map(|(b, id)| ((words_addr(&b.addr, b.family), u16::from_be(b.port)), id))
                .collect();
        }
        seeds
    }

    /// Pin `ebpf`'s generation under `config-next`: its listener and backend ids, and its
    /// tail-call program arrays (the kernel empties a program array when its last user
    /// reference goes: unpinned, they would empty when `lb` exits, and every new flow, which
    /// takes a tail call, would be dropped until the next `lb` runs).
    pub fn stage_config(&self, ebpf: &Ebpf) -> Result<()> {
        let next = self.root.join("config-next");
        let _ = fs::remove_dir_all(&next);
        fs::create_dir_all(&next).map_err(io_err(&next))?;
        for name in CONFIG_PINS {
            let map = ebpf.map(name).ok_or(DataplaneError::Missing { what: name })?;
            map.pin(next.join(name)).map_err(|e| DataplaneError::Pin(format!("pinning {name}: {e}")))?;
        }
        Ok(())
    }

    /// Make the staged generation the running one (its programs are in the links now): one
    /// atomic exchange of `config-next` and `config`, then the previous one goes (and with
    /// its pins its program arrays, which no attached program uses any more).
    pub fn commit_config(&self) -> Result<()> {
        let (next, current) = (self.root.join("config-next"), self.root.join("config"));
        if current.exists() {
            exchange(&next, &current).map_err(io_err(&current))?;
            let _ = fs::remove_dir_all(&next);
            Ok(())
        } else {
            fs::rename(&next, &current).map_err(io_err(&current))
        }
    }

    /// Remove the directories of other layouts: their links go (their programs leave the
    /// interfaces) and their flows with them.
    pub fn clear_other_layouts(&self) {
        for dir in self.other_layouts() {
            tracing::warn!(
                dir = %dir.display(),
                layout = PIN_LAYOUT,
                "a datapath pinned under another layout: detached and cleared (its flows are not carried over)"
            );
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove");
            }
        }
    }

    /// Remove everything `lb` pinned under `base` (links first: the programs leave the
    /// interfaces as their last reference goes), then the directories, which must then be
    /// empty: nothing but what `lb` pins is removed. Returns how many links were removed.
    pub fn remove_all(base: &Path) -> Result<usize> {
        if !base.exists() {
            return Ok(0);
        }
        check_base(base)?;
        let _lock = lock(base)?;
        let ours = |sub: &str, name: &str| match sub {
            "links" => true,
            "maps" => PINNED_STATE.contains(&name),
            _ => CONFIG_PINS.contains(&name),
        };
        let mut links = 0;
        for layout in fs::read_dir(base).map_err(io_err(base))?.flatten().map(|e| e.path()).filter(|p| is_layout_dir(p))
        {
            for sub in ["links", "maps", "config", "config-next"] {
                let dir = layout.join(sub);
                for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if ours(sub, &name) {
                        fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                        links += usize::from(sub == "links");
                    }
                }
                if dir.exists() {
                    fs::remove_dir(&dir).map_err(io_err(&dir))?;
                }
            }
            fs::remove_dir(&layout).map_err(io_err(&layout))?;
        }
        fs::remove_dir(base).map_err(io_err(base))?;
        Ok(links)
    }
}

/// What a generation pins under `config`.
const CONFIG_PINS: [&str; 4] = [names::LISTENERS, names::BACKENDS, names::PROGS, names::TC_PROGS];

/// `v<number>`: a layout's directory.
fn is_layout_dir(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('v'))
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// An exclusive lock on the directory `dir`, or an error if another process holds it.
fn lock(dir: &Path) -> Result<fs::File> {
    use std::os::fd::AsRawFd as _;
    let f = fs::File::open(dir).map_err(io_err(dir))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DataplaneError::Pin(format!(
            "{} is in use by another lb (one lb per pin directory; stop it first)",
            dir.display()
        )));
    }
    Ok(f)
}

/// `base` must be a directory inside a bpffs (created if missing), not the mount itself:
/// `lb` removes what it finds there on an upgrade and on `lb uninstall`.
fn check_base(base: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let mut probe = base;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let on_bpffs = nix::sys::statfs::statfs(probe).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    if !on_bpffs {
        return Err(DataplaneError::Pin(format!(
            "{} is not on a bpffs: mount one (mount -t bpf bpf /sys/fs/bpf; in a pod, mount the \
             host's /sys/fs/bpf) or run with --no-pin (the datapath then stops with lb)",
            base.display()
        )));
    }
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    if base.exists() && dev(base) != base.parent().and_then(dev) {
        return Err(DataplaneError::Pin(format!(
            "{} is the root of a bpffs: give a directory of its own inside it (e.g. /sys/fs/bpf/lb)",
            base.display()
        )));
    }
    Ok(())
}

/// The listener and backend ids the pinned flow state names.
#[derive(Debug, Default)]
pub struct Named {
    pub listeners: std::collections::BTreeSet<u32>,
    pub backends: std::collections::BTreeSet<u32>,
}

/// The ids named by `ebpf`'s (pinned) flows, half-open flows and persistence entries.
pub fn named_ids(ebpf: &mut Ebpf) -> Named {
    let mut named = Named::default();
    for name in [names::CONNTRACK, names::HALF_OPEN] {
        if let Ok(map) = map_mut::<BpfHashMap<&mut MapData, FlowKey, CtEntry>>(ebpf, name) {
            for (_, e) in map.iter().flatten() {
                named.listeners.insert(e.listener_id);
                named.backends.insert(e.backend_id);
            }
        }
    }
    if let Ok(map) = map_mut::<BpfHashMap<&mut MapData, PersistKey, PersistEntry>>(ebpf, names::PERSIST) {
        for (k, e) in map.iter().flatten() {
            named.listeners.insert(k.listener_id);
            named.backends.insert(e.backend_id);
        }
    }
    named
}

impl Resized {
    /// Copy the old map's entries into `ebpf`'s new map of the same name.
    pub fn copy_into(self, ebpf: &mut Ebpf) -> Result<usize> {
        let Resized { name, old } = self;
        match name {
            names::CONNTRACK | names::HALF_OPEN => copy::<FlowKey, CtEntry>(ebpf, name, old),
            names::REVERSE_NAT | names::HALF_OPEN_REV => copy::<FlowKey, RevEntry>(ebpf, name, old),
            names::PERSIST => copy::<PersistKey, PersistEntry>(ebpf, name, old),
            _ => Ok(0),
        }
    }
}

fn copy<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, old: MapData) -> Result<usize> {
    let old = BpfHashMap::<_, K, V>::try_from(Map::LruHashMap(old)).map_err(map_err(name))?;
    let mut new: BpfHashMap<&mut MapData, K, V> = map_mut(ebpf, name)?;
    let mut copied = 0;
    for (k, v) in old.iter().flatten() {
        // A smaller map takes what fits (LRU: the rest evicts the least recently used).
        if new.insert(k, v, 0).is_ok() {
            copied += 1;
        }
    }
    Ok(copied)
}

/// Swap two paths atomically (`renameat2(RENAME_EXCHANGE)`, which bpffs supports).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let (a, b) = (std::ffi::CString::new(a.as_os_str().as_bytes())?, std::ffi::CString::new(b.as_os_str().as_bytes())?);
    // SAFETY: two NUL-terminated paths, relative to no directory fd.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataplaneError + '_ {
    move |e| DataplaneError::Pin(format!("{}: {e}", path.display()))
}
