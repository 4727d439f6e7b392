/* kvsteer ABI: every struct, constant and map name that BPF programs and userspace both read.
 *
 * This is the one definition; the XDP program, the DPDK dataplane, kvsteerd and kvsteerctl all
 * include it. Change a layout here and every side changes with it. Additive changes only
 * (new fields in padding or at the end, new constants) unless every user is updated at once.
 *
 * Byte order: addresses and ports are stored in NETWORK byte order (as they appear on the wire),
 * everything else in host order. IPv4 addresses sit in addr[0]; addr[1..3] are zero.
 */
#ifndef KVSTEER_ABI_H
#define KVSTEER_ABI_H

#include "kvsteer/types.h"

/* ---- sizes ------------------------------------------------------------------------------ */
#define KVS_MAX_BACKENDS 1024u
#define KVS_MAGLEV_SIZE 65537u /* prime; one table half */
#define KVS_MAX_VIPS 16u
#define KVS_MAX_REPLICAS 4u       /* affinity: up to K backends per prefix */
#define KVS_AFFINITY_SLOTS 65536u /* one table half; power of two, open addressing */
#define KVS_AFFINITY_MAX_PROBE 8u
#define KVS_FLOW_MAX 1048576u /* LRU flow map entries (both directions count) */
/* How far one segment may move the bytes a connection's side was seen to send (XDP's request
 * tracking), and how far from its stream's start a client's RST may lie while its connection is
 * bound (the dataplane): 4 MiB, at least a receive window. XDP closes a bound flow only on a FIN
 * or RST at the exact place (steer.bpf.h, kvs_close_plausible). */
#define KVS_SEQ_SLACK (1u << 22)
#define KVS_MAX_WORKERS 8u
#define KVS_BIND_RING_SLOTS 4096u    /* per worker; power of two */
#define KVS_MAX_REPORT_BLOCKS 28u    /* chained block hashes carried in one binding report */
#define KVS_STATS_MAX 192u           /* size of the per-reason counter array */
#define KVS_SESSION_HEADERS_LEN 128u /* kvs_config.session_headers, NUL included */
#define KVS_SESSION_MAX_HEADERS 8u   /* names in that list */
#define KVS_SESSION_VALUE_MAX 256u   /* longer session header values are not keys */

/* ---- defaults ------------------------------------------------------------------------- */
/* The one definition of each kvs_config default: what a reader applies when the field is 0,
 * and what kvsteerd writes unless configured otherwise. Every component uses these names. */
#define KVS_DEFAULT_PREFIX_LEN 256u         /* prefix_len */
#define KVS_DEFAULT_BLOCK_SIZE 512u         /* block_size */
#define KVS_DEFAULT_LOAD_FACTOR_MILLI 1250u /* load_factor_milli: bounded load c = 1.25 */
/* load_slack: an affinity holder keeps taking flows while within 32 of the least loaded backend */
#define KVS_DEFAULT_LOAD_SLACK 32u
/* session_cap: requests of one session key in flight at once that follow the key */
#define KVS_DEFAULT_SESSION_CAP 4u
#define KVS_DEFAULT_MAX_HELD_BYTES \
    14600u /* max_held_bytes: ~10 segments, a client's initial window */
#define KVS_DEFAULT_HASH_SEED \
    0x6b7673746565720aULL /* hash_seed ("kvsteer\n"): configured, never random */
/* snat_port_lo..snat_port_hi (inclusive) when kvsteerd is given none. A zero or inverted range
 * in kvs_config is no range: the dataplane refuses to start on it. */
/* SYN-ACKs per client /24 (or /48): a second, and a burst (kvs_config.syn_*_per_prefix). */
#define KVS_DEFAULT_SYN_RATE_PER_PREFIX 2000u
#define KVS_DEFAULT_SYN_BURST_PER_PREFIX 4000u
/* Below the kernel's default ephemeral range (ip_local_port_range 32768-60999): a reply to one
 * of the appliance kernel's own connections (kvsteerd's health checks and scrapes leave from
 * the same address) inside the SNAT range would be taken for a SNAT flow's. */
