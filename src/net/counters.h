/*
 * Counters of the network layer, written by the ingest thread, read by the
 * HTTP thread for /metrics and /healthz. Single writer: the ingest thread
 * bumps them with a relaxed load and store (sl_counter_add), never a locked
 * read-modify-write; readers load them relaxed.
 */
#ifndef SL_NET_COUNTERS_H
#define SL_NET_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "sluice/protocol.h"

enum sl_transport { SL_TRANSPORT_UDP = 0, SL_TRANSPORT_TCP = 1 };
#define SL_TRANSPORT_COUNT 2

struct sl_net_counters {
    /* Frames by transport and ack status (UDP frames get the status they would have). */
    _Atomic uint64_t batches[SL_TRANSPORT_COUNT][SL_STATUS_COUNT];
    /* Refused frames by transport and exact class (enum sl_decode_error). */
    _Atomic uint64_t decode_errors[SL_TRANSPORT_COUNT][SL_DECODE_ERROR_COUNT];
    _Atomic uint64_t udp_datagrams;
    _Atomic uint64_t udp_bytes;
    _Atomic uint64_t udp_lost_batches;           /* gaps in batch_seq */
    _Atomic uint64_t udp_out_of_sequence_batches; /* seq at or below the last: reordered or restarted */
    _Atomic uint64_t udp_resyncs;                 /* seq jumped further ahead than any loss (SL_STREAMS_GAP_MAX) */
    _Atomic uint64_t udp_kernel_drops;            /* SO_RXQ_OVFL: the socket buffer overflowed */
    _Atomic uint64_t tcp_bytes;
    _Atomic uint64_t tcp_connections_accepted;
    _Atomic uint64_t tcp_connections_refused;   /* over the connection limit */
    _Atomic uint64_t tcp_connections_timed_out; /* idle timeout */
    _Atomic uint64_t tcp_connections_closed_on_error; /* BAD_CRC, MALFORMED, peer reset */
    _Atomic uint64_t tcp_pauses;                /* reading stopped: the peer left its acks unread */
    _Atomic uint64_t tcp_evicted_idle;          /* closed to make room at a full table: idle longest */
    _Atomic uint64_t tcp_evicted_incomplete;    /* ... its frame incomplete longest */
    _Atomic uint64_t tcp_refused_per_ip;        /* the peer's address held --max-tcp-connections-per-ip */
    _Atomic uint64_t tcp_frame_timeouts;        /* a frame not complete within --tcp-frame-timeout */
    _Atomic uint64_t tcp_accept_backoffs;       /* accept paused: out of descriptors (EMFILE, ENFILE) */
    _Atomic uint32_t tcp_connections;           /* open now */
    _Atomic uint64_t streams_table_full;        /* batches refused OVERLOADED: no room for a new stream */
    _Atomic uint64_t apply_groups;              /* commit groups handed to the apply side */
    _Atomic uint64_t apply_wait_ns;             /* ingest thread time spent waiting for the apply worker */
    _Atomic uint64_t ingest_stalls;             /* loop ticks whose work took over SL_STALL_NS */
    _Atomic int64_t started_at_us;              /* wall clock when ingestion began */
};

static inline void sl_counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
    atomic_store_explicit(counter, v + n, memory_order_relaxed);
}

static inline uint64_t sl_counter_get(const _Atomic uint64_t *counter)
{
    return atomic_load_explicit((_Atomic uint64_t *)counter, memory_order_relaxed);
}

#endif
