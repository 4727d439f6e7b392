// The tc ingress guard (bpf/guard.bpf.c): drops TCP to a VIP or the SNAT range that reaches
// the appliance kernel, which happens only while no XDP program is attached (a restart swaps
// it). Without it the kernel answers those segments with RST and bound flows die.
#pragma once

#include <string>

namespace kvsteer::dp {

// Loads `obj_path` with its maps pinned under `bpffs` (kvs_config, kvs_stats) and attaches it
// at tc ingress of `iface`, replacing a guard a previous run left there. The filter outlives
// this process on purpose. false + err.
bool attach_guard(const std::string &obj_path, const std::string &bpffs, const std::string &iface,
                  std::string *err);

// The guard object beside the XDP object: same directory, guard.bpf.o.
std::string default_guard_path(const std::string &xdp_prog);

}  // namespace kvsteer::dp