#define KVS_DEFAULT_SNAT_PORT_LO 10000u
#define KVS_DEFAULT_SNAT_PORT_HI 32767u

/* ---- pinned map names (all under the bpffs dir, default /sys/fs/bpf/kvsteer) ----------- */
/* ARRAY[1] of kvs_config, MMAPABLE */
#define KVS_MAP_CONFIG "kvs_config"
/* ARRAY[KVS_MAX_BACKENDS] of kvs_backend, MMAPABLE */
#define KVS_MAP_BACKENDS "kvs_backends"
/* ARRAY[KVS_MAX_BACKENDS] of kvs_backend_load, MMAPABLE */
#define KVS_MAP_BACKEND_LOAD "kvs_be_load"
/* 2*KVS_MAGLEV_SIZE __u32 backend ids, MMAPABLE: ARRAY[1] of struct kvs_maglev_table (see there) */
#define KVS_MAP_MAGLEV "kvs_maglev"
/* ARRAY[2*KVS_AFFINITY_SLOTS] of kvs_affinity_entry, MMAPABLE */
#define KVS_MAP_AFFINITY "kvs_affinity"
/* LRU_HASH kvs_flow_key -> kvs_flow */
#define KVS_MAP_FLOWS "kvs_flows"
/* PERCPU_ARRAY[KVS_STATS_MAX] of __u64, index enum kvs_reason */
#define KVS_MAP_STATS "kvs_stats"
/* ARRAY[KVS_MAX_WORKERS] of kvs_ring_ctl, MMAPABLE */
#define KVS_MAP_RING_CTL "kvs_ring_ctl"
/* ARRAY[KVS_MAX_WORKERS*KVS_BIND_RING_SLOTS] of kvs_bind_report, MMAPABLE */
#define KVS_MAP_BIND_RING "kvs_bind_ring"
/* ARRAY[KVS_MAX_WORKERS*KVS_STATS_MAX] of __u64, MMAPABLE: dataplane counters, row per worker */
#define KVS_MAP_DP_STATS "kvs_dp_stats"
/* XSKMAP; name fixed by DPDK's af_xdp PMD; not pinned */
#define KVS_MAP_XSKS "xsks_map"
/* DEVMAP for two-armed XDP_REDIRECT */
#define KVS_MAP_TX_PORTS "kvs_tx_ports"
/* kvs_tx_ports: DEVMAP_HASH key = value = egress ifindex, NOT pinned (optional; bpf_redirect
 * otherwise) */
#define KVS_MAX_TX_PORTS 64u
#define KVS_MAX_XSKS 64u /* xsks_map entries: one per RX queue */
#define KVS_DEFAULT_BPFFS "/sys/fs/bpf/kvsteer"
/* ARRAY[1] of struct kvs_fleet, MMAPABLE: the appliances of a fleet (see there) */
#define KVS_MAP_FLEET "kvs_fleet"
/* ARRAY[2*KVS_OWNER_BUCKETS] of struct kvs_owner_entry, MMAPABLE, double-buffered like Maglev */
#define KVS_MAP_OWNER "kvs_owner"
/* ARRAY[KVS_FLEET_HEARD_ENTRIES] of __u64, MMAPABLE: per member id, the sequence number its
 * newest pong echoed, and at KVS_FLEET_HEARD_SAYS(id) what that pong said, one word: the low 32
 * bits of its sequence number << 32 | the answerer's heard set (XDP writes, kvsteerd's pinger
 * reads; abi.h "liveness between appliances") */
#define KVS_MAP_FLEET_HEARD "kvs_fleet_heard"
#define KVS_FLEET_HEARD_ENTRIES (2 * KVS_MAX_APPLIANCES)
#define KVS_FLEET_HEARD_SAYS(id) (KVS_MAX_APPLIANCES + (id))

/* Values that never change meaning: 0 is always "empty/unset". */
#define KVS_BACKEND_NONE 0xffffu

enum kvs_family { KVS_AF_NONE = 0, KVS_AF_INET = 4, KVS_AF_INET6 = 6 };

