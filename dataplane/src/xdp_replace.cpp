#include "xdp_replace.h"

#include <dlfcn.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

extern "C" int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags,
                              const bpf_xdp_attach_opts *opts);

namespace kvsteer::dp {

namespace {

std::mutex g_mu;
std::vector<int> g_armed;  // ifindexes
unsigned g_replaced = 0;

using AttachFn = int (*)(int, int, __u32, const bpf_xdp_attach_opts *);

// libbpf's own bpf_xdp_attach: the next definition after this executable's.
AttachFn libbpf_attach() {
    static const AttachFn fn = [] {
        void *p = dlvsym(RTLD_NEXT, "bpf_xdp_attach", "LIBBPF_0.7.0");
        if (!p) p = dlsym(RTLD_NEXT, "bpf_xdp_attach");
        return reinterpret_cast<AttachFn>(p);
    }();
    return fn;
}

bool armed(int ifindex) {
    for (int i : g_armed)
        if (i == ifindex) return true;
    return false;
}

}  // namespace

XdpAttached attached_mode(const bpf_xdp_query_opts &q) {
    switch (q.attach_mode) {
        case XDP_ATTACHED_DRV:
            return {q.drv_prog_id, XDP_FLAGS_DRV_MODE};
        case XDP_ATTACHED_SKB:
            return {q.skb_prog_id, XDP_FLAGS_SKB_MODE};
        case XDP_ATTACHED_HW:
            return {q.hw_prog_id, XDP_FLAGS_HW_MODE};
        case XDP_ATTACHED_NONE:
            return {};
        default:
            // Several modes at once: libbpf names no single program (prog_id 0), so the PMD's
            // attach goes on unchanged (and is refused over them).
            return {q.prog_id, 0};
    }
}

void arm_xdp_replace(const std::vector<std::string> &ifaces) {
    std::lock_guard<std::mutex> lock(g_mu);
    for (const auto &name : ifaces)
        if (int i = static_cast<int>(if_nametoindex(name.c_str())); i > 0 && !armed(i))
            g_armed.push_back(i);
}

bool xdp_replace_reachable() {
    return dlsym(RTLD_DEFAULT, "bpf_xdp_attach") == reinterpret_cast<void *>(&::bpf_xdp_attach);
}

unsigned disarm_xdp_replace() {
    std::lock_guard<std::mutex> lock(g_mu);
    g_armed.clear();
    const unsigned n = g_replaced;
    g_replaced = 0;
    return n;
}

}  // namespace kvsteer::dp

extern "C" int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags,
                              const bpf_xdp_attach_opts *opts) {
    using namespace kvsteer::dp;
    const AttachFn real = libbpf_attach();
    if (!real) return -ENOSYS;
    // Only the PMD's kind of call is changed: a program attached where none may be, no options.
    if (prog_fd < 0 || opts != nullptr || flags != XDP_FLAGS_UPDATE_IF_NOEXIST)
        return real(ifindex, prog_fd, flags, opts);
    std::lock_guard<std::mutex> lock(g_mu);
    if (!armed(ifindex)) return real(ifindex, prog_fd, flags, opts);
    LIBBPF_OPTS(bpf_xdp_query_opts, q);
    if (bpf_xdp_query(ifindex, 0, &q) != 0 || q.attach_mode == XDP_ATTACHED_NONE)
        return real(ifindex, prog_fd, flags, opts);
    const XdpAttached cur = attached_mode(q);
    const int old_fd = cur.prog_id ? bpf_prog_get_fd_by_id(cur.prog_id) : -1;
    if (old_fd < 0) return real(ifindex, prog_fd, flags, opts);  // refused, as before
    LIBBPF_OPTS(bpf_xdp_attach_opts, ro, .old_prog_fd = old_fd);
    const int rc = real(ifindex, prog_fd, XDP_FLAGS_REPLACE | cur.mode_flags, &ro);
    close(old_fd);
    if (rc == 0) ++g_replaced;
    return rc;
}
