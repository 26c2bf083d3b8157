/*
 * libFuzzer target for the uplink's text encoders (src/proto/lpout.c).
 *
 * The input's first 4 bytes are an f32 (little-endian) and its first 8 a
 * timestamp; the whole input is a name. Proves, on arbitrary bytes: no read
 * outside the input and no write outside an output (each sits in a heap
 * block of exactly its length, so ASan sees one byte over); the float text
 * reads back as the float (strtof and strtod) unless it is NaN or infinite
 * ("0"); a line is written whole within its capacity or not at all, and a
 * capacity one byte short of it gives 0; a split either succeeds with every
 * part inside the scratch (no longer than the name) or returns -EINVAL,
 * -E2BIG or -ENOSPC, and a split name's metric name and labels are built
 * within their buffers; the labels come sorted with `__name__` first and no
 * name twice.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "proto/lpout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sl_lpout_parts parts;
static struct sl_promrw_label labels[SL_LPOUT_LABELS_MAX];

static void check_float(float v)
{
    char *text = malloc(SL_LPOUT_F32_MAX + 1);
    if (text == NULL) {
        return;
    }
    size_t n = sl_lpout_f32(text, v);
    FUZZ_CHECK(n >= 1 && n <= 15);
    text[n] = '\0';
    if (v == v && v - v == 0) { /* finite */
        float back = strtof(text, NULL), back_d = (float)strtod(text, NULL);
        FUZZ_CHECK(memcmp(&back, &v, sizeof v) == 0 && memcmp(&back_d, &v, sizeof v) == 0);
    } else {
        FUZZ_CHECK(n == 1 && text[0] == '0');
    }
    free(text);
}

static void check_line(const char *name, uint32_t len, int64_t t, float v)
{
    size_t cap = (size_t)len + 64;
    char *out = malloc(cap);
    if (out == NULL) {
        return;
    }
    size_t n = sl_lpout_line(out, cap, name, len, 0, ",g=1", 4, t, v);
    FUZZ_CHECK(n <= cap);
    if (n > 0) {
        FUZZ_CHECK(out[n - 1] == '\n' && n > (size_t)len + 4);
        char *exact = malloc(n);
        if (exact != NULL) {
            FUZZ_CHECK(sl_lpout_line(exact, n, name, len, 0, ",g=1", 4, t, v) == n);
            FUZZ_CHECK(memcmp(exact, out, n) == 0);
            FUZZ_CHECK(sl_lpout_line(exact, n - 1, name, len, 0, ",g=1", 4, t, v) == 0);
            free(exact);
        }
    }
    free(out);
}

static void check_split(const char *name, uint32_t len)
{
    char *scratch = malloc(len > 0 ? len : 1);
    if (scratch == NULL) {
        return;
    }
    int rc = sl_lpout_split(name, len, &parts, scratch, len);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -E2BIG);
    if (rc == 0) {
        FUZZ_CHECK(parts.measurement.n > 0 && parts.field.n > 0 && parts.tag_count <= SL_LPOUT_TAGS_MAX);
        size_t total = (size_t)parts.measurement.n + parts.field.n;
        for (uint32_t k = 0; k < parts.tag_count; k++) {
            const struct sl_lpout_tag *t = &parts.tags[k];
            FUZZ_CHECK(t->key.n > 0 && t->value.n > 0);
            FUZZ_CHECK(t->key.p >= scratch && t->value.p + t->value.n <= scratch + len);
            total += (size_t)t->key.n + t->value.n;
        }
        FUZZ_CHECK(total <= len);
        size_t metric_cap = (size_t)parts.measurement.n + 1 + parts.field.n;
        char *metric = malloc(metric_cap);
        char *names = malloc(len);
        if (metric != NULL && names != NULL) {
            FUZZ_CHECK(sl_lpout_metric_name(metric, metric_cap - 1, &parts, 0) == 0);
            uint32_t flags = len % 2 ? SL_LPOUT_PROM_NAMES : 0;
            size_t m = sl_lpout_metric_name(metric, metric_cap, &parts, flags);
            FUZZ_CHECK(m > 0 && m <= metric_cap);
            int count = sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, metric, (uint32_t)m, &parts,
                                        NULL, 0, flags, names, len);
            FUZZ_CHECK(count >= 1 && count <= (int)(1 + parts.tag_count));
            FUZZ_CHECK(labels[0].name_len == 8 && memcmp(labels[0].name, "__name__", 8) == 0);
            for (int k = 2; k < count; k++) {
                const struct sl_promrw_label *a = &labels[k - 1], *b = &labels[k];
                uint32_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
                int c = memcmp(a->name, b->name, n);
                FUZZ_CHECK(c < 0 || (c == 0 && a->name_len < b->name_len));
            }
        }
        free(metric);
        free(names);
        /* A scratch one byte short of what the parts took is refused, not overrun. */
        if (total > 0) {
            FUZZ_CHECK(sl_lpout_split(name, len, &parts, scratch, total - 1) == -ENOSPC);
        }
    }
    free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) {
        return 0;
    }
    char *input = malloc(size > 0 ? size : 1);
    if (input == NULL) {
        return 0;
    }
    memcpy(input, data, size);
    float v = 0;
    int64_t t = 0;
    if (size >= 4) {
        memcpy(&v, data, 4);
    }
    if (size >= 8) {
        memcpy(&t, data, 8);
    }
    check_float(v);
    check_line(input, (uint32_t)size, t, v);
    check_line(NULL, 0, t, v);
    check_split(input, (uint32_t)size);
    free(input);
    return 0;
}