/* ---- configuration (written by kvsteerd, read by XDP and the dataplane) ---------------- */
struct kvs_vip {
    __u32 addr[4]; /* network order */
    __u16 port;    /* network order */
    __u8 family;   /* enum kvs_family; KVS_AF_NONE = unused slot */
    __u8 flags;
};

enum kvs_steer_mode {
    KVS_STEER_PREFIX = 0,      /* affinity table, then Maglev on the prefix hash (the product) */
    KVS_STEER_ROUND_ROBIN = 1, /* baseline: ignore the prompt, rotate over healthy backends */
    KVS_STEER_FIVE_TUPLE = 2,  /* baseline: Maglev on the 5-tuple (an L4 balancer) */
};

enum kvs_config_flags {
    KVS_CFG_SYN_TIMESTAMPS = 1u << 0, /* answer SYN timestamps in the SYN-ACK */
    /* Steer every request of a kept-alive connection: XDP hands a request that starts at a
     * quiescent point to the dataplane, which may move the connection to another backend. */
    KVS_CFG_PER_REQUEST = 1u << 1,
};

struct kvs_config {
    __u32 generation; /* bumped by the writer after every change */
    __u32 n_vips;
    struct kvs_vip vips[KVS_MAX_VIPS];

    /* Appliance-owned backend-side source (full NAT). */
    __u32 snat_addr[4];    /* network order */
    __u16 snat_port_lo;    /* host order, inclusive; split evenly between workers */
    __u16 snat_port_hi;    /* host order, inclusive (kvsteerd's default: KVS_DEFAULT_SNAT_PORT_*) */
    __u8 appliance_mac[6]; /* source MAC of everything the appliance sends */
    __u8 snat_family;
    __u8 n_workers;

    /* SYN cookies: SipHash-2-4 keys, [cookie_sign] signs (the current key), the other is the
     * previous one; validation accepts both. */
    __u64 cookie_key[2][2];
    __u32 cookie_period_s; /* length of one time slot, seconds (0: KVS_COOKIE_DEFAULT_PERIOD_S,
                              cookie.h) */
    __u32 flags;           /* enum kvs_config_flags */
    __u16 syn_mss;         /* MSS advertised in our SYN-ACK */
    __u8 syn_wscale;       /* window scale advertised in our SYN-ACK */
    /* Which cookie_key signs (bit 0; read it through kvs_config_sign_key). A writer never
     * rewrites the signing key in place: it writes the other slot, then flips this byte, so a
     * SYN answered during a rotation is never signed with half of each key. */
    __u8 cookie_sign;
    __u16 syn_window; /* raw window field of our SYN-ACK (non-zero) */
    __u16 pad1;

    /* Steering. */
    __u32 steer_mode; /* enum kvs_steer_mode */
    __u32 prefix_len; /* bytes of prompt in the fixed-prefix hash (0: KVS_DEFAULT_PREFIX_LEN) */
    __u32 block_size; /* bytes per chained block (0: KVS_DEFAULT_BLOCK_SIZE) */
    __u32 max_blocks; /* chained blocks hashed (0: KVS_MAX_REPORT_BLOCKS; capped there) */
    __u32 load_factor_milli; /* bounded load c x 1000 (0: KVS_DEFAULT_LOAD_FACTOR_MILLI; below 1000
                                counts as 1000) */
    __u32
        max_held_bytes; /* first-flight bytes held before binding (0: KVS_DEFAULT_MAX_HELD_BYTES) */
    __u64 hash_seed;    /* seed of every prefix/block hash (0: KVS_DEFAULT_HASH_SEED) */

    /* Double-buffered tables: which half readers use. Writers fill the other half, then flip. */
    __u32 maglev_active;   /* 0 or 1 */
    __u32 affinity_active; /* 0 or 1 */
    __u32 n_backends;      /* highest used backend id + 1 */
    /* SYN-ACKs a second (and burst) to one client /24 or /48 (synrate.h); 0 = no limit. */
    __u32 syn_rate_per_prefix;
    __u32 syn_burst_per_prefix;
    __u32 load_slack; /* affinity bound never below the least eligible in_flight + 1 + this, however
                         low c x the mean (0: KVS_DEFAULT_LOAD_SLACK) */

