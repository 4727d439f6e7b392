// BPF_PROG_TEST_RUN harness for kvsteer.bpf.o.
#include "prog_fixture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvstest {

std::unique_ptr<ProgHarness> ProgHarness::create(std::uint32_t flow_max, std::string *err) {
    kvsteer::bpf::LoaderOptions o;
    o.flow_max = flow_max;
    auto l = kvsteer::bpf::Loader::load(o, err);
    if (!l) return nullptr;
    return std::make_unique<ProgHarness>(std::move(l));
}

RunResult ProgHarness::run(const Bytes &in, int repeat, std::uint32_t *duration_ns) {
    RunResult r;
    // The output buffer starts as a non-zero pattern: bytes the program did not write show up.
    std::vector<std::uint8_t> out(4096, 0x5A);
    LIBBPF_OPTS(bpf_test_run_opts, o);
    o.data_in = in.data();
    o.data_size_in = static_cast<std::uint32_t>(in.size());
    o.data_out = out.data();
    o.data_size_out = static_cast<std::uint32_t>(out.size());
    o.repeat = repeat;
    int rc = bpf_prog_test_run_opts(l_->prog_fd(), &o);
    EXPECT_EQ(rc, 0) << "bpf_prog_test_run_opts: " << std::strerror(errno);
    r.verdict = o.retval;
    out.resize(o.data_size_out);
    r.out = std::move(out);
    if (duration_ns) *duration_ns = o.duration;
    return r;
}

std::vector<std::uint64_t> ProgHarness::stats() {
    std::vector<std::uint64_t> v(KVS_R__COUNT);
    std::string err;
    EXPECT_TRUE(l_->read_stats(v.data(), KVS_R__COUNT, &err)) << err;
    return v;
}

void ProgHarness::set_config(const kvs_config &c) {
    std::uint32_t zero = 0;
    EXPECT_EQ(bpf_map_update_elem(l_->map_fd(KVS_MAP_CONFIG), &zero, &c, BPF_ANY), 0);
}

void ProgHarness::set_worker_alive(std::uint32_t w, std::uint64_t alive_ns) {
    kvs_ring_ctl rc{};
    const int fd = l_->map_fd(KVS_MAP_RING_CTL);
    ASSERT_EQ(bpf_map_lookup_elem(fd, &w, &rc), 0) << std::strerror(errno);
    rc.alive_ns = alive_ns;
    EXPECT_EQ(bpf_map_update_elem(fd, &w, &rc, BPF_ANY), 0) << std::strerror(errno);
}

void ProgHarness::put_flow(const kvs_flow_key &k, const kvs_flow &f) {
    EXPECT_EQ(bpf_map_update_elem(l_->map_fd(KVS_MAP_FLOWS), &k, &f, BPF_ANY), 0)
        << std::strerror(errno);
}

bool ProgHarness::get_flow(const kvs_flow_key &k, kvs_flow *f) {
    return bpf_map_lookup_elem(l_->map_fd(KVS_MAP_FLOWS), &k, f) == 0;
}

void ProgHarness::clear_flows() {
    int fd = l_->map_fd(KVS_MAP_FLOWS);
    kvs_flow_key k{}, next{};
    while (bpf_map_get_next_key(fd, nullptr, &next) == 0) {
        k = next;
        bpf_map_delete_elem(fd, &k);
    }
}

kvs_backend_load ProgHarness::load(std::uint32_t id) {
    kvs_backend_load v{};
    EXPECT_EQ(bpf_map_lookup_elem(l_->map_fd(KVS_MAP_BACKEND_LOAD), &id, &v), 0);
    return v;
}

void ProgHarness::clear_load() {
    kvs_backend_load zero{};
    for (std::uint32_t i = 0; i < 8; i++)
        bpf_map_update_elem(l_->map_fd(KVS_MAP_BACKEND_LOAD), &i, &zero, BPF_ANY);
}

ProgHarness *ProgSuite::h_ = nullptr;
std::string ProgSuite::load_err_;

void ProgSuite::SetUpTestSuite() {
    if (geteuid() != 0) return;
    std::string err;
    h_ = ProgHarness::create(4096, &err).release();
    load_err_ = err;
}

void ProgSuite::TearDownTestSuite() {
    delete h_;
    h_ = nullptr;
}

void ProgSuite::SetUp() {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF_PROG_TEST_RUN); CI runs as root";
    ASSERT_NE(h_, nullptr) << "loading kvsteer.bpf.o failed: " << load_err_;
}

bool is_event_reason(unsigned r) {
    return r == KVS_R_FLOW_FIN || r == KVS_R_FLOW_RST || r == KVS_R_FLOW_CLOSED ||
           r == KVS_R_REQ_KEPT_OWED || r == KVS_R_REQ_KEPT_CLOSING || r == KVS_R_REQ_KEPT_UNACKED ||
           r == KVS_R_RESP_RESYNC || r == KVS_R_REQ_END_UNKNOWN || r == KVS_R_FLEET_DECAP ||
           r == KVS_R_FLEET_VLAN_LOCAL || r == KVS_R_TCP_OPTS_IGNORED ||
           r == KVS_R_CLOSE_OUT_OF_WINDOW || r == KVS_R_SYN_ON_LIVE_FLOW ||
           r == KVS_R_FLOW_REUSED || r == KVS_R_REQ_KEPT_NO_DATAPLANE;
}

RunResult expect_verdict(ProgHarness &h, const Bytes &in, std::uint32_t verdict, unsigned reason) {
    auto before = h.stats();
    RunResult r = h.run(in);
    auto after = h.stats();
    EXPECT_EQ(r.verdict, verdict);
    EXPECT_EQ(after[reason] - before[reason], 1u)
        << "want " << kvs_reason_name(reason) << ", got " << stat_delta(before, after);
    std::uint64_t total = 0;
    for (unsigned i = 0; i < KVS_R__COUNT; i++)
        if (!is_event_reason(i)) total += after[i] - before[i];
    EXPECT_EQ(total, 1u) << "exactly one verdict reason per packet: " << stat_delta(before, after);
    return r;
}

std::string stat_delta(const std::vector<std::uint64_t> &a, const std::vector<std::uint64_t> &b) {
    std::string s;
    for (std::size_t i = 0; i < a.size() && i < b.size(); i++)
        if (a[i] != b[i])
            s += std::string(kvs_reason_name(static_cast<unsigned>(i))) + "=+" +
                 std::to_string(b[i] - a[i]) + " ";
    return s;
}

}  // namespace kvstest
