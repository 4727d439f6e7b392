/* Verdict and drop reasons, counted per CPU in kvs_stats and named for userspace in one list. */
#ifndef KVSTEER_REASONS_H
#define KVSTEER_REASONS_H

/* X(ENUM_SUFFIX, "name") — append only: the index is the counter's slot in kvs_stats.
 * XDP reasons come first, then the dataplane's (userspace counters use the same names). */
#define KVS_REASONS(X)                                            \
    X(PASS_NOT_IP, "pass_not_ip")                                 \
    X(PASS_NOT_TCP, "pass_not_tcp")                               \
    X(PASS_NOT_OURS, "pass_not_ours")                             \
    X(PASS_IPV6_EXT, "pass_ipv6_ext_hdr")                         \
    X(PASS_FRAGMENT, "pass_fragment")                             \
    X(PASS_ICMP, "pass_icmp")                                     \
    X(TX_SYNACK, "tx_synack")                                     \
    X(TX_FWD_C2S, "tx_fwd_c2s")                                   \
    X(TX_FWD_S2C, "tx_fwd_s2c")                                   \
    X(REDIRECT_FWD, "redirect_fwd")                               \
    X(PUNT_FIRST_FLIGHT, "punt_first_flight")                     \
    X(PUNT_BACKEND_SYNACK, "punt_backend_synack")                 \
    X(PUNT_BACKEND_OTHER, "punt_backend_other")                   \
    X(PUNT_ICMP, "punt_icmp")                                     \
    X(PUNT_NO_XSK, "punt_no_xsk")                                 \
    X(DROP_BAD_COOKIE, "drop_bad_cookie")                         \
    X(DROP_PURE_ACK, "drop_pure_ack_no_state")                    \
    X(DROP_RST_NO_FLOW, "drop_rst_no_flow")                       \
    X(DROP_TRUNCATED, "drop_truncated")                           \
    X(DROP_MALFORMED, "drop_malformed")                           \
    X(DROP_NO_CONFIG, "drop_no_config")                           \
    X(DROP_SYN_RATE, "drop_syn_rate_per_prefix")                  \
    X(DROP_SYN_WITH_DATA, "drop_syn_with_data")                   \
    X(FLOW_FIN, "flow_fin")                                       \
    X(FLOW_RST, "flow_rst")                                       \
    X(FLOW_CLOSED, "flow_closed")                                 \
    X(DP_BIND_OK, "dp_bind_ok")                                   \
    X(DP_BIND_RETRY, "dp_bind_retry")                             \
    X(DP_BIND_FAIL_RST_CLIENT, "dp_bind_fail_rst_client")         \
    X(DP_BACKEND_RST, "dp_backend_rst")                           \
    X(DP_BACKEND_TIMEOUT, "dp_backend_timeout")                   \
    X(DP_CLIENT_IDLE_DROP, "dp_client_idle_drop")                 \
    X(DP_DUP_SEGMENT, "dp_dup_segment")                           \
    X(DP_HOLD_FULL, "dp_hold_full")                               \
    X(DP_KEY_OPENAI_PROMPT, "dp_key_openai_prompt")               \
    X(DP_KEY_OPENAI_CHAT, "dp_key_openai_chat")                   \
    X(DP_KEY_BODY_PREFIX, "dp_key_body_prefix")                   \
    X(DP_KEY_FIVE_TUPLE, "dp_key_five_tuple")                     \
    X(DP_VIA_AFFINITY, "dp_via_affinity")                         \
    X(DP_VIA_MAGLEV, "dp_via_maglev")                             \
    X(DP_VIA_MAGLEV_SPILL, "dp_via_maglev_spill")                 \
    X(DP_VIA_ROUND_ROBIN, "dp_via_round_robin")                   \
    X(DP_NO_BACKEND, "dp_no_backend")                             \
    X(DP_RING_DROPPED, "dp_report_ring_dropped")                  \
    X(DP_FLOW_INSTALL_FAIL, "dp_flow_install_fail")               \
    X(DP_PORTS_EXHAUSTED, "dp_snat_ports_exhausted")              \
    X(DROP_NO_TX_PORT, "drop_no_tx_port")                         \
    X(DP_TX_DROP, "dp_tx_drop")                                   \
    X(FLOW_REUSED, "flow_reused_by_syn")                          \
    X(SYN_ON_LIVE_FLOW, "syn_on_live_flow")                       \
    X(GUARD_DROP, "guard_drop_no_xdp")                            \
    X(DP_ISN_FROM_TS, "dp_isn_from_timestamp")                    \
    X(DP_START_UNSURE, "dp_bind_start_unsure")                    \
    X(DP_STALE_SEGMENT, "dp_stale_segment")                       \
    X(DP_INBOX_FULL, "dp_drop_inbox_full")                        \
    X(DP_NO_MBUF, "dp_no_mbuf")                                   \
    X(DP_HELD_UNPARSABLE, "dp_drop_held_unparsable")              \
    X(DP_DRAINING, "dp_drop_draining")                            \
    X(DP_NO_SNAT_FAMILY, "dp_drop_no_snat_address_of_family")     \
    X(DP_ARP_NOT_OURS, "dp_drop_arp_not_ours")                    \
    X(DP_RX_STALL, "dp_rx_stall")                                 \
    X(DP_PURE_ACK_HELD, "dp_pure_ack_held_flow")                  \
    X(DP_SYN_NOT_OURS, "dp_drop_syn_xdp_mode")                    \
    X(DP_RST_BARE_FIN, "dp_rst_fin_without_data")                 \
    X(DP_HOLD_SOURCE_CAP, "dp_hold_source_cap")                   \
    X(DP_HOLD_EVICTED, "dp_hold_evicted_incomplete_head")         \
    X(DP_RST_FIN_INCOMPLETE_HEAD, "dp_rst_fin_incomplete_head")   \
    X(DP_CHALLENGE_ACK, "dp_backend_challenge_ack")               \
    X(PUNT_REQUEST_BOUNDARY, "punt_request_boundary")             \
    X(PUNT_REBINDING, "punt_rebinding")                           \
    X(REQ_KEPT_OWED, "request_kept_response_owed")                \
    X(REQ_KEPT_CLOSING, "request_kept_closing")                   \
    X(DP_REQ_SAME_BACKEND, "dp_request_same_backend")             \
    X(DP_REQ_MOVED, "dp_request_moved")                           \
    X(DP_REQ_KEPT_EXPECT, "dp_request_kept_expect_continue")      \
    X(DP_REQ_KEPT_UPGRADE, "dp_request_kept_upgrade")             \
    X(DP_REQ_KEPT_HTTP10, "dp_request_kept_http10")               \
    X(DP_REQ_MOVE_FAILED, "dp_request_move_failed")               \
    X(DP_REQ_BACKEND_CLOSING, "dp_request_backend_closing")       \
    X(DP_REQ_NO_FLOW, "dp_request_flow_gone")                     \
    X(DP_RX_RECOVERED, "dp_rx_recovered")                         \
    X(DP_RX_MBUFS_RECLAIMED, "dp_rx_mbufs_reclaimed")             \
    X(DP_HOLD_EVICTED_GAP, "dp_hold_evicted_gap_dropped")         \
    X(DP_FLOW_INSTALL_BATCH, "dp_flow_install_batches")           \
    X(DP_SESSION_KEY, "dp_session_key")                           \
    X(DP_SESSION_OVER_CAP, "dp_session_over_cap")                 \
    X(DP_SESSION_BAD, "dp_session_bad_value")                     \
    X(DP_ND_ANSWERED, "dp_nd_answered")                           \
    X(PASS_ICMP_NO_FLOW, "pass_icmp_error_no_flow")               \
    X(PASS_ICMP_BAD_QUOTE, "pass_icmp_error_bad_quote")           \
    X(ICMP_FWD_TO_CLIENT, "icmp_error_fwd_to_client")             \
    X(ICMP_FWD_TO_BACKEND, "icmp_error_fwd_to_backend")           \
    X(FLEET_DECAP, "fleet_decap")                                 \
    X(FLEET_DROP_BAD_HEADER, "fleet_drop_bad_header")             \
    X(FLEET_DROP_NOT_IN_FLEET, "fleet_drop_not_in_fleet")         \
    X(FLEET_TO_OWNER, "fleet_redirect_owner")                     \
    X(FLEET_TO_PREV, "fleet_redirect_prev")                       \
    X(FLEET_RST_ORPHAN, "fleet_rst_orphan")                       \
    X(FLEET_DROP_RST_ORPHAN, "fleet_drop_rst_orphan")             \
    X(FLEET_VLAN_LOCAL, "fleet_vlan_not_redirected")              \
    X(FLEET_DROP_ORPHAN_UNSETTLED, "fleet_drop_orphan_unsettled") \
    X(FLEET_PING_ANSWERED, "fleet_ping_answered")                 \
    X(FLEET_PONG_HEARD, "fleet_pong_heard")                       \
    X(FLEET_DROP_BAD_PING, "fleet_drop_bad_ping")                 \
    X(DP_IDLE_WOKEN, "dp_idle_woken")                             \
    X(DP_BIND_TIMED, "dp_bind_timed")                             \
    X(DP_BIND_HOLD_NS, "dp_bind_hold_ns")                         \
    X(DP_BIND_HANDSHAKE_NS, "dp_bind_handshake_ns")               \
    X(DP_BIND_INSTALL_NS, "dp_bind_install_ns")                   \
    X(DP_POOL_OPENED, "dp_pool_opened")                           \
    X(DP_POOL_DRAWN, "dp_pool_drawn")                             \
    X(DP_POOL_EMPTY, "dp_pool_empty")                             \
    X(DP_POOL_OPTIONS_MISMATCH, "dp_pool_options_mismatch")       \
    X(DP_POOL_RETIRED, "dp_pool_retired")                         \
    X(DP_POOL_CLOSED_BY_BACKEND, "dp_pool_closed_by_backend")     \
    X(DP_POOL_OPEN_FAILED, "dp_pool_open_failed")                 \
    X(REQ_KEPT_UNACKED, "request_kept_unacknowledged")            \
    X(RESP_RESYNC, "response_head_resync")                        \
    X(DP_POOL_PARKED, "dp_pool_parked")                           \
    X(DP_POOL_PARK_REFUSED, "dp_pool_park_refused")               \
    X(REQ_END_UNKNOWN, "request_end_unknown")                     \
    X(DP_REQ_BOUNDARY_RACED, "dp_request_boundary_raced")         \
    X(CLOSE_OUT_OF_WINDOW, "close_out_of_window")                 \
    X(DP_REQ_KEPT_NO_ROOM, "dp_request_kept_no_room")             \
    X(TCP_OPTS_IGNORED, "tcp_options_ignored")                    \
    X(PUNT_CLIENT_RST, "punt_client_rst")                         \
    X(DP_FIN_AFTER_MISSING_DATA, "dp_fin_after_missing_data")     \
    X(DP_REQ_KEPT_DRAINING, "dp_request_kept_draining")           \
    X(FLEET_DROP_ORPHAN_UNSURE, "fleet_drop_orphan_unsure")       \
    X(DP_HELD_PAST_HOLE, "dp_held_past_hole_dropped")             \
    X(REQ_KEPT_NO_DATAPLANE, "request_kept_no_dataplane")         \
    X(DROP_SYN_NOT_UNICAST, "drop_syn_not_unicast")               \
    X(DROP_SYNACK_NO_ROOM, "drop_synack_no_room")                 \
    X(DP_FLOW_IDLE_EXPIRED, "dp_flow_idle_expired")               \
    X(DP_DROP_BAD_CHECKSUM, "dp_drop_bad_checksum")               \
    X(DROP_ICMP_MTU_BELOW_FLOOR, "drop_icmp_mtu_below_floor")     \
    X(DP_FLOW_SOURCE_CAP, "dp_flow_source_cap")                   \
    X(DP_FLOW_RECLAIMED_IDLE, "dp_flow_reclaimed_idle")           \
    X(FIN_WITHOUT_ACK, "fin_without_ack")                         \
    X(DP_CLOSE_LEFT_TO_XDP, "dp_close_left_to_xdp")               \
    X(DP_SYN_WHILE_BINDING, "dp_drop_syn_while_binding")

enum kvs_reason {
#define KVS_REASON_ENUM(e, name) KVS_R_##e,
    KVS_REASONS(KVS_REASON_ENUM)
#undef KVS_REASON_ENUM
        KVS_R__COUNT
};

#if !defined(__bpf__)
/* Name of a reason for userspace (counters, CLI, metrics). */
static inline const char *kvs_reason_name(unsigned r) {
    static const char *const names[] = {
#define KVS_REASON_NAME(e, name) name,
        KVS_REASONS(KVS_REASON_NAME)
#undef KVS_REASON_NAME
    };
    return r < (unsigned)KVS_R__COUNT ? names[r] : "unknown";
}
#endif

#endif /* KVSTEER_REASONS_H */
