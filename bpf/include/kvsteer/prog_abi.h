/* What the dataplane and the XDP object must agree on beyond the maps' layout (abi.h): how XDP
 * hands segments over (proto.h's KVS_TCP_RES_PUNT_BOUND tag and what the dataplane infers from
 * it). The object carries KVS_XDP_ABI_MARKER followed by its KVS_XDP_ABI in its .rodata; the
 * dataplane (xdp mode) reads it from every `xdp_prog=` file before starting and refuses another
 * number, or none. Bump KVS_XDP_ABI whenever that contract changes. */
#ifndef KVSTEER_PROG_ABI_H
#define KVSTEER_PROG_ABI_H

/* 1: client segments of bound connections handed over are tagged (KVS_TCP_RES_PUNT_BOUND). */
#define KVS_XDP_ABI 1
#define KVS_XDP_ABI_MARKER "kvsteer-xdp-abi:"

#define KVS_XDP_ABI_STR_(x) #x
#define KVS_XDP_ABI_STR(x) KVS_XDP_ABI_STR_(x)

#endif /* KVSTEER_PROG_ABI_H */
