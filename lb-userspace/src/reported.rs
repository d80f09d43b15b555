//! Logs an object's rejections and notices once per change: every reload builds them all
//! again, and the log should say only what is new. Remembers, per object, a hash of its
//! messages; an object whose messages are unchanged is not logged again, one whose
//! messages went away is reported as cleared.
use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
};

/// What changed since the last [`Reported::update`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// (object, message) of the objects whose messages are new or changed: all of them.
    pub new: Vec<(String, String)>,
    /// Objects that had messages and have none now.
    pub cleared: Vec<String>,
}

/// The last messages' hash, by object.
#[derive(Debug, Default)]
pub struct Reported {
    last: HashMap<String, u64>,
}

impl Reported {
    /// Takes this round's (object, message) pairs: all of them, for every object.
    pub fn update(&mut self, messages: impl IntoIterator<Item = (String, String)>) -> Changes {
        let mut by_object: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (object, message) in messages {
            by_object.entry(object).or_default().push(message);
        }
        let mut changes = Changes::default();
        let mut now = HashMap::with_capacity(by_object.len());
        for (object, mut messages) in by_object {
            messages.sort();
            let mut h = DefaultHasher::new();
            messages.hash(&mut h);
            let hash = h.finish();
            if self.last.get(&object) != Some(&hash) {
                changes.new.extend(messages.into_iter().map(|m| (object.clone(), m)));
            }
            now.insert(object, hash);
        }
        changes.cleared = self.last.keys().filter(|o| !now.contains_key(*o)).cloned().collect();
        changes.cleared.sort();
        self.last = now;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(o, m)| (o.to_string(), m.to_string())).collect()
    }

    #[test]
    fn a_message_is_logged_once_per_change_of_its_object() {
        let mut r = Reported::default();
        let first = r.update(msgs(&[("svc/a", "bad port"), ("svc/b", "bad vip")]));
        assert_eq!(first.new.len(), 2);
        assert!(first.cleared.is_empty());

        let again = r.update(msgs(&[("svc/b", "bad vip"), ("svc/a", "bad port")]));
        assert_eq!(again, Changes::default(), "nothing changed: nothing to log");

        let changed = r.update(msgs(&[("svc/a", "bad port"), ("svc/b", "bad vip"), ("svc/b", "bad scheduler")]));
        assert_eq!(changed.new, msgs(&[("svc/b", "bad scheduler"), ("svc/b", "bad vip")]), "b changed: all of b");

        let fixed = r.update(msgs(&[("svc/b", "bad vip"), ("svc/b", "bad scheduler")]));
        assert!(fixed.new.is_empty());
        assert_eq!(fixed.cleared, vec!["svc/a".to_string()]);

        let back = r.update(msgs(&[("svc/a", "bad port"), ("svc/b", "bad vip"), ("svc/b", "bad scheduler")]));
        assert_eq!(back.new, msgs(&[("svc/a", "bad port")]), "rejected again after a fix: a change");
    }
}
