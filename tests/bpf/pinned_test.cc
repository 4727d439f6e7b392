// Pinned maps on a private bpffs: open_pinned_maps creates, mmaps with the kernel's layout, and
// rejects stale pins; reloading the program reuses the pins and keeps established flows.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "kvsteer/bpf/maps.h"
#include "kvsteer/flowpair.h"
#include "prog_fixture.h"

using namespace kvstest;

namespace {

class BpfPinned : public ::testing::Test {
   protected:
    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "needs root (bpffs mount); CI runs as root";
        char tmpl[] = "/run/kvx-pin-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        mnt_ = tmpl;
        ASSERT_EQ(mount("bpf", mnt_.c_str(), "bpf", 0, nullptr), 0) << std::strerror(errno);
        mounted_ = true;
        dir_ = mnt_ + "/kvsteer";
    }
    void TearDown() override {
        if (mounted_) umount2(mnt_.c_str(), MNT_DETACH);
        if (!mnt_.empty()) rmdir(mnt_.c_str());
    }
    std::string mnt_, dir_;
    bool mounted_ = false;
};

TEST_F(BpfPinned, CreateOpenAndMmapLayout) {
    std::string err;
    auto m = kvsteer::bpf::open_pinned_maps(dir_, true, &err);
    ASSERT_NE(m, nullptr) << err;
    for (const char *name :
         {KVS_MAP_CONFIG, KVS_MAP_BACKENDS, KVS_MAP_BACKEND_LOAD, KVS_MAP_MAGLEV, KVS_MAP_AFFINITY,
          KVS_MAP_FLOWS, KVS_MAP_STATS, KVS_MAP_RING_CTL, KVS_MAP_BIND_RING, KVS_MAP_DP_STATS,
          KVS_MAP_FLEET, KVS_MAP_OWNER, KVS_MAP_FLEET_HEARD})
        EXPECT_TRUE(std::filesystem::exists(dir_ + "/" + name)) << name;

    // Writes through the mmaps land where the kernel (and the XDP program) index them.
    m->config->n_vips = 3;
    m->backends[5].port = htons(8000);
    m->backends[5].weight = 77;
    m->load[9].closes = 1234;
    m->maglev[KVS_MAGLEV_SIZE + 7] = 42;
    m->affinity[2 * KVS_AFFINITY_SLOTS - 1].key = 0xabc;
    m->ring[KVS_MAX_WORKERS * KVS_BIND_RING_SLOTS - 1].backend_id = 11;
    m->ring_ctl[3].head = 99;
    m->dp_stats[KVS_STATS_MAX + 4] = 55;
    m->fleet->self = 2;
    m->fleet->members[15].mac[5] = 0x0f;
    m->owner[2 * KVS_OWNER_BUCKETS - 1].prev[2] = 6;
    m->fleet_heard[KVS_MAX_APPLIANCES - 1] = 0x1234567890ull;

    std::uint32_t k = 0;
    kvs_config c{};
    ASSERT_EQ(bpf_map_lookup_elem(m->config_fd, &k, &c), 0);
    EXPECT_EQ(c.n_vips, 3u);
    k = 5;
    kvs_backend be{};
    ASSERT_EQ(bpf_map_lookup_elem(m->backends_fd, &k, &be), 0);
    EXPECT_EQ(be.weight, 77);
    EXPECT_EQ(be.port, htons(8000));
    k = 9;
    kvs_backend_load ld{};
    ASSERT_EQ(bpf_map_lookup_elem(m->load_fd, &k, &ld), 0);
    EXPECT_EQ(ld.closes, 1234u);
    k = 0;
    auto mt = std::make_unique<kvs_maglev_table>();
    ASSERT_EQ(bpf_map_lookup_elem(m->maglev_fd, &k, mt.get()), 0);
    EXPECT_EQ(mt->backend[KVS_MAGLEV_SIZE + 7], 42u);
    k = 2 * KVS_AFFINITY_SLOTS - 1;
    kvs_affinity_entry ae{};
    ASSERT_EQ(bpf_map_lookup_elem(m->affinity_fd, &k, &ae), 0);
    EXPECT_EQ(ae.key, 0xabcu);
    k = KVS_MAX_WORKERS * KVS_BIND_RING_SLOTS - 1;
    kvs_bind_report rep{};
    ASSERT_EQ(bpf_map_lookup_elem(m->ring_fd, &k, &rep), 0);
    EXPECT_EQ(rep.backend_id, 11);
    k = 3;
    kvs_ring_ctl rc{};
    ASSERT_EQ(bpf_map_lookup_elem(m->ring_ctl_fd, &k, &rc), 0);
    EXPECT_EQ(rc.head, 99u);
    k = KVS_STATS_MAX + 4;
    std::uint64_t v = 0;
    ASSERT_EQ(bpf_map_lookup_elem(m->dp_stats_fd, &k, &v), 0);
    EXPECT_EQ(v, 55u);
    k = 0;
    kvs_fleet fl{};
    ASSERT_EQ(bpf_map_lookup_elem(m->fleet_fd, &k, &fl), 0);
    EXPECT_EQ(fl.self, 2);
    EXPECT_EQ(fl.members[15].mac[5], 0x0f);
    k = 2 * KVS_OWNER_BUCKETS - 1;
    kvs_owner_entry oe{};
    ASSERT_EQ(bpf_map_lookup_elem(m->owner_fd, &k, &oe), 0);
    EXPECT_EQ(oe.prev[2], 6);
    k = KVS_MAX_APPLIANCES - 1;
    ASSERT_EQ(bpf_map_lookup_elem(m->fleet_heard_fd, &k, &v), 0);
    EXPECT_EQ(v, 0x1234567890ull);

    // A second opener (another process) sees the same memory.
    auto m2 = kvsteer::bpf::open_pinned_maps(dir_, false, &err);
    ASSERT_NE(m2, nullptr) << err;
    EXPECT_EQ(m2->backends[5].weight, 77);
    std::vector<std::uint64_t> stats(KVS_R__COUNT);
    EXPECT_TRUE(kvsteer::bpf::read_xdp_stats(*m2, stats.data(), KVS_R__COUNT, &err)) << err;
}

