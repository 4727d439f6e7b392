// SHA-256 (FIPS 180-4), incremental. Used to prove request and response bodies cross the load
// balancer byte-identical (`sha256sum` in shell tests computes the same digest).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvsteer::model {

class Sha256 {
public:
    Sha256();
    void update(std::string_view data);
    std::array<uint8_t, 32> finish();
    std::string hex();  // finish() as 64 lowercase hex digits

private:
    void block(const uint8_t *p);
    uint32_t h_[8];
    uint8_t buf_[64];
    uint64_t len_ = 0;
    size_t fill_ = 0;
};

std::string sha256_hex(std::string_view data);

}  // namespace kvsteer::model
