// Baselines: round robin, least loaded, consistent hashing (plain and bounded-load), the oracle.
#include <algorithm>
#include <fmt/format.h>

#include "kvsteer/control/config.h"
#include "kvsteer/control/daemon_core.h"
#include "kvsteer/core/flight_key.h"
#include "kvsteer/core/maglev.h"
#include "policy.h"
#include "sim_maglev.h"

namespace kvsteer::sim {
namespace {

class RoundRobin final : public Policy {
   public:
    std::string name() const override { return "rr"; }
    uint32_t choose(uint32_t, const SimRequest &, double, const Cluster &c) override {
        return next_++ % c.size();
    }

   private:
    uint64_t next_ = 0;
};

// Fewest in-flight requests; ties go to the first one after the last choice, so equal loads
// rotate instead of piling onto server 0.
class LeastLoaded final : public Policy {
   public:
    std::string name() const override { return "least-loaded"; }
    uint32_t choose(uint32_t, const SimRequest &, double, const Cluster &c) override {
        const uint32_t n = c.size();
        uint32_t best = cursor_ % n;
        for (uint32_t k = 1; k < n; ++k) {
            const uint32_t i = (cursor_ + k) % n;
            if (c.in_flight[i] < c.in_flight[best]) best = i;
        }
        cursor_ = best + 1;
        return best;
    }

   private:
    uint32_t cursor_ = 0;
};

// Maglev keyed by the hash of the prompt's first prefix_len bytes (the whole request is visible,
// only the prefix is hashed); bounded: consistent hashing with bounded loads over it.
class ConsistentHash final : public Policy {
   public:
    ConsistentHash(uint32_t servers, const PolicyParams &p, bool bounded)
        : p_(p), bounded_(bounded), table_(sim_maglev(servers)), eligible_(servers, 1) {
        hp_.prefix_len = p.prefix_len;
        hp_.block_size = p.block_size;
        hp_.max_blocks = 0;
    }
    std::string name() const override { return bounded_ ? "ch-bl" : "ch"; }
    uint32_t choose(uint32_t idx, const SimRequest &r, double, const Cluster &c) override {
        const auto k = key_flight(hp_, flight_bytes(r.first_flight), idx | 1);
        if (!bounded_) return table_[k.hashes.prefix % table_.size()];
        LoadView v{c.in_flight, eligible_};
        bool spilled = false;
        const uint32_t id = choose_bounded(table_, k.hashes.prefix, v, p_.load_factor, &spilled);
        spills_ += spilled;
        return id;
    }
    std::map<std::string, double> counters() const override {
        if (!bounded_) return {};
        return {{"spills", double(spills_)}};
    }

   private:
    PolicyParams p_;
    bool bounded_;
    HashParams hp_;
    std::vector<uint32_t> table_;
    std::vector<uint8_t> eligible_;
    uint64_t spills_ = 0;
};

// Knows every server's cache: most cached tokens for this prompt, ties to the least loaded
// (then rotating). A hit-rate ceiling, blind to queueing beyond ties.
class Oracle final : public Policy {
   public:
    std::string name() const override { return "oracle"; }
    uint32_t choose(uint32_t, const SimRequest &r, double, const Cluster &c) override {
        const uint32_t n = c.size();
        uint32_t best = 0;
        uint64_t best_hit = 0;
        bool first = true;
        for (uint32_t k = 0; k < n; ++k) {
            const uint32_t i = (cursor_ + k) % n;
            const uint64_t h = c.servers[i]->cache().hit_tokens(r.blocks, r.prompt_tokens);
            if (first || h > best_hit || (h == best_hit && c.in_flight[i] < c.in_flight[best])) {
                best = i;
                best_hit = h;
                first = false;
            }
        }
        cursor_ = best + 1;
        return best;
    }

   private:
    uint32_t cursor_ = 0;
};

}  // namespace

control::Endpoint sim_endpoint(uint32_t i) {
    std::string err;
    return *control::parse_endpoint(
        fmt::format("10.90.{}.{}:8000", 1 + (i + 1) / 256, (i + 1) % 256), &err);
}

std::vector<uint32_t> sim_maglev(uint32_t servers) {
    std::vector<MaglevBackend> b;
    for (uint32_t i = 0; i < servers; ++i)
        b.push_back({i, control::backend_identity(sim_endpoint(i)), 1});
    return control::build_lookup_table(control::DaemonConfig{}.table_algorithm, b);
}

std::unique_ptr<Policy> make_round_robin() {
    return std::make_unique<RoundRobin>();
}
std::unique_ptr<Policy> make_least_loaded() {
    return std::make_unique<LeastLoaded>();
}
std::unique_ptr<Policy> make_consistent_hash(uint32_t servers, const PolicyParams &p,
                                             bool bounded) {
    return std::make_unique<ConsistentHash>(servers, p, bounded);
}
std::unique_ptr<Policy> make_oracle() {
    return std::make_unique<Oracle>();
}

const std::vector<std::string> &policy_names() {
    static const std::vector<std::string> v = {"rr",
                                               "least-loaded",
                                               "ch",
                                               "ch-bl",
                                               "kvsteer",
                                               "kvsteer-maglev",
                                               "kvsteer-slack",
                                               "kvsteer-session",
                                               "radix",
                                               "oracle"};
    return v;
}

std::unique_ptr<Policy> make_policy(const std::string &name, uint32_t servers,
                                    const PolicyParams &p) {
    if (name == "rr") return make_round_robin();
    if (name == "least-loaded") return make_least_loaded();
    if (name == "ch") return make_consistent_hash(servers, p, false);
    if (name == "ch-bl") return make_consistent_hash(servers, p, true);
    if (name == "kvsteer") {
        PolicyParams q = p;
        q.bound_slack = 0;  // exactly what ships
        q.session_headers.clear();
        return make_kvsteer(servers, q);
    }
    if (name == "kvsteer-session") {  // as shipped, with session-headers = the header sent
        PolicyParams q = p;
        q.bound_slack = 0;
        q.session_headers = p.session_header_sent;
        return make_kvsteer(servers, q);
    }
    if (name == "kvsteer-maglev") {
        PolicyParams q = p;
        q.affinity = false;
        q.bound_slack = 0;
        q.session_headers.clear();
        return make_kvsteer(servers, q);
    }
    if (name == "kvsteer-slack") {
        PolicyParams q = p;
        if (q.bound_slack <= 0) q.bound_slack = 4;
        return make_kvsteer(servers, q);
    }
    if (name == "radix") return make_radix(servers, p);
    if (name == "oracle") return make_oracle();
    return nullptr;
}

}  // namespace kvsteer::sim
