// How setup_port fills several RX queues (eal_setup.h, rx_spread): RSS on addresses and TCP ports
// where the driver offers it, else the driver's own way; one queue never asks for RSS.
#include <rte_ethdev.h>

#include <gtest/gtest.h>

#include "eal_setup.h"

namespace {

using kvsteer::dp::rx_spread;

constexpr std::uint64_t kWant = RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP;

TEST(RxSpread, SeveralQueuesOnANicWithRssHashAddressesAndTcpPorts) {
    // A NIC offering more than we ask for (UDP, SCTP, L2): only addresses and TCP ports asked.
    const std::uint64_t offered = kWant | RTE_ETH_RSS_UDP | RTE_ETH_RSS_SCTP | RTE_ETH_RSS_ETH;
    const auto rs = rx_spread(4, offered);
    EXPECT_TRUE(rs.rss);
    EXPECT_EQ(rs.rss_hf, kWant);
    EXPECT_NE(rs.rss_hf & RTE_ETH_RSS_NONFRAG_IPV4_TCP, 0u);
    EXPECT_NE(rs.rss_hf & RTE_ETH_RSS_NONFRAG_IPV6_TCP, 0u);
}

TEST(RxSpread, OnlyWhatTheDriverOffersIsAskedFor) {
    // ethdev refuses a configure asking for hash fields the driver lacks.
    const auto rs = rx_spread(2, RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_UDP);
    EXPECT_TRUE(rs.rss);
    EXPECT_EQ(rs.rss_hf, std::uint64_t{RTE_ETH_RSS_NONFRAG_IPV4_TCP});
}

TEST(RxSpread, NoRssWithoutOneOrOnOneQueue) {
    EXPECT_FALSE(rx_spread(4, 0).rss);                // af_xdp, net_ring: the driver's way
    EXPECT_FALSE(rx_spread(4, RTE_ETH_RSS_UDP).rss);  // nothing of what we hash on
    EXPECT_FALSE(rx_spread(1, kWant).rss);            // one worker: nothing to spread
    EXPECT_EQ(rx_spread(1, kWant).rss_hf, 0u);
}

}  // namespace
