//! ACLs in the datapath: each named ACL gets a numeric id; its prefixes live in the `ACLS`
//! LPM trie under that id, IPv4 ones as IPv4-mapped IPv6 (`::ffff:a.b.c.d`, the datapath
//! looks IPv4 clients up that way). An IPv6 prefix that covers that range (`::/0`) would
//! then match every IPv4 client: such an ACL also gets `::ffff:0:0/96` with value 0, "not
//! listed", which IPv4 clients meet first unless one of its IPv4 prefixes is longer. An ACL
//! with no prefix has one entry, `::/0` with value EMPTY (a whitelist of it forwards
//! everyone, a blacklist no one). An edit inserts the new entries before deleting the old
//! ones, so a new flow meanwhile is judged by the old list or the new one, never by neither.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv6Addr,
};

use aya::{
    Ebpf,
    maps::{
        MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::{IpNet, Ipv6Net};
use lb_common::{
    AclData,
    acl_value::{EMPTY, LISTED, NOT_LISTED},
    map_names as names,
};

use super::{
    error::{DataplaneError, Result, map_err},
    maps::map_mut,
};
use crate::model::Acl;

#[derive(Debug, Default)]
pub struct AclState {
    /// Name → (id, trie entries loaded: prefix → 1 listed, 0 not).
    loaded: BTreeMap<String, (u32, Entries)>,
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

    /// The id of a loaded ACL.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.loaded.get(name).map(|(id, _)| *id)
    }

    /// Insert every ACL's new prefixes and delete the ones it no longer has. An ACL whose new
    /// prefixes do not all fit gets none of them: it keeps its last good ones (one that never
    /// loaded stays unknown, so no listener takes it for an empty list).
    pub fn apply(&mut self, ebpf: &mut Ebpf, acls: &BTreeMap<String, Acl>) -> Result<Applied> {
        let mut trie: LpmTrie<&mut MapData, AclData, u32> = map_mut(ebpf, names::ACLS)?;
        let mut out = Applied { changed: BTreeSet::new(), failed: Vec::new() };
        for (name, acl) in acls {
            let want = entries(&acl.entries);
            let known = self.loaded.contains_key(name);
            let next_id = &mut self.next_id;
            let (id, have) = self.loaded.entry(name.clone()).or_insert_with(|| {
                *next_id += 1;
                (*next_id, Entries::new())
            });
            if known && *have == want {
                continue;
            }
            let mut added = Vec::new();
            let mut failure = None;
            for (net, value) in want.iter().filter(|(n, v)| have.get(n) != Some(v)) {
                match trie.insert(&key(*id, net), value, 0) {
                    Ok(()) => added.push(*net),
                    Err(e) => {
                        failure = Some(map_err(names::ACLS)(e));
                        break;
                    }
                }
            }
            if let Some(error) = failure {
                for net in &added {
                    let _ = match have.get(net) {
                        Some(old) => trie.insert(&key(*id, net), old, 0),
                        None => trie.remove(&key(*id, net)),
                    };
                }
                if !known {
                    self.loaded.remove(name);
                }
                out.failed.push((name.clone(), known, error));
                continue;
            }
            for net in have.keys().filter(|n| !want.contains_key(n)) {
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
                for net in set.keys() {
                    let _ = trie.remove(&key(id, net));
                }
                tracing::info!(acl = %name, "ACL removed");
            }
        }
        Ok(())
    }
}

/// An ACL's trie entries: prefix (IPv4 ones mapped) → [`LISTED`], [`NOT_LISTED`] (the
/// IPv4-mapped range under an IPv6 prefix that covers it), or [`EMPTY`] (`::/0`, the only
/// entry of an ACL with no prefix).
type Entries = BTreeMap<Ipv6Net, u32>;

/// The trie entries of an ACL's prefixes (see the module's note on IPv6 prefixes that cover
/// the IPv4-mapped range).
fn entries(nets: &[IpNet]) -> Entries {
    let mut out: Entries = nets
        .iter()
        .map(|n| match n.trunc() {
            IpNet::V4(n) => {
                let mapped = Ipv6Net::new(n.addr().to_ipv6_mapped(), 96 + n.prefix_len()).expect("a /96+ prefix");
                (mapped, LISTED)
            }
            IpNet::V6(n) => (n, LISTED),
        })
        .collect();
    let mapped = Ipv6Net::new(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96).expect("a /96 prefix");
    if out.keys().any(|n| n.prefix_len() < 96 && n.contains(&mapped)) {
        out.entry(mapped).or_insert(NOT_LISTED);
    }
    if out.is_empty() {
        // Emptiness in the trie: an ACL emptied (or filled) is judged by its entries at
        // every moment of the change (the new ones go in before the old ones go).
        out.insert(Ipv6Net::default(), EMPTY);
    }
    out
}

/// The trie key of a prefix: the 32 bits of the ACL id, then the address.
fn key(id: u32, net: &Ipv6Net) -> Key<AclData> {
    Key::new(32 + net.prefix_len() as u32, AclData { acl_id: id.to_be(), addr: net.addr().octets() })
}
