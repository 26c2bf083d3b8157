/* Compress stdin to stdout with the real snappy (libsnappy, block format), to make the
 * fixtures beside this file for fakeup.py's pure-Python decompressor (test_engines.py):
 *     cc -O2 -o /tmp/snappy_compress snappy_compress.c -lsnappy
 *     for f in *.raw; do /tmp/snappy_compress < $f > ${f%.raw}.snappy; done
 * Debian: libsnappy-dev. */
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    size_t cap = 1 << 16, n = 0, r;
    char *in = malloc(cap);
    while (in && (r = fread(in + n, 1, cap - n, stdin)) > 0) {
        n += r;
        if (n == cap && !(in = realloc(in, cap *= 2)))
            break;
    }
    if (!in || ferror(stdin)) {
        fprintf(stderr, "snappy_compress: cannot read stdin\n");
        return 1;
    }
    size_t out_len = snappy_max_compressed_length(n);
    char *out = malloc(out_len ? out_len : 1);
    if (!out || snappy_compress(in, n, out, &out_len) != SNAPPY_OK) {
        fprintf(stderr, "snappy_compress: failed\n");
        return 1;
    }
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) {
        fprintf(stderr, "snappy_compress: cannot write stdout\n");
        return 1;
    }
    free(in);
    free(out);
    return 0;
}
