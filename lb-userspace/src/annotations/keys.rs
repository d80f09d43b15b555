//! Typed annotation keys, shared by the CLB and ALB families: the [`keys!`] macro that
//! declares a family's keys with their suffixes, and the edit distance that turns a typo
//! into a "did you mean" hint.

/// Declares `pub enum Key` with one variant per annotation of a family, `Key::ALL` and
/// `Key::suffix` (the key without the family's prefix).
macro_rules! keys {
    ($($var:ident => $suffix:literal,)*) => {
        /// An annotation of the reference, by its suffix.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Key { $($var,)* }

        impl Key {
            pub const ALL: &[Key] = &[$(Key::$var,)*];

            /// The key without its family's prefix.
            pub fn suffix(self) -> &'static str {
                match self { $(Key::$var => $suffix,)* }
            }

            /// The key whose suffix is `suffix`.
            pub fn from_suffix(suffix: &str) -> Option<Key> {
                Key::ALL.iter().copied().find(|k| k.suffix() == suffix)
            }
        }
    };
}
pub(crate) use keys;

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("order", "order"), 0);
        assert_eq!(edit_distance("oder", "order"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
