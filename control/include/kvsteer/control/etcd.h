// etcd 3.4's v3 JSON gateway (grpc-gateway over HTTP/1.1): the request bodies kvsteerd sends and
// the answers it reads, pure (keys and values base64, int64s as strings), plus one blocking call
// over http_client, and a watch (a streaming answer read over a socket of its own). Only what the
// fleet uses: range, put, txn on mod_revision, leases, a watch of the prefix.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvsteer/control/http_client.h"

namespace kvsteer::control {

std::string base64_encode(std::string_view raw);
// nullopt on a character outside the standard alphabet or a bad length / padding.
std::optional<std::string> base64_decode(std::string_view b64);

// The range_end that selects every key starting with `prefix` (etcd's "prefix + 1").
std::string etcd_prefix_end(std::string_view prefix);

// Request bodies (POST /v3/kv/range, /v3/kv/put, /v3/kv/txn, /v3/lease/grant,
// /v3/lease/keepalive).
nlohmann::json etcd_range_request(std::string_view key, bool prefix);
nlohmann::json etcd_put_request(std::string_view key, std::string_view value,
                                std::int64_t lease = 0);
// POST /v3/kv/deleterange of one key.
nlohmann::json etcd_delete_request(std::string_view key);
// A txn that puts every `puts` (key, value) and deletes every `deletes` key only if every
// `compares` key's mod_revision is the one given (0: the key does not exist).
nlohmann::json etcd_txn_request(const std::vector<std::pair<std::string, std::int64_t>> &compares,
                                const std::vector<std::pair<std::string, std::string>> &puts,
                                const std::vector<std::string> &deletes = {});
// A txn that puts (key, value) under `lease` whatever the key holds, but first reads the key (as
// etcd_txn_range_kvs reads it back) when its mod_revision is not `rev`: someone else wrote it
// since our put at `rev`.
nlohmann::json etcd_put_read_moved_request(std::string_view key, std::string_view value,
                                           std::int64_t lease, std::int64_t rev);
nlohmann::json etcd_lease_grant_request(std::int64_t ttl_s);
nlohmann::json etcd_lease_keepalive_request(std::int64_t lease);

struct EtcdKv {
    std::string key, value;  // decoded
    std::int64_t mod_revision = 0, version = 0, lease = 0;
};

// An answer: the JSON and the store revision of its header, or one line naming what went wrong
// (transport, HTTP status, etcd's own error message, unparsable JSON).
struct EtcdReply {
    std::optional<nlohmann::json> json;
    std::int64_t revision = 0;
    std::string error;
    bool ok() const { return json.has_value(); }
};
EtcdReply etcd_reply(const HttpResult &r);

// Readers of a successful answer's JSON; err (one line) on a malformed one.
std::optional<std::vector<EtcdKv>> etcd_range_kvs(const nlohmann::json &j, std::string *err);
// A txn answer's range at `responses[i]` (its kvs); nullopt + err when there is none.
std::optional<std::vector<EtcdKv>> etcd_txn_range_kvs(const nlohmann::json &j, std::size_t i,
                                                      std::string *err);
bool etcd_txn_succeeded(const nlohmann::json &j);
// lease/grant: the lease's ID; lease/keepalive: its TTL left (0: the lease is gone).
std::optional<std::int64_t> etcd_lease_id(const nlohmann::json &j, std::string *err);
std::int64_t etcd_keepalive_ttl(const nlohmann::json &j);

// One POST to `ep` + `path` with `body`; blocks at most `timeout`. Errors start with "etcd".
EtcdReply etcd_call(const Endpoint &ep, const std::string &path, const nlohmann::json &body,
                    std::chrono::milliseconds timeout);

// POST /v3/watch: one watch of every key under `prefix`, from `start_revision` on (0: from now).
nlohmann::json etcd_watch_request(std::string_view prefix, std::int64_t start_revision);

// The most a watch's answer may hold in one chunk or one message (an event of the fleet's keys is
// small; a larger one is refused and the watch reopened).
inline constexpr std::size_t kEtcdWatchMaxObject = 4u << 20;

// A watch's answer is a chunked HTTP/1.1 body that stays open, one JSON object per message
// ({"result": {...}} or {"error": {...}}); chunks and objects need not line up. This undoes the
// chunk framing incrementally and splits the stream into whole top-level objects.
class EtcdWatchStream {
   public:
    explicit EtcdWatchStream(std::size_t max_object = kEtcdWatchMaxObject) : max_(max_object) {}
    // Feeds bytes of the body (after the head); each complete object is appended to *objects.
    // false, with error() (one line), on bad chunk framing, anything but whitespace between
    // objects, or a chunk or an object larger than the maximum: the stream is unusable then.
    bool feed(std::string_view bytes, std::vector<std::string> *objects);
    bool ended() const { return ended_; }  // the last chunk (size 0) was read
    const std::string &error() const { return error_; }

