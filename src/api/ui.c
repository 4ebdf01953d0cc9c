/* The dashboard's static files: which request paths are the dashboard's, which embedded
 * file a path names (exact match only), and the security headers of their replies. */
#include "api/ui.h"

#include <string.h>

const char *const api_ui_headers[] = {
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'",
        "X-Content-Type-Options", "nosniff",
        "X-Frame-Options", "DENY",
        "Referrer-Policy", "no-referrer",
        "Cache-Control", "no-cache",
        NULL,
};

bool api_ui_path(const char *path)
{
        return strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0 ||
               strncmp(path, "/ui/", 4) == 0;
}

const struct api_ui_file *api_ui_find(const char *path)
{
        const char *name;
        if (strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0 || strcmp(path, "/ui/") == 0)
                name = "index.html";
        else if (strncmp(path, "/ui/", 4) == 0)
                name = path + 4;
        else
                return NULL;
        for (unsigned i = 0; i < api_ui_file_count; i++)
                if (strcmp(api_ui_files[i].name, name) == 0)
                        return &api_ui_files[i];
        return NULL;
}
