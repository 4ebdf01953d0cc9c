/* JSON helpers of vmsnapd: strings from untrusted bytes, timestamps, the error body. */
#ifndef VMSNAP_API_JSON_H
#define VMSNAP_API_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* s as a JSON string, or null when s is "". */
json_t *api_json_string_or_null(const char *s);

/* Unix seconds as an RFC 3339 UTC string, or null when t is 0. */
json_t *api_json_time(int64_t t);

/* {"error":{"code":code,"message":message}}. */
json_t *api_json_error(const char *code, const char *message);

/* Serializes j (indented, newline-terminated) into a malloc'd buffer. Returns NULL when out
 * of memory. */
char *api_json_dump(const json_t *j, size_t *ret_len);

/* Sets key of obj to v and drops the caller's reference to v; a NULL v (out of memory)
 * becomes null. Returns 0 or -ENOMEM. */
int api_json_set(json_t *obj, const char *key, json_t *v);

#endif
