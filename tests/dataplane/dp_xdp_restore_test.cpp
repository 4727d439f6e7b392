// A dataplane start keeps the previous run's XDP program attached while DPDK's af_xdp PMD loads
// the new one, and the PMD's attach (XDP_FLAGS_UPDATE_IF_NOEXIST, which the kernel refuses over a
// program) replaces it in one step while the interface is armed (xdp_replace.h). The old program
// is held open so that a start whose program got detached again can put it back (eal_setup.h).
// dp_e2e_restart_live and dp_e2e_restart_failed cover native mode end to end on veth; here each
// attach mode veth offers (native, generic), the unarmed refusal, the put-back, a program attached
// meanwhile, and interfaces without a program or missing. Needs root (a network namespace private
// to this process, a veth pair in it); CI runs as root.
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
#include "xdp_replace.h"

namespace {

using kvsteer::dp::arm_xdp_replace;
using kvsteer::dp::disarm_xdp_replace;
using kvsteer::dp::hold_previous_xdp;
using kvsteer::dp::PreviousXdps;

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

    // Attach in `mode`, hold it as a start does, and attach another as the PMD does: replaced
    // in that mode, no instant without a program; unarmed, the same attach is refused.
    void replace(std::uint32_t mode, std::uint8_t attach_mode) {
        ASSERT_EQ(bpf_xdp_attach(ifindex_, prog_, mode, nullptr), 0);
        const std::uint32_t id = prog_id(prog_);
        ASSERT_NE(id, 0u);
        ASSERT_EQ(attached(), std::make_pair(attach_mode, id));
        PreviousXdps held;
        EXPECT_EQ(hold_previous_xdp({"kvx-rs0"}, &held), 1u);
        ASSERT_EQ(held.list.size(), 1u);
        EXPECT_EQ(held.list[0].mode_flags, mode);
        EXPECT_GE(held.list[0].prog_fd, 0);
        EXPECT_EQ(attached(), std::make_pair(attach_mode, id)) << "held, not detached";
        const int next = load_pass_prog();
        ASSERT_GE(next, 0);
        EXPECT_NE(bpf_xdp_attach(ifindex_, next, XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr), 0)
            << "unarmed, the PMD's attach is refused over a program";
        arm_xdp_replace({"kvx-rs0", "kvx-none"});
        EXPECT_EQ(bpf_xdp_attach(ifindex_, next, XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr), 0);
        EXPECT_EQ(disarm_xdp_replace(), 1u);
        EXPECT_EQ(attached(), std::make_pair(attach_mode, prog_id(next))) << "replaced in its mode";
        EXPECT_EQ(held.put_back(), 0u) << "a program is attached: nothing put back";
        close(next);
    }

    // Attach in `mode`, hold it, lose it (the PMD attached ours and detached it again on its
    // error path), then put it back: in that mode, the same program.
    void put_back(std::uint32_t mode, std::uint8_t attach_mode) {
        ASSERT_EQ(bpf_xdp_attach(ifindex_, prog_, mode, nullptr), 0);
        const std::uint32_t id = prog_id(prog_);
        PreviousXdps held;
        ASSERT_EQ(hold_previous_xdp({"kvx-rs0"}, &held), 1u);
        ASSERT_EQ(bpf_xdp_detach(ifindex_, mode, nullptr), 0);
        ASSERT_EQ(attached().first, XDP_ATTACHED_NONE);
        // Our fd closed: the held one alone keeps the program.
        close(prog_);
        prog_ = -1;
        EXPECT_EQ(held.put_back(), 1u);
        EXPECT_EQ(attached(), std::make_pair(attach_mode, id)) << "put back in its mode";
        held.release();
        EXPECT_TRUE(held.list.empty());
    }

    int ifindex_ = 0;
    int prog_ = -1;
};

TEST_F(XdpRestore, NativeModeIsReplacedInOneStep) {
    replace(XDP_FLAGS_DRV_MODE, XDP_ATTACHED_DRV);
}

TEST_F(XdpRestore, GenericModeIsReplacedInOneStep) {
    replace(XDP_FLAGS_SKB_MODE, XDP_ATTACHED_SKB);
}

TEST_F(XdpRestore, NativeModeIsPutBack) {
    put_back(XDP_FLAGS_DRV_MODE, XDP_ATTACHED_DRV);
}

TEST_F(XdpRestore, GenericModeIsPutBack) {
    put_back(XDP_FLAGS_SKB_MODE, XDP_ATTACHED_SKB);
}

// Armed, an attach where no program is attaches as usual (and counts no replacement).
TEST_F(XdpRestore, ArmedAttachWithoutAProgramAttaches) {
    arm_xdp_replace({"kvx-rs0"});
    EXPECT_EQ(bpf_xdp_attach(ifindex_, prog_, XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr), 0);
    EXPECT_EQ(disarm_xdp_replace(), 0u);
    EXPECT_EQ(attached().second, prog_id(prog_));
}

// Another program attached meanwhile (in another mode) stays: it forwards the same maps.
TEST_F(XdpRestore, AProgramAttachedMeanwhileIsLeftAlone) {
    ASSERT_EQ(bpf_xdp_attach(ifindex_, prog_, XDP_FLAGS_SKB_MODE, nullptr), 0);
    PreviousXdps held;
    ASSERT_EQ(hold_previous_xdp({"kvx-rs0"}, &held), 1u);
    ASSERT_EQ(bpf_xdp_detach(ifindex_, XDP_FLAGS_SKB_MODE, nullptr), 0);
    const int other = load_pass_prog();
    ASSERT_GE(other, 0);
    ASSERT_EQ(bpf_xdp_attach(ifindex_, other, XDP_FLAGS_DRV_MODE, nullptr), 0);
    EXPECT_EQ(held.put_back(), 0u);
    EXPECT_EQ(attached(), std::make_pair(std::uint8_t{XDP_ATTACHED_DRV}, prog_id(other)));
    close(other);
}

// Nothing attached, or no such interface: nothing held, nothing put back.
TEST_F(XdpRestore, NoProgramOrNoInterfaceKeepsNothing) {
    PreviousXdps held;
    EXPECT_EQ(hold_previous_xdp({"kvx-rs0", "kvx-none"}, &held), 0u);
    EXPECT_TRUE(held.list.empty());
    EXPECT_EQ(held.put_back(), 0u);
    EXPECT_EQ(attached().first, XDP_ATTACHED_NONE);
}

}  // namespace
