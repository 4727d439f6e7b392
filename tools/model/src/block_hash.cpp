#include "kvsteer/model/block_hash.h"

#include <xxhash.h>

namespace kvsteer::model {

std::vector<uint64_t> chain_block_hashes(std::string_view bytes, uint64_t block_bytes,
                                         uint64_t seed) {
    std::vector<uint64_t> out;
    if (block_bytes == 0) return out;
    const uint64_t n = bytes.size() / block_bytes;
    out.reserve(n);
    uint64_t h = seed;
    for (uint64_t i = 0; i < n; ++i) {
        h = XXH3_64bits_withSeed(bytes.data() + i * block_bytes, block_bytes, h);
        out.push_back(h);
    }
    return out;
}

}  // namespace kvsteer::model
