/* A small S3 client over libcurl: path-style requests signed with SigV4 (CURLOPT_AWS_SIGV4),
 * run in parallel on one multi handle (connections reused), retried with backoff on
 * connection errors, timeouts, stalls, 5xx and 429. Internal to src/remote/. */
#ifndef VMSNAP_REMOTE_S3_H
#define VMSNAP_REMOTE_S3_H

#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/remote.h>

#define S3_KEY_MAX      600
#define S3_ATTEMPTS     6 /* the first try and 5 retries */

struct s3;

/* One request. The caller fills method, key (or query for a bucket request), body and
 * max_response; s3_run fills the results. */
struct s3_req {
        const char *method;       /* GET, PUT, HEAD, DELETE */
        char key[S3_KEY_MAX];     /* object key ("" = the bucket itself) */
        char query[S3_KEY_MAX];   /* "" or "a=b&c=d" (already escaped) */
        const void *body;         /* PUT body */
        size_t body_len;
        char payload_sha256[65];  /* "" = UNSIGNED-PAYLOAD */
        size_t max_response;      /* larger bodies fail the request (-EFBIG) */
        void *ctx;                /* the caller's */

        /* results */
        long status;      /* HTTP status, 0 when no answer */
        int err;          /* 0, or -errno when the request failed for good */
        char errmsg[256]; /* words for err (transport) */
        uint8_t *resp;    /* the body, malloc'd, NUL-terminated (GET and error answers) */
        size_t resp_len;
        unsigned attempts;

        /* private */
        void *easy;
        void *priv;
        size_t resp_cap;
        double not_before;
        int state;
};

/* Creates a client for c (copied). Returns 0 and *ret, or -errno with d. */
int s3_new(const struct vmsnap_remote_config *c, struct s3 **ret, struct vmsnap_diag *d);

/* Frees s (wiping the secret); accepts NULL. */
void s3_free(struct s3 *s);

/* Runs n requests, up to parallel at a time, each retried as the header says. Afterwards
 * each req has its final status/err; *ret_retries (may be NULL) counts the retries.
 * Returns 0 (check each request), or -ENOMEM / -EIO when the client itself failed. */
int s3_run(struct s3 *s, struct s3_req *reqs, size_t n, unsigned parallel,
           uint64_t *ret_retries, struct vmsnap_diag *d);

/* Releases the response buffers of reqs (the requests can be reused). */
void s3_req_reset(struct s3_req *reqs, size_t n);

/* Records in d a failed request req (status or transport error) naming the bucket and key;
 * returns the negative errno it maps to (404 -ENOENT, 403 -EACCES, other -EIO). */
int s3_req_diag(const struct s3 *s, const struct s3_req *req, struct vmsnap_diag *d);

/* One object of a listing. */
struct s3_object {
        char key[S3_KEY_MAX];
        uint64_t size;
        int64_t modified; /* unix seconds */
};

/* Lists every object under prefix (ListObjectsV2, paged). Returns 0 with a malloc'd array,
 * or -errno with d. */
int s3_list(struct s3 *s, const char *prefix, struct s3_object **ret, size_t *ret_n,
            uint64_t *retries, struct vmsnap_diag *d);

/* The bucket and endpoint, for messages. */
const char *s3_where(const struct s3 *s);

#endif
