/*
 * Shared by the command-line tools (sluice-load, sluice-sink): error
 * messages in one shape and a stop flag for SIGINT/SIGTERM. Each tool sets
 * tool_name in main before printing anything.
 */
#ifndef SL_TOOLS_TOOL_H
#define SL_TOOLS_TOOL_H

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>

static const char *tool_name = "sluice";
static volatile sig_atomic_t tool_stop_signal;

static inline void tool_on_stop_signal(int sig)
{
    (void)sig;
    tool_stop_signal = 1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));

/* "<tool>: <message>" and a pointer to --help on stderr; returns -1. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", tool_name);
    return -1;
}

/* "<tool>: <message>" on stderr. */
static void log_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#endif
