// Flow expiry: closed flows go after the linger, idle ones after the idle timeout, both
// directions at once, and their SNAT ports are freed; live flows stay.
#include <arpa/inet.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include "kvsteer/rewrite.h"
#include "sweeper.h"

using namespace kvsteer::dp;

namespace {

struct Pair {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
};

// What XDP leaves on both entries of a connection closed both ways: a FIN each way, the close
// counted (KVS_FLOW_CLOSED).
constexpr std::uint8_t kFinBoth = KVS_FLOW_FIN_IN | KVS_FLOW_CLOSED;

// A bound flow client:cport -> VIP, SNAT 10.77.0.2:snat -> backend 10.0.0.(1 + backend):8000.
Pair make_pair(std::uint16_t cport, std::uint16_t snat, std::uint64_t last_seen, std::uint8_t state,
               std::uint16_t backend = 0) {
    Pair p{};
    p.kc.saddr[0] = htonl(0x0a4d000a);
    p.kc.daddr[0] = htonl(0x0a4d0101);
    p.kc.sport = htons(cport);
    p.kc.dport = htons(8000);
    p.kc.family = KVS_AF_INET;
    p.kc.proto = 6;
    p.fc.new_saddr[0] = htonl(0x0a4d0002);
    p.fc.new_daddr[0] = htonl(0x0a000001 + backend);
    p.fc.backend_id = p.fs.backend_id = backend;
    p.fc.new_sport = htons(snat);
    p.fc.new_dport = htons(8000);
    p.fc.dir = KVS_DIR_C2S;
    p.fc.last_seen_ns = last_seen;
    p.fc.state = state;
    kvs_flow_reverse_key(&p.kc, &p.fc, &p.ks);
    p.fs.new_saddr[0] = p.kc.daddr[0];
    p.fs.new_daddr[0] = p.kc.saddr[0];
    p.fs.new_sport = p.kc.dport;
    p.fs.new_dport = p.kc.sport;
    p.fs.dir = KVS_DIR_S2C;
    p.fs.last_seen_ns = last_seen;
    p.fs.state = state;
    return p;
}

// A flow map like kvs_flows (LRU hash); -1 without CAP_BPF.
int flow_map(const char *name, unsigned entries = 1024) {
    return bpf_map_create(BPF_MAP_TYPE_LRU_HASH, name, sizeof(kvs_flow_key), sizeof(kvs_flow),
                          entries, nullptr);
}

// Both entries of a pair into the map.
bool put(int fd, const Pair &p) {
    return bpf_map_update_elem(fd, &p.kc, &p.fc, BPF_ANY) == 0 &&
           bpf_map_update_elem(fd, &p.ks, &p.fs, BPF_ANY) == 0;
}

bool present(int fd, const kvs_flow_key &k) {
    kvs_flow f;
    return bpf_map_lookup_elem(fd, &k, &f) == 0;
}

TEST(Sweeper, DeletesClosedAndIdleFlowsBothWaysAndFreesPorts) {
    int fd = flow_map("kvdp_sweep");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    Pair closed_old = make_pair(1001, 20001, now - 5 * s, kFinBoth);
    Pair closed_new = make_pair(1002, 20002, now - 1 * s, kFinBoth);
    Pair idle = make_pair(1003, 20003, now - 400 * s, 0);
    idle.fc.backend_id = idle.fs.backend_id = 3;
    idle.fc.state = KVS_FLOW_IDLE;  // a kept-alive connection XDP counted idle between requests
    Pair live = make_pair(1004, 20004, now - 10 * s, 0);
    // A RST on one side ends the flow as well.
    Pair reset = make_pair(1006, 20006, now - 5 * s, 0);
    reset.fs.state = KVS_FLOW_RST | KVS_FLOW_CLOSED;
    reset.fc.state = KVS_FLOW_CLOSED;
    // Half closed (the client's FIN only, the close counted on both entries), silent for longer
    // than the linger: the backend may still answer (a long prefill, a non-streamed response).
    Pair half_closed = make_pair(1007, 20007, now - 5 * s, KVS_FLOW_CLOSED);
    half_closed.fc.state = kFinBoth;
    for (const Pair *p : {&closed_old, &closed_new, &idle, &live, &reset, &half_closed})
        ASSERT_TRUE(put(fd, *p));
    // The client side of `live` was seen recently even though its entry is old: the flow lives.
    Pair half = make_pair(1005, 20005, now - 400 * s, 0);
    half.fs.last_seen_ns = now - 1 * s;
    ASSERT_TRUE(put(fd, half));

    auto ports = std::make_unique<PortBusy>();
    SweepResult r0 = sweep_flows(fd, now, ~0ull, ~0ull, ports.get(), true);
    EXPECT_EQ(r0.seen, 14u);
    EXPECT_EQ(r0.deleted, 0u);
    EXPECT_EQ(ports->state(0, 20001), kPortInstalled) << "startup marks the ports of live flows";

    // In-flight accounting: XDP counted the closes of the closed and reset flows (CLOSED);
    // the idle one never closed, so the sweeper counts its close on its backend.
    std::vector<kvs_backend_load> load(KVS_MAX_BACKENDS);
    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, ports.get(), false, load.data());
    EXPECT_EQ(r.deleted, 6u);
    EXPECT_EQ(r.closes, 1u);
    EXPECT_EQ(load[3].closes, 1u) << "the idle flow's backend";
    EXPECT_EQ(load[3].idle_ends, 1u) << "expired idle: no longer counted idle either";
    EXPECT_EQ(load[0].idle_ends, 0u);
    EXPECT_EQ(load[0].closes, 0u) << "closes XDP counted are not counted again";
    EXPECT_FALSE(present(fd, reset.kc));
    EXPECT_FALSE(present(fd, reset.ks));
    EXPECT_TRUE(present(fd, half_closed.kc)) << "half closed: only the idle timeout ends it";
    EXPECT_TRUE(present(fd, half_closed.ks));
    EXPECT_EQ(ports->state(0, 20007), kPortInstalled);
    EXPECT_FALSE(present(fd, closed_old.kc));
    EXPECT_FALSE(present(fd, closed_old.ks));
    EXPECT_FALSE(present(fd, idle.kc));
    EXPECT_FALSE(present(fd, idle.ks));
    EXPECT_TRUE(present(fd, closed_new.kc)) << "closed, but within the linger";
    EXPECT_TRUE(present(fd, live.kc));
    EXPECT_TRUE(present(fd, live.ks));
    EXPECT_TRUE(present(fd, half.kc));
    EXPECT_EQ(ports->state(0, 20001), 0);
    EXPECT_EQ(ports->state(3, 20003), 0);
    EXPECT_EQ(ports->state(0, 20004), kPortInstalled);
    EXPECT_EQ(r.reclaimed, 0u);
    close(fd);
}

