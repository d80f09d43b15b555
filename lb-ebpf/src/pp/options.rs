//! The TCP option walk of a backend → client segment: where its SACK and MSS options are.
//!
//! The walk's state lives in the PROXY scratch map (`PpScratch::opt_*`, `sack_*`, `mss_at`)
//! rather than in registers: every path through a walk step then leaves the verifier the
//! same (unknown) state, so it prunes instead of following each option layout separately.
use crate::maps::PpScratch;

/// TCP option walk budget (Linux sends at most 6 options: NOP NOP TS NOP NOP SACK).
const MAX_OPTIONS: u32 = 12;

/// Option kinds (RFC 9293, RFC 2018).
const EOL: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;
const SACK: u8 = 5;

/// "No such option" in the walk's results.
pub const NO_OPTION: u32 = 0xff;
/// Walk position meaning "stopped" (end of list, or malformed: left to the client's stack).
const STOPPED: u32 = 0xfe;

/// A walk variable read back from the map: an unknown value to the verifier.
#[inline(always)]
pub fn read(v: &u32) -> u32 {
    // SAFETY: a plain read of a map value field.
    unsafe { core::ptr::read_volatile(v) }
}

/// Find the SACK and MSS options among the `olen` option bytes in `s.hdr` (at most
/// `MAX_OPTIONS` options). Results in `s.sack_at`, `s.sack_len`, `s.mss_at` (`NO_OPTION`
/// when absent), and `s.opt_pos`: where the walk stopped (`STOPPED`, or below `olen` when
/// the budget ran out).
#[inline(always)]
pub fn walk_options(s: &mut PpScratch, olen: u32) {
    s.opt_pos = 0;
    s.sack_at = NO_OPTION;
    s.sack_len = 0;
    s.mss_at = NO_OPTION;
    let mut n = 0;
    while n < MAX_OPTIONS {
        let pos = read(&s.opt_pos) & 0xff;
        if pos < olen && pos < 40 {
            let kind = s.hdr[pos as usize];
            if kind == EOL {
                s.opt_pos = STOPPED;
            } else if kind == NOP {
                s.opt_pos = pos + 1;
            } else {
                let l = s.hdr[(pos + 1) as usize] as u32;
                if l < 2 || pos + l > olen {
                    s.opt_pos = STOPPED;
                } else {
                    if kind == SACK {
                        s.sack_at = pos;
                        s.sack_len = l;
                    } else if kind == MSS && l == 4 {
                        s.mss_at = pos;
                    }
                    s.opt_pos = pos + l;
                }
            }
        }
        n += 1;
    }
}
