// Test side of vLLM KV events: a minimal msgpack writer for hand-made batches (no library, so the
// decoder's tests do not depend on the encoder they check), and a ZMQ XPUB publisher that can
// wait until a subscriber has joined (so nothing is published into the void).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvtest {

// msgpack pieces (small sizes only: fixarray/fixmap < 16, fixstr < 32, the rest sized).
std::string arr(std::size_t n);
std::string map(std::size_t n);
std::string str(std::string_view s);
std::string u64(std::uint64_t v);
std::string f64(double v);
inline std::string nil() {
    return std::string(1, '\xc0');
}

// vLLM array_like events: hashes first..first+n-1.
std::string stored(unsigned n, std::uint64_t first = 1, std::string_view medium = "GPU");
std::string removed(unsigned n, std::uint64_t first = 1, std::string_view medium = "GPU");
std::string cleared();
std::string batch(const std::vector<std::string> &events, double ts = 1.5);
// [topic, seq (8 bytes big endian), payload]
std::vector<std::string> frames(std::uint64_t seq, const std::string &payload,
                                const std::string &topic = "");

// A TCP port free a moment ago on 127.0.0.1 and ::1, below the ephemeral range where there is
// room (for servers that must be told a port).
std::uint16_t free_tcp_port();

#ifdef KVS_TEST_ZMQ
class XPub {
   public:
    XPub();  // binds tcp://127.0.0.1:* (check ok())
    ~XPub();
    XPub(const XPub &) = delete;
    XPub &operator=(const XPub &) = delete;
    bool ok() const { return sock_ != nullptr && !endpoint_.empty(); }
    const std::string &endpoint() const { return endpoint_; }
    // Waits (bounded) for a subscription message: after it, what is sent reaches the subscriber.
    bool wait_subscriber(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
    bool send(const std::vector<std::string> &frames);

   private:
    void *ctx_ = nullptr, *sock_ = nullptr;
    std::string endpoint_;
};
#endif

}  // namespace kvtest
