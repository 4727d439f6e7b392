// Frames between the appliances of a fleet, laid out independently of kvsteer/fleetpkt.h (so the
// tests of that header and of the XDP program check it against a second writing), and the
// members the fleet tests use.
#pragma once

#include <cstdint>
#include <cstring>

#include "kvsteer/abi.h"
#include "pktgen.h"

namespace kvstest {

// Appliance `id`'s MAC in the fleet tests: 02:f1:00:00:00:id.
inline void member_mac(std::uint8_t id, std::uint8_t out[6]) {
    const std::uint8_t m[6] = {0x02, 0xf1, 0, 0, 0, id};
    std::memcpy(out, m, 6);
}

// `frame` (untagged) as appliance `from` sends it on to `to_mac` at `hop`: Ethernet to `to_mac`
// from `sender_mac`, EtherType 0x88B5, {hop, from, the frame's source MAC and EtherType}, then
// the frame's IP packet.
inline Bytes fleet_frame(const Bytes &frame, std::uint8_t hop, std::uint8_t from,
                         const std::uint8_t to_mac[6], const std::uint8_t sender_mac[6]) {
    Bytes b(frame.size() + 10);
    std::memcpy(&b[0], to_mac, 6);
    std::memcpy(&b[6], sender_mac, 6);
    b[12] = 0x88;
    b[13] = 0xB5;
    b[14] = hop;
    b[15] = from;
    std::memcpy(&b[16], &frame[6], 8);  // source MAC, EtherType
    std::memcpy(&b[24], &frame[14], frame.size() - 14);
    return b;
}

}  // namespace kvstest
