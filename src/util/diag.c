/* Diagnostics: the error message travels with the errno up to the CLI or the daemon. */
#include <vmsnap/error.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int vmsnap_diag(struct vmsnap_diag *d, int err, const char *fmt, ...)
{
        if (!d)
                return err;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
        va_end(ap);
        d->err = err;
        return err;
}

int vmsnap_diag_prefix(struct vmsnap_diag *d, const char *fmt, ...)
{
        if (!d)
                return -EIO;
        char prefix[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);

        char old[sizeof(d->msg)];
        memcpy(old, d->msg, sizeof(old));
        size_t n = strlen(prefix);
        if (n > sizeof(d->msg) - 3)
                n = sizeof(d->msg) - 3;
        memcpy(d->msg, prefix, n);
        memcpy(d->msg + n, ": ", 2);
        size_t room = sizeof(d->msg) - n - 3;
        size_t m = strnlen(old, room);
        memcpy(d->msg + n + 2, old, m);
        d->msg[n + 2 + m] = '\0';
        return d->err < 0 ? d->err : -EIO;
}

void vmsnap_diag_clear(struct vmsnap_diag *d)
{
        if (!d)
                return;
        d->err = 0;
        d->msg[0] = '\0';
}