    /* Session affinity by header (userspace only: XDP never reads these). When a request head
     * carries one of these headers, its value is the affinity key instead of the prompt, for at
     * most session_cap requests of one key in flight at once. */
    __u32 session_cap; /* 0: KVS_DEFAULT_SESSION_CAP */
    __u32 pad2;
    /* Lower-case header names separated by ',', NUL-terminated; empty: off (the default). */
    char session_headers[KVS_SESSION_HEADERS_LEN];

    /* Dual stack: a second SNAT address, of the other family than snat_addr. A flow leaves
     * towards its backend from the SNAT address of its own family (kvs_snat_addr); both share
     * the port range. snat2_family KVS_AF_NONE: none (one family only). */
    __u32 snat2_addr[4]; /* network order */
    __u8 snat2_family;
    __u8 pad3[7];
};

/* The SNAT address flows of `family` leave from (snat_addr or snat2_addr), or NULL when the
 * appliance has none of that family. */
static inline const __u32 *kvs_snat_addr(const struct kvs_config *c, __u8 family) {
    if (c->snat_family == family) return c->snat_addr;
    if (c->snat2_family == family) return c->snat2_addr;
    return 0;
}

/* The cookie key that signs SYN-ACKs now (cookie_sign read once: a writer flips it after
 * writing the key it names). The other slot is the previous key; checks accept both. */
static inline const __u64 *kvs_config_sign_key(const struct kvs_config *c) {
    return c->cookie_key[*(const volatile __u8 *)&c->cookie_sign & 1];
}

/* The other cookie key (the previous one, still accepted). */
static inline const __u64 *kvs_config_prev_key(const struct kvs_config *c) {
    return c->cookie_key[(*(const volatile __u8 *)&c->cookie_sign & 1) ^ 1];
}

/* ---- backends ------------------------------------------------------------------------- */
enum kvs_backend_state {
    KVS_BE_EMPTY = 0, /* slot unused */
    KVS_BE_UP = 1,
    KVS_BE_DOWN = 2,  /* failed health checks; not chosen */
    KVS_BE_DRAIN = 3, /* no new flows; existing flows continue */
};

#if !defined(__bpf__)
/* Name of a backend state for userspace (API, CLI). */
static inline const char *kvs_backend_state_name(unsigned s) {
    switch (s) {
        case KVS_BE_UP:
            return "up";
        case KVS_BE_DOWN:
            return "down";
        case KVS_BE_DRAIN:
            return "drain";
        default:
            return "empty";
    }
}
#endif

struct kvs_backend {
    __u32 addr[4];     /* network order */
    __u16 port;        /* network order */
    __u8 family;       /* enum kvs_family */
    __u8 state;        /* enum kvs_backend_state */
    __u8 mac[6];       /* next-hop MAC towards the backend */
    __u16 weight;      /* Maglev weight, 0 = none */
    __u32 ifindex;     /* egress for two-armed redirect; 0 = same interface (XDP_TX) */
    __u32 max_load;    /* affinity choices skip this backend once in-flight + 1 > max_load (in place
                        * of the load-factor bound, unless max_load_cap); 0 = the load-factor bound.
                        * Maglev ignores it */
    __u8 max_load_cap; /* 1: max_load is kvsteerd's queue cap (the flows the backend had when it
                        * began to queue), applied with the load-factor bound, not in its place:
                        * frozen above that bound, it loosened it as the flows closed */
    __u8 pad_end[3];   /* keeps sizeof a multiple of 8: mmapped BPF arrays have an 8-byte stride */
};

