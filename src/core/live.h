/*
 * Settings that change while the daemon runs: SIGHUP re-reads the config
 * file and stores the new values here (main thread); the ingest and HTTP
 * threads read them where they use them (relaxed loads: a new value takes
 * effect at its next use, and no two fields need to change together).
 * Every field is also in the start-up configuration, with its default and
 * maximum (daemon/config.c); 0 never means "off" here, the parser rejects it.
 */
#ifndef SL_CORE_LIVE_H
#define SL_CORE_LIVE_H

#include <stdatomic.h>
#include <stdint.h>

struct sl_live {
    _Atomic uint32_t tcp_idle_timeout_ms;          /* --tcp-idle-timeout */
    _Atomic uint32_t tcp_frame_timeout_ms;         /* --tcp-frame-timeout: a frame completes this soon after its first byte */
    _Atomic uint32_t tcp_connections_per_ip_max;   /* --max-tcp-connections-per-ip */
    _Atomic uint32_t http_timeout_ms;              /* --http-timeout: the client's own inactivity */
    _Atomic uint32_t http_header_timeout_ms;       /* --http-header-timeout: request line and headers complete this soon */
    _Atomic uint32_t http_connections_per_ip_max;  /* --max-http-connections-per-ip */
};

static inline uint32_t sl_live_get(const _Atomic uint32_t *field)
{
    return atomic_load_explicit((_Atomic uint32_t *)field, memory_order_relaxed);
}

static inline void sl_live_set(_Atomic uint32_t *field, uint32_t value)
{
    atomic_store_explicit(field, value, memory_order_relaxed);
}

#endif
