// A first-flight segment with a valid cookie reaches a real AF_XDP socket bound to the queue
// (XDP_REDIRECT through xsks_map, counted PUNT_FIRST_FLIGHT): a frame sent into a veth from its
// peer, inside a network namespace private to this process.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "kvsteer/cookie.h"
#include "prog_fixture.h"

using namespace kvstest;

namespace {

constexpr unsigned kFrames = 64, kFrameSize = 4096;

TEST(BpfXsk, FirstFlightReachesAfXdpSocket) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (netns, AF_XDP); CI runs as root";
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);  // this process only
    ASSERT_EQ(std::system("ip link add kvx-xsk0 type veth peer name kvx-xsk1 && "
                          "ip link set kvx-xsk0 up && ip link set kvx-xsk1 up"),
              0);
    int ifindex = static_cast<int>(if_nametoindex("kvx-xsk0"));
    ASSERT_GT(ifindex, 0);

    std::string err;
    auto h = ProgHarness::create(1024, &err);
    ASSERT_NE(h, nullptr) << err;
    ASSERT_TRUE(h->loader().attach(ifindex, kvsteer::bpf::AttachMode::kNative, &err)) << err;
    kvs_config cfg{};
    cfg.n_vips = 1;
    cfg.vips[0].addr[0] = ip4("10.9.0.1");
    cfg.vips[0].port = htons(80);
    cfg.vips[0].family = KVS_AF_INET;
    cfg.cookie_key[0][0] = 42;
    cfg.cookie_key[0][1] = 43;
    cfg.cookie_period_s = 64;
    h->set_config(cfg);

    void *area = mmap(nullptr, kFrames * kFrameSize, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(area, MAP_FAILED);
    xsk_ring_prod fill{}, tx{};
    xsk_ring_cons comp{}, rx{};
    xsk_umem *umem = nullptr;
    ASSERT_EQ(xsk_umem__create(&umem, area, kFrames * kFrameSize, &fill, &comp, nullptr), 0);
    xsk_socket_config sc{};
    sc.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS;
    sc.tx_size = XSK_RING_PROD__DEFAULT_NUM_DESCS;
    sc.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;  // our program, not libxdp's
    sc.xdp_flags = XDP_FLAGS_DRV_MODE;
    sc.bind_flags = XDP_COPY;
    xsk_socket *xsk = nullptr;
    int rc = xsk_socket__create(&xsk, "kvx-xsk0", 0, umem, &rx, &tx, &sc);
    ASSERT_EQ(rc, 0) << std::strerror(-rc);
    std::uint32_t idx = 0;
    ASSERT_EQ(xsk_ring_prod__reserve(&fill, kFrames / 2, &idx), kFrames / 2);
    for (unsigned i = 0; i < kFrames / 2; i++)
        *xsk_ring_prod__fill_addr(&fill, idx + i) = std::uint64_t(i) * kFrameSize;
    xsk_ring_prod__submit(&fill, kFrames / 2);
    std::uint32_t q = 0;
    int xfd = xsk_socket__fd(xsk);
    ASSERT_EQ(bpf_map_update_elem(h->loader().map_fd(KVS_MAP_XSKS), &q, &xfd, BPF_ANY), 0)
        << std::strerror(errno);

    TcpSpec s;
    s.saddr[0] = ip4("10.1.0.2");
    s.daddr[0] = ip4("10.9.0.1");
    s.sport = 40001;
    s.dport = 80;
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    s.seq = 1001;
    kvs_cookie_tuple t{};
    t.saddr[0] = s.saddr[0];
    t.daddr[0] = s.daddr[0];
    t.sport = htons(s.sport);
    t.dport = htons(s.dport);
    s.ack = kvs_cookie_make(cfg.cookie_key[0], &t, kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64),
                            kvs_cookie_pack_opts(1460, 7, 1)) +
            1;
    s.payload = Bytes(200, 'P');
    Bytes in = build_tcp(s);

    // Sent from the veth's peer through a packet socket: it reaches kvx-xsk0's native XDP program
    // as a received frame (test-run with BPF_F_TEST_XDP_LIVE_FRAMES did this before: kernel
    // 6.18.44 refuses live frames with EPERM, also to root).
    auto before = h->stats();
    const int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    ASSERT_GE(ps, 0) << std::strerror(errno);
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = static_cast<int>(if_nametoindex("kvx-xsk1"));
    to.sll_halen = ETH_ALEN;
    std::memcpy(to.sll_addr, in.data(), ETH_ALEN);
    ASSERT_GT(to.sll_ifindex, 0);
    ASSERT_EQ(sendto(ps, in.data(), in.size(), 0, reinterpret_cast<sockaddr *>(&to), sizeof to),
              static_cast<ssize_t>(in.size()))
        << std::strerror(errno);
    close(ps);
    // The frame arrives on the socket's RX ring unchanged.
    pollfd pfd{xfd, POLLIN, 0};
    std::uint32_t got = 0, rxi = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (got == 0 && std::chrono::steady_clock::now() < deadline) {
        poll(&pfd, 1, 100);
        got = xsk_ring_cons__peek(&rx, 1, &rxi);
    }
    auto after = h->stats();
    EXPECT_EQ(after[KVS_R_PUNT_FIRST_FLIGHT] - before[KVS_R_PUNT_FIRST_FLIGHT], 1u)
        << stat_delta(before, after);
    ASSERT_EQ(got, 1u) << "no frame on the AF_XDP socket";
    const xdp_desc *d = xsk_ring_cons__rx_desc(&rx, rxi);
    ASSERT_EQ(d->len, in.size());
    EXPECT_EQ(0, std::memcmp(xsk_umem__get_data(area, d->addr), in.data(), in.size()));
    xsk_ring_cons__release(&rx, 1);

    xsk_socket__delete(xsk);
    xsk_umem__delete(umem);
    munmap(area, kFrames * kFrameSize);
    kvsteer::bpf::Loader::detach(ifindex, kvsteer::bpf::AttachMode::kAuto, nullptr);
    std::system("ip link del kvx-xsk0 2>/dev/null");
}

}  // namespace
