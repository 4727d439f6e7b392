#include "rewrite_glue.h"

#include <rte_mbuf.h>

#include "kvsteer/cookie.h"
#include "kvsteer/rewrite.h"
#include "kvsteer/synack.h"

namespace kvsteer::dp {

void rewrite_packet(kvs_pkt *pkt, void *data_end, const kvs_flow &f) {
    kvs_flow_rewrite(data_end, pkt, &f);
}

rte_mbuf *build_cookie_synack(rte_mbuf *syn, const kvs_config &cfg, const kvs_pkt &pkt,
                              std::uint64_t tai_ns, unsigned *why) {
    const __u64 *key = kvs_config_sign_key(&cfg);
    *why = KVS_R_DROP_NO_CONFIG;
    if (!kvs_cookie_key_set(key)) {
        rte_pktmbuf_free(syn);
        return nullptr;
    }
    kvs_synack sa;
    kvs_synack_plan(&pkt, &cfg, &sa);
    kvs_cookie_tuple t{};
    kvs_cookie_tuple_of(&pkt, &t);
    kvs_cookie_sign(key, &t, kvs_cookie_slot(tai_ns, cfg.cookie_period_s), sa.cookie_data,
                    sa.client_isn, &sa.cookie, &sa.tsval);
    *why = KVS_R_DROP_SYNACK_NO_ROOM;
    const std::uint32_t have = rte_pktmbuf_data_len(syn);
    if (have > sa.frame_len)
        rte_pktmbuf_trim(syn, static_cast<std::uint16_t>(have - sa.frame_len));
    else if (have < sa.frame_len &&
             !rte_pktmbuf_append(syn, static_cast<std::uint16_t>(sa.frame_len - have))) {
        rte_pktmbuf_free(syn);
        return nullptr;
    }
    auto *d = rte_pktmbuf_mtod(syn, std::uint8_t *);
    if (kvs_synack_write(d, d + rte_pktmbuf_data_len(syn), &sa) != 0) {
        rte_pktmbuf_free(syn);
        return nullptr;
    }
    return syn;
}

}  // namespace kvsteer::dp
