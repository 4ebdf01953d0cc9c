/* The one place where vmsnapd decides HTTP statuses and error codes: negative errno from the
 * library, the body parsers' verdicts, and the HTTP-level refusals of the server itself. */
#ifndef VMSNAP_API_ERRORS_H
#define VMSNAP_API_ERRORS_H

/* An HTTP status and the short code of the error body {"error":{"code","message"}}. */
struct api_error {
        unsigned status;
        const char *code;
};

/* Refusals made by the HTTP layer before any handler runs. */
enum api_problem {
        API_PROBLEM_MALFORMED_JSON, /* 400: the body is not a JSON object */
        API_PROBLEM_INVALID_FIELD,  /* 400: a body field is missing, unknown or invalid */
        API_PROBLEM_INVALID_QUERY,  /* 400: a query parameter is invalid */
        API_PROBLEM_INVALID_PATH,   /* 400: a control character or encoded '/' in the path */
        API_PROBLEM_UNAUTHORIZED,   /* 401: missing or wrong bearer token (TCP only) */
        API_PROBLEM_NO_ROUTE,       /* 404: no such path */
        API_PROBLEM_METHOD,         /* 405: the path exists, not with this method */
        API_PROBLEM_TOO_LARGE,      /* 413: the body is over API_BODY_MAX */
        API_PROBLEM_MEDIA_TYPE,     /* 415: a body that is not application/json */
        API_PROBLEM_SHUTTING_DOWN,  /* 503: the daemon is stopping */
        API_PROBLEM_INTERNAL,       /* 500: the daemon itself failed (out of memory, ...) */
        API_PROBLEM_NO_REMOTE,      /* 409: a remote route, and no remote store configured */
        API_PROBLEM_NO_CAPACITY,    /* 507: no cluster host has room for a new sandbox */
};

/* What a request is about, where an errno means different things for different requests. */
enum api_subject {
        API_SUBJECT_REF,    /* something named by a ref: -ENOENT is a 404 */
        API_SUBJECT_NEW,    /* a new sandbox: -ENOENT is a file the host lacks (503) */
        API_SUBJECT_IMPORT, /* an archive the client pointed at: -EBADMSG is its fault (400) */
        API_SUBJECT_REMOTE, /* the remote store: its failures and bad data are a 502 */
};

/* Status and code for a negative errno returned by libvmsnap (unknown values: 500). */
struct api_error api_error_from_errno(int err, enum api_subject subject);

/* Status and code for a body parser's result: -EBADMSG (malformed JSON or not an object)
 * and -EINVAL (a field); anything else as api_error_from_errno with a ref. */
struct api_error api_error_from_body(int err);

/* Status and code of an HTTP-level refusal. */
struct api_error api_error_problem(enum api_problem p);

#endif
