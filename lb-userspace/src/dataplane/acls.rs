//! ACLs in the datapath: each named ACL gets a numeric id; its prefixes live in the `ACLS`
//! LPM trie under that id. An edit inserts the new prefixes before deleting the old ones.
use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Ebpf,
    maps::{
        MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::IpNet;
use lb_common::{AclData, map_names as names};

use super::{
    error::{DataplaneError, Result, map_err},
    maps::map_mut,
};
use crate::model::Acl;

#[derive(Debug, Default)]
pub struct AclState {
    /// Name → (id, prefixes loaded).
    loaded: BTreeMap<String, (u32, BTreeSet<IpNet>)>,
    next_id: u32,
}

/// What an apply changed.
pub struct Applied {
    /// ACLs whose prefixes changed (listeners using them are rewritten: emptiness may flip).
    pub changed: BTreeSet<String>,
    /// ACLs whose new prefixes could not be loaded (the trie is full): (name, whether its
    /// last good prefixes are still loaded, why).
    pub failed: Vec<(String, bool, DataplaneError)>,
}

impl AclState {
    /// The names of the loaded ACLs.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.loaded.keys().map(String::as_str)
    }

    /// The id of a loaded ACL and whether it is empty.
    pub fn id_of(&self, name: &str) -> Option<(u32, bool)> {
        self.loaded.get(name).map(|(id, set)| (*id, set.is_empty()))
    }

    /// Insert every ACL's new prefixes and delete the ones it no longer has. An ACL whose new
    /// prefixes do not all fit gets none of them: it keeps its last good ones (one that never
    /// loaded stays unknown, so no listener takes it for an empty list).
    pub fn apply(&mut self, ebpf: &mut Ebpf, acls: &BTreeMap<String, Acl>) -> Result<Applied> {
        let mut trie: LpmTrie<&mut MapData, AclData, u32> = map_mut(ebpf, names::ACLS)?;
        let mut out = Applied { changed: BTreeSet::new(), failed: Vec::new() };
        for (name, acl) in acls {
            let want: BTreeSet<IpNet> = acl.entries.iter().map(IpNet::trunc).collect();
            let known = self.loaded.contains_key(name);
            let next_id = &mut self.next_id;
            let (id, have) = self.loaded.entry(name.clone()).or_insert_with(|| {
                *next_id += 1;
                (*next_id, BTreeSet::new())
            });
            if known && *have == want {
                continue;
            }
            let mut added = Vec::new();
            let mut failure = None;
            for net in want.difference(have) {
                match trie.insert(&key(*id, net), 1, 0) {
                    Ok(()) => added.push(*net),
                    Err(e) => {
                        failure = Some(map_err(names::ACLS)(e));
                        break;
                    }
                }
            }
            if let Some(error) = failure {
                for net in &added {
                    let _ = trie.remove(&key(*id, net));
                }
                if !known {
                    self.loaded.remove(name);
                }
                out.failed.push((name.clone(), known, error));
                continue;
            }
            for net in have.difference(&want) {
                let _ = trie.remove(&key(*id, net));
            }
            tracing::info!(acl = %name, prefixes = want.len(), "ACL loaded");
            *have = want;
            out.changed.insert(name.clone());
        }
        Ok(out)
    }

    /// Delete the ACLs `keep` says no (no longer in the model, and no loaded listener names
    /// them).
    pub fn reclaim(&mut self, ebpf: &mut Ebpf, keep: impl Fn(&str) -> bool) -> Result<()> {
        let gone: Vec<String> = self.loaded.keys().filter(|n| !keep(n)).cloned().collect();
        if gone.is_empty() {
            return Ok(());
        }
        let mut trie: LpmTrie<&mut MapData, AclData, u32> = map_mut(ebpf, names::ACLS)?;
        for name in gone {
            if let Some((id, set)) = self.loaded.remove(&name) {
                for net in &set {
                    let _ = trie.remove(&key(id, net));
                }
                tracing::info!(acl = %name, "ACL removed");
            }
        }
        Ok(())
    }
}

/// The trie key of a prefix: the 32 bits of the ACL id, then the address (IPv4 mapped).
fn key(id: u32, net: &IpNet) -> Key<AclData> {
    let (addr, bits) = match net {
        IpNet::V4(n) => (n.addr().to_ipv6_mapped().octets(), 96 + n.prefix_len() as u32),
        IpNet::V6(n) => (n.addr().octets(), n.prefix_len() as u32),
    };
    Key::new(32 + bits, AclData { acl_id: id.to_be(), addr })
}
