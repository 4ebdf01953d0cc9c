/* The web dashboard's static files (docs/dashboard.md), compiled into vmsnapd from the
 * front-end build by cmake/embed-ui.cmake, and the lookup of a request path among them.
 * No file system access at run time: a path names a file by exact match or nothing. */
#ifndef VMSNAP_API_UI_H
#define VMSNAP_API_UI_H

#include <stdbool.h>
#include <stddef.h>

struct api_ui_file {
        const char *name; /* "app.js" */
        const char *type; /* its Content-Type */
        const unsigned char *data;
        size_t len;
};

/* The embedded files (api_ui_file_count of them, then a zeroed entry). Empty when the
 * build had no Node.js. */
extern const struct api_ui_file api_ui_files[];
extern const unsigned api_ui_file_count;

/* True when a decoded request path belongs to the dashboard: "/", "/ui" or "/ui/...". */
bool api_ui_path(const char *path);

/* The file a dashboard path names ("/", "/ui/", "/ui/index.html" → index.html,
 * "/ui/NAME" → NAME when NAME is embedded), else NULL. Nothing else ever matches: no
 * normalization, so "..", "//", "%2e" and backslashes name nothing. */
const struct api_ui_file *api_ui_find(const char *path);

/* The headers of every dashboard reply (name, value pairs, NULL-terminated). */
extern const char *const api_ui_headers[];

#endif
