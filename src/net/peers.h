/*
 * Open connections per peer address, for the per-address caps of the TCP
 * listeners (native and line protocol): a table of counts with linear
 * probing and backward-shift deletion, twice as many slots as connections
 * (so it never fills), keyed by the address as 16 bytes (IPv4 as
 * ::ffff:a.b.c.d). Memory: the caller's (sl_peers_bytes, from the arena).
 * One thread.
 */
#ifndef SL_NET_PEERS_H
#define SL_NET_PEERS_H

#include <stdint.h>
#include <sys/socket.h>

struct sl_peer_count {
    uint8_t ip[16];
    uint32_t count; /* 0: an empty slot */
};

struct sl_peers {
    struct sl_peer_count *slots;
    uint32_t mask;
};

/* Bytes of the table for at most `connections_max` open connections. */
uint64_t sl_peers_bytes(uint32_t connections_max);

/* Use `memory` (sl_peers_bytes, zeroed) as the table. */
void sl_peers_init(struct sl_peers *peers, void *memory, uint32_t connections_max);

/* The slot of `ip`, or the empty slot where it would go (count 0: fill ip, then count it). */
struct sl_peer_count *sl_peers_find(struct sl_peers *peers, const uint8_t ip[16]);

/* One connection of `ip` closed. */
void sl_peers_release(struct sl_peers *peers, const uint8_t ip[16]);

/* The peer's address as 16 bytes, and its port. */
void sl_peer_of(const struct sockaddr_storage *ss, uint8_t ip[16], uint16_t *port);

/* "10.0.0.7:51234" or "[::1]:51234", for event lines. */
void sl_peer_text(const uint8_t ip[16], uint16_t port, char out[64]);

#endif