/* Per-backend load. Writers:
 *   binds, bind_fail_*  every dataplane worker (N writers, one per worker): atomic add.
 *   closes              xdp mode: the XDP program, on whichever CPU sees the flow's first FIN or
 *                       RST (the flow entry's CLOSED bit makes it once per flow): atomic add.
 *                       dpdk mode: the worker that owns the flow, once it has seen a FIN each
 *                       way or an RST: atomic add.
 *   ext_*               kvsteerd only: relaxed stores.
 * No locks, and relaxed atomics are enough: each add is one atomic read-modify-write, so no
 * increment is lost between writers (ext_* have one writer), and no other memory is published
 * through these counters (nobody reads anything else because of a value seen here), so nothing
 * needs acquire/release.
 * Readers (every worker's backend choice, kvsteerd) take in_flight = binds - closes from two
 * relaxed loads: not one snapshot, so it may be off by the flows bound or closed meanwhile
 * (a difference below 0 reads as 0); the bounded-load choice is a heuristic over a load that
 * changes all the time and tolerates that. */
struct kvs_backend_load {
    __u64 binds;  /* flows bound to this backend (dataplane workers) */
    __u64 closes; /* bound flows seen closing, once per flow (XDP, or the worker in dpdk mode) */
    __u64 bind_fail_rst;     /* backend answered our SYN with RST (dataplane workers) */
    __u64 bind_fail_timeout; /* backend SYN timed out (dataplane workers) */
    __u64 ext_queue;         /* backend's own waiting queue, from telemetry (kvsteerd) */
    __u64 ext_running;       /* backend's running requests, from telemetry (kvsteerd) */
    /* Bound connections idle between requests (their responses all ended, the client sent
     * nothing since: a kept-alive connection in a pool): idle_starts - idle_ends of them now,
     * counted by XDP (KVS_FLOW_IDLE) and by the sweeper for an idle flow it expires. The
     * choice's load is the requests in flight: binds - closes - that. */
    __u64 idle_starts;
    __u64 idle_ends;
};

/* The Maglev map holds ONE value with both halves, so its mmap is a flat __u32 array exactly as
 * Tables::maglev (kvsteer/core/tables.h) exposes it (an ARRAY of __u32 would have an 8-byte stride
 * when mmapped). Half h occupies backend[h * KVS_MAGLEV_SIZE .. (h + 1) * KVS_MAGLEV_SIZE). */
struct kvs_maglev_table {
    __u32 backend[2 * KVS_MAGLEV_SIZE];
};

/* ---- affinity table: chained block hash -> up to K replicas ---------------------------- */
/* Open addressing: slot = key & (KVS_AFFINITY_SLOTS-1), linear probe up to
 * KVS_AFFINITY_MAX_PROBE, within the active half. key == 0 marks an empty slot. */
struct kvs_affinity_entry {
    __u64 key;                        /* chained block hash (or fixed-prefix hash) */
    __u16 backends[KVS_MAX_REPLICAS]; /* backend ids */
    __u8 n_backends;
    __u8 depth; /* block index the key covers (0 = first block) */
    __u16 flags;
    __u32 pad;
};

/* ---- flows ---------------------------------------------------------------------------- */
/* One entry per direction, keyed on the packet as it arrives. */
struct kvs_flow_key {
    __u32 saddr[4];
    __u32 daddr[4];
    __u16 sport;
    __u16 dport;
    __u8 family;
    __u8 proto; /* IPPROTO_TCP */
    __u16 pad;
};

enum kvs_flow_dir { KVS_DIR_C2S = 1, KVS_DIR_S2C = 2 };

enum kvs_flow_state_bits {
    KVS_FLOW_FIN_IN = 1u << 0, /* FIN seen in this entry's direction */
    KVS_FLOW_RST = 1u << 1,    /* RST seen */
    KVS_FLOW_CLOSED = 1u << 2, /* close already counted in kvs_be_load.closes */
    /* A request boundary is being bound again by the dataplane: XDP hands it every packet of
     * the flow (both entries carry the bit) until the dataplane replaces the entries. */
    KVS_FLOW_REBINDING = 1u << 3,
    /* Client->server entry: the connection is idle (every response ended, the client sent
     * nothing since), counted once in kvs_be_load.idle_starts; cleared, and counted in
     * idle_ends, by the client's next bytes, the close or the sweeper's expiry. */
    KVS_FLOW_IDLE = 1u << 4,
};

