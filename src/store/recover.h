/*
 * Start-up recovery: the newest usable checkpoint, then the log replayed on
 * top of it, so the store and the stream tables are exactly what they were
 * when the last record was applied.
 *
 * Replay applies each reading of a record above the checkpoint's start lsn
 * with the per-reading rules and the record's own clock (now_us), so every
 * accept/reject decision is the original one; a reading of a sensor whose
 * checkpoint chunk was copied at or after the record's lsn is skipped (it
 * is already in the checkpoint). Replaying the same log onto the same
 * checkpoint always gives byte-identical store state.
 */
#ifndef SL_STORE_RECOVER_H
#define SL_STORE_RECOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/plan.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/store.h"
#include "store/streams.h"

struct sl_recover_result {
    struct sl_checkpoint_loaded checkpoint; /* zero when none was used */
    bool checkpoint_used;
    struct sl_log_recovery log;              /* what the log scan found */
    uint64_t records_replayed;               /* records above the checkpoint's start lsn */
    uint64_t records_skipped;                /* records at or below it (wholly in the checkpoint) */
    uint64_t readings_applied;               /* accepted by the store during replay */
    uint64_t readings_skipped_by_checkpoint; /* their sensor's chunk already held them */
    uint64_t readings_rejected; /* rejected again by the per-reading rules, as originally */
    uint64_t streams_full;      /* stream-table updates dropped: the table was full */
    uint64_t series_dropped;    /* series records the registry refused (smaller, or damaged) */
    double seconds;             /* wall time of the whole recovery */
};

/*
 * Recover into a freshly initialised store, stream tables and series
 * registry (may be NULL: series records skipped): load the
 * newest valid checkpoint from log_config->dir (checkpoints live in the
 * log's data directory; none is fine), open the log (sl_log_open, which
 * takes its buffer from `arena`) replaying every record above the
 * checkpoint's start lsn, then zero the store's counters (metrics count
 * from this process's start) and the stream tables' full counters.
 * Returns the open log, ready to append, or NULL with a reason in err
 * (a checkpoint I/O error, or the log's own). Start-up, main thread;
 * mallocs sensors_max x 8 bytes, freed before it returns.
 */
struct sl_log *sl_recover(const struct sl_log_config *log_config, struct sl_arena *arena,
                          struct sl_store *store, struct sl_streams *tcp_streams,
                          struct sl_streams *udp_streams, struct sl_series *series,
                          struct sl_recover_result *out, char *err, uint32_t err_bytes);

#endif
