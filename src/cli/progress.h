/* Progress of a long CLI step on stderr, for people only: drawn when stderr is a terminal and
 * the step has run for a second, ended with what took how long (docs/cli.md "Progress"). */
#ifndef VMSNAP_CLI_PROGRESS_H
#define VMSNAP_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct cli_progress {
        char label[256]; /* "pausing web-1", "export base" */
        struct timespec t0;
        double last;  /* seconds since t0 at the last draw */
        bool on;      /* stderr is a terminal */
        bool shown;   /* something was drawn: the end prints a line */
};

/* Starts timing a step named by fmt; nothing is drawn yet. */
void cli_progress_start(struct cli_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Redraws the line once the step ran 1 s, at most 10 times a second: "label… 3s", or with
 * total > 0 a bar, percentage, bytes, rate and ETA. Fits vmsnap_progress_fn (ctx = p). */
void cli_progress_tick(void *p, uint64_t done, uint64_t total);

/* Ends the step: when anything was drawn, replaces it with "label: done in 3.2s" (or
 * "failed"). Idempotent. */
void cli_progress_end(struct cli_progress *p, bool ok);

#endif
