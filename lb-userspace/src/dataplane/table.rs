//! Regions of `BACKEND_TABLE`: first-fit allocation with coalescing frees. A region is a
//! header entry holding the table's length, then the table: the datapath reads a listener's
//! offset once and the length from the region itself, so a listener's config rewritten while
//! a CPU reads it never pairs one version's offset with another's length. A region a listener
//! stops using is freed only after a grace period, so a CPU that read the old offset a
//! moment before the switch never reads entries of another listener. Entry 0 is the header
//! of every empty table (0 entries), never handed out.
use std::time::{Duration, Instant};

/// How long a released region (or id) stays unused before it is handed out again.
pub const GRACE: Duration = Duration::from_secs(2);

/// A table in `BACKEND_TABLE`: its header at `offset`, its `len` entries after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u32,
    pub len: u32,
}

impl Region {
    /// The entries the region takes, its header included (none for the shared empty one).
    fn span(self) -> Span {
        Span { start: self.offset, entries: if self.len == 0 { 0 } else { self.len + 1 } }
    }
}

/// Consecutive entries of `BACKEND_TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    entries: u32,
}

#[derive(Debug)]
pub struct TableAlloc {
    /// Free spans sorted by start, never adjacent (coalesced).
    free: Vec<Span>,
    pending: Vec<(Instant, Span)>,
}

impl TableAlloc {
    pub fn new(capacity: u32) -> TableAlloc {
        let free = Span { start: 1, entries: capacity.saturating_sub(1) };
        TableAlloc { free: vec![free].into_iter().filter(|s| s.entries > 0).collect(), pending: Vec::new() }
    }

    /// A region for a table of `len` entries (`len + 1` with its header), or `None` when no
    /// free span is large enough. An empty table is the shared header at entry 0.
    pub fn alloc(&mut self, len: u32) -> Option<Region> {
        if len == 0 {
            return Some(Region { offset: 0, len: 0 });
        }
        let need = len + 1;
        let i = self.free.iter().position(|s| s.entries >= need)?;
        let s = &mut self.free[i];
        let out = Region { offset: s.start, len };
        s.start += need;
        s.entries -= need;
        if s.entries == 0 {
            self.free.remove(i);
        }
        Some(out)
    }

    /// Give `r` back once the grace period has passed.
    pub fn release(&mut self, r: Region, now: Instant) {
        if r.len > 0 {
            self.pending.push((now, r.span()));
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

    fn free_now(&mut self, s: Span) {
        let i = self.free.partition_point(|f| f.start < s.start);
        self.free.insert(i, s);
        // Coalesce with the next, then with the previous neighbour.
        if i + 1 < self.free.len() && self.free[i].start + self.free[i].entries == self.free[i + 1].start {
            self.free[i].entries += self.free[i + 1].entries;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].start + self.free[i - 1].entries == self.free[i].start {
            self.free[i - 1].entries += self.free[i].entries;
            self.free.remove(i);
        }
    }

    /// Entries free right now (not counting those in their grace period).
    pub fn free_entries(&self) -> u64 {
        self.free.iter().map(|s| s.entries as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_reused_only_after_the_grace_period_and_coalesce() {
        let mut t = TableAlloc::new(101);
        // Entry 0 is the empty tables' header; each region is its header and its entries.
        let a = t.alloc(39).unwrap();
        let b = t.alloc(39).unwrap();
        assert_eq!((a.offset, b.offset), (1, 41));
        assert_eq!(t.alloc(0), Some(Region { offset: 0, len: 0 }));
        assert!(t.alloc(30).is_none(), "only 20 left");
        let now = Instant::now();
        t.release(a, now);
        t.release(b, now);
        t.reclaim(now);
        assert!(t.alloc(30).is_none(), "still in grace");
        t.reclaim(now + GRACE);
        assert_eq!(t.free_entries(), 100, "coalesced back into one region");
        assert_eq!(t.alloc(99).unwrap().offset, 1);
    }
}
