/* The bearer token that TCP clients of vmsnapd present: 32 random bytes in hex, kept in
 * <root>/token (mode 0600). */
#ifndef VMSNAP_API_TOKEN_H
#define VMSNAP_API_TOKEN_H

#include <vmsnap/error.h>

#define API_TOKEN_FILE "token"

/* Reads the token from dirfd/token. Returns 0, -ENOENT when there is none, or -errno with d
 * (a file readable by others, or not 64 hex digits, is refused: -EPERM / -EBADMSG). */
int api_token_load(int dirfd, char out[65], struct vmsnap_diag *d);

/* Makes a new token from getrandom(2) (not stored yet). Returns 0 or -errno with d. */
int api_token_generate(char out[65], struct vmsnap_diag *d);

/* Stores token as dirfd/token, atomically and with mode 0600. Returns 0 or -errno with d. */
int api_token_store(int dirfd, const char token[65], struct vmsnap_diag *d);

#endif
