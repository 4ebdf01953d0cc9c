/* Logger (see log.h): one line per call, written with a single write(2) so lines from
 * several threads do not interleave. */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int threshold = -1;
static const char *ident = "vmsnap";

static int level_from_env(void)
{
        const char *v = getenv("VMSNAP_LOG");
        static const char *names[] = {"error", "warn", "info", "debug"};
        for (int i = 0; v && i < 4; i++)
                if (strcmp(v, names[i]) == 0)
                        return i;
        return LOG_LEVEL_INFO;
}

void vmsnap_log_set_level(enum vmsnap_log_level level)
{
        threshold = (int)level;
}

void vmsnap_log_set_ident(const char *name)
{
        ident = name;
}

void vmsnap_log(enum vmsnap_log_level level, const char *fmt, ...)
{
        static const char *tags[] = {"error", "warning", "info", "debug"};
        if (threshold < 0)
                threshold = level_from_env();
        if ((int)level > threshold)
                return;
        char line[2048];
        int n = snprintf(line, sizeof(line), "%s: %s: ", ident, tags[level]);
        va_list ap;
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (n > (int)sizeof(line) - 2)
                n = (int)sizeof(line) - 2;
        line[n++] = '\n';
        ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
        (void)ignored;
}
