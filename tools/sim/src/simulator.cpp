#include "simulator.h"

#include "kvsteer/abi.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <numeric>
#include <queue>
#include <stdexcept>

namespace kvsteer::sim {
namespace {

double percentile(std::vector<double> &v, double p) {
    if (v.empty()) return 0;
    const size_t k = size_t(std::max(1.0, std::ceil(p * double(v.size())))) - 1;  // nearest rank
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return v[k];
}

}  // namespace

RunResult simulate(const Workload &w, std::span<const double> arrivals, const RunConfig &cfg,
                   const std::function<void(double)> &progress,
                   const std::function<void(const Cluster &)> &on_end) {
    const auto wall0 = std::chrono::steady_clock::now();
    if (arrivals.size() != w.reqs.size())
        throw std::invalid_argument(
            fmt::format("{} arrival times for {} requests", arrivals.size(), w.reqs.size()));
    if (cfg.servers == 0 || cfg.servers > KVS_MAX_BACKENDS)
        throw std::invalid_argument(fmt::format("servers must be 1..{}", KVS_MAX_BACKENDS));
    auto policy = make_policy(cfg.policy, cfg.servers, cfg.params);
    if (!policy) throw std::invalid_argument(fmt::format("unknown policy '{}'", cfg.policy));

    const uint32_t n_srv = cfg.servers;
    std::vector<std::unique_ptr<model::Scheduler>> servers;
    for (uint32_t i = 0; i < n_srv; ++i)
        servers.push_back(std::make_unique<model::Scheduler>(cfg.server.sched, cfg.server.cache,
                                                             cfg.server.cost));
    std::vector<uint32_t> in_flight(n_srv, 0);
    const Cluster cluster{in_flight, servers};

    const size_t n = w.reqs.size();
    // Requests by arrival (ties: workload order). A closed-loop request (`after`) joins once its
    // predecessor finished (or was refused): its arrival is then that time plus the gap the
    // arrivals put between the two (a conversation's think time after the reply its prompt holds).
    std::vector<double> arr(arrivals.begin(), arrivals.end());
    std::vector<int64_t> succ(n, -1);
    using Due = std::pair<double, uint32_t>;
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due;
    for (size_t i = 0; i < n; ++i) {
        const int64_t a = w.reqs[i].after;
        if (a < 0) {
            due.push({arr[i], uint32_t(i)});
            continue;
        }
        if (size_t(a) >= n || succ[size_t(a)] >= 0)
            throw std::invalid_argument(fmt::format("request {}: bad predecessor {}", i, a));
        succ[size_t(a)] = int64_t(i);
    }
    auto release = [&](uint32_t id, double t) {
        const int64_t j = succ[id];
        if (j < 0) return;
        arr[size_t(j)] = t + std::max(0.0, arrivals[size_t(j)] - arrivals[id]);
        due.push({arr[size_t(j)], uint32_t(j)});
    };

    RunResult res;
    res.policy = policy->name();
    res.servers = n_srv;
    res.requests = n;
    res.routed.assign(n_srv, 0);
    std::vector<double> ttft(n, -1), finish(n, -1);
    std::vector<model::Event> ev;

    auto handle = [&](uint32_t s) {
        for (const auto &e : ev) {
            const uint32_t id = uint32_t(e.id);
            if (e.type == model::EventType::FirstToken) {
                ttft[id] = e.time - arr[id];
            } else if (e.type == model::EventType::Finished) {
                finish[id] = e.time;
                --in_flight[s];
                policy->on_finished(id, s, e.time);
                release(id, e.time);
            }
        }
        ev.clear();
    };

    constexpr double kInf = std::numeric_limits<double>::infinity();
    size_t next = 0, last_progress = 0;
    while (true) {
        const double ta = due.empty() ? kInf : due.top().first;
        double ts = kInf;
        uint32_t si = 0;
        for (uint32_t s = 0; s < n_srv; ++s)
            if (auto t = servers[s]->next_event_time(); t && *t < ts) {
                ts = *t;
                si = s;
            }
        if (due.empty() && ts == kInf)
            break;  // every request done; periodic work no longer matters
        const double tp = policy->next_tick();
        if (ts <= ta &&
            ts <= tp) {  // server steps first: finishes before decisions at the same time
            servers[si]->advance(ts, ev);
            handle(si);
        } else if (tp <= ta) {
            policy->tick(tp, cluster);
        } else {
            const uint32_t id = due.top().second;
            due.pop();
            ++next;
            const SimRequest &r = w.reqs[id];
            const uint32_t s = policy->choose(id, r, ta, cluster);
            if (s >= n_srv)
                throw std::logic_error(
                    fmt::format("policy {} chose server {} of {}", res.policy, s, n_srv));
            model::RequestSpec spec;
            spec.id = id;
            spec.prompt_tokens = r.prompt_tokens;
            spec.block_hashes = r.blocks;
            spec.max_tokens = r.output_tokens;
            const auto sr = servers[s]->submit(std::move(spec), ta, ev);
            if (sr == model::SubmitResult::Accepted) {
                ++in_flight[s];
                ++res.routed[s];
                policy->on_bound(id, s, ta);
            } else {
                ++res.rejected;
                policy->on_rejected(id, s, ta);
                release(id, ta);
            }
            handle(s);
            if (progress && (next - last_progress) * 20 >= n) {
                last_progress = next;
                progress(double(next) / double(n));
            }
        }
    }

    // Results: everything from the servers' own counters and event times.
    std::vector<double> ttfts;
    double t0 = kInf, t1 = 0, e2e = 0;
    uint64_t tokens = 0, out_tokens = 0;
    for (size_t i = 0; i < n; ++i) {
        if (finish[i] < 0) continue;
        ++res.completed;
        ttfts.push_back(ttft[i]);
        t0 = std::min(t0, arr[i]);
        t1 = std::max(t1, finish[i]);
        e2e += finish[i] - arr[i];
        tokens += w.reqs[i].prompt_tokens + w.reqs[i].output_tokens;
        out_tokens += w.reqs[i].output_tokens;
    }
    for (const auto &s : servers) {
        res.hit_tokens += s->cache().stats().hits_tokens;
        res.query_tokens += s->cache().stats().queries_tokens;
        res.busy_s.push_back(s->busy_time());
    }
    res.hit_rate = res.query_tokens ? double(res.hit_tokens) / double(res.query_tokens) : 0;
    if (res.completed) {
        res.makespan_s = std::max(t1 - t0, 1e-9);
        res.req_per_s = double(res.completed) / res.makespan_s;
        res.tok_per_s = double(tokens) / res.makespan_s;
        res.out_tok_per_s = double(out_tokens) / res.makespan_s;
        res.e2e_mean_s = e2e / double(res.completed);
        res.ttft_mean_s = std::accumulate(ttfts.begin(), ttfts.end(), 0.0) / double(ttfts.size());
        res.ttft_p50_s = percentile(ttfts, 0.50);
        res.ttft_p90_s = percentile(ttfts, 0.90);
        res.ttft_p99_s = percentile(ttfts, 0.99);
    }
    const double busy_sum = std::accumulate(res.busy_s.begin(), res.busy_s.end(), 0.0);
    const double busy_max = *std::max_element(res.busy_s.begin(), res.busy_s.end());
    res.imbalance = busy_sum > 0 ? busy_max / (busy_sum / n_srv) : 1.0;
    res.counters = policy->counters();
    if (on_end) on_end(cluster);
    res.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    return res;
}

}  // namespace kvsteer::sim