// Entries removed by someone else (XDP when a client reuses a closed flow's 4-tuple, or the LRU
// evicting them) give their SNAT port back at the next pass; a port a worker is still binding
// with (no entry yet) is left alone, as is one whose entry is present.
TEST(Sweeper, ReclaimsInstalledPortsWhoseEntriesAreGone) {
    int fd = flow_map("kvdp_reclaim");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    Pair kept = make_pair(2001, 21001, now - 1 * s, 0);
    Pair gone = make_pair(2002, 21002, now - 1 * s, KVS_FLOW_CLOSED);
    Pair half_gone = make_pair(2003, 21003, now - 1 * s, 0);
    for (const Pair *p : {&kept, &gone, &half_gone}) ASSERT_TRUE(put(fd, *p));
    auto ports = std::make_unique<PortBusy>();
    ports->set_state(0, 21001, kPortInstalled);
    ports->set_state(0, 21002, kPortInstalled);
    ports->set_state(0, 21003, kPortInstalled);
    ports->set_state(0, 21004, kPortBinding);  // a worker is binding with it: no entry yet
    ASSERT_EQ(bpf_map_delete_elem(fd, &gone.kc), 0);
    ASSERT_EQ(bpf_map_delete_elem(fd, &gone.ks), 0);
    ASSERT_EQ(bpf_map_delete_elem(fd, &half_gone.kc), 0);  // one direction left: still taken

    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, ports.get());
    EXPECT_EQ(r.deleted, 0u);
    EXPECT_EQ(r.reclaimed, 1u);
    EXPECT_EQ(ports->state(0, 21001), kPortInstalled);
    EXPECT_EQ(ports->state(0, 21002), kPortFree);
    EXPECT_EQ(ports->state(0, 21003), kPortInstalled);
    EXPECT_EQ(ports->state(0, 21004), kPortBinding);
    close(fd);
}

