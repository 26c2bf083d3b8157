/*
 * The daemon's configuration: every limit with its default, its hard
 * maximum and its memory cost (see sl_config_usage / docs/CONFIGURATION.md),
 * parsed from an optional `key = value` file and then from the command line
 * (flags win). Start-up only, main thread.
 */
#ifndef SL_DAEMON_CONFIG_H
#define SL_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "api/http.h"
#include "net/ingest.h"
#include "store/log.h"
#include "store/store.h"

#define SL_ADDR_BYTES 256
#define SL_PATH_BYTES 4096

struct sl_config {
    char udp[SL_ADDR_BYTES];  /* HOST:PORT, or "off" */
    char tcp[SL_ADDR_BYTES];  /* HOST:PORT, or "off" */
    char http[SL_ADDR_BYTES]; /* HOST:PORT, or "off" */
    char data_dir[SL_PATH_BYTES];
    char config_file[SL_PATH_BYTES];
    struct sl_store_config store;
    uint32_t streams_max; /* per transport: TCP dedup and UDP gap tracking */
    uint32_t tcp_connections_max;
    uint32_t tcp_idle_timeout_s;
    uint32_t tcp_frame_timeout_ms;
    uint32_t tcp_connections_per_ip_max; /* 0: a quarter of tcp_connections_max */
    uint32_t udp_batch;
    uint32_t udp_rcvbuf_bytes;
    uint32_t http_connections_max;
    uint32_t http_timeout_s;
    struct sl_log_config log;         /* dir is data_dir */
    uint64_t checkpoint_every_bytes;  /* 0 = no checkpoints; default log bytes max / 4 */
    bool checkpoint_every_set;
    bool apply_thread;                /* apply the store on a second thread (default on) */
    char io_faults[512];              /* testing: inject I/O faults (see core/io.h) */
    bool print_memory_plan;
    bool quiet;
};

void sl_config_default(struct sl_config *config);

/*
 * Parse argv (and the --config file it names, first). Returns 0 to run, 1
 * when --help or --version was printed (exit 0), or -1 with a message in
 * err (exit 2).
 */
int sl_config_parse(struct sl_config *config, int argc, char **argv, char *err, uint32_t err_bytes);

/*
 * Split "HOST:PORT" (or "[V6]:PORT") into host and port. 0, or -1 with a
 * reason in err.
 */
int sl_config_split_addr(const char *addr, char *host, uint32_t host_bytes, uint16_t *port,
                         char *err, uint32_t err_bytes);

/* Parse a duration: "250ms", "10s", "1m", "1h", "1d", or bare seconds. -1 when invalid. */
int64_t sl_config_parse_duration_us(const char *text);

/* Print the usage text to stdout. */
void sl_config_usage(void);

#endif
