/* Fuzz target for vmsnapd's check of raw request targets (api_target_check in
 * src/api/routes.c) and route matching: a target the check lets through decodes to a path
 * without NUL or control characters and with exactly the '/' it showed, and a query without
 * control characters; a refused one comes with a message. Seeds: tests/fuzz/corpus/
 * api-target/ (targets of every route, escapes that are fine, and each refused kind). */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/routes.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
        if (!ok)
                abort();
}

/* Percent-decodes s[0..n) the way libmicrohttpd does ("%XY" with two hex digits) and checks
 * the decoded bytes: no control character, and in the path no '/' that was not one. */
static void check_decoded(const char *s, size_t n, bool path)
{
        for (size_t i = 0; i < n; i++) {
                int c = (unsigned char)s[i];
                if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
                    isxdigit((unsigned char)s[i + 2])) {
                        c = escaped_byte(s + i);
                        check(!(path && c == '/'));
                        i += 2;
                }
                check(c >= 0x20 && c != 0x7f);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > 8192)
                return 0; /* libmicrohttpd refuses longer request lines */
        char *target = malloc(size + 1);
        if (!target)
                return 0;
        memcpy(target, data, size);
        target[size] = '\0'; /* what the server sees ends at the first NUL */
        char why[200] = "";
        enum api_target t = api_target_check(target, why, sizeof(why));
        size_t len = strlen(target), q = strcspn(target, "?");
        if (t == API_TARGET_OK) {
                check(why[0] == '\0');
                check_decoded(target, q, true);
                if (q < len)
                        check_decoded(target + q + 1, len - q - 1, false);
        } else {
                check(t == API_TARGET_BAD_PATH || t == API_TARGET_BAD_QUERY);
                check(why[0] != '\0' && strlen(why) < sizeof(why));
        }
        enum api_route r;
        char ref[API_REF_MAX + 1], allow[64];
        for (const char *m = "GET\0HEAD\0POST\0DELETE\0PUT\0"; *m; m += strlen(m) + 1)
                if (api_route_match(m, target, &r, ref, allow, sizeof(allow)) == 0)
                        check(r < API_ROUTE_COUNT && strlen(ref) <= API_REF_MAX &&
                              !strchr(ref, '/'));
        free(target);
        return 0;
}
