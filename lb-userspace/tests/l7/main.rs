//! The L7 proxy end to end on 127.0.0.1: manifests → model → proxy → real HTTP requests to
//! in-process backends (and curl for TLS and HTTP/2).
mod abuse;
mod actions;
mod backend_wire;
mod balancing;
mod clb;
mod compat;
mod drain;
mod grpc;
mod h2wire;
mod hardening;
mod health;
mod ipv6;
mod limits;
mod listeners;
mod mirrors;
mod ownership;
mod reload;
mod routing;
mod server_groups;
mod server_h1;
mod smuggling;
mod support;
mod tls;
