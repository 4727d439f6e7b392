#include "kvsteer/model/cost_model.h"

namespace kvsteer::model {

double CostModel::prefill_work(uint64_t n_ctx, uint64_t n_new) const {
    const double n = double(n_new);
    return cfg_.scale * (cfg_.prefill_a_s * n + cfg_.prefill_b_s * n * (double(n_ctx) + n / 2.0));
}

double CostModel::prefill_time(uint64_t cached, uint64_t n_new) const {
    return cfg_.scale * cfg_.prefill_c0_s + prefill_work(cached, n_new);
}

double CostModel::decode_step_time(uint64_t batch, uint64_t ctx_tokens) const {
    if (batch == 0) return 0.0;
    return step_time(0.0, batch, ctx_tokens);
}

double CostModel::step_time(double prefill_work_s, uint64_t decode_seqs,
                            uint64_t decode_ctx) const {
    if (prefill_work_s <= 0.0 && decode_seqs == 0) return 0.0;
    const double fixed = prefill_work_s > 0.0 ? cfg_.prefill_c0_s : cfg_.decode_base_s;
    return prefill_work_s + cfg_.scale * (fixed + cfg_.decode_per_seq_s * double(decode_seqs) +
                                          cfg_.decode_per_ctx_token_s * double(decode_ctx));
}

}  // namespace kvsteer::model
