// Small synthetic workloads shared by the simulator tests.
#pragma once
#include "simulator.h"
#include "workload.h"

namespace kvsteer::sim::test {

inline Workload small_shared_prefix(uint32_t groups = 8, uint32_t per_group = 8,
                                    uint32_t sys_tokens = 1024) {
    replay::SharedPrefixSpec s;
    s.groups = groups;
    s.prompts_per_group = per_group;
    s.system_prompt_len = sys_tokens;
    s.question_len = 64;
    s.output_len = 8;
    s.seed = 7;
    return make_shared_prefix(s, WorkloadOptions{});
}

inline RunConfig config(const std::string &policy, uint32_t servers) {
    RunConfig c;
    c.policy = policy;
    c.servers = servers;
    return c;
}

}  // namespace kvsteer::sim::test
