//! Regions of `BACKEND_TABLE`: first-fit allocation with coalescing frees. A region a
//! listener stops using is freed only after a grace period, so a CPU that read the old
//! offset a moment before the switch never reads entries of another listener.
use std::time::{Duration, Instant};

/// How long a released region (or id) stays unused before it is handed out again.
pub const GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug)]
pub struct TableAlloc {
    /// Free regions sorted by offset, never adjacent (coalesced).
    free: Vec<Region>,
    pending: Vec<(Instant, Region)>,
}

impl TableAlloc {
    pub fn new(capacity: u32) -> TableAlloc {
        TableAlloc { free: vec![Region { offset: 0, len: capacity }], pending: Vec::new() }
    }

    /// A region of `len` entries, or `None` when no free region is large enough.
    pub fn alloc(&mut self, len: u32) -> Option<Region> {
        if len == 0 {
            return Some(Region { offset: 0, len: 0 });
        }
        let i = self.free.iter().position(|r| r.len >= len)?;
        let r = &mut self.free[i];
        let out = Region { offset: r.offset, len };
        r.offset += len;
        r.len -= len;
        if r.len == 0 {
            self.free.remove(i);
        }
        Some(out)
    }

    /// Give `r` back once the grace period has passed.
    pub fn release(&mut self, r: Region, now: Instant) {
        if r.len > 0 {
            self.pending.push((now, r));
        }
    }

    /// Free the regions whose grace period is over.
    pub fn reclaim(&mut self, now: Instant) {
        let (due, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| now.duration_since(*t) >= GRACE);
        self.pending = keep;
        for (_, r) in due {
            self.free_now(r);
        }
    }

    fn free_now(&mut self, r: Region) {
        let i = self.free.partition_point(|f| f.offset < r.offset);
        self.free.insert(i, r);
        // Coalesce with the next, then with the previous neighbour.
        if i + 1 < self.free.len() && self.free[i].offset + self.free[i].len == self.free[i + 1].offset {
            self.free[i].len += self.free[i + 1].len;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].offset + self.free[i - 1].len == self.free[i].offset {
            self.free[i - 1].len += self.free[i].len;
            self.free.remove(i);
        }
    }

    /// Entries free right now (not counting those in their grace period).
    pub fn free_entries(&self) -> u64 {
        self.free.iter().map(|r| r.len as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_reused_only_after_the_grace_period_and_coalesce() {
        let mut t = TableAlloc::new(100);
        let a = t.alloc(40).unwrap();
        let b = t.alloc(40).unwrap();
        assert_eq!((a.offset, b.offset), (0, 40));
        assert!(t.alloc(30).is_none(), "only 20 left");
        let now = Instant::now();
        t.release(a, now);
        t.release(b, now);
        t.reclaim(now);
        assert!(t.alloc(30).is_none(), "still in grace");
        t.reclaim(now + GRACE);
        assert_eq!(t.free_entries(), 100, "coalesced back into one region");
        assert_eq!(t.alloc(100).unwrap().offset, 0);
    }
}
