//! Fixture tables for the packet tests (in the manner of Katran's): a test is a list of
//! steps, each packet step a case — a name, the frame in and the side it arrives on, the
//! verdict, and what the frame out must be — and a small runner plays them in order.
//!
//! Where a frame goes in is the side it arrives on ([`Side`]) unless the hook says otherwise:
//! a hook with several programs (the tc tests: `lb_tc` on either side, `lb_tc_egress`, and
//! `lb_xdp`) names them with a type of its own, `On` in [`Hook<On>`] and [`Step<H, On>`].
//!
//! Flows carry state from one case to the next (a backend's reply goes to the source port
//! the client's packet was given, which is random), so a case's frame may be built from the
//! frames earlier cases put out ([`Seen`]), and its check may compare with them. Steps that
//! are not packets (counters, a model change, a sweep, a pause) sit in the table with their
//! own name ([`then`]).
use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
};

use crate::packet::{Parsed, parse};

/// One `#[test]` per fixture, named after it: `name => fixture` calls the test binary's
/// own `play(name, fixture)`.
#[macro_export]
macro_rules! fixtures {
    ($($name:ident => $fixture:expr),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                play(stringify!($name), $fixture)
            }
        )+
    };
}

/// The interface a frame arrives on: the one facing clients, or the one facing backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// A datapath the runner plays frames through; `On` says where a frame goes in (by default
/// the side it arrives on).
pub trait Hook<On = Side> {
    /// Run `frame` as if it went in at `on` (by default: arrived on that side): (verdict, the
    /// frame after the program).
    fn run(&mut self, frame: &[u8], on: On) -> (u32, Vec<u8>);
    /// The MAC of the backend-facing interface (backends address their frames to it).
    fn backend_side_mac(&self) -> [u8; 6];
}

/// What the cases so far put out (the current one's included), by case name.
pub struct Seen {
    /// The backend-facing interface's MAC.
    pub b_mac: [u8; 6],
    frames: HashMap<String, Vec<u8>>,
}

impl Seen {
    /// The frame case `name` put out.
    pub fn frame(&self, name: &str) -> &[u8] {
        self.frames.get(name).unwrap_or_else(|| panic!("no case {name:?} ran before"))
    }

    /// The frame case `name` put out, parsed (checksums verified from scratch).
    pub fn parsed(&self, name: &str) -> Parsed {
        parse(self.frame(name))
    }
}

/// Builds a frame from what earlier cases put out.
pub type Build = Box<dyn Fn(&Seen) -> Vec<u8> + Send>;
/// Checks a parsed frame out, with what the cases put out.
pub type ParsedCheck = Box<dyn Fn(&Parsed, &Seen) + Send>;
/// Checks the bytes of a frame out, with what the cases put out.
pub type RawCheck = Box<dyn Fn(&[u8], &Seen) + Send>;
/// A step that is not a packet.
pub type Action<H> = Box<dyn FnOnce(&mut H, &Seen) + Send>;

/// The frame a case puts in.
pub enum Input {
    Bytes(Vec<u8>),
    /// Built from what earlier cases put out.
    From(Build),
}

impl From<Vec<u8>> for Input {
    fn from(b: Vec<u8>) -> Input {
        Input::Bytes(b)
    }
}

/// A frame built from what earlier cases put out.
pub fn from(f: impl Fn(&Seen) -> Vec<u8> + Send + 'static) -> Input {
    Input::From(Box::new(f))
}

/// What the frame out of a case must be.
pub enum Out {
    /// Byte for byte the frame that went in.
    Untouched,
    /// Parsed (checksums verified from scratch), it passes this check.
    Parsed(ParsedCheck),
    /// Its bytes pass this check.
    Raw(RawCheck),
    /// Only the verdict is checked.
    Any,
}

/// The frame out, parsed, passes `f`.
pub fn parsed(f: impl Fn(&Parsed, &Seen) + Send + 'static) -> Out {
    Out::Parsed(Box::new(f))
}

/// The frame out's bytes pass `f`.
pub fn raw(f: impl Fn(&[u8], &Seen) + Send + 'static) -> Out {
    Out::Raw(Box::new(f))
}

/// A row of a table.
pub enum Step<H, On = Side> {
    /// A frame in at `on`: the program must answer `verdict` and put out what `out` says.
    Packet { name: String, on: On, input: Input, verdict: u32, out: Out },
    /// Anything else, in its place among the packets.
    Then { name: String, f: Action<H> },
}

/// A packet case.
pub fn packet<H, On>(name: impl Into<String>, on: On, input: impl Into<Input>, verdict: u32, out: Out) -> Step<H, On> {
    Step::Packet { name: name.into(), on, input: input.into(), verdict, out }
}

/// A step that is not a packet: counters, a model change, a pause.
pub fn then<H, On>(name: impl Into<String>, f: impl FnOnce(&mut H, &Seen) + Send + 'static) -> Step<H, On> {
    Step::Then { name: name.into(), f: Box::new(f) }
}

/// Play `steps` in order through `hook`. A failing check names its case.
pub fn run<H: Hook<On>, On>(hook: &mut H, steps: Vec<Step<H, On>>) {
    let mut seen = Seen { b_mac: hook.backend_side_mac(), frames: HashMap::new() };
    for step in steps {
        match step {
            Step::Packet { name, on, input, verdict, out } => {
                let frame = match input {
                    Input::Bytes(b) => b,
                    Input::From(f) => named(&name, || f(&seen)),
                };
                let (v, bytes) = hook.run(&frame, on);
                assert_eq!(v, verdict, "case {name:?}: verdict");
                assert!(seen.frames.insert(name.clone(), bytes).is_none(), "two cases named {name:?}");
                // The check sees this case's frame among the others (`seen.frame(name)`).
                let bytes = seen.frame(&name);
                named(&name, || match &out {
                    Out::Untouched => assert_eq!(bytes, frame, "bytes untouched"),
                    Out::Parsed(check) => check(&parse(bytes), &seen),
                    Out::Raw(check) => check(bytes, &seen),
                    Out::Any => {}
                });
            }
            Step::Then { name, f } => named(&name, || f(hook, &seen)),
        }
    }
}

/// Run `f`; if it panics, panic again with the case's name in front of the message.
fn named<T>(name: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            match msg {
                Some(m) => panic!("case {name:?}: {m}"),
                None => resume_unwind(e),
            }
        }
    }
}
