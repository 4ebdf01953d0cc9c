/* UUIDs and XXH3 hashes (see ids.h). */
#include "util/ids.h"

#include <errno.h>
#include <string.h>
#include <uuid/uuid.h>
#include <xxhash.h>

void vmsnap_uuid_new(struct vmsnap_uuid *id)
{
        uuid_generate_random(id->b);
}

void vmsnap_uuid_format(const struct vmsnap_uuid *id, char out[37])
{
        uuid_unparse_lower(id->b, out);
}

int vmsnap_uuid_parse(const char *s, struct vmsnap_uuid *ret_id)
{
        uuid_t u;
        if (strlen(s) != 36 || uuid_parse(s, u) < 0)
                return -EINVAL;
        memcpy(ret_id->b, u, 16);
        return 0;
}

bool vmsnap_uuid_is_nil(const struct vmsnap_uuid *id)
{
        static const uint8_t nil[16];
        return memcmp(id->b, nil, 16) == 0;
}

void vmsnap_hash128(const void *buf, size_t len, struct vmsnap_hash *ret)
{
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits(buf, len));
        memcpy(ret->b, c.digest, 16);
}

void vmsnap_hash_format(const struct vmsnap_hash *h, char out[33])
{
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) {
                out[2 * i] = hex[h->b[i] >> 4];
                out[2 * i + 1] = hex[h->b[i] & 15];
        }
        out[32] = '\0';
}

struct vmsnap_hasher *vmsnap_hasher_new(void)
{
        XXH3_state_t *s = XXH3_createState();
        if (s)
                XXH3_128bits_reset(s);
        return (struct vmsnap_hasher *)s;
}

void vmsnap_hasher_update(struct vmsnap_hasher *h, const void *buf, size_t len)
{
        XXH3_128bits_update((XXH3_state_t *)h, buf, len);
}

void vmsnap_hasher_final(struct vmsnap_hasher *h, struct vmsnap_hash *ret)
{
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest((XXH3_state_t *)h));
        memcpy(ret->b, c.digest, 16);
}

void vmsnap_hasher_free(struct vmsnap_hasher *h)
{
        if (h)
                XXH3_freeState((XXH3_state_t *)h);
}
