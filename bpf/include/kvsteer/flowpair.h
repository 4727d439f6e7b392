/* Builds the two kvs_flows entries (client->server, server->client) of one bound connection. */
#ifndef KVSTEER_FLOWPAIR_H
#define KVSTEER_FLOWPAIR_H

#include "kvsteer/abi.h"
#include "kvsteer/parse.h"

/* What the dataplane knows once the backend answered its SYN. Addresses/ports in network
 * order (IPv4 in [0]), sequence numbers and timestamps in host order. */
struct kvs_flowpair_params {
    __u32 client_addr[4], vip_addr[4], snat_addr[4], backend_addr[4];
    __u16 client_port, vip_port, snat_port, backend_port;
    __u8 family;         /* enum kvs_family */
    __u8 client_wscale;  /* from the cookie; KVS_WSCALE_NONE = client has no WS */
    __u8 synack_wscale;  /* what our SYN-ACK advertised (cfg syn_wscale) */
    __u8 backend_wscale; /* from the backend's SYN-ACK; KVS_WSCALE_NONE = none */
    __u8 ts;             /* 1 if timestamps are in use on both legs */
    __u8 leg_pooled;     /* 1: the backend leg was opened before its client (a pooled leg) */
    __u8 leg_wscale;     /* pooled: the window scale its SYN offered (else the client's) */
    __u8 pad;
    __u32 leg_seq_delta;   /* pooled: its ISN - the client's ISN (else 0: the SYN carried it) */
    __u32 cookie;          /* our ISN towards the client */
    __u32 backend_isn;     /* the backend's ISN (its SYN-ACK's seq) */
    __u32 synack_tsval;    /* TSval of our SYN-ACK to the client */
    __u32 backend_tsval;   /* TSval of the backend's SYN-ACK */
    __u32 client_ts_delta; /* added to the client's TSvals on the backend leg (our clock there) */
    __u8 appliance_mac[6]; /* source MAC of both directions */
    __u8 client_mac[6];    /* next hop towards the client (the first flight's source MAC) */
    __u8 backend_mac[6];   /* next hop towards the backend */
    __u16 backend_id;
    __u16 worker;
    __u32 client_ifindex;  /* egress towards the client, 0 = XDP_TX */
    __u32 backend_ifindex; /* egress towards the backend, 0 = XDP_TX */
    __u64 now_ns;          /* CLOCK_MONOTONIC, for created_ns/last_seen_ns */
};

/* The client->backend leg keeps the client's sequence space (the backend SYN carried the
 * client's ISN; a pooled leg, opened before its client, moves seq by leg_seq_delta and the
 * backend's ACKs and SACK edges back by it), so only ACKs/SACKs and timestamps move: the client's
 * TSvals by client_ts_delta (the backend leg runs on the appliance's clock, so a backend still
 * holding the SNAT 4-tuple in TIME_WAIT sees a newer timestamp and accepts the next SYN), echoed
 * ones into the backend's clock; the backend->client leg moves seq by (cookie - backend_isn), TSval
 * into our SYN-ACK's clock, TSecr back into the client's, and rescales the window from the
 * backend's shift to the one our SYN-ACK announced. */