// An entry the walk doomed is deleted only if, read again, it is the same installation and still
// expired: one that carried a packet after the walk, or whose tuple a new connection took (a new
// installation), stays. Before, the walk's verdict was final (a live flow deleted).
TEST(Sweeper, AnEntryUsedOrReinstalledAfterTheWalkStays) {
    int fd = flow_map("kvdp_recheck");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    Pair woke = make_pair(2101, 21101, now - 400 * s, 0);    // idle past 300 s
    Pair reused = make_pair(2102, 21102, now - 400 * s, 0);  // idle past 300 s
    Pair dead = make_pair(2103, 21103, now - 400 * s, 0);    // idle past 300 s, and stays so
    for (Pair *p : {&woke, &reused, &dead}) {
        p->fc.created_ns = p->fs.created_ns = now - 500 * s;
        ASSERT_TRUE(put(fd, *p));
    }
    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, nullptr, false, nullptr, {}, [&] {
        woke.fc.last_seen_ns = now;  // a packet after the walk
        ASSERT_EQ(bpf_map_update_elem(fd, &woke.kc, &woke.fc, BPF_EXIST), 0);
        reused.fc.created_ns = reused.fs.created_ns = now - 400 * s;  // installed anew, old clock
        ASSERT_TRUE(put(fd, reused));
    });
    EXPECT_EQ(r.deleted, 2u) << "only the flow that stayed dead";
    kvs_flow f{};
    EXPECT_EQ(bpf_map_lookup_elem(fd, &woke.kc, &f), 0);
    EXPECT_EQ(bpf_map_lookup_elem(fd, &woke.ks, &f), 0);
    EXPECT_EQ(bpf_map_lookup_elem(fd, &reused.kc, &f), 0);
    EXPECT_NE(bpf_map_lookup_elem(fd, &dead.kc, &f), 0);
    close(fd);
}

// The same between the entry's second read and its delete (the walk of a large table and the
// deletes of the ones before it take time): the values the delete took show the packet or the
// new installation, and both entries go back. Deleted on the second read's word, such a flow lost
// both directions for good (its client's next request reset by the dataplane).
TEST(Sweeper, AnEntryUsedOrReinstalledAsItIsDeletedIsPutBack) {
    int fd = flow_map("kvdp_restore");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    Pair woke = make_pair(2111, 21111, now - 400 * s, 0);    // idle past 300 s
    Pair reused = make_pair(2112, 21112, now - 400 * s, 0);  // idle past 300 s
    Pair dead = make_pair(2113, 21113, now - 400 * s, 0);    // idle past 300 s, and stays so
    // Used too, but its server entry deleted by someone else meanwhile (the dataplane resetting
    // the flow): stays deleted, not half put back.
    Pair half = make_pair(2114, 21114, now - 400 * s, 0);
    // A boundary marked on its server entry only between the two deletes: put back unmarked.
    Pair marked = make_pair(2115, 21115, now - 400 * s, 0);
    for (Pair *p : {&woke, &reused, &dead, &half, &marked}) {
        p->fc.created_ns = p->fs.created_ns = now - 500 * s;
        ASSERT_TRUE(put(fd, *p));
    }
    unsigned hooks = 0;
    SweepResult r = sweep_flows(
        fd, now, 3 * s, 300 * s, nullptr, false, nullptr, {}, {}, [&](const kvs_flow_key &k) {
            ++hooks;
            auto of = [&k](const Pair &p) {
                return std::memcmp(&k, &p.kc, sizeof k) == 0 ||
                       std::memcmp(&k, &p.ks, sizeof k) == 0;
            };
            if (of(woke)) {
                woke.fs.last_seen_ns = now;  // the backend's answer, server->client entry
                ASSERT_EQ(bpf_map_update_elem(fd, &woke.ks, &woke.fs, BPF_EXIST), 0);
            } else if (of(reused)) {
                reused.fc.created_ns = reused.fs.created_ns = now - 400 * s;
                ASSERT_TRUE(put(fd, reused));
            } else if (of(half)) {
                half.fc.last_seen_ns = now;
                ASSERT_EQ(bpf_map_update_elem(fd, &half.kc, &half.fc, BPF_EXIST), 0);
                ASSERT_EQ(bpf_map_delete_elem(fd, &half.ks), 0);
            } else if (of(marked)) {
                marked.fs.last_seen_ns = now;
                marked.fs.state = KVS_FLOW_REBINDING;
                ASSERT_EQ(bpf_map_update_elem(fd, &marked.ks, &marked.fs, BPF_EXIST), 0);
            }
        });
    EXPECT_EQ(hooks, 5u);
    EXPECT_EQ(r.deleted, 3u) << "the flow that stayed dead, and the half left of one reset";
    EXPECT_EQ(r.restored, 6u);
    EXPECT_FALSE(present(fd, half.kc));
    EXPECT_FALSE(present(fd, half.ks));
    kvs_flow mc{}, ms{};
    ASSERT_EQ(bpf_map_lookup_elem(fd, &marked.kc, &mc), 0);
    ASSERT_EQ(bpf_map_lookup_elem(fd, &marked.ks, &ms), 0);
    EXPECT_EQ(ms.state & KVS_FLOW_REBINDING, 0) << "one half marked: put back unmarked";
    EXPECT_EQ(mc.state & KVS_FLOW_REBINDING, 0);
    kvs_flow f{};
    ASSERT_EQ(bpf_map_lookup_elem(fd, &woke.ks, &f), 0);
    EXPECT_EQ(f.last_seen_ns, now) << "put back as the delete took it";
    ASSERT_EQ(bpf_map_lookup_elem(fd, &woke.kc, &f), 0);
    EXPECT_EQ(f.created_ns, now - 500 * s);
    ASSERT_EQ(bpf_map_lookup_elem(fd, &reused.kc, &f), 0);
    EXPECT_EQ(f.created_ns, now - 400 * s) << "the new installation, not the old";
    EXPECT_TRUE(present(fd, reused.ks));
    EXPECT_FALSE(present(fd, dead.kc));
    EXPECT_FALSE(present(fd, dead.ks));
    close(fd);
}

