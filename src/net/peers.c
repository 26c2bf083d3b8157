/* Per-address connection counts (see peers.h). */
#include "net/peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/assert.h"
#include "core/hash.h"

static uint32_t slots_for(uint32_t connections_max)
{
    uint32_t slots = 2;
    while (slots < 2 * connections_max) {
        slots *= 2;
    }
    return slots;
}

uint64_t sl_peers_bytes(uint32_t connections_max)
{
    return (uint64_t)slots_for(connections_max) * sizeof(struct sl_peer_count);
}

void sl_peers_init(struct sl_peers *peers, void *memory, uint32_t connections_max)
{
    peers->slots = memory;
    peers->mask = slots_for(connections_max) - 1;
}

static uint32_t home_of(const struct sl_peers *peers, const uint8_t ip[16])
{
    uint64_t a, b;
    memcpy(&a, ip, 8);
    memcpy(&b, ip + 8, 8);
    return (uint32_t)(sl_mix64(a ^ sl_mix64(b)) & peers->mask);
}

struct sl_peer_count *sl_peers_find(struct sl_peers *peers, const uint8_t ip[16])
{
    uint32_t i = home_of(peers, ip);
    for (uint32_t probes = 0; probes <= peers->mask; probes++) {
        struct sl_peer_count *a = &peers->slots[i];
        if (a->count == 0 || memcmp(a->ip, ip, 16) == 0) {
            return a;
        }
        i = (i + 1) & peers->mask;
    }
    SL_ASSERT(0 && "at most connections_max addresses in 2 x that many slots");
    return NULL;
}

void sl_peers_release(struct sl_peers *peers, const uint8_t ip[16])
{
    struct sl_peer_count *a = sl_peers_find(peers, ip);
    SL_ASSERT(a->count > 0);
    if (--a->count > 0) {
        return;
    }
    /* Backward-shift deletion: move later entries of the run into the hole. */
    uint32_t hole = (uint32_t)(a - peers->slots);
    uint32_t i = hole;
    for (;;) {
        i = (i + 1) & peers->mask;
        struct sl_peer_count *next = &peers->slots[i];
        if (next->count == 0) {
            break;
        }
        uint32_t home = home_of(peers, next->ip);
        /* `next` may fill the hole when its home is not cyclically in (hole, i]. */
        bool stays = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            peers->slots[hole] = *next;
            next->count = 0;
            hole = i;
        }
    }
}

void sl_peer_of(const struct sockaddr_storage *ss, uint8_t ip[16], uint16_t *port)
{
    memset(ip, 0, 16);
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        memcpy(ip, &s6->sin6_addr, 16);
        *port = ntohs(s6->sin6_port);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &s4->sin_addr, 4);
        *port = ntohs(s4->sin_port);
    } else {
        *port = 0; /* unknown family: all such peers share one count */
    }
}

void sl_peer_text(const uint8_t ip[16], uint16_t port, char out[64])
{
    static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char text[INET6_ADDRSTRLEN];
    bool v4 = memcmp(ip, v4_prefix, 12) == 0;
    inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? ip + 12 : ip, text, sizeof text);
    snprintf(out, 64, v4 ? "%s:%u" : "[%s]:%u", text, (unsigned)port);
}
