/* Fixed-width types for headers compiled both by clang -target bpf and by g++/gcc. */
#ifndef KVSTEER_TYPES_H
#define KVSTEER_TYPES_H

#if defined(__bpf__)
/* BPF objects include vmlinux.h first, which defines __u8 .. __u64 and __be16/__be32. */
#ifndef KVS_INLINE
#define KVS_INLINE static inline __attribute__((always_inline))
#endif
#else
#include <linux/types.h>
#include <stddef.h>
#ifndef KVS_INLINE
#define KVS_INLINE static inline __attribute__((always_inline))
#endif
#endif

#ifndef KVS_LIKELY
#define KVS_LIKELY(x) __builtin_expect(!!(x), 1)
#define KVS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#endif

#endif /* KVSTEER_TYPES_H */
