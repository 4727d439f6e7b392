// vLLM-format KV cache events: a ZMQ PUB socket sending multipart [topic, seq (8 bytes, big
// endian), msgpack KVEventBatch], where a batch is [ts, [event...]] and events are
// ["BlockStored", [hashes], parent|nil, token_ids, block_size, lora_id, medium] and
// ["BlockRemoved", [hashes], medium] (msgspec array_like tagged structs, as vLLM encodes them).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kvsteer/model/prefix_cache.h"

namespace kvsteer::emu {

// One msgpack KVEventBatch. Consecutive Stored events of one chain become one BlockStored;
// token_ids is always empty (the emulator has bytes, not token ids).
std::string encode_kv_batch(const std::vector<model::BlockEvent> &evs, double ts,
                            uint32_t block_tokens);

class KvEventPublisher {
   public:
    // Binds a PUB socket (e.g. "tcp://*:5557", "tcp://127.0.0.1:*"); throws std::runtime_error.
    KvEventPublisher(const std::string &endpoint, std::string topic, uint32_t block_tokens);
    ~KvEventPublisher();
    KvEventPublisher(const KvEventPublisher &) = delete;
    KvEventPublisher &operator=(const KvEventPublisher &) = delete;

    // Sends one batch (nothing when evs is empty); never blocks: a full queue drops the batch
    // (subscribers see the gap in seq, as with vLLM).
    void publish(const std::vector<model::BlockEvent> &evs, double ts);
    std::string endpoint() const;  // the bound endpoint, with the real port
    uint64_t next_seq() const { return seq_; }
    uint64_t dropped() const { return dropped_; }

   private:
    void *ctx_ = nullptr;
    void *sock_ = nullptr;
    std::string topic_;
    uint32_t block_tokens_;
    uint64_t seq_ = 0;
    uint64_t dropped_ = 0;
};

}  // namespace kvsteer::emu
