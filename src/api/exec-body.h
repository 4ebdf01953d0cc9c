/* The body of POST /v1/sandboxes/{ref}/exec (docs/api.md, Exec): an ExecRequest checked
 * field by field and turned into an argv, an environment and the rest of a
 * vmsnap_exec_spec. body.c's api_parse_exec_body checks the keys and calls in here. */
#ifndef VMSNAP_API_EXEC_BODY_H
#define VMSNAP_API_EXEC_BODY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>

#define API_EXEC_ROWS_DEFAULT 24
#define API_EXEC_COLS_DEFAULT 80

struct api_exec_body {
        char **argv;        /* malloc'd, NULL-terminated (and each string) */
        char **env;         /* "NAME=value", NULL-terminated; NULL when none */
        char *cwd;          /* NULL: / */
        unsigned timeout_ms;
        bool has_timeout;
        unsigned char *in;  /* stdin_b64 decoded; NULL when absent */
        size_t in_len;
        bool tty, background;
        uint16_t rows, cols;
};

/* Fills ret from an object whose keys body.c has checked. Returns 0, or -EINVAL with d
 * naming the field. */
int api_exec_body_from_json(json_t *obj, struct api_exec_body *ret, struct vmsnap_diag *d);

/* Frees what an exec body owns; accepts a zeroed struct. */
void api_exec_body_clear(struct api_exec_body *b);

/* Decodes standard base64 (padding optional) into a malloc'd buffer (NUL-terminated, not
 * counted). Returns 0, -EINVAL or -ENOMEM. */
int api_base64_decode(const char *in, size_t n, unsigned char **ret, size_t *ret_len);

#endif
