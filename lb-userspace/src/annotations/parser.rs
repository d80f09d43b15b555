//! The one parser context of every annotation family: the annotations an object carries,
//! by typed key, with their trimmed values; the errors and not-applicable notes parsing
//! finds. A key whose value was rejected is remembered, so that checks across annotations
//! that involve it stay quiet (one typo gives one error).
use std::collections::{BTreeMap, BTreeSet};

use super::{AnnotationError, NotApplicable};

/// A family's key type: how a key is written in full.
pub trait AnnotationKey: Copy + Ord {
    /// The full key in its canonical spelling.
    fn full(self) -> String;
}

/// One annotation as the object wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The full key as written (a family may accept more than one spelling).
    pub key: String,
    /// The value, trimmed.
    pub value: String,
}

/// Parsing state shared by a family's parsers.
pub struct Parser<K> {
    written: BTreeMap<K, Written>,
    /// Keys of a family followed by a name (`actions.<service>`), by suffix.
    members: BTreeMap<String, Written>,
    /// Keys whose value was rejected.
    failed: BTreeSet<K>,
    pub errors: Vec<AnnotationError>,
    pub not_applicable: Vec<NotApplicable>,
}

impl<K: AnnotationKey> Parser<K> {
    /// A parser over `written`, with the errors met while sorting the keys out (`failed`:
    /// keys present but without a usable value).
    pub fn new(written: BTreeMap<K, Written>, errors: Vec<AnnotationError>, failed: BTreeSet<K>) -> Parser<K> {
        Parser { written, members: BTreeMap::new(), failed, errors, not_applicable: Vec::new() }
    }

    /// The same parser with the members of key families (by suffix).
    pub fn with_members(self, members: BTreeMap<String, Written>) -> Parser<K> {
        Parser { members, ..self }
    }

    /// The `(name, value)` pairs of the family whose suffixes start with `family`.
    pub fn family(&self, family: &str) -> Vec<(String, String)> {
        self.members
            .iter()
            .filter_map(|(k, w)| k.strip_prefix(family).map(|n| (n.to_owned(), w.value.clone())))
            .collect()
    }

    /// Whether `key` is written.
    pub fn has(&self, key: K) -> bool {
        self.written.contains_key(&key)
    }

    /// The trimmed value of `key`.
    pub fn get(&self, key: K) -> Option<&str> {
        self.written.get(&key).map(|w| w.value.as_str())
    }

    /// `(canonical key, key as written)` of every written key.
    pub fn written_keys(&self) -> BTreeMap<String, String> {
        self.written.iter().map(|(k, w)| (k.full(), w.key.clone())).collect()
    }

    /// The full key as the object wrote it, or its canonical spelling when absent.
    pub fn name(&self, key: K) -> String {
        self.written.get(&key).map_or_else(|| key.full(), |w| w.key.clone())
    }

    pub fn error(&mut self, key: K, reason: impl Into<String>) {
        let name = self.name(key);
        self.errors.push(AnnotationError::new(name, reason));
    }

    /// An error about something else than one fixed key: a field of the object
    /// (`spec.rules[0].host`) or a key of a family (`...actions.svc`).
    pub fn field_error(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(AnnotationError::new(field, reason));
    }

    /// An error of a rule across annotations, unless one of `involved` (or `key`) already
    /// failed.
    pub fn cross(&mut self, key: K, involved: &[K], reason: impl Into<String>) {
        if !involved.iter().chain([&key]).any(|k| self.failed.contains(k)) {
            self.error(key, reason);
        }
    }

    /// A note that `key` has no effect by a rule across annotations ("takes effect only
    /// when ..."), unless one of `involved` (or `key`) already failed.
    pub fn cross_note(&mut self, key: K, involved: &[K], reason: impl Into<String>) {
        if !involved.iter().chain([&key]).any(|k| self.failed.contains(k)) {
            self.not_applicable(key, reason);
        }
    }

    /// Whether `key` is written but its value was rejected.
    pub fn failed(&self, key: K) -> bool {
        self.failed.contains(&key)
    }

    /// The value of `key` parsed by `f`; `None` when absent or invalid (then with an error,
    /// given once).
    pub fn value<T>(&mut self, key: K, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        if self.failed.contains(&key) {
            return None;
        }
        let v = self.get(key)?.to_owned();
        match f(&v) {
            Ok(t) => Some(t),
            Err(reason) => {
                self.failed.insert(key);
                self.error(key, reason);
                None
            }
        }
    }

    /// The value of `key` parsed by `f`, or `default` when absent or invalid.
    pub fn value_or<T>(&mut self, key: K, default: T, f: impl FnOnce(&str) -> Result<T, String>) -> T {
        self.value(key, f).unwrap_or(default)
    }

    /// `key`, when written, is accepted but has no effect here.
    pub fn not_applicable(&mut self, key: K, reason: impl Into<String>) {
        if self.has(key) {
            let name = self.name(key);
            self.note(name, reason);
        }
    }

    /// A note that `annotation` (a full key) has no effect here.
    pub fn note(&mut self, annotation: impl Into<String>, reason: impl Into<String>) {
        self.not_applicable.push(NotApplicable { annotation: annotation.into(), reason: reason.into() });
    }
}
