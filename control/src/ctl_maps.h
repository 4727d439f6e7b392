// kvsteerctl's direct map readers (flows, counters): work without the daemon.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "kvsteer/bpf/maps.h"

namespace kvsteer::control {

// {"entries": N, "flows": N (client->server entries), "list": [...] (at most `limit`)}.
nlohmann::json read_flows(const bpf::PinnedMaps &m, std::size_t limit, bool list, std::string *err);
// {"xdp": {reason: n}, "dataplane": {reason: n}, "dataplane_workers": [...], "backends": [...]}.
nlohmann::json read_counters(const bpf::PinnedMaps &m, std::string *err);

}  // namespace kvsteer::control
