/*
 * libFuzzer target for libsluice's hostile-input surfaces (src/client/client.c):
 *
 * - mode 0: a target string and option fields from the input, through
 *   sl_client_memory (the target parser, option checks and the memory plan);
 * - mode 1: the gateway's answers. A client with four one-reading batches in
 *   flight (seqs 1000..1003, stream 7) is connected to a listener of this
 *   process, and the input is what the "gateway" writes back: acks that may
 *   be garbage, out of order, for other streams or seqs, truncated, followed
 *   by an EOF. Each 32-byte chunk can have its CRC patched in (a flag byte) so
 *   the fuzzer gets past the checksum into the matching logic.
 *
 * Proves: no crash, no out-of-bounds access, no hang; the counts stay
 * consistent (never more answered batches than cut, never more pending than
 * the window); and a batch is taken as stored only for an OK or DUPLICATE ack
 * that names exactly its stream and seq.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "fuzz_check.h"
#include "sluice/client.h"
#include "sluice/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_STREAM 7u
#define FUZZ_FIRST_SEQ 1000u
#define FUZZ_BATCHES 4u
#define FUZZ_ANSWER_MAX 4096u

static int listener = -1;
static char target[64];

static void fuzz_options(const uint8_t *data, size_t size)
{
    char text[256];
    struct sl_client_options o;
    sl_client_options_init(&o);
    size_t fixed = sizeof(uint32_t) * 4;
    if (size >= fixed) {
        memcpy(&o.batch_readings, data, 4);
        memcpy(&o.frame_bytes_max, data + 4, 4);
        memcpy(&o.window, data + 8, 4);
        memcpy(&o.flags, data + 12, 4);
        data += fixed;
        size -= fixed;
    }
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    int64_t bytes = sl_client_memory(text, &o);
    FUZZ_CHECK(bytes < 0 || bytes <= (int64_t)SL_CLIENT_MEMORY_MAX);
    FUZZ_CHECK(sl_client_strerror((int)bytes) != NULL);
}

static void setup_listener(void)
{
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    FUZZ_CHECK(listener >= 0 && bind(listener, (struct sockaddr *)&addr, sizeof addr) == 0);
    FUZZ_CHECK(listen(listener, 16) == 0);
    socklen_t len = sizeof addr;
    FUZZ_CHECK(getsockname(listener, (struct sockaddr *)&addr, &len) == 0);
    snprintf(target, sizeof target, "tcp://127.0.0.1:%u", ntohs(addr.sin_port));
}

static void fuzz_answers(const uint8_t *data, size_t size)
{
    if (listener < 0) {
        setup_listener();
    }
    uint8_t patch = size > 0 ? data[0] : 0; /* bit i: patch the CRC of chunk i */
    data += size > 0;
    size -= size > 0;
    uint8_t answer[FUZZ_ANSWER_MAX];
    size_t n = size < sizeof answer ? size : sizeof answer;
    memcpy(answer, data, n);
    for (size_t chunk = 0; chunk < 8 && (chunk + 1) * SL_ACK_BYTES <= n; chunk++) {
        if (patch & (1u << chunk)) {
            uint8_t *a = answer + chunk * SL_ACK_BYTES;
            sl_store_u32(a + SL_ACK_OFF_CRC, sl_crc32c(a, SL_ACK_OFF_CRC));
        }
    }
    struct sl_client_options o = {.stream_id = FUZZ_STREAM, .first_seq = FUZZ_FIRST_SEQ,
                                  .batch_readings = 1, .window = FUZZ_BATCHES,
                                  .block_timeout_ms = 1000, .ack_timeout_ms = 1000,
                                  .backoff_min_ms = 1, .backoff_max_ms = 2};
    struct sl_client *c;
    FUZZ_CHECK(sl_client_open(&c, target, &o) == 0);
    for (uint32_t i = 0; i < FUZZ_BATCHES; i++) {
        FUZZ_CHECK(sl_client_append(c, 1, 1700000000000000ll + i, 1.0f) == 0);
    }
    FUZZ_CHECK(sl_client_push(c) == 0);
    int peer = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    FUZZ_CHECK(peer >= 0);
    (void)send(peer, answer, n, MSG_NOSIGNAL);
    shutdown(peer, SHUT_WR); /* then the gateway's EOF */
    /* Drive the client until it has read everything (bounded: each turn waits at most 5 ms). */
    struct sl_client_counts k;
    for (int turn = 0; turn < 8; turn++) {
        (void)sl_client_poll(c, 5);
        sl_client_counts(c, &k);
        if (k.pending == 0 || k.refused > 0 || (k.sent > 0 && sl_client_fd(c) < 0)) {
            break; /* all answered, stopped, or the EOF was read */
        }
    }
    sl_client_counts(c, &k);
    FUZZ_CHECK(k.batches == FUZZ_BATCHES);
    FUZZ_CHECK(k.acked + k.duplicate <= k.batches);
    FUZZ_CHECK(k.pending + k.acked + k.duplicate >= k.batches); /* a done slot waits behind the tail */
    FUZZ_CHECK(k.pending <= FUZZ_BATCHES);
    FUZZ_CHECK(k.accepted <= (uint64_t)k.acked * UINT32_MAX);
    /* Count the acks the input could legitimately have given: OK/DUPLICATE, right stream, in order. */
    uint64_t expect_seq = FUZZ_FIRST_SEQ, legit = 0;
    for (size_t off = 0; off + SL_ACK_BYTES <= n; off += SL_ACK_BYTES) {
        struct sl_ack a;
        if (sl_ack_decode(answer + off, SL_ACK_BYTES, &a) != 0 || a.stream_id != FUZZ_STREAM ||
            a.batch_seq != expect_seq || a.status > SL_STATUS_DUPLICATE) {
            break;
        }
        legit++;
        expect_seq++;
    }
    FUZZ_CHECK(k.acked + k.duplicate >= (legit < FUZZ_BATCHES ? legit : FUZZ_BATCHES) ||
               k.refused > 0 || k.reconnects > 0);
    FUZZ_CHECK(k.acked + k.duplicate <= FUZZ_BATCHES);
    close(peer);
    sl_client_close(c);
    /* A reconnect may have queued another connection: take it so the backlog never fills. */
    struct pollfd pfd = {.fd = listener, .events = POLLIN};
    while (poll(&pfd, 1, 0) == 1) {
        int extra = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (extra < 0) {
            break;
        }
        close(extra);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    if (data[0] & 1) {
        fuzz_answers(data + 1, size - 1);
    } else {
        fuzz_options(data + 1, size - 1);
    }
    return 0;
}