TEST_F(BpfPinned, MissingAndStalePinsReported) {
    std::string err;
    EXPECT_EQ(kvsteer::bpf::open_pinned_maps(dir_, false, &err), nullptr);
    EXPECT_NE(err.find(KVS_MAP_CONFIG), std::string::npos) << err;
    EXPECT_EQ(kvsteer::bpf::open_pinned_maps("/tmp", true, &err), nullptr);
    EXPECT_NE(err.find("bpffs"), std::string::npos) << err;
    // A kvs_config pinned by an older build with another layout.
    std::filesystem::create_directories(dir_);
    int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kvs_config", 4, 16, 1, nullptr);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bpf_obj_pin(fd, (dir_ + "/kvs_config").c_str()), 0);
    close(fd);
    EXPECT_EQ(kvsteer::bpf::open_pinned_maps(dir_, true, &err), nullptr);
    EXPECT_NE(err.find("kvs_config"), std::string::npos) << err;
}

TEST_F(BpfPinned, ReloadKeepsEstablishedFlows) {
    std::string err;
    kvsteer::bpf::LoaderOptions lo;
    lo.pin_dir = dir_;
    auto l1 = kvsteer::bpf::Loader::load(lo, &err);
    ASSERT_NE(l1, nullptr) << err;
    auto m = kvsteer::bpf::open_pinned_maps(dir_, false, &err);
    ASSERT_NE(m, nullptr) << err;
    m->config->n_vips = 1;
    m->config->vips[0].addr[0] = ip4("10.9.0.1");
    m->config->vips[0].port = htons(80);
    m->config->vips[0].family = KVS_AF_INET;

    kvs_flowpair_params p{};
    p.client_addr[0] = ip4("10.1.0.2");
    p.vip_addr[0] = ip4("10.9.0.1");
    p.snat_addr[0] = ip4("10.2.0.1");
    p.backend_addr[0] = ip4("10.2.0.7");
    p.client_port = htons(40001);
    p.vip_port = htons(80);
    p.snat_port = htons(20001);
    p.backend_port = htons(8000);
    p.family = KVS_AF_INET;
    p.client_wscale = p.backend_wscale = KVS_WSCALE_NONE;
    p.cookie = 1000;
    p.backend_isn = 5000;
    p.backend_id = 2;
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    kvs_flowpair_build(&p, &kc, &fc, &ks, &fs);
    ASSERT_EQ(bpf_map_update_elem(m->flows_fd, &kc, &fc, BPF_ANY), 0);
    ASSERT_EQ(bpf_map_update_elem(m->flows_fd, &ks, &fs, BPF_ANY), 0);

    TcpSpec s;
    s.saddr[0] = ip4("10.1.0.2");
    s.daddr[0] = ip4("10.9.0.1");
    s.sport = 40001;
    s.dport = 80;
    s.flags = KVS_TCP_ACK;
    s.seq = 77;
    s.ack = 1001;
    Bytes in = build_tcp(s);

    ProgHarness h1(std::move(l1));
    RunResult r1 = h1.run(in);
    EXPECT_EQ(r1.verdict, 3u);  // XDP_TX
    // Replace the program (a new load reusing every pin), as an upgrade or restart would.
    auto l2 = kvsteer::bpf::Loader::load(lo, &err);
    ASSERT_NE(l2, nullptr) << err;
    ProgHarness h2(std::move(l2));
    {
        ProgHarness gone = std::move(h1);  // the old program is closed here
    }
    RunResult r2 = h2.run(in);
    EXPECT_EQ(r2.verdict, 3u);
    EXPECT_EQ(r2.out, r1.out);
    kvs_flow after{};
    ASSERT_EQ(bpf_map_lookup_elem(m->flows_fd, &kc, &after), 0);
    EXPECT_EQ(after.packets, 2u);  // both programs updated the same entry
    std::vector<std::uint64_t> stats(KVS_R__COUNT);
    ASSERT_TRUE(kvsteer::bpf::read_xdp_stats(*m, stats.data(), KVS_R__COUNT, &err)) << err;
    EXPECT_EQ(stats[KVS_R_TX_FWD_C2S], 2u);  // counters survive the reload too
}

}  // namespace
