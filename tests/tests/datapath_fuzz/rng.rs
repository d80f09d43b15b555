//! The fuzzer's randomness: a small seeded PRNG (SplitMix64), so a run is replayed exactly
//! from the seed it prints (`LB_FUZZ_SEED`).

/// SplitMix64: tiny, fast, and good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// The run's seed: `LB_FUZZ_SEED` (decimal or 0x-hex) to replay one, else a fresh one.
pub fn seed_from_env() -> u64 {
    match std::env::var("LB_FUZZ_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("LB_FUZZ_SEED={s:?} is not a number"))
        }
        Err(_) => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
        }
    }
}

/// `LB_FUZZ_CASES` if set, else `default`.
pub fn cases_from_env(default: usize) -> usize {
    match std::env::var("LB_FUZZ_CASES") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("LB_FUZZ_CASES={s:?} is not a number")),
        Err(_) => default,
    }
}
