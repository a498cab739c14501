/*
 * conn_layout.h - the layout of a connector's control block (struct eccl_conn_ctrl,
 * kernels/conn.h) as byte offsets, for the CUDA kernels, which cannot include that C11 header.
 * kernels/conn.h asserts that these match the struct.
 */
#ifndef ECCL_KERNELS_CONN_LAYOUT_H
#define ECCL_KERNELS_CONN_LAYOUT_H

#define ECCL_CONN_OFF_TAIL       0    /* uint32_t: steps posted by the sender */
#define ECCL_CONN_OFF_HEAD       64   /* uint32_t: steps consumed by the receiver */
#define ECCL_CONN_OFF_NSLOTS     132  /* uint32_t */
#define ECCL_CONN_OFF_SLOT_BYTES 136  /* uint32_t */
#define ECCL_CONN_OFF_CLOSED     140  /* uint32_t: nonzero once either side gave up */
#define ECCL_CONN_OFF_SIZES      144  /* uint32_t[ECCL_CONN_MAX_SLOTS]: bytes of each slot's step */
#define ECCL_CONN_DATA_OFF       1216 /* the first slot */

/* Set in a step's size word when the sender wrote the step into the connector's device-memory
 * slots (GPU to GPU) rather than into the slots after the control block. */
#define ECCL_CONN_SIZE_DEVDATA 0x80000000u

/* Set too when the step went as LL lines (kernels/dev_coll.cuh): only a GPU receiver that runs
 * the same operation in LL reads it, and it reads the lines, not this word; anyone else meets a
 * size it does not expect. */
#define ECCL_CONN_SIZE_LL 0x40000000u

/* Set instead of ECCL_CONN_SIZE_LL when the step went as LL128 lines: only a GPU receiver that
 * runs the same operation in LL128 reads it. */
#define ECCL_CONN_SIZE_LL128 0x10000000u

/* Set when the step is not data but a registered buffer's place (core/reg.c): a GPU receiver
 * that runs the matching point-to-point receive copies the whole message from the sender's
 * memory, which it mapped, and frees the step when done. The slot holds three 64-bit words:
 * the receiver's table slot << 32 | the registration's key, the offset in the registration's
 * allocation, the message's bytes. */
#define ECCL_CONN_SIZE_ZC 0x08000000u
#define ECCL_CONN_ZC_DESC 24u

/* Set by a host sender whose step went into the slot with streaming stores (kernels/host_copy.h):
 * only where the receiver asked for them through the connector's stream word, so only a host
 * receiver meets it. */
#define ECCL_CONN_SIZE_STREAM 0x20000000u

/* The receiver's stream word: ECCL_CONN_STREAM_ASK, it accepts and measures streamed steps. The
 * sender then stores one step in ECCL_CONN_STREAM_PROBE the way it does not prefer, so that both
 * ways stay measured. */
#define ECCL_CONN_STREAM_ASK   1u
#define ECCL_CONN_STREAM_PROBE 16u

#endif
