/* Identifiers and content hashes: UUIDs (libuuid) and XXH3 digests (libxxhash). */
#ifndef VMSNAP_UTIL_IDS_H
#define VMSNAP_UTIL_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/mem.h>

/* Fills id with a new random (v4) UUID. */
void vmsnap_uuid_new(struct vmsnap_uuid *id);

/* Writes the canonical lowercase 36-char form plus NUL into out (37 bytes). */
void vmsnap_uuid_format(const struct vmsnap_uuid *id, char out[37]);

/* Parses the canonical form; returns 0 or -EINVAL. */
int vmsnap_uuid_parse(const char *s, struct vmsnap_uuid *ret_id);

/* True for the all-zero ("nil") UUID. */
bool vmsnap_uuid_is_nil(const struct vmsnap_uuid *id);

/* XXH3-128 of buf in canonical (big-endian) byte order. */
void vmsnap_hash128(const void *buf, size_t len, struct vmsnap_hash *ret);

/* Writes the 32-char lowercase hex of h plus NUL into out (33 bytes). */
void vmsnap_hash_format(const struct vmsnap_hash *h, char out[33]);

/* Streaming XXH3-128 over a sequence of buffers. */
struct vmsnap_hasher;
struct vmsnap_hasher *vmsnap_hasher_new(void);
void vmsnap_hasher_update(struct vmsnap_hasher *h, const void *buf, size_t len);
void vmsnap_hasher_final(struct vmsnap_hasher *h, struct vmsnap_hash *ret);
void vmsnap_hasher_free(struct vmsnap_hasher *h);

#endif
