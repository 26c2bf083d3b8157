/* TCP connections of the native protocol, served inside the ingest loop (see tcp.c). */
#ifndef SL_NET_TCP_H
#define SL_NET_TCP_H

#include <stdint.h>

#include "core/plan.h"
#include "net/ingest.h"

/* epoll tags: connection i is registered as SL_TAG_CONN + i. */
#define SL_TAG_CONN 3u

void sl_tcp_plan(const struct sl_ingest_config *config, struct sl_plan *plan);
void sl_tcp_take(struct sl_ingest *ingest, struct sl_arena *arena);

/* Accept up to a bounded number of pending connections; refuse (and count) over the limit. */
void sl_tcp_accept(struct sl_ingest *ingest);

/* Serve connection `index` for the epoll `events` it reported. */
void sl_tcp_event(struct sl_ingest *ingest, uint32_t index, uint32_t events);

/*
 * At commit: queue intent `in`'s ack with `status` and the apply result on
 * its connection (dropped when the connection is gone or reused), and for a
 * REJECT, shut the connection after its error ack.
 */
void sl_tcp_deliver(struct sl_ingest *ingest, const struct sl_intent *in, enum sl_status status,
                    const struct sl_apply_result *result);

/* After a commit: write the acks queued on every touched connection. */
void sl_tcp_flush_touched(struct sl_ingest *ingest);

/* Move every open connection's last activity `ns` later (at most to now): the loop stalled that long. */
void sl_tcp_excuse(struct sl_ingest *ingest, int64_t ns, int64_t now_ns);

/* Close connections idle past the timeout, and drained ones past their linger time. */
void sl_tcp_sweep(struct sl_ingest *ingest, int64_t now_ns);

/* At shutdown: serve what each connection already sent, flush acks (bounded), close all. */
void sl_tcp_drain_all(struct sl_ingest *ingest);

#endif
