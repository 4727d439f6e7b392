// How setup_port fills several RX queues (eal_setup.h, rss_fields): RSS on addresses and TCP ports
// where the driver offers it, else the driver's own way; one queue never asks for RSS.
#include <rte_ethdev.h>

#include <gtest/gtest.h>

#include "eal_setup.h"

namespace {

using kvsteer::dp::rss_fields;

constexpr std::uint64_t kWant = RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP;

TEST(RxSpread, SeveralQueuesOnANicWithRssHashAddressesAndTcpPorts) {
    // A NIC offering more than we ask for (UDP, SCTP, L2): only addresses and TCP ports asked.
    const std::uint64_t offered = kWant | RTE_ETH_RSS_UDP | RTE_ETH_RSS_SCTP | RTE_ETH_RSS_ETH;
    const std::uint64_t hf = rss_fields(4, offered);
    EXPECT_EQ(hf, kWant);
    EXPECT_NE(hf & RTE_ETH_RSS_NONFRAG_IPV4_TCP, 0u);
    EXPECT_NE(hf & RTE_ETH_RSS_NONFRAG_IPV6_TCP, 0u);
}

TEST(RxSpread, OnlyWhatTheDriverOffersIsAskedFor) {
    // ethdev refuses a configure asking for hash fields the driver lacks.
    EXPECT_EQ(rss_fields(2, RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_UDP),
              std::uint64_t{RTE_ETH_RSS_NONFRAG_IPV4_TCP});
}

TEST(RxSpread, NoRssWithoutOneOrOnOneQueue) {
    EXPECT_EQ(rss_fields(4, 0), 0u);                // af_xdp, net_ring: the driver's way
    EXPECT_EQ(rss_fields(4, RTE_ETH_RSS_UDP), 0u);  // nothing of what we hash on
    EXPECT_EQ(rss_fields(1, kWant), 0u);            // one worker: nothing to spread
}

}  // namespace
