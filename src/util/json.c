/* JSON strings from untrusted bytes (util/json.h): jansson requires valid UTF-8 in every
 * string, and what a guest prints or a path holds need not be. */
#include "util/json.h"

#include <stdlib.h>
#include <string.h>

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0 when the byte at
 * s does not start one (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF). */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
        unsigned char c = s[0];
        if (c < 0x80)
                return 1;
        size_t len;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf)
                len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                lo = c == 0xe0 ? 0xa0 : 0x80;
                hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                lo = c == 0xf0 ? 0x90 : 0x80;
                hi = c == 0xf4 ? 0x8f : 0xbf;
        } else
                return 0;
        if (n < len || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return len;
}

json_t *vmsnap_json_string_lossy(const char *s)
{
        return vmsnap_json_bytes_lossy(s, strlen(s));
}

json_t *vmsnap_json_bytes_lossy(const char *s, size_t n)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t bad = 0;
        for (size_t i = 0; i < n;) {
                size_t l = utf8_sequence(p + i, n - i);
                bad += l == 0;
                i += l ? l : 1;
        }
        if (bad == 0)
                return json_stringn(s, n);
        /* Each bad byte (1 byte) becomes U+FFFD (3 bytes). */
        char *out = malloc(n + 2 * bad + 1);
        if (!out)
                return NULL;
        size_t o = 0;
        for (size_t i = 0; i < n;) {
                size_t l = utf8_sequence(p + i, n - i);
                if (l) {
                        memcpy(out + o, s + i, l);
                        o += l, i += l;
                } else {
                        memcpy(out + o, "\xef\xbf\xbd", 3);
                        o += 3, i++;
                }
        }
        json_t *j = json_stringn(out, o); /* NUL bytes go out as \u0000 */
        free(out);
        return j;
}