// An entry whose reverse key holds another installation (the client's port carries a new
// connection, on another leg; the old leg's entry left behind): judged and deleted on its own.
// Paired by key alone, the old entry's expiry took the new client entry with it, a live flow
// losing its client->backend direction.
TEST(Sweeper, AnEntryIsPairedOnlyWithItsOwnInstallation) {
    int fd = flow_map("kvdp_twin");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    Pair old_leg = make_pair(2201, 22101, now - 400 * s, 0);  // idle past 300 s
    Pair fresh = make_pair(2201, 22102, now - 400 * s, 0);    // same client port, another leg
    old_leg.fc.created_ns = old_leg.fs.created_ns = now - 500 * s;
    fresh.fc.created_ns = fresh.fs.created_ns = now - 450 * s;
    fresh.fs.last_seen_ns = now;  // the response streams: the flow is live
    ASSERT_TRUE(put(fd, fresh));
    ASSERT_EQ(bpf_map_update_elem(fd, &old_leg.ks, &old_leg.fs, BPF_ANY), 0);
    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, nullptr);
    EXPECT_EQ(r.deleted, 1u);
    EXPECT_FALSE(present(fd, old_leg.ks));
    EXPECT_TRUE(present(fd, fresh.kc)) << "the live flow keeps its client->backend entry";
    EXPECT_TRUE(present(fd, fresh.ks));
    close(fd);
}

