// Runs kvsteer.bpf.o through BPF_PROG_TEST_RUN with private (unpinned) maps.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/bpf/loader.h"
#include "kvsteer/reasons.h"
#include "pktgen.h"

namespace kvstest {

struct RunResult {
    std::uint32_t verdict = 0;
    Bytes out;
};

class ProgHarness {
   public:
    // nullptr + err when loading fails (not root, no BPF).
    static std::unique_ptr<ProgHarness> create(std::uint32_t flow_max, std::string *err);
    explicit ProgHarness(std::unique_ptr<kvsteer::bpf::Loader> l) : l_(std::move(l)) {}

    RunResult run(const Bytes &in, int repeat = 1, std::uint32_t *duration_ns = nullptr);
    std::vector<std::uint64_t> stats();
    void set_config(const kvs_config &c);
    void put_flow(const kvs_flow_key &k, const kvs_flow &f);
    // Worker w's heartbeat (kvs_ring_ctl.alive_ns, CLOCK_MONOTONIC ns; 0: stopped).
    void set_worker_alive(std::uint32_t w, std::uint64_t alive_ns);
    bool get_flow(const kvs_flow_key &k, kvs_flow *f);
    void clear_flows();
    kvs_backend_load load(std::uint32_t id);
    void clear_load();
    kvsteer::bpf::Loader &loader() { return *l_; }

   private:
    std::unique_ptr<kvsteer::bpf::Loader> l_;
};

// A fixture whose tests share one loaded program (private maps), loaded once per suite. A derived
// SetUp() calls ProgSuite::SetUp() first and returns when IsSkipped() (no root) or
// HasFatalFailure() (the program did not load).
class ProgSuite : public ::testing::Test {
   protected:
    static void SetUpTestSuite();
    static void TearDownTestSuite();
    void SetUp() override;

    static ProgHarness *h_;
    static std::string load_err_;
};

// Whether reason `r` counts an event besides a packet's one verdict reason (FIN/RST seen, a
// request kept on its backend, a frame decapsulated, a tagged frame kept local in a fleet).
bool is_event_reason(unsigned r);

// Runs `in`, expects `verdict`, exactly one count of `reason` and no other verdict reason.
RunResult expect_verdict(ProgHarness &h, const Bytes &in, std::uint32_t verdict, unsigned reason);

// Counter deltas between two stats() snapshots, as "name=+n" for every non-zero one.
std::string stat_delta(const std::vector<std::uint64_t> &a, const std::vector<std::uint64_t> &b);

}  // namespace kvstest
