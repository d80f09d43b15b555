//! Golden tests: the examples and tables of `shared/reference/*.txt` as data files, one
//! table-driven test per family directory.
//!
//! A case is `FAMILY/NAME.yaml` (the input: the object YAML as the reference prints it, with
//! a comment naming the reference, the section and any placeholder replaced) and the
//! expected output `FAMILY/NAME.json` next to it. A test runs every case of its directory
//! and compares the output with the expected JSON, naming the file and every differing
//! value. `LB_BLESS=1` writes the output as the expected files instead (review the change
//! before committing: the expected files are the assertions).
//!
//! - `clb/*/`: a Service, parsed by `annotations::clb::parse`. Output: `parse` (the whole
//!   `ClbParse`: config, errors, not-applicable annotations) and `derived.probes` (per
//!   listener, the health check probe and its timeout, `HealthCheck::probe`/`timeout_s`).
//! - `alb/*/` with objects: YAML documents (Ingress, AlbConfig, IngressClass; other kinds
//!   are listed, not parsed), optionally followed by a document without `kind` holding
//!   `requests` and/or `albconfig` (see `alb.rs`). Output: `objects` (each parse result),
//!   and `requests` (the rule each request goes to through the route model and
//!   `l7::matching`, the rewritten path, whether the canary takes it).
//! - `alb/*/` with `rows`: a reference table (see `alb_tables.rs`).
mod alb;
mod alb_tables;
mod clb;
mod runner;
