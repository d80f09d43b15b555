//! What the datapath's user-space side reports: [`DataplaneError`], and [`Rejected`], one
//! object of the model the datapath could not take.
use thiserror::Error;

use crate::model::{L4Listener, ObjectError, ObjectRef, listener_name};

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(
        "this `lb` was built without the XDP object: run `cargo xtask build` (or `cargo xtask build-ebpf` before building lb)"
    )]
    NoObject,
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("the XDP program {name}: {source}")]
    NamedProgram { name: &'static str, source: aya::programs::ProgramError },
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("{what} is missing from the object")]
    Missing { what: &'static str },
    #[error("listener {listener}: {reason}")]
    Listener { listener: String, reason: String },
    #[error("snat port range {0}-{1} is empty")]
    PortRange(u16, u16),
    /// The SNAT range collides with the node's ephemeral ports or the NodePort range.
    #[error("{0}")]
    SnatPorts(String),
    #[error("pinning the datapath: {0}")]
    Pin(String),
    /// Objects the datapath could not take; the rest of the model was applied.
    #[error("{}", list(.0))]
    Rejected(Vec<Rejected>),
}

pub type Result<T> = std::result::Result<T, DataplaneError>;

pub(super) fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// One object of the model the datapath could not take; the rest of the model was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {reason}")]
pub struct Rejected {
    pub object: ObjectRef,
    /// `spec.ports` (a listener of a Service) or `spec.entries` (an AccessControlList).
    pub field: String,
    pub what: RejectedPart,
    /// Whether its last good version is still loaded (else it is not served at all).
    pub kept: bool,
    /// What was not loaded, why, and what serves instead.
    pub reason: String,
}

/// What of the object was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectedPart {
    /// A listener, by its key in [`Model::listeners`].
    Listener(String),
    /// An ACL, by name.
    Acl(String),
}

impl Rejected {
    pub(super) fn new(
        object: ObjectRef,
        field: &str,
        what: RejectedPart,
        kept: bool,
        error: &DataplaneError,
    ) -> Rejected {
        let (name, last_good) = match &what {
            RejectedPart::Listener(name) => (format!("listener {name}"), "its last good version keeps serving"),
            RejectedPart::Acl(name) => (format!("ACL {name}"), "its last good prefixes stay in force"),
        };
        let error = match error {
            // Already names the listener.
            DataplaneError::Listener { reason, .. } => reason.clone(),
            e => e.to_string(),
        };
        let serves = if kept { last_good } else { "not served" };
        let reason = format!("{name} not loaded into the datapath: {error}; {serves}");
        Rejected { object, field: field.into(), what, kept, reason }
    }

    pub(super) fn listener(l: &L4Listener, kept: bool, error: &DataplaneError) -> Rejected {
        Rejected::new(l.source.clone(), "spec.ports", RejectedPart::Listener(listener_name(l)), kept, error)
    }

    /// The error as the agent reports it on the object (an Event, the log).
    pub fn object_error(&self) -> ObjectError {
        ObjectError { object: self.object.clone(), field: self.field.clone(), reason: self.reason.clone() }
    }
}

/// The message of [`DataplaneError::Rejected`].
fn list(rejected: &[Rejected]) -> String {
    let all: Vec<String> = rejected.iter().map(ToString::to_string).collect();
    format!("not loaded into the datapath (the rest of the model was): {}", all.join("; "))
}

pub(super) fn xdp_map_err(e: aya::maps::xdp::XdpMapError) -> aya::maps::MapError {
    match e {
        aya::maps::xdp::XdpMapError::MapError(m) => m,
        other => aya::maps::MapError::InvalidName { name: other.to_string() },
    }
}
