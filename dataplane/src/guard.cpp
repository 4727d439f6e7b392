#include "guard.h"

#include <net/if.h>

#include <cerrno>
#include <cstring>

#include <bpf/libbpf.h>
#include <fmt/format.h>

namespace kvsteer::dp {

namespace {
// tc filter handle ("kv") and priority: fixed, so a restart replaces its predecessor's filter
// instead of stacking another one.
constexpr __u32 kGuardHandle = 0x6b76;
constexpr __u32 kGuardPriority = 1;
}  // namespace

std::string default_guard_path(const std::string &xdp_prog) {
    auto slash = xdp_prog.rfind('/');
    return (slash == std::string::npos ? std::string() : xdp_prog.substr(0, slash + 1)) +
           "guard.bpf.o";
}

bool attach_guard(const std::string &obj_path, const std::string &bpffs, const std::string &iface,
                  std::string *err) {
    const int ifindex = static_cast<int>(if_nametoindex(iface.c_str()));
    if (ifindex <= 0) {
        *err = fmt::format("guard: no interface '{}'", iface);
        return false;
    }
    LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = bpffs.c_str());
    bpf_object *obj = bpf_object__open_file(obj_path.c_str(), &oo);
    if (!obj) {
        *err = fmt::format("guard: opening {}: {}", obj_path, std::strerror(errno));
        return false;
    }
    bool ok = false;
    if (int rc = bpf_object__load(obj); rc != 0) {
        *err = fmt::format("guard: loading {}: {}", obj_path, std::strerror(-rc));
    } else if (bpf_program *prog = bpf_object__find_program_by_name(obj, "kvsteer_guard"); !prog) {
        *err = fmt::format("guard: {} has no program kvsteer_guard", obj_path);
    } else {
        LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
        int rc = bpf_tc_hook_create(&hook);  // the clsact qdisc; it may exist from a previous run
        if (rc != 0 && rc != -EEXIST) {
            *err = fmt::format("guard: clsact qdisc on {}: {}", iface, std::strerror(-rc));
        } else {
            LIBBPF_OPTS(bpf_tc_opts, to, .prog_fd = bpf_program__fd(prog),
                        .flags = BPF_TC_F_REPLACE, .handle = kGuardHandle,
                        .priority = kGuardPriority);
            rc = bpf_tc_attach(&hook, &to);
            if (rc != 0)
                *err = fmt::format("guard: tc ingress filter on {}: {}", iface, std::strerror(-rc));
            ok = rc == 0;
        }
    }
    // The filter holds the program; the object (and its fds) can go.
    bpf_object__close(obj);
    return ok;
}

}  // namespace kvsteer::dp
