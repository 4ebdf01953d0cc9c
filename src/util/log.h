/* A small logger for the programs (CLI, daemon, page server). Library code does not log. */
#ifndef VMSNAP_UTIL_LOG_H
#define VMSNAP_UTIL_LOG_H

enum vmsnap_log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Sets the threshold; the default comes from $VMSNAP_LOG (error|warn|info|debug), else info. */
void vmsnap_log_set_level(enum vmsnap_log_level level);

/* Sets the program name printed before each line. */
void vmsnap_log_set_ident(const char *ident);

/* Writes one line to stderr when level passes the threshold. */
void vmsnap_log(enum vmsnap_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

#define log_error(...) vmsnap_log(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  vmsnap_log(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  vmsnap_log(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) vmsnap_log(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
