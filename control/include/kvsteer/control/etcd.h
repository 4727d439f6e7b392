// etcd 3.4's v3 JSON gateway (grpc-gateway over HTTP/1.1): the request bodies kvsteerd sends and
// the answers it reads, pure (keys and values base64, int64s as strings), plus one blocking call
// over http_client. Only what the fleet uses: range, put, txn on mod_revision, leases.
#pragma once

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
// A txn that puts every `puts` (key, value) only if every `compares` key's mod_revision is the
// one given (0: the key does not exist).
nlohmann::json etcd_txn_request(const std::vector<std::pair<std::string, std::int64_t>> &compares,
                                const std::vector<std::pair<std::string, std::string>> &puts);
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
bool etcd_txn_succeeded(const nlohmann::json &j);
// lease/grant: the lease's ID; lease/keepalive: its TTL left (0: the lease is gone).
std::optional<std::int64_t> etcd_lease_id(const nlohmann::json &j, std::string *err);
std::int64_t etcd_keepalive_ttl(const nlohmann::json &j);

// One POST to `ep` + `path` with `body`; blocks at most `timeout`. Errors start with "etcd".
EtcdReply etcd_call(const Endpoint &ep, const std::string &path, const nlohmann::json &body,
                    std::chrono::milliseconds timeout);

}  // namespace kvsteer::control