KVS_INLINE void kvs_flowpair_build(const struct kvs_flowpair_params *p, struct kvs_flow_key *k_c2s,
                                   struct kvs_flow *f_c2s, struct kvs_flow_key *k_s2c,
                                   struct kvs_flow *f_s2c) {
    __u8 fam = p->family;

    __builtin_memset(k_c2s, 0, sizeof(*k_c2s));
    __builtin_memset(k_s2c, 0, sizeof(*k_s2c));
    __builtin_memset(f_c2s, 0, sizeof(*f_c2s));
    __builtin_memset(f_s2c, 0, sizeof(*f_s2c));

    __builtin_memcpy(k_c2s->saddr, p->client_addr, 16);
    __builtin_memcpy(k_c2s->daddr, p->vip_addr, 16);
    k_c2s->sport = p->client_port;
    k_c2s->dport = p->vip_port;
    k_c2s->family = fam;
    k_c2s->proto = KVS_IPPROTO_TCP;
    __builtin_memcpy(f_c2s->new_saddr, p->snat_addr, 16);
    __builtin_memcpy(f_c2s->new_daddr, p->backend_addr, 16);
    f_c2s->new_sport = p->snat_port;
    f_c2s->new_dport = p->backend_port;
    __builtin_memcpy(f_c2s->new_smac, p->appliance_mac, 6);
    __builtin_memcpy(f_c2s->new_dmac, p->backend_mac, 6);
    f_c2s->seq_delta = p->leg_seq_delta;
    f_c2s->ack_delta = p->backend_isn - p->cookie;
    f_c2s->tsval_delta = p->ts ? p->client_ts_delta : 0;
    f_c2s->tsecr_delta = p->ts ? p->backend_tsval - p->synack_tsval : 0;
    f_c2s->dir = KVS_DIR_C2S;
    f_c2s->tx_ifindex = p->backend_ifindex;

    __builtin_memcpy(k_s2c->saddr, p->backend_addr, 16);
    __builtin_memcpy(k_s2c->daddr, p->snat_addr, 16);
    k_s2c->sport = p->backend_port;
    k_s2c->dport = p->snat_port;
    k_s2c->family = fam;
    k_s2c->proto = KVS_IPPROTO_TCP;
    __builtin_memcpy(f_s2c->new_saddr, p->vip_addr, 16);
    __builtin_memcpy(f_s2c->new_daddr, p->client_addr, 16);
    f_s2c->new_sport = p->vip_port;
    f_s2c->new_dport = p->client_port;
    __builtin_memcpy(f_s2c->new_smac, p->appliance_mac, 6);
    __builtin_memcpy(f_s2c->new_dmac, p->client_mac, 6);
    /* The backend's bytes start after its SYN; the first response starts there, as if one had
     * ended there (its segments ahead of its head count). */
    f_s2c->next_seq = p->backend_isn + 1;
    f_s2c->resp_end = p->backend_isn + 1;
    f_s2c->resp = KVS_RESP_END;
    f_s2c->seq_delta = p->cookie - p->backend_isn;
    f_s2c->ack_delta = 0u - p->leg_seq_delta;
    f_s2c->tsval_delta = p->ts ? p->synack_tsval - p->backend_tsval : 0;
    f_s2c->ts_last = p->ts ? p->synack_tsval : 0; /* the newest the client has seen */
    f_s2c->tsecr_delta = p->ts ? 0u - p->client_ts_delta : 0;
    /* Window scaling is on with the client only if it offered it; then our SYN-ACK carried WS
     * and the client scales every window the backend sends by synack_wscale. A backend that did
     * not answer WS sends unscaled windows (shift 0) and reads the client's unscaled, so the
     * client's scaled windows are widened for it (saturating at 0xffff). The backend reads the
     * client's windows with the shift the leg's SYN offered: the client's own, or a pooled
     * leg's, from which they are rescaled. */
    if (p->client_wscale != KVS_WSCALE_NONE) {
        __u8 bs = p->backend_wscale == KVS_WSCALE_NONE
                      ? 0
                      : (p->backend_wscale > 14 ? 14 : p->backend_wscale);
        __u8 os = p->synack_wscale > 14 ? 14 : p->synack_wscale;
        __u8 cs = p->client_wscale > 14 ? 14 : p->client_wscale;
        __u8 ls = p->backend_wscale == KVS_WSCALE_NONE
                      ? 0
                      : (!p->leg_pooled ? cs : (p->leg_wscale > 14 ? 14 : p->leg_wscale));

        f_s2c->win_shl = bs > os ? (__u8)(bs - os) : 0;
        f_s2c->win_shr = os > bs ? (__u8)(os - bs) : 0;
        f_c2s->win_shl = cs > ls ? (__u8)(cs - ls) : 0;
        f_c2s->win_shr = ls > cs ? (__u8)(ls - cs) : 0;
    }
    f_s2c->dir = KVS_DIR_S2C;
    f_s2c->tx_ifindex = p->client_ifindex;

    f_c2s->backend_id = f_s2c->backend_id = p->backend_id;
    f_c2s->worker = f_s2c->worker = p->worker;
    f_c2s->created_ns = f_s2c->created_ns = p->now_ns;
    f_c2s->last_seen_ns = f_s2c->last_seen_ns = p->now_ns;
}

#endif /* KVSTEER_FLOWPAIR_H */
