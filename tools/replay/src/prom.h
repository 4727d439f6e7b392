// Scraping a backend's Prometheus /metrics for the prefix-cache counters it keeps itself: the
// only hit rate kvsteer reports is delta hits / delta queries of these counters.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kvsteer::replay {

// Sample name -> value summed over every label set. Comment and malformed lines are skipped.
std::map<std::string, double> parse_prometheus(std::string_view text);

struct CacheCounters {
    double queries = 0;  // tokens
    double hits = 0;     // tokens
};

// vLLM V1 names (vllm:prefix_cache_queries_total / _hits_total), falling back to V0's
// vllm:gpu_prefix_cache_queries_total / _hits_total. nullopt when neither is there.
std::optional<CacheCounters> cache_counters(const std::map<std::string, double> &m);

struct Url {
    std::string host;
    std::string port;
    std::string target;
};
// http://host:port/path only; nullopt (with `err`) otherwise.
std::optional<Url> parse_url(const std::string &s, std::string &err);

// Blocking GET; returns the body of a 200 or nullopt with `err` set. Timeout in seconds.
std::optional<std::string> http_get(const Url &u, double timeout_s, std::string &err);

}  // namespace kvsteer::replay