// A port the pass saw installed and entry-less at its start, which meanwhile went back to the
// worker (a leg the backend pool keeps: kPortBinding) and was installed again by the flow that
// drew the leg (its entries in buckets the walk had passed): not freed, its session count kept.
// A port that stays the installation the pass saw is freed as before.
TEST(Sweeper, APortInstalledAgainDuringThePassIsNotFreed) {
    int fd = flow_map("kvdp_regen");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    auto ports = std::make_unique<PortBusy>();
    auto lim = std::make_unique<kvsteer::SessionLimiter>();
    ports->limiters[2].store(lim.get());
    const std::uint64_t key = 0x5e55;
    ports->set_state(0, 23001, kPortInstalled);  // its leg parked meanwhile, then drawn
    ports->set_state(0, 23002, kPortInstalled);  // lost, and stays so
    const PortWord before = ports->raw(0, 23001);
    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, ports.get(), false, nullptr, [&] {
        ASSERT_TRUE(ports->reclaim_if(0, 23001, ports->raw(0, 23001)));  // parked: the pool's
        EXPECT_EQ(ports->state(0, 23001), kPortBinding);
        ports->set_state(0, 23001, kPortInstalled);  // drawn by a new flow, installed
        ports->hold_session(0, 23001, 2, lim->acquire(key, 8));
    });
    EXPECT_NE(ports->raw(0, 23001), before) << "a new installation, a new generation";
    EXPECT_EQ(r.reclaimed, 1u);
    EXPECT_EQ(ports->state(0, 23001), kPortInstalled) << "the drawn leg's flow keeps its port";
    EXPECT_EQ(lim->in_flight(key), 1u) << "and its session count";
    EXPECT_EQ(ports->state(0, 23002), kPortFree);
    // The generation survives freeing and taking: the word never repeats an installation's
    // (a byte's 6 bits repeated it after 64: a leg the pool redrew 64 times within one pass
    // lost its port to the sweeper).
    ports->free(0, 23002);
    EXPECT_TRUE(ports->take(0, 23002));
    EXPECT_EQ(ports->state(0, 23002), kPortBinding);
    ports->set_state(0, 23002, kPortInstalled);
    const PortWord first = ports->raw(0, 23002);
    ports->set_state(0, 23002, kPortInstalled);  // already installed: the same installation
    EXPECT_EQ(ports->raw(0, 23002), first);
    for (int k = 0; k < 64; ++k) {  // parked and redrawn 64 times
        ASSERT_TRUE(ports->reclaim_if(0, 23002, ports->raw(0, 23002)));
        ports->set_state(0, 23002, kPortInstalled);
        EXPECT_NE(ports->raw(0, 23002), first) << k;
    }
    EXPECT_FALSE(ports->free_if(0, 23002, first)) << "an earlier installation's word";
    EXPECT_EQ(ports->state(0, 23002), kPortInstalled);
    ports->limiters[2].store(nullptr);
    close(fd);
}

// A SNAT port is unique per backend only: flows to two backends share one, and each backend's
// use of it is freed (or reclaimed) on its own.
TEST(Sweeper, PortsArePerBackend) {
    int fd = flow_map("kvdp_perbe");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    Pair closed0 = make_pair(4001, 23001, now - 5 * s, kFinBoth, 0);
    Pair live1 = make_pair(4002, 23001, now - 1 * s, 0, 1);
    Pair live0 = make_pair(4003, 23002, now - 1 * s, 0, 0);
    ASSERT_NE(std::memcmp(&closed0.ks, &live1.ks, sizeof closed0.ks), 0);
    for (const Pair *p : {&closed0, &live1, &live0}) ASSERT_TRUE(put(fd, *p));
    auto ports = std::make_unique<PortBusy>();
    SweepResult r0 = sweep_flows(fd, now, ~0ull, ~0ull, ports.get(), true);
    EXPECT_EQ(r0.seen, 6u);
    EXPECT_EQ(ports->state(0, 23001), kPortInstalled);
    EXPECT_EQ(ports->state(1, 23001), kPortInstalled);
    EXPECT_EQ(ports->state(0, 23002), kPortInstalled);
    EXPECT_EQ(ports->state(1, 23002), kPortFree) << "no flow to backend 1 uses it";
    EXPECT_FALSE(ports->take(1, 23001)) << "taken towards backend 1";
    EXPECT_TRUE(ports->take(1, 23002)) << "free towards backend 1, taken towards backend 0";
    ports->set_state(1, 23002, kPortInstalled);  // installed, then its entries went
    EXPECT_EQ(ports->find(2), nullptr) << "a backend's table only once one of its ports is taken";

    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, ports.get());
    EXPECT_EQ(r.deleted, 2u);
    EXPECT_EQ(r.reclaimed, 1u);
    EXPECT_EQ(ports->state(0, 23001), kPortFree) << "the closed flow's";
    EXPECT_EQ(ports->state(1, 23001), kPortInstalled) << "the same port, the live flow's";
    EXPECT_EQ(ports->state(0, 23002), kPortInstalled);
    EXPECT_EQ(ports->state(1, 23002), kPortFree) << "reclaimed: no entry to backend 1 with it";
    close(fd);
}

