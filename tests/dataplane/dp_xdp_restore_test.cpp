// A dataplane start detaches the previous run's XDP program (DPDK's af_xdp PMD will not attach
// over it) and puts it back, in the mode it was attached in, when the start fails before its own
// is attached (eal_setup.h). dp_e2e_restart_failed covers native mode end to end on veth; here
// each attach mode veth offers (native, generic), the program left alone when another one was
// attached meanwhile, and interfaces without a program or missing. Needs root (a network
// namespace private to this process, a veth pair in it); CI runs as root.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

#include "eal_setup.h"

namespace {

using kvsteer::dp::detach_previous_xdp;
using kvsteer::dp::DetachedXdps;

// An XDP program that passes every frame (r0 = XDP_PASS; exit).
int load_pass_prog() {
    const bpf_insn insns[] = {
        {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_PASS},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    return bpf_prog_load(BPF_PROG_TYPE_XDP, "kvx_pass", "GPL", insns, 2, nullptr);
}

std::uint32_t prog_id(int fd) {
    bpf_prog_info info{};
    std::uint32_t len = sizeof info;
    return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

class XdpRestore : public ::testing::Test {
   protected:
    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "needs root (netns, XDP); CI runs as root";
        static bool in_netns = false;  // one private namespace for the whole process
        if (!in_netns) {
            ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);
            ASSERT_EQ(std::system("ip link add kvx-rs0 type veth peer name kvx-rs1 && "
                                  "ip link set kvx-rs0 up && ip link set kvx-rs1 up"),
                      0);
            in_netns = true;
        }
        ifindex_ = static_cast<int>(if_nametoindex("kvx-rs0"));
        ASSERT_GT(ifindex_, 0);
        bpf_xdp_detach(ifindex_, XDP_FLAGS_SKB_MODE, nullptr);  // an earlier test's, if any
        bpf_xdp_detach(ifindex_, XDP_FLAGS_DRV_MODE, nullptr);
        prog_ = load_pass_prog();
        ASSERT_GE(prog_, 0) << std::strerror(errno);
    }
    void TearDown() override {
        if (prog_ >= 0) close(prog_);
    }

    // What is attached: {attach mode, id}.
    std::pair<std::uint8_t, std::uint32_t> attached() const {
        LIBBPF_OPTS(bpf_xdp_query_opts, q);
        EXPECT_EQ(bpf_xdp_query(ifindex_, 0, &q), 0);
        return {q.attach_mode, q.prog_id};
    }

    // Attach in `mode`, detach as a start does, then restore: back in that mode, same program.
    void round_trip(std::uint32_t mode, std::uint8_t attach_mode) {
        ASSERT_EQ(bpf_xdp_attach(ifindex_, prog_, mode, nullptr), 0);
        const std::uint32_t id = prog_id(prog_);
        ASSERT_NE(id, 0u);
        ASSERT_EQ(attached(), std::make_pair(attach_mode, id));
        DetachedXdps kept;
        EXPECT_EQ(detach_previous_xdp({"kvx-rs0"}, &kept), 1u);
        ASSERT_EQ(kept.list.size(), 1u);
        EXPECT_EQ(kept.list[0].mode_flags, mode);
        EXPECT_GE(kept.list[0].prog_fd, 0);
        EXPECT_EQ(attached().first, XDP_ATTACHED_NONE) << "detached for the new start";
        // Our fd closed: the kept one alone holds the program.
        close(prog_);
        prog_ = -1;
        EXPECT_EQ(kept.restore(), 1u);
        EXPECT_EQ(attached(), std::make_pair(attach_mode, id)) << "put back in its mode";
        EXPECT_TRUE(kept.list.empty());
    }

    int ifindex_ = 0;
    int prog_ = -1;
};

TEST_F(XdpRestore, NativeModeIsPutBack) {
    round_trip(XDP_FLAGS_DRV_MODE, XDP_ATTACHED_DRV);
}

TEST_F(XdpRestore, GenericModeIsPutBack) {
    round_trip(XDP_FLAGS_SKB_MODE, XDP_ATTACHED_SKB);
}

// The new run's program got attached before the failure: it stays (it forwards the same maps).
TEST_F(XdpRestore, AProgramAttachedMeanwhileIsLeftAlone) {
    ASSERT_EQ(bpf_xdp_attach(ifindex_, prog_, XDP_FLAGS_SKB_MODE, nullptr), 0);
    DetachedXdps kept;
    ASSERT_EQ(detach_previous_xdp({"kvx-rs0"}, &kept), 1u);
    const int other = load_pass_prog();
    ASSERT_GE(other, 0);
    ASSERT_EQ(bpf_xdp_attach(ifindex_, other, XDP_FLAGS_DRV_MODE, nullptr), 0);
    EXPECT_EQ(kept.restore(), 0u);
    EXPECT_EQ(attached(), std::make_pair(std::uint8_t{XDP_ATTACHED_DRV}, prog_id(other)));
    close(other);
}

// Nothing attached, or no such interface: nothing detached, nothing kept, nothing restored.
TEST_F(XdpRestore, NoProgramOrNoInterfaceKeepsNothing) {
    DetachedXdps kept;
    EXPECT_EQ(detach_previous_xdp({"kvx-rs0", "kvx-none"}, &kept), 0u);
    EXPECT_TRUE(kept.list.empty());
    EXPECT_EQ(kept.restore(), 0u);
    EXPECT_EQ(attached().first, XDP_ATTACHED_NONE);
}

}  // namespace
