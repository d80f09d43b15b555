//! Annotation parsing: CLB annotations on Services ([`clb`]), ALB annotations on Ingresses
//! with the AlbConfig and IngressClass objects ([`alb`]). One function per annotation
//! family; values are checked against the ranges and allowed values of the references in
//! `shared/reference/`, defaults are the references' defaults, and every error names the
//! annotation and the reason.
pub mod alb;
pub mod clb;
pub mod keys;
pub mod lbdev;
pub mod parser;
pub mod secret;
pub mod values;

use serde::Serialize;

/// Why one annotation's value was rejected. The caller adds the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{annotation}: {reason}")]
pub struct AnnotationError {
    /// The full annotation key as written on the object.
    pub annotation: String,
    pub reason: String,
}

impl AnnotationError {
    pub fn new(annotation: impl Into<String>, reason: impl Into<String>) -> AnnotationError {
        AnnotationError { annotation: annotation.into(), reason: reason.into() }
    }
}

/// An annotation that is accepted but has no effect on a node load balancer (billing,
/// bandwidth, vSwitch, tags, ...), reported so that it is never silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotApplicable {
    pub annotation: String,
    pub reason: String,
}