/* kvs_flow.resp (server->client entry): what XDP knows of the response being sent. On the
 * client->server entry resp and resp_end track the current request the same way: END set, it
 * ends at resp_end (where the next request may start); clear, its end is unknown (a chunked
 * body, a head XDP could not read) and no later request of the connection is re-bound. */
enum kvs_resp_bits {
    KVS_RESP_CHUNKED = 1u << 0, /* its body is chunked: the last chunk ends it */
    KVS_RESP_END = 1u << 1,     /* resp_end is where it ends (Content-Length, last chunk seen) */
};

struct kvs_flow {
    /* Rewrite to apply. */
    __u32 new_saddr[4];
    __u32 new_daddr[4];
    __u16 new_sport;
    __u16 new_dport;
    __u8 new_smac[6];
    __u8 new_dmac[6];
    __u32 seq_delta;   /* added to seq (mod 2^32) */
    __u32 ack_delta;   /* added to ack and to every SACK block edge */
    __u32 tsval_delta; /* added to TSval */
    __u32 tsecr_delta; /* added to TSecr */
    __u8 win_shl;      /* window field: (win << win_shl) >> win_shr, saturated to 0xffff */
    __u8 win_shr;
    __u8 dir;   /* enum kvs_flow_dir */
    __u8 state; /* enum kvs_flow_state_bits, updated by XDP */
    __u16 backend_id;
    __u16 worker;     /* dataplane worker that owns the flow */
    __u32 tx_ifindex; /* 0 = XDP_TX, else XDP_REDIRECT via kvs_tx_ports */
    __u32 chunk_end;  /* server->client: the end of a last chunk seen before its response's head */
    /* Bookkeeping updated by XDP (racy across CPUs; informational). last_seen_ns is
     * CLOCK_MONOTONIC read at tick resolution (bpf_ktime_get_coarse_ns): up to one tick old. */
    __u64 created_ns;
    __u64 last_seen_ns;
    __u64 packets;
    __u64 bytes;
    /* Request boundaries (per-request steering). XDP writes these on this entry's own direction
     * (pre-rewrite sequence space) and reads the reverse entry's at a candidate boundary. */
    __u32 next_seq; /* after the highest byte (or FIN) this direction sent */
    __u32 last_ack; /* the highest acknowledgment this direction carried */
    __u32 resp_end; /* where the current response (or, client->server, request) ends */
    __u32 ts_last;  /* server->client: the newest TSval sent to the client (post-rewrite) */
    __u8 resp;      /* enum kvs_resp_bits (server->client; client->server: the request) */
    /* client->server: the client's handshake (from the cookie), for the SYN of a new backend
     * leg when a request moves the connection. */
    __u8 client_wscale;
    __u8 client_sack;
    __u8 client_ts;
    __u16 client_mss;
    /* Requests started (client->server) / responses started (server->client), counted by XDP
     * from the first one the dataplane flushed: equal when no response is owed. */
    __u16 msgs;
    /* client->server, written by the dataplane: the backend leg's handshake as the backend saw
     * it, so that a leg a request moved off can serve another client (the backend pool): the
     * MSS and window scale our SYN offered, the backend's window scale (KVS_WSCALE_NONE: none),
     * whether both ends of the leg use timestamps. */
    __u16 leg_mss;
    __u8 leg_wscale;
    __u8 leg_backend_wscale;
    __u8 leg_ts;
};

/* ---- binding reports: dataplane -> kvsteerd --------------------------------------------- */
enum kvs_key_kind {
    KVS_KEY_OPENAI_PROMPT = 0, /* /v1/completions "prompt" */
    KVS_KEY_OPENAI_CHAT = 1,   /* /v1/chat/completions "messages" */
    KVS_KEY_BODY_PREFIX = 2,   /* fallback: body bytes (not an OpenAI request we understand) */
    KVS_KEY_FIVE_TUPLE = 3,    /* fallback: no usable bytes at all */
};

enum kvs_choice_via {
    KVS_VIA_AFFINITY = 0,
    KVS_VIA_MAGLEV = 1,
    KVS_VIA_MAGLEV_SPILL = 2, /* Maglev's first candidate was over its load bound */
    KVS_VIA_ROUND_ROBIN = 3,
    KVS_VIA_RETRY = 4, /* an earlier candidate refused or timed out */
};

