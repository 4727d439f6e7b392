// vLLM KV cache events (`--kv-events-config`): decoder, per-server accounting and a ZMQ SUB
// subscriber thread.
//
// Wire format (vllm/distributed/kv_events.py, ZmqEventPublisher): one ZMQ multipart message per
// batch, [topic, seq (8 bytes, big endian, from 0 per publisher), payload]. The payload is a
// msgpack KVEventBatch. vLLM releases that declare the structs array_like (and the emulator,
// tools/gpu-emu/src/kv_events.cpp) send arrays:
//   batch   [ts, [event...], data_parallel_rank?]
//   events  ["BlockStored", [hash...], parent|nil, [token_id...], block_size, lora_id, medium, ...]
//           ["BlockRemoved", [hash...], medium, ...]
//           ["AllBlocksCleared"]
// later releases send the same fields as maps ({"ts":..,"events":[{"type":"BlockStored",
// "block_hashes":[..],..}]}); both are read. A hash is an integer (either sign) or bytes.
//
// What this can tell: how many blocks the server holds (stored - removed), and when its cache was
// emptied (AllBlocksCleared, or a publisher that restarted: seq going backwards). What it cannot:
// which of *our* prefixes it holds. The server hashes token ids, the balancer hashes bytes; the
// two cannot be matched without the model's tokenizer, which kvsteerd does not have.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvsteer::control {

struct KvEvent {
    enum class Kind : std::uint8_t { Stored, Removed, Cleared, Unknown };
    Kind kind = Kind::Unknown;
    std::uint32_t blocks = 0;  // hashes in block_hashes (Stored / Removed)
    bool gpu = true;           // medium absent, nil or "GPU"; false: an offload tier (e.g. "CPU")
};

struct KvBatch {
    double ts = 0;  // the server's wall clock, unix seconds
    std::optional<std::int64_t> dp_rank;
    std::vector<KvEvent> events;
};

// Decodes one msgpack KVEventBatch (kv_events_decode.cc: msgpack-c's parser driving a visitor).
// Never throws; on malformed input returns false with a one-line reason. Bounded: nothing is
// allocated for a declared length, only for events actually read; unknown fields are skipped
// without recursion, and a message nesting more than 16 lists or maps (the batch included) is
// refused.
bool decode_kv_batch(std::span<const std::uint8_t> payload, KvBatch *out, std::string *err);

// One multipart message (its frames, in order), decoded. A readable seq frame is kept even when
// the payload is not decodable.
struct KvReceived {
    std::optional<std::uint64_t> seq;
    bool ok = false;
    KvBatch batch;
    std::string error;  // why not ok
};
KvReceived decode_kv_frames(const std::vector<std::string> &frames);

// What one server's events said so far. Pure accounting, no sockets (the subscriber keeps one per
// backend; tests drive it directly).
struct KvEventStats {
    std::string endpoint;
    std::uint64_t messages = 0;        // multipart messages received
    std::uint64_t decode_errors = 0;   // messages (or frames) that could not be decoded: skipped
    std::uint64_t seq_gaps = 0;        // times seq jumped forward (batches lost: HWM, reconnect)
    std::uint64_t missed_batches = 0;  // batches those jumps skipped
    std::uint64_t publisher_restarts = 0;  // seq went backwards: a new publisher, an empty cache
    std::uint64_t blocks_stored = 0,
                  blocks_removed = 0;   // GPU blocks in BlockStored / BlockRemoved
    std::uint64_t resident_blocks = 0;  // stored - removed since the last reset, floored at 0
    std::uint64_t clears = 0;           // AllBlocksCleared events
    std::uint64_t other_medium_blocks =
        0;                             // blocks in events of another medium (not counted above)
    std::uint64_t unknown_events = 0;  // events with a tag this version does not know: skipped
    std::uint64_t resets = 0;          // clears + publisher restarts (what the daemon acts on)
    std::optional<std::uint64_t> last_seq;
    std::optional<double> last_batch_ts;  // ts of the last decoded batch (server clock)
    std::optional<std::chrono::steady_clock::time_point> last_message;  // our clock
    std::string last_error;  // latest decode / connect problem

    // Accounts one received message (decoded or not). Returns true when it says the cache was
    // emptied: an AllBlocksCleared event, or a seq not above the last one (publisher restarted).
    bool account(const KvReceived &m, std::chrono::steady_clock::time_point now);
    bool on_message(const std::vector<std::string> &frames,
                    std::chrono::steady_clock::time_point now);
};

// kv-events support compiled in (libzmq found at build time).
bool kv_events_supported();

// One thread, one ZMQ SUB socket per subscribed backend (subscribed to every topic). The thread
// only receives, decodes and counts; the daemon reads the counts with stats() and is woken through
// `wake` when a server's cache was reset. Nothing here blocks the caller beyond a short mutex.
class KvEventSubscriber {
   public:
    explicit KvEventSubscriber(std::function<void()> wake);
    ~KvEventSubscriber();  // stops and joins the thread
    KvEventSubscriber(const KvEventSubscriber &) = delete;
    KvEventSubscriber &operator=(const KvEventSubscriber &) = delete;

    // Starts the thread. false + err when support is not built in or ZMQ cannot start.
    bool start(std::string *err);
    // Subscribes backend `id` to `endpoint` (replacing what it had: counts start over).
    void set(std::uint16_t id, const std::string &endpoint);
    void remove(std::uint16_t id);
    std::optional<KvEventStats> stats(std::uint16_t id) const;
    std::map<std::uint16_t, KvEventStats> all_stats() const;
    // Resets seen over all subscriptions (grows only); cheap to poll.
    std::uint64_t reset_events() const;

    struct Impl;

   private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace kvsteer::control
