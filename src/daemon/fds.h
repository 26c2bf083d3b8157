/*
 * The descriptor budget: at start, the daemon raises RLIMIT_NOFILE's soft
 * limit to what its limits can hold open at once (every TCP and HTTP
 * connection, the log's segments, the listeners and a margin), or exits 2
 * naming the limits to lower. Without this, a table larger than the
 * descriptor limit fails at accept with EMFILE under load instead of at
 * start (the accept path then backs off, net/tcp.c, but the promise of the
 * table size would be broken).
 */
#ifndef SL_DAEMON_FDS_H
#define SL_DAEMON_FDS_H

#include <stdint.h>

#define SL_FDS_MARGIN 64u /* stdio, the data directory lock, checkpoint files, epoll, eventfds, MHD's own */

/*
 * Make at least `need` descriptors available. 0 (with *limit_out the soft
 * limit now), or -1 with a message in err that says what they are for
 * (`what`) and which flags to lower.
 */
int sl_fds_reserve(uint64_t need, const char *what, uint64_t *limit_out, char *err, uint32_t err_bytes);

#endif