struct kvs_bind_report {
    __u64 ts_ns;                             /* CLOCK_MONOTONIC */
    __u64 prefix_hash;                       /* fixed-length prefix hash */
    __u64 block_hash[KVS_MAX_REPORT_BLOCKS]; /* chained: [i] covers blocks 0..i */
    __u32 prompt_bytes;                      /* prompt bytes seen in the first flight */
    __u16 n_blocks;
    __u16 backend_id;
    __u8 key_kind; /* enum kvs_key_kind */
    __u8 via;      /* enum kvs_choice_via */
    __u16 worker;
    __u32 pad;
};

/* A worker whose heartbeat (kvs_ring_ctl.alive_ns) is 0 or older than this is taken for gone by
 * XDP: no request boundary of its flows is marked (the request stays on its backend) while no
 * dataplane is there to take it. */
#define KVS_DP_ALIVE_NS 1000000000ull

/* Single-producer (one dataplane worker) single-consumer (kvsteerd) ring in mmapped maps.
 * The producer writes slot[head % SLOTS] then store-releases head+1; the consumer reads
 * slots below head (load-acquire) and store-releases tail. Full ring: the report is dropped
 * and counted (dropped), never blocks the worker. */
struct kvs_ring_ctl {
    __u64 head;
    __u64 dropped;
    /* The worker's heartbeat: CLOCK_MONOTONIC ns, stored (relaxed) about every 10 ms while it
     * polls, 0 once it stopped cleanly. kvsteerd takes a stale one as a dead dataplane (and
     * withdraws the VIP's announcement). Not written by a worker parked for port recovery. */
    __u64 alive_ns;
    /* Flows the worker is binding (first flights held, backend handshakes), stored with the
     * heartbeat: not in the backends' binds - closes yet (a drain waits for them too). */
    __u64 binding;
    __u64 pad0[4];
    __u64 tail;
    __u64 pad1[7];
};

/* ---- a fleet of appliances (several announce one VIP; the router spreads flows) ------- */
/* Every appliance computes the same owner table from the fleet's membership epochs (fleet.h):
 * bucket of the client 4-tuple -> the appliance that binds its new flows (owner) and the ones
 * that owned the bucket in the previous epochs (prev, newest first). Any appliance answers SYNs
 * (shared cookie key). A client packet that misses the local flow map is sent on, encapsulated
 * (struct kvs_fleet_hdr), to the owner; on a miss there to prev[0], then prev[1], ...: each
 * appliance sends a packet on at most once, the hop number says which one is next, so nothing
 * loops. A packet nobody has a flow for, once every owner was asked, is answered with a RST.
 * Return traffic needs nothing: each appliance's own SNAT address pins it. */
#define KVS_MAX_APPLIANCES 16u
#define KVS_OWNER_BUCKETS 65536u /* power of two; one table half */
#define KVS_OWNER_PREV 3u        /* previous owners kept per bucket */
#define KVS_APPLIANCE_NONE 0xffu
/* EtherType of the encapsulation between appliances (IEEE 802 local experimental 1). */
#define KVS_ETH_P_FLEET 0x88B5

enum kvs_appliance_state {
    KVS_APP_EMPTY = 0,    /* no such member */
    KVS_APP_UP = 1,       /* owns buckets */
    KVS_APP_DRAINING = 2, /* owns nothing, still serves its flows (a previous owner) */
};

struct kvs_appliance {
    __u8 mac[6]; /* where packets sent on to it go (the appliances share an L2 segment) */
    __u8 state;  /* enum kvs_appliance_state */
    __u8 pad;
};

