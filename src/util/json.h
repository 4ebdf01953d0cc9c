/* JSON strings from untrusted bytes, shared by vmsnapd and the CLI. */
#ifndef VMSNAP_UTIL_JSON_H
#define VMSNAP_UTIL_JSON_H

#include <jansson.h>
#include <stddef.h>

/* A JSON string of s (NUL-terminated) in which every byte that is not part of well-formed
 * UTF-8 is replaced by U+FFFD, so command output, file names and paths always serialize.
 * Returns NULL only when out of memory. */
json_t *vmsnap_json_string_lossy(const char *s);

/* The same for n bytes at s, NUL bytes included (sent as \u0000): a command's output. */
json_t *vmsnap_json_bytes_lossy(const char *s, size_t n);

#endif
