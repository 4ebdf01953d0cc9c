/* Small text formatting shared by the programs. */
#ifndef VMSNAP_UTIL_TEXT_H
#define VMSNAP_UTIL_TEXT_H

#include <stdint.h>

/* Formats a byte count for people: "512B", "4.0K", "256M", "1.5G" (binary units). */
void vmsnap_format_bytes(uint64_t n, char out[16]);

#endif
