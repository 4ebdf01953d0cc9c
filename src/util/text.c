/* Text formatting (see text.h). */
#include "util/text.h"

#include <stdio.h>

void vmsnap_format_bytes(uint64_t n, char out[16])
{
        static const char units[] = "BKMGTPE";
        double v = (double)n;
        int u = 0;
        while (v >= 1024 && u < 6) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(out, 16, "%lluB", (unsigned long long)n);
        else
                snprintf(out, 16, v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
}
