/* Helpers shared by the tests: scratch directories, deterministic random data, files. */
#ifndef VMSNAP_TESTLIB_H
#define VMSNAP_TESTLIB_H

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh scratch directory under $TMPDIR (or /tmp) and returns its path (static
 * storage per call site is not assumed: the string is malloc'd). Aborts on failure. */
char *test_mkdtemp(const char *tag);

/* Removes a scratch directory tree made by test_mkdtemp (tests only). */
void test_rmtree(const char *path);

/* Deterministic pseudo-random generator (xorshift64*), seedable for reproducible failures. */
uint64_t test_rand(uint64_t *state);

/* Fills buf with pseudo-random bytes from state. */
void test_fill_random(uint64_t *state, void *buf, size_t len);

/* Writes len bytes to path (created/truncated); aborts on failure. */
void test_write_file(const char *path, const void *buf, size_t len);

/* Reads a whole file into a malloc'd buffer; returns NULL when it cannot. */
uint8_t *test_read_file(const char *path, size_t *ret_len);

/* Joins dir and name into a malloc'd path. */
char *test_path(const char *dir, const char *name);

#endif