struct kvs_fleet {
    __u32 generation;  /* bumped by the writer after every change */
    __u8 self;         /* this appliance's id; KVS_APPLIANCE_NONE: no fleet (no redirects) */
    __u8 owner_active; /* 0 or 1: the kvs_owner half readers use */
    __u16 pad;
    __u64 digest; /* of the active owner table and the members (kvsteerctl fleet status) */
    __u64 epoch;  /* the newest membership epoch the table was computed from */
    struct kvs_appliance members[KVS_MAX_APPLIANCES]; /* by id */
    /* CLOCK_MONOTONIC ns (bpf_ktime_get_ns) when the owner table last changed. For
     * KVS_FLEET_SETTLE_NS after it the appliances' tables may disagree (each reads the change on
     * its own), so a packet every owner missed is dropped (the client retransmits), not reset. */
    __u64 changed_ns;
    /* Whom this appliance's pinger hears: the members that answered one of its last few pings
     * (bit per id), valid until heard_until_ns (CLOCK_MONOTONIC ns). kvsteerd's pinger writes
     * both every round, `heard` first (and heard_until_ns 0 when it stops): every pong this
     * appliance's XDP program answers carries `heard` while it is valid, else an empty set (an
     * appliance whose pinger stopped vouches for nobody). Liveness, below. */
    __u64 heard_until_ns;
    __u16 heard;
    __u16 pad2[3];
};
#define KVS_FLEET_SETTLE_NS 500000000ull

/* One bucket. 8 bytes: mmapped BPF arrays have an 8-byte stride. */
struct kvs_owner_entry {
    __u8 owner;                /* KVS_APPLIANCE_NONE: no owner (no fleet, or nobody up) */
    __u8 prev[KVS_OWNER_PREV]; /* newest first; KVS_APPLIANCE_NONE ends the list */
    __u32 pad;
};

/* Between appliances: Ethernet (dst: the next appliance, src: the sender, proto
 * KVS_ETH_P_FLEET), this header, then the frame's IP packet as it reached the fleet. The
 * receiver restores the Ethernet header (source orig_src, proto orig_proto) before anything else
 * reads the frame. 10 bytes: the appliances' segment needs an MTU 10 bytes above the clients'. */
struct kvs_fleet_hdr {
    __u8 hop;         /* low 3 bits: 1 sent to the owner, 2 + i to prev[i]; bit 3: the chase
                       * is unsure (KVS_FLEET_HOP_UNSURE); high 4: the low 4 bits of the sender's
                       * owner-table digest (fleetpkt.h KVS_FLEET_TAG) */
    __u8 from;        /* sender's appliance id */
    __u8 orig_src[6]; /* source MAC of the frame as it reached the fleet (the router's) */
    __u16 orig_proto; /* its EtherType, network order */
} __attribute__((packed));

/* Liveness between appliances. Every kvsteerd sends each other member a ping every few tens of
 * ms: a KVS_ETH_P_FLEET frame whose header is struct kvs_fleet_ping (hop KVS_FLEET_HOP_PING). The
 * member's XDP program answers it in place (hop KVS_FLEET_HOP_PONG, XDP_TX): no process of the
 * member is involved, so a pong says its kernel path is up. The pinger's XDP program stores the
 * echoed sequence number in kvs_fleet_heard[from], and the answerer's heard set beside it. A
 * member that answered before and leaves several pings in a row unanswered (crashed, its link
 * gone) is silent here; it leaves the pinger's owner table unless another member that answers
 * our pings says, in a pong to one of our last few pings, that it still hears it. So packets of
 * a crashed member's orphaned flows are answered with RSTs well within a second, and a loss
 * between two appliances alone leaves a live member's flows alone. Hop 0 and
 * 15 are never those of a frame sent on (1..KVS_OWNER_PREV + 1). */
#define KVS_FLEET_HOP_PING 0x00
#define KVS_FLEET_HOP_PONG 0x0f
struct kvs_fleet_ping {
    __u8 hop;      /* KVS_FLEET_HOP_PING or KVS_FLEET_HOP_PONG (the whole byte: no table tag) */
    __u8 from;     /* sender's appliance id */
    __u8 seq[8];   /* the pinger's sequence number, in its byte order; a pong echoes it unchanged */
    __u8 heard[2]; /* a pong: the answerer's kvs_fleet.heard while valid, little-endian */
} __attribute__((packed));

#endif /* KVSTEER_ABI_H */
