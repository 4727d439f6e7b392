// A start of the dataplane swaps the XDP program in one step, with no instant without one.
//
// DPDK 22.11's af_xdp PMD loads its xdp_prog (the kernel verifying kvsteer.bpf.o takes seconds)
// and then attaches it with XDP_FLAGS_UPDATE_IF_NOEXIST, which the kernel refuses while another
// program is attached. Detached beforehand, the previous run's program left the interface without
// one for the whole load: the established flows it forwarded were dropped by the tc guard (their
// peers retransmitting) for seconds, past a client's patience on a loaded machine.
//
// While an interface is armed here, that attach replaces whatever program is attached on it
// (XDP_FLAGS_REPLACE naming it, in the mode it is attached in): this file defines
// bpf_xdp_attach, which the executable exports in place of libbpf's (the PMD, a shared object,
// calls it through the dynamic linker), and passes every other call on to libbpf unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct bpf_xdp_query_opts;

namespace kvsteer::dp {

// The program a bpf_xdp_query found and the mode flag its attachment needs to be named by
// (XDP_FLAGS_DRV_MODE, _SKB_MODE, _HW_MODE; 0 with several modes at once: the default mode's).
struct XdpAttached {
    std::uint32_t prog_id = 0;
    std::uint32_t mode_flags = 0;
};
XdpAttached attached_mode(const bpf_xdp_query_opts &q);

// Arms `ifaces` (names that do not resolve are skipped): from now on an attach with
// XDP_FLAGS_UPDATE_IF_NOEXIST on one of them replaces the program attached there, if any.
void arm_xdp_replace(const std::vector<std::string> &ifaces);
// Disarms every interface. Returns how many attaches replaced a program since the arming.
unsigned disarm_xdp_replace();
// Whether a call of bpf_xdp_attach through the dynamic linker reaches this file's (the executable
// exports it). False (a test binary, an executable linked without the export): arming changes
// nothing, and the PMD's attach is refused over a program (main.cpp then detaches it first).
bool xdp_replace_reachable();

}  // namespace kvsteer::dp
