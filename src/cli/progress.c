/* Progress lines on stderr for long CLI steps (progress.h). */
#include "cli/progress.h"

#include "util/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#define SHOW_AFTER_S  1.0
#define REDRAW_EVERY_S 0.1

static double elapsed(const struct cli_progress *p)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)(t.tv_sec - p->t0.tv_sec) + (double)(t.tv_nsec - p->t0.tv_nsec) / 1e9;
}

void cli_progress_start(struct cli_progress *p, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->label, sizeof(p->label), fmt, ap);
        va_end(ap);
        clock_gettime(CLOCK_MONOTONIC, &p->t0);
        p->last = 0;
        p->on = isatty(STDERR_FILENO);
        p->shown = false;
}

/* "export [=====     ]  42% 1.2 GiB/2.0 GiB 80 MiB/s ETA 0:09 " */
static void draw_bar(const struct cli_progress *p, double el, uint64_t done, uint64_t total)
{
        double rate = el > 0 ? (double)done / el : 0;
        int pct = done >= total ? 100 : (int)(100.0 * (double)done / (double)total);
        int fill = pct / 4;
        char d[16], t[16], r[16];
        vmsnap_format_bytes(done, d);
        vmsnap_format_bytes(total, t);
        vmsnap_format_bytes((uint64_t)rate, r);
        long eta = rate > 0 && total > done ? (long)((double)(total - done) / rate) : 0;
        fprintf(stderr, "\r%s [%.*s%*s] %3d%% %s/%s %s/s ETA %ld:%02ld \033[K", p->label, fill,
                "=========================", 25 - fill, "", pct, d, t, r, eta / 60, eta % 60);
}

void cli_progress_tick(void *ctx, uint64_t done, uint64_t total)
{
        struct cli_progress *p = ctx;
        if (!p->on)
                return;
        double el = elapsed(p);
        if (el < SHOW_AFTER_S || (p->shown && el - p->last < REDRAW_EVERY_S))
                return;
        p->last = el;
        p->shown = true;
        if (total)
                draw_bar(p, el, done, total);
        else
                fprintf(stderr, "\r%s… %.0fs\033[K", p->label, el);
}

void cli_progress_end(struct cli_progress *p, bool ok)
{
        if (p->shown)
                fprintf(stderr, "\r\033[K%s: %s in %.1fs\n", p->label, ok ? "done" : "failed",
                        elapsed(p));
        p->shown = false;
        p->on = false;
}
