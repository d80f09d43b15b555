//! Header maps kept per thread for the next message: a request's or an answer's map, cleared
//! once its head was written out, takes the next head's fields without allocating its two
//! tables (index and entries) again.
use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread, at most (one per message in flight on the thread is enough to
/// take the churn).
const KEPT: usize = 16;
/// A map with room for, or holding, more fields than this is not kept (a rare large head
/// does not stay: `len` counts each value of a repeated name, which `capacity` does not).
const MAX_FIELDS: usize = 48;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields`.
pub fn take(fields: usize) -> HeaderMap {
    match SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten() {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// `map`, done with: kept, emptied, for a next message.
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_FIELDS || map.len() > MAX_FIELDS {
        return;
    }
    map.clear();
    let _ = SPARE.try_with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < KEPT {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, header};

    use super::*;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = take(8);
        map.insert(header::HOST, HeaderValue::from_static("a"));
        map.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        let room = map.capacity();
        give_back(map);
        let again = take(8);
        assert!(again.is_empty(), "no field of the earlier message is left");
        assert_eq!(again.capacity(), room, "the same tables, not new ones");
        // A map that grew large is not kept.
        let mut big = take(0);
        for i in 0..100 {
            big.insert(http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(), HeaderValue::from(i));
        }
        give_back(big);
        assert!(take(1).capacity() <= MAX_FIELDS);
        // Nor one holding many values of one name (kept apart from its index table).
        let mut repeated = take(1);
        for i in 0..200 {
            repeated.append(header::COOKIE, HeaderValue::from(i));
        }
        assert!(repeated.capacity() <= MAX_FIELDS, "a small index table");
        let spares = || SPARE.with(|s| s.borrow().len());
        let before = spares();
        give_back(repeated);
        assert_eq!(spares(), before, "not kept");
    }
}