   private:
    bool fail(std::string why);
    bool split(std::vector<std::string> *objects);  // data_ -> whole objects

    enum class State { Size, Data, DataEnd, Trailer, Ended };
    std::size_t max_;
    State state_ = State::Size;
    std::string line_;      // the chunk-size line (or a trailer line) so far
    std::size_t left_ = 0;  // bytes of the current chunk still to come
    std::string data_;      // de-chunked bytes not yet split off as an object
    std::size_t scan_ = 0;  // data_[0, scan_) scanned already, inside the object at its start
    int depth_ = 0;         // nesting depth at scan_
    bool in_string_ = false, escape_ = false;
    bool ended_ = false;
    std::string error_;
};

// The status and framing of a response head (status line + headers, up to the empty line).
struct HttpHead {
    int status = 0;
    bool chunked = false;
};
std::optional<HttpHead> parse_http_head(std::string_view head, std::string *err);

// One message of a watch, as far as the fleet cares.
struct EtcdWatchMessage {
    enum class Kind { Created, Events, Canceled, Error, Bad };
    Kind kind = Kind::Error;
    std::size_t events = 0;     // Events: how many (0: a progress notification)
    std::int64_t revision = 0;  // its header's
    std::string error;          // Canceled / Error / Bad: why (one line)
};
// A compaction (compact_revision) and a cancel are Canceled; {"error": ...} (etcd's or the
// gateway's) is Error; a message that is not a JSON object, has no result or a malformed field is
// Bad (refused).
EtcdWatchMessage etcd_watch_message(std::string_view object);

// One watch connection: a socket of its own, every wait bounded, and each wait cut short (within
// 100 ms) once *stop is set.
class EtcdWatchConn {
   public:
    explicit EtcdWatchConn(const std::atomic<bool> *stop) : stop_(stop) {}
    ~EtcdWatchConn() { close(); }
    EtcdWatchConn(const EtcdWatchConn &) = delete;
    EtcdWatchConn &operator=(const EtcdWatchConn &) = delete;

    // Connects, sends the watch request `body`, reads the head and the first message, all within
    // `timeout`; true once etcd says the watch is created (its message first in *out, the revision
    // of its header in it), with any message that came along after it.
    bool open(const Endpoint &ep, const std::string &body, std::chrono::milliseconds timeout,
              std::vector<EtcdWatchMessage> *out, std::string *err);
    // Waits up to `wait` for more and appends the messages that came (none: nothing yet).
    // false + err when the connection closed or broke, or the answer is refused (refused()).
    // Errors (one line) start with "etcd ADDR:PORT /v3/watch: ".
    bool read(std::chrono::milliseconds wait, std::vector<EtcdWatchMessage> *out, std::string *err);
    // The last failure was etcd's answer (a bad head or status, bad framing, an oversized chunk or
    // message, garbage), not the connection.
    bool refused() const { return refused_; }
    void close();

   private:
    // Reads what is there within `wait` into the stream; false + err on a closed/broken socket.
    bool fill(std::chrono::milliseconds wait, std::vector<EtcdWatchMessage> *out, std::string *err);
    // poll(2) for `events` until `deadline`, in slices that watch *stop_. 1: ready, 0: timeout or
    // stop, -1: error (err).
    int wait_fd(short events, std::chrono::steady_clock::time_point deadline, std::string *err);

    const std::atomic<bool> *stop_;
    int fd_ = -1;
    bool head_done_ = false, refused_ = false;
    std::string where_;  // "etcd ADDR:PORT /v3/watch: ", the errors' start
    std::string head_;
    EtcdWatchStream stream_;
};

}  // namespace kvsteer::control
