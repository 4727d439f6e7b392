// Time one forward step of an emulated GPU takes, from a prefill fit measured on a real GPU and
// a memory-bandwidth model of decode. All times in seconds of model (GPU) time.
#pragma once
#include <cstdint>

namespace kvsteer::model {

struct CostConfig {
    // Prefill: t = c0 + a*new + b*new*(cached + new/2), fitted (least squares, points with
    // new >= 256) to the Llama-3.1-8B prefill times measured on one H200 (bf16, SDPA, batch 1):
    // shared calibration/h200-prefill.json, its README table. Worst point is ~39% off, most
    // within 20%. c0 is mostly eager-PyTorch overhead: an upper bound for a serving engine.
    double prefill_c0_s = 24.1e-3;
    double prefill_a_s = 0.01376e-3;      // per uncached token (~73k tokens/s)
    double prefill_b_s = 2.86e-6 * 1e-3;  // per uncached token per token of context before it

    // Decode (not in the calibration file; from memory bandwidth): a step reads the weights
    // (16 GB for 8B bf16 at ~4 TB/s effective: ~4 ms, plus launch overhead: 6 ms), a small
    // per-sequence cost, and the KV of every context token in the batch (128 KiB/token at
    // ~4 TB/s: 3.3e-8 s/token). So time per output token grows with batch size and context.
    double decode_base_s = 6.0e-3;
    double decode_per_seq_s = 0.06e-3;
    double decode_per_ctx_token_s = 3.3e-8;

    // Scale every duration (e.g. 10 for the whole 70B model: its calibration row is 8 of 80
    // layers, multiply by 10).
    double scale = 1.0;
};

class CostModel {
   public:
    CostModel() = default;
    explicit CostModel(CostConfig cfg) : cfg_(cfg) {}
    const CostConfig &config() const { return cfg_; }

    // Work of prefilling `n_new` tokens after `n_ctx` tokens already in the KV cache, without
    // the fixed per-step cost. Additive over chunks: chunking a prefill sums to the same total.
    double prefill_work(uint64_t n_ctx, uint64_t n_new) const;

    // A whole single prefill (batch 1): c0 + work. This is what the calibration measured.
    double prefill_time(uint64_t cached, uint64_t n_new) const;

    // One decode step of `batch` sequences holding `ctx_tokens` KV tokens in all.
    double decode_step_time(uint64_t batch, uint64_t ctx_tokens) const;

    // One mixed step (vLLM V1 chunked prefill: prefill chunks and decodes in one forward):
    // one fixed cost (the prefill's c0 when any prefill is in it, else the decode base),
    // plus the prefill work, plus the decode per-sequence and KV-read costs.
    double step_time(double prefill_work_s, uint64_t decode_seqs, uint64_t decode_ctx) const;

   private:
    CostConfig cfg_;
};

}  // namespace kvsteer::model