// Session affinity: a port holds its request's session count in a worker's limiter; the count
// goes back when the port is freed, by the sweeper's delete or its reclaim, and only then.
TEST(Sweeper, FreedPortsGiveTheirSessionCountsBack) {
    int fd = flow_map("kvdp_sess");
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    Pair closed = make_pair(3001, 22001, now - 5 * s, kFinBoth);
    Pair live = make_pair(3002, 22002, now - 1 * s, 0);
    Pair gone = make_pair(3003, 22003, now - 1 * s, 0);
    for (const Pair *p : {&closed, &live}) ASSERT_TRUE(put(fd, *p));
    auto ports = std::make_unique<PortBusy>();
    auto lim = std::make_unique<kvsteer::SessionLimiter>();
    ports->limiters[3].store(lim.get());
    const std::uint64_t key = 0xabcdef;
    for (std::uint16_t p : {22001, 22002, 22003}) {
        ports->set_state(0, p, kPortInstalled);
        ports->hold_session(0, p, 3, lim->acquire(key, 8));
    }
    EXPECT_EQ(lim->in_flight(key), 3u);
    (void)gone;  // never installed in the map: its entries are "gone", the port reclaimed

    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, ports.get());
    EXPECT_EQ(r.deleted, 2u);
    EXPECT_EQ(r.reclaimed, 1u);
    EXPECT_EQ(lim->in_flight(key), 1u) << "the live flow's port still holds its count";
    EXPECT_EQ(ports->find(0)->session[22001].load(), 0u);
    EXPECT_EQ(ports->find(0)->session[22003].load(), 0u);
    EXPECT_NE(ports->find(0)->session[22002].load(), 0u);
    ports->release_session(0, 22002);  // a kept-alive connection's request ends at a boundary
    ports->release_session(0, 22002);  // nothing held any more: nothing released twice
    EXPECT_EQ(lim->in_flight(key), 0u);
    // A worker gone (its limiter unregistered): a port's count is dropped, not released into it.
    ports->hold_session(0, 22002, 3, lim->acquire(key, 8));
    ports->limiters[3].store(nullptr);
    ports->free(0, 22002);
    EXPECT_EQ(lim->in_flight(key), 1u);
    EXPECT_EQ(ports->state(0, 22002), kPortFree);
    close(fd);
}

}  // namespace

namespace {

// More entries than one batch read holds: every entry is seen once, the expired ones (and only
// they) go, with their ports.
TEST(Sweeper, WalksTablesLargerThanOneBatch) {
    constexpr unsigned kFlows = 3000;  // 6,000 entries: several batches of 1,024
    int fd = flow_map("kvdp_many", 16384);
    ASSERT_GE(fd, 0) << "bpf_map_create (needs CAP_BPF)";
    const std::uint64_t s = 1000000000ull, now = 1000 * s;
    auto ports = std::make_unique<PortBusy>();
    for (unsigned i = 0; i < kFlows; ++i) {
        // Every third flow closed long ago; the rest live.
        bool old = i % 3 == 0;
        Pair p =
            make_pair(static_cast<std::uint16_t>(10000 + i), static_cast<std::uint16_t>(20000 + i),
                      old ? now - 10 * s : now - s, old ? kFinBoth : 0);
        ASSERT_TRUE(put(fd, p));
        ports->set_state(0, 20000 + i, kPortInstalled);
    }
    SweepResult r = sweep_flows(fd, now, 3 * s, 300 * s, ports.get());
    EXPECT_EQ(r.seen, 2 * kFlows);
    EXPECT_EQ(r.deleted, 2 * (kFlows / 3));
    EXPECT_EQ(r.reclaimed, 0u);
    unsigned freed = 0, kept = 0;
    for (unsigned i = 0; i < kFlows; ++i) {
        auto st = ports->state(0, 20000 + i);
        if (i % 3 == 0)
            freed += st == kPortFree;
        else
            kept += st == kPortInstalled;
    }
    EXPECT_EQ(freed, kFlows / 3);
    EXPECT_EQ(kept, kFlows - kFlows / 3);
    SweepResult again = sweep_flows(fd, now, 3 * s, 300 * s, ports.get());
    EXPECT_EQ(again.seen, 2 * (kFlows - kFlows / 3));
    EXPECT_EQ(again.deleted, 0u);
    close(fd);
}

}  // namespace
