//! PROXY protocol end to end in the netns topology, against real receivers: nginx
//! (`listen ... proxy_protocol`, logging `$proxy_protocol_addr:$proxy_protocol_port`) and
//! haproxy (`bind ... accept-proxy`, logging `%ci:%cp`), v1 and v2, IPv4 and IPv6, TLS 1.3
//! through nginx, with 20% loss injected in the backends' namespaces (iptables `statistic`;
//! this kernel has no netem); a server-first backend; multi-MB transfers both ways with
//! their hashes; UDP datagrams each checked for their v2 header; SYN-cookie flows, whose
//! header rides the handshake ACK the datapath makes.
//!
//! Debugging aid: `PP_PCAP=DIR` makes the server-first test capture the client's and the
//! backend's side with tcpdump (client.pcap, backend.pcap).
//!
//! One test binary (`cargo test -p lb-tests --test e2e_proxy_protocol`) in modules by
//! concern; the loss tests take turns through `support::one_loss_test_at_a_time`.
mod cookies;
mod local_clients;
mod peers;
mod server_first;
mod support;
mod udp;

use cookies::syn_cookie_flows_carry_the_header_and_bulk_data;
use lb_tests::in_every_shape;
use local_clients::local_clients_get_the_header_from_tc;
use peers::nginx_and_haproxy_log_the_real_client_v1_v2_under_loss;
use server_first::{
    multi_megabyte_transfers_keep_their_checksums, server_first_protocol_gets_the_header_first_under_loss,
};
use udp::udp_datagrams_each_carry_a_v2_header;

/// The cluster shapes only: the routed topology has no client on the node.
mod local_clients_get_the_header_from_tc {
    #[test]
    fn bridge() {
        super::local_clients_get_the_header_from_tc(lb_tests::topology::Shape::Bridge)
    }

    #[test]
    fn vxlan() {
        super::local_clients_get_the_header_from_tc(lb_tests::topology::Shape::Vxlan)
    }
}

in_every_shape!(
    nginx_and_haproxy_log_the_real_client_v1_v2_under_loss,
    server_first_protocol_gets_the_header_first_under_loss,
    multi_megabyte_transfers_keep_their_checksums,
    udp_datagrams_each_carry_a_v2_header,
    syn_cookie_flows_carry_the_header_and_bulk_data,
);
