/* The descriptor budget (see fds.h). Start-up, main thread. */
#include "daemon/fds.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

int sl_fds_reserve(uint64_t need, const char *what, uint64_t *limit_out, char *err, uint32_t err_bytes)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(err, err_bytes, "descriptor limit: %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
            snprintf(err, err_bytes,
                     "the limits need %llu descriptors (%s) but the hard limit is %llu: lower "
                     "--max-tcp-connections or --max-http-connections, or raise the limit (ulimit -Hn, "
                     "LimitNOFILE= in a systemd unit)",
                     (unsigned long long)need, what, (unsigned long long)rl.rlim_max);
            return -1;
        }
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            snprintf(err, err_bytes, "raising the descriptor limit to %llu: %s", (unsigned long long)need,
                     strerror(errno));
            return -1;
        }
    }
    *limit_out = rl.rlim_cur;
    return 0;
}
