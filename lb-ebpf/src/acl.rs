//! Access control lists: longest-prefix match of the client address in the listener's ACL.
use aya_ebpf::maps::lpm_trie::Key;
use lb_common::{AclData, FAMILY_V4, FlowKey, Listener, acl_mode, acl_value};

use crate::maps::ACLS;

/// Whether the listener's ACL lets this client open a flow.
#[inline(always)]
pub fn allows(cfg: &Listener, key: &FlowKey) -> bool {
    if cfg.acl_mode == acl_mode::OFF {
        return true;
    }
    let mut addr = [0u8; 16];
    if key.family == FAMILY_V4 {
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..16].copy_from_slice(&key.src[0].to_ne_bytes());
    } else {
        let mut i = 0;
        while i < 4 {
            addr[i * 4..i * 4 + 4].copy_from_slice(&key.src[i].to_ne_bytes());
            i += 1;
        }
    }
    let lpm = Key::new(32 + 128, AclData { acl_id: cfg.acl_id.to_be(), addr });
    // NOT_LISTED: `::ffff:0:0/96` under an IPv6 prefix that covers it, so IPv4 clients are
    // not taken for IPv6 ones (user space's `dataplane/acls.rs`). EMPTY: an empty ACL, which
    // a whitelist lets everyone through and a blacklist no one.
    let value = ACLS.get(&lpm).copied().unwrap_or(acl_value::NOT_LISTED);
    if cfg.acl_mode == acl_mode::WHITE { value != acl_value::NOT_LISTED } else { value != acl_value::LISTED }
}
