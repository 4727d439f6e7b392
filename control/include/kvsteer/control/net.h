// Address, endpoint, MAC and hex parsing shared by kvsteerd and kvsteerctl.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kvsteer/abi.h"

namespace kvsteer::control {

// An IPv4 or IPv6 address + port. addr/port are kept in network order, as in abi.h.
struct Endpoint {
    std::uint8_t family = KVS_AF_NONE;  // enum kvs_family
    std::array<std::uint32_t, 4> addr{};
    std::uint16_t port_be = 0;

    std::uint16_t port() const;
    std::string addr_str() const;
    std::string str() const;  // "1.2.3.4:80" or "[::1]:80"
    bool operator==(const Endpoint &) const = default;
};

using Mac = std::array<std::uint8_t, 6>;

// "IPv4", "IPv6" or "no" (KVS_AF_NONE), for messages.
const char *family_name(std::uint8_t family);

// "1.2.3.4:80", "[fe80::1]:8000". nullopt + err (reason only) on failure.
std::optional<Endpoint> parse_endpoint(std::string_view s, std::string *err);
// An address without a port ("1.2.3.4", "::1").
std::optional<Endpoint> parse_address(std::string_view s, std::string *err);
std::optional<Mac> parse_mac(std::string_view s, std::string *err);
std::string format_mac(const Mac &m);
// "0x1f" or "31"; full 64-bit range.
std::optional<std::uint64_t> parse_u64(std::string_view s, std::string *err);
// Exactly `n` bytes as 2n hex digits (an optional 0x prefix allowed).
std::optional<std::string> parse_hex_bytes(std::string_view s, std::size_t n, std::string *err);
// A 128-bit SipHash key (32 hex digits) as kvs_config holds it: two little-endian words.
std::optional<std::array<std::uint64_t, 2>> parse_cookie_key_hex(const std::string &s,
                                                                 std::string *err);

// Stable identity of a backend for Maglev: the same "addr:port" always gives the same number.
std::uint64_t backend_identity(const Endpoint &ep);

// systemd's readiness protocol (sd_notify(3)) without libsystemd: `state` ("READY=1") as one
// datagram to $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace). true when sent, or
// when there is no NOTIFY_SOCKET (not started as Type=notify); false + err when it failed.
bool notify_systemd(std::string_view state, std::string *err);

}  // namespace kvsteer::control
