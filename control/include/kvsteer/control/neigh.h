// Next-hop MAC of a backend from the kernel's routing and neighbour tables (rtnetlink), in the
// daemon's own network namespace.
#pragma once

#include <optional>
#include <string>

#include "kvsteer/control/net.h"

namespace kvsteer::control {

// Routes `dst` (to find the gateway, if any), then looks the next hop up in the neighbour table.
// nullopt + err when there is no route or no usable (resolved) neighbour entry yet.
std::optional<Mac> resolve_next_hop_mac(const Endpoint &dst, std::string *err);

}  // namespace kvsteer::control
