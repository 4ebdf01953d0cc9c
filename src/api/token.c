/* Token file: made once with getrandom(2), written through a staged file that is chmod'ed
 * to 0600 before a byte of the secret is in it, then fsync + rename + fsync of the
 * directory (util/fs.h). Loading refuses a file others can read, like ssh does. */
#include "api/token.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int api_token_generate(char out[65], struct vmsnap_diag *d)
{
        uint8_t raw[32];
        size_t got = 0;
        while (got < sizeof(raw)) {
                ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
                if (n < 0 && errno != EINTR)
                        return vmsnap_diag(d, -errno, "getrandom: %s", strerror(errno));
                if (n > 0)
                        got += (size_t)n;
        }
        for (size_t i = 0; i < sizeof(raw); i++)
                snprintf(out + 2 * i, 3, "%02x", raw[i]);
        return 0;
}

int api_token_store(int dirfd, const char token[65], struct vmsnap_diag *d)
{
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dirfd, API_TOKEN_FILE, d);
        if (r < 0)
                return r;
        char line[66];
        snprintf(line, sizeof(line), "%s\n", token);
        if (fchmod(s.fd, 0600) < 0)
                r = vmsnap_diag(d, -errno, API_TOKEN_FILE ": chmod: %s", strerror(errno));
        else if ((r = vmsnap_fs_write_full(s.fd, line, 65)) < 0)
                vmsnap_diag(d, r, API_TOKEN_FILE ": write: %s", strerror(-r));
        else if ((r = vmsnap_staged_commit(&s, d)) == 0 && (r = vmsnap_fs_fsync_dir(dirfd)) < 0)
                vmsnap_diag(d, r, API_TOKEN_FILE ": fsync of the directory: %s", strerror(-r));
        if (r < 0)
                vmsnap_staged_abort(&s);
        return r;
}

static int load_token(int fd, char out[65], struct vmsnap_diag *d)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vmsnap_diag(d, -errno, API_TOKEN_FILE ": %s", strerror(errno));
        if (!S_ISREG(st.st_mode) || (st.st_mode & 077) || st.st_uid != geteuid())
                return vmsnap_diag(d, -EPERM,
                                   API_TOKEN_FILE ": must be a regular file owned by this user "
                                                  "with mode 0600 (chmod 600 it, or delete it to "
                                                  "make a new token)");
        char buf[80];
        ssize_t n = vmsnap_fs_pread_full(fd, buf, sizeof(buf) - 1, 0);
        if (n < 0)
                return vmsnap_diag(d, (int)n, API_TOKEN_FILE ": %s", strerror((int)-n));
        buf[n] = '\0';
        if (n && buf[n - 1] == '\n')
                buf[--n] = '\0';
        bool ok = n == 64;
        for (ssize_t i = 0; ok && i < n; i++)
                ok = isxdigit((unsigned char)buf[i]) != 0;
        if (!ok)
                return vmsnap_diag(d, -EBADMSG,
                                   API_TOKEN_FILE ": not 64 hex digits (delete it "
                                                  "to make a new token)");
        memcpy(out, buf, 65);
        return 0;
}

int api_token_load(int dirfd, char out[65], struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = openat(dirfd, API_TOKEN_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return errno == ENOENT
                               ? -ENOENT
                               : vmsnap_diag(d, -errno, API_TOKEN_FILE ": %s", strerror(errno));
        return load_token(fd, out, d);
}
