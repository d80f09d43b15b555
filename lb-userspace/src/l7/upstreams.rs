//! Connections to backends, shared by every listener: a keep-alive pool, a fresh
//! connection per request, and h2c for gRPC; plus the in-flight counts, endpoint ages and
//! drains the balancers and the drain logic read.
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{balance::ActiveRequests, respond::Body};

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Connections to backends, shared by every listener.
pub struct Upstreams {
    /// Keep-alive pool (`backend-keepalive: true`).
    pub(super) pooled: HttpClient,
    /// A new connection per request (the default, as on ALB).
    pub(super) fresh: HttpClient,
    /// HTTP/2 (h2c) for gRPC backends: a connection per endpoint.
    pub(super) h2: super::h2_upstream::H2Upstreams,
    pub active: ActiveRequests,
    /// When each endpoint joined (slow start).
    pub ages: super::balance::EndpointAges,
    /// Endpoints in use, and the drain of those removed.
    pub departures: super::drain::Departures,
    /// Mirror copies in flight, at most [`MIRRORS_IN_FLIGHT`]: a copy past it is skipped.
    pub(super) mirrors: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Mirror copies a proxy has in flight at most (each a connection and a task).
pub const MIRRORS_IN_FLIGHT: usize = 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

impl Upstreams {
    pub fn new() -> Upstreams {
        let connector = || {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(CONNECT_TIMEOUT));
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::backend_client_config())
                .https_or_http()
                // HTTP/1.1 only, as ALB and nginx speak to HTTPS backends: a backend that
                // picked h2 by ALPN got the endpoint's address as `:authority` beside the
                // client's Host, and upgrades (WebSocket) cannot cross an HTTP/2 hop.
                .enable_http1()
                .wrap_connector(http)
        };
        let builder = || Client::builder(TokioExecutor::new());
        Upstreams {
            pooled: builder().pool_idle_timeout(Duration::from_secs(60)).build(connector()),
            fresh: builder().pool_max_idle_per_host(0).build(connector()),
            h2: Default::default(),
            active: ActiveRequests::default(),
            ages: Default::default(),
            departures: Default::default(),
            mirrors: std::sync::Arc::new(tokio::sync::Semaphore::new(MIRRORS_IN_FLIGHT)),
        }
    }
}
