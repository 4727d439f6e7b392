// Loader: skeleton open/load with pin reuse, XDP attach/detach, counters.
#include "kvsteer/bpf/loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "kvsteer.skel.h"

namespace kvsteer::bpf {

namespace {

std::string errstr(int e) {
    return std::strerror(e < 0 ? -e : e);
}

}  // namespace

bool read_percpu_counters(int map_fd, std::uint64_t *out, unsigned n, std::string *err) {
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) {
        if (err) *err = "cannot count possible CPUs: " + errstr(ncpu);
        return false;
    }
    std::vector<std::uint64_t> per_cpu(static_cast<size_t>(ncpu));
    for (unsigned i = 0; i < n; i++) {
        std::uint32_t key = i;
        if (bpf_map_lookup_elem(map_fd, &key, per_cpu.data()) != 0) {
            if (err) *err = "kvs_stats lookup of index " + std::to_string(i) + ": " + errstr(errno);
            return false;
        }
        std::uint64_t sum = 0;
        for (auto v : per_cpu) sum += v;
        out[i] = sum;
    }
    return true;
}

std::unique_ptr<Loader> Loader::load(const LoaderOptions &opt, std::string *err) {
    std::unique_ptr<Loader> l(new Loader());
    LIBBPF_OPTS(bpf_object_open_opts, oo);
    if (!opt.pin_dir.empty()) oo.pin_root_path = opt.pin_dir.c_str();
    l->skel_ = kvsteer_bpf__open_opts(&oo);
    if (!l->skel_) {
        if (err) *err = "opening the kvsteer BPF object: " + errstr(errno);
        return nullptr;
    }
    if (opt.pin_dir.empty()) {
        bpf_map *m;
        bpf_object__for_each_map(m, l->skel_->obj) {
            if (bpf_map__set_pin_path(m, nullptr) != 0) {
                if (err) *err = std::string("unpinning map ") + bpf_map__name(m);
                return nullptr;
            }
        }
        if (opt.flow_max) bpf_map__set_max_entries(l->skel_->maps.kvs_flows, opt.flow_max);
    }
    int rc = kvsteer_bpf__load(l->skel_);
    if (rc != 0) {
        if (err)
            *err =
                "loading the kvsteer BPF object" +
                (opt.pin_dir.empty() ? std::string() : " (pinned maps under " + opt.pin_dir + ")") +
                ": " + errstr(rc) + " (libbpf log above names the map or verifier error)";
        return nullptr;
    }
    return l;
}

Loader::~Loader() {
    if (skel_) kvsteer_bpf__destroy(skel_);
}

int Loader::prog_fd() const {
    return bpf_program__fd(skel_->progs.kvsteer_xdp);
}

bpf_map *Loader::map(const char *name) const {
    return bpf_object__find_map_by_name(skel_->obj, name);
}

int Loader::map_fd(const char *name) const {
    bpf_map *m = map(name);
    return m ? bpf_map__fd(m) : -1;
}

bool Loader::read_stats(std::uint64_t *out, unsigned n, std::string *err) const {
    return read_percpu_counters(bpf_map__fd(skel_->maps.kvs_stats), out,
                                n > KVS_STATS_MAX ? KVS_STATS_MAX : n, err);
}

bool Loader::attach(int ifindex, AttachMode mode, std::string *err) {
    char name[IF_NAMESIZE] = "?";
    if_indextoname(static_cast<unsigned>(ifindex), name);
    if (mode == AttachMode::kNative || mode == AttachMode::kAuto) {
        int rc = bpf_xdp_attach(ifindex, prog_fd(), XDP_FLAGS_DRV_MODE, nullptr);
        if (rc == 0) {
            attached_mode_ = AttachMode::kNative;
            return true;
        }
        if (mode == AttachMode::kNative) {
            if (err) *err = std::string("native XDP attach to ") + name + ": " + errstr(rc);
            return false;
        }
        spdlog::warn("native XDP attach to {} failed ({}); falling back to generic XDP", name,
                     errstr(rc));
    }
    int rc = bpf_xdp_attach(ifindex, prog_fd(), XDP_FLAGS_SKB_MODE, nullptr);
    if (rc != 0) {
        if (err) *err = std::string("generic XDP attach to ") + name + ": " + errstr(rc);
        return false;
    }
    attached_mode_ = AttachMode::kGeneric;
    return true;
}

bool Loader::detach(int ifindex, AttachMode mode, std::string *err) {
    bool ok = true;
    std::string msg;
    if (mode == AttachMode::kNative || mode == AttachMode::kAuto) {
        int rc = bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
        if (rc != 0 && mode == AttachMode::kNative) {
            ok = false;
            msg = "native detach: " + errstr(rc);
        }
    }
    if (mode == AttachMode::kGeneric || mode == AttachMode::kAuto) {
        int rc = bpf_xdp_detach(ifindex, XDP_FLAGS_SKB_MODE, nullptr);
        if (rc != 0 && mode == AttachMode::kGeneric) {
            ok = false;
            msg = "generic detach: " + errstr(rc);
        }
    }
    if (!ok && err) *err = msg + " (ifindex " + std::to_string(ifindex) + ")";
    return ok;
}

}  // namespace kvsteer::bpf
