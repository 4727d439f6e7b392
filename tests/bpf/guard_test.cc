// The tc ingress guard (bpf/guard.bpf.c) through BPF_PROG_TEST_RUN: with its maps pinned on a
// private bpffs next to the XDP program's configuration, TCP to a VIP or into the SNAT range is
// dropped (TC_ACT_SHOT, counted), everything else passes (TC_ACT_OK).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "kvsteer/bpf/maps.h"
#include "kvsteer/parse.h"
#include "kvsteer/reasons.h"
#include "pktgen.h"

using namespace kvstest;

namespace {

constexpr int kTcOk = 0, kTcShot = 2;

class Guard : public ::testing::Test {
   protected:
    void SetUp() override {
        if (geteuid() != 0)
            GTEST_SKIP() << "needs root (bpffs mount, BPF_PROG_TEST_RUN); CI runs as root";
        char tmpl[] = "/run/kvx-guard-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        mnt_ = tmpl;
        ASSERT_EQ(mount("bpf", mnt_.c_str(), "bpf", 0, nullptr), 0) << std::strerror(errno);
        mounted_ = true;
        std::string err;
        maps_ = kvsteer::bpf::open_pinned_maps(mnt_, true, &err);
        ASSERT_NE(maps_, nullptr) << err;
        kvs_config &c = *maps_->config;
        c.n_vips = 1;
        c.vips[0].addr[0] = ip4("10.77.1.1");
        c.vips[0].port = htons(8000);
        c.vips[0].family = KVS_AF_INET;
        c.snat_family = KVS_AF_INET;
        c.snat_addr[0] = ip4("10.77.0.2");
        c.snat_port_lo = 10000;
        c.snat_port_hi = 39999;
        LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = mnt_.c_str());
        obj_ = bpf_object__open_file(KVS_BPF_OBJ_DIR "/guard.bpf.o", &oo);
        ASSERT_NE(obj_, nullptr) << "opening guard.bpf.o: " << std::strerror(errno);
        ASSERT_EQ(bpf_object__load(obj_), 0) << "loading guard.bpf.o";
        prog_fd_ = bpf_program__fd(bpf_object__find_program_by_name(obj_, "kvsteer_guard"));
        ASSERT_GE(prog_fd_, 0);
    }
    void TearDown() override {
        if (obj_) bpf_object__close(obj_);
        maps_.reset();
        if (mounted_) umount2(mnt_.c_str(), MNT_DETACH);
        if (!mnt_.empty()) rmdir(mnt_.c_str());
    }
    int run(const Bytes &frame) {
        Bytes in = frame;
        LIBBPF_OPTS(bpf_test_run_opts, t, .data_in = in.data(),
                    .data_size_in = static_cast<__u32>(in.size()), .repeat = 1);
        EXPECT_EQ(bpf_prog_test_run_opts(prog_fd_, &t), 0) << std::strerror(errno);
        return static_cast<int>(t.retval);
    }
    std::uint64_t drops() {
        std::vector<std::uint64_t> v(KVS_R__COUNT);
        std::string err;
        EXPECT_TRUE(kvsteer::bpf::read_xdp_stats(*maps_, v.data(), KVS_R__COUNT, &err)) << err;
        return v[KVS_R_GUARD_DROP];
    }
    static TcpSpec segment(const char *src, std::uint16_t sport, const char *dst,
                           std::uint16_t dport) {
        TcpSpec s;
        s.saddr[0] = ip4(src);
        s.daddr[0] = ip4(dst);
        s.sport = sport;
        s.dport = dport;
        s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        s.seq = 3760210064u;
        s.ack = 4260549563u;
        s.win = 63;
        s.opts = cat({opt_nop(2), opt_ts(1258350731u, 1611037357u)});
        s.payload = Bytes(252, 'd');
        return s;
    }

    std::string mnt_;
    bool mounted_ = false;
    std::unique_ptr<kvsteer::bpf::PinnedMaps> maps_;
    bpf_object *obj_ = nullptr;
    int prog_fd_ = -1;
};

TEST_F(Guard, DropsBackendSegmentsIntoTheSnatRange) {
    // A streamed response segment of a bound flow, as a backend sends it to the SNAT address.
    EXPECT_EQ(run(build_tcp(segment("10.77.0.101", 8000, "10.77.0.2", 33307))), kTcShot);
    TcpSpec syn = segment("10.77.0.101", 8000, "10.77.0.2", 10000);
    syn.flags = KVS_TCP_SYN | KVS_TCP_ACK;
    syn.payload.clear();
    syn.opts = cat({opt_mss(1460), opt_sack_perm(), opt_ts(1, 2), opt_nop(), opt_ws(7)});
    EXPECT_EQ(run(build_tcp(syn)), kTcShot);
    EXPECT_EQ(drops(), 2u);
}

TEST_F(Guard, DropsClientSegmentsToAVip) {
    EXPECT_EQ(run(build_tcp(segment("10.77.0.10", 46362, "10.77.1.1", 8000))), kTcShot);
    TcpSpec syn = segment("10.77.0.10", 46363, "10.77.1.1", 8000);
    syn.flags = KVS_TCP_SYN;
    syn.payload.clear();
    EXPECT_EQ(run(build_tcp(syn)), kTcShot);
    EXPECT_EQ(drops(), 2u);
}

TEST_F(Guard, PassesEverythingElse) {
    // The appliance's own traffic: its ephemeral ports (outside the SNAT range), other
    // addresses, other VIP ports.
    EXPECT_EQ(run(build_tcp(segment("10.77.0.101", 8000, "10.77.0.2", 45000))), kTcOk);
    EXPECT_EQ(run(build_tcp(segment("10.77.0.101", 8000, "10.77.0.3", 20000))), kTcOk);
    EXPECT_EQ(run(build_tcp(segment("10.77.0.10", 46362, "10.77.1.1", 8001))), kTcOk);
    EXPECT_EQ(run(build_tcp(segment("10.77.0.10", 46362, "10.77.1.2", 8000))), kTcOk);
    Bytes arp(60, 0);
    arp[12] = 0x08;
    arp[13] = 0x06;
    EXPECT_EQ(run(arp), kTcOk);
    EXPECT_EQ(drops(), 0u);
}

}  // namespace
