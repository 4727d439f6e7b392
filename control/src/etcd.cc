// etcd's v3 JSON gateway: bodies and answers (etcd.h).
#include "kvsteer/control/etcd.h"

#include <array>

namespace kvsteer::control {

using nlohmann::json;

namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// grpc-gateway writes int64 as a JSON string; accepts a number too. Absent: 0 (proto3 default).
std::optional<std::int64_t> int64_field(const json &j, const char *name) {
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) return 0;
    if (it->is_number_integer()) return it->get<std::int64_t>();
    if (!it->is_string()) return std::nullopt;
    const std::string &s = it->get_ref<const std::string &>();
    if (s.empty() || s.size() > 19) return std::nullopt;
    std::int64_t v = 0;
    std::size_t i = s[0] == '-' ? 1 : 0;
    if (i == s.size()) return std::nullopt;
    for (; i < s.size(); i++) {
        if (s[i] < '0' || s[i] > '9') return std::nullopt;
        v = v * 10 + (s[i] - '0');
    }
    return s[0] == '-' ? -v : v;
}

}  // namespace

std::string base64_encode(std::string_view raw) {
    std::string out;
    out.reserve((raw.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < raw.size(); i += 3) {
        const std::size_t n = std::min<std::size_t>(3, raw.size() - i);
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < 3; k++)
            v = (v << 8) | (k < n ? static_cast<std::uint8_t>(raw[i + k]) : 0u);
        for (std::size_t k = 0; k < 4; k++) out += k <= n ? kB64[(v >> (18 - 6 * k)) & 63] : '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view b64) {
    if (b64.size() % 4) return std::nullopt;
    std::array<int, 256> val;
    val.fill(-1);
    for (int i = 0; i < 64; i++) val[static_cast<std::uint8_t>(kB64[i])] = i;
    std::string out;
    out.reserve(b64.size() / 4 * 3);
    for (std::size_t i = 0; i < b64.size(); i += 4) {
        std::uint32_t v = 0;
        int pad = 0;
        for (std::size_t k = 0; k < 4; k++) {
            const char c = b64[i + k];
            if (c == '=') {
                // Padding only at the end of the last group, at most two.
                if (i + 4 != b64.size() || k < 2) return std::nullopt;
                pad++;
                v <<= 6;
                continue;
            }
            const int d = val[static_cast<std::uint8_t>(c)];
            if (d < 0 || pad) return std::nullopt;
            v = (v << 6) | static_cast<std::uint32_t>(d);
        }
        for (int k = 0; k < 3 - pad; k++) out += static_cast<char>((v >> (16 - 8 * k)) & 0xff);
    }
    return out;
}

std::string etcd_prefix_end(std::string_view prefix) {
    std::string end(prefix);
    while (!end.empty()) {
        auto &c = reinterpret_cast<unsigned char &>(end.back());
        if (c < 0xff) {
            c++;
            return end;
        }
        end.pop_back();
    }
    return std::string(1, '\0');  // every key (etcd's convention for an all-0xff prefix)
}

json etcd_range_request(std::string_view key, bool prefix) {
    json j{{"key", base64_encode(key)}};
    if (prefix) j["range_end"] = base64_encode(etcd_prefix_end(key));
    return j;
}

json etcd_put_request(std::string_view key, std::string_view value, std::int64_t lease) {
    json j{{"key", base64_encode(key)}, {"value", base64_encode(value)}};
    if (lease) j["lease"] = std::to_string(lease);
    return j;
}

json etcd_delete_request(std::string_view key) {
    return {{"key", base64_encode(key)}};
}

json etcd_txn_request(const std::vector<std::pair<std::string, std::int64_t>> &compares,
                      const std::vector<std::pair<std::string, std::string>> &puts) {
    json cmp = json::array(), ops = json::array();
    for (const auto &[k, rev] : compares)
        cmp.push_back({{"key", base64_encode(k)},
                       {"target", "MOD"},
                       {"result", "EQUAL"},
                       {"mod_revision", std::to_string(rev)}});
    for (const auto &[k, v] : puts) ops.push_back({{"request_put", etcd_put_request(k, v)}});
    return {{"compare", cmp}, {"success", ops}};
}

json etcd_lease_grant_request(std::int64_t ttl_s) {
    return {{"TTL", std::to_string(ttl_s)}};
}

json etcd_lease_keepalive_request(std::int64_t lease) {
    return {{"ID", std::to_string(lease)}};
}

EtcdReply etcd_reply(const HttpResult &r) {
    EtcdReply out;
    if (!r.ok) {
        out.error = r.error;
        return out;
    }
    json j = json::parse(r.body, nullptr, false);
    // A stream (lease/keepalive) answers {"result": ...} or {"error": {...}} per message.
    if (j.is_object() && j.contains("result") && j["result"].is_object()) j = j["result"];
    if (j.is_object() && j.contains("error")) {
        const json &e = j["error"];
        std::string msg = e.is_string() ? e.get<std::string>() : "";
        if (e.is_object() && e.contains("message") && e["message"].is_string())
            msg = e["message"].get<std::string>();
        if (j.contains("message") && j["message"].is_string())
            msg = j["message"].get<std::string>();
        out.error = "HTTP " + std::to_string(r.status) + ": " + (msg.empty() ? e.dump() : msg);
        return out;
    }
    if (r.status != 200) {
        std::string body = r.body.substr(0, 200);
        for (char &c : body)
            if (c == '\n' || c == '\r') c = ' ';
        out.error = "HTTP " + std::to_string(r.status) + (body.empty() ? "" : ": " + body);
        return out;
    }
    if (!j.is_object()) {
        out.error = "bad answer: not a JSON object";
        return out;
    }
    if (j.contains("header") && j["header"].is_object()) {
        auto rev = int64_field(j["header"], "revision");
        if (!rev) {
            out.error = "bad answer: header.revision is not a number";
            return out;
        }
        out.revision = *rev;
    }
    out.json = std::move(j);
    return out;
}

std::optional<std::vector<EtcdKv>> etcd_range_kvs(const json &j, std::string *err) {
    std::vector<EtcdKv> kvs;
    auto it = j.find("kvs");
    if (it == j.end() || it->is_null()) return kvs;
    if (!it->is_array()) {
        *err = "bad range answer: kvs is not a list";
        return std::nullopt;
    }
    for (const auto &e : *it) {
        EtcdKv kv;
        auto key = e.is_object() && e.contains("key") && e["key"].is_string()
                       ? base64_decode(e["key"].get<std::string>())
                       : std::nullopt;
        if (!key || key->empty()) {
            *err = "bad range answer: a key is missing or not base64";
            return std::nullopt;
        }
        kv.key = std::move(*key);
        if (e.contains("value")) {
            auto v = e["value"].is_string() ? base64_decode(e["value"].get<std::string>())
                                            : std::nullopt;
            if (!v) {
                *err = "bad range answer: the value of " + kv.key + " is not base64";
                return std::nullopt;
            }
            kv.value = std::move(*v);
        }
        auto mod = int64_field(e, "mod_revision"), ver = int64_field(e, "version"),
             lease = int64_field(e, "lease");
        if (!mod || !ver || !lease) {
            *err = "bad range answer: a revision of " + kv.key + " is not a number";
            return std::nullopt;
        }
        kv.mod_revision = *mod;
        kv.version = *ver;
        kv.lease = *lease;
        kvs.push_back(std::move(kv));
    }
    return kvs;
}

bool etcd_txn_succeeded(const json &j) {
    auto it = j.find("succeeded");
    return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::optional<std::int64_t> etcd_lease_id(const json &j, std::string *err) {
    auto id = int64_field(j, "ID");
    if (!id || *id == 0) {
        *err = "bad lease answer: no ID";
        return std::nullopt;
    }
    return id;
}

std::int64_t etcd_keepalive_ttl(const json &j) {
    return int64_field(j, "TTL").value_or(0);
}

EtcdReply etcd_call(const Endpoint &ep, const std::string &path, const json &body,
                    std::chrono::milliseconds timeout) {
    HttpRequest req{ep, path, body.dump(), true};
    auto res = http_get_many({req}, timeout, 4u << 20);
    EtcdReply r = etcd_reply(res[0]);
    if (!r.ok()) r.error = "etcd " + ep.str() + " " + path + ": " + r.error;
    return r;
}

}  // namespace kvsteer::control
