/*
 * preload/lib/log.h: one-line, levelled, rate-limited logging from inside a host.
 *
 * Lines go to fd 2 with write(2), prefixed "mcshim[pid]: "; no stdio, errno is
 * preserved. At most MCS_LOG_BURST lines per MCS_LOG_WINDOW_S seconds are
 * written; the rest are counted and reported by the next line that gets through.
 */
#ifndef MCS_LOG_H
#define MCS_LOG_H

#include "preload/core/config.h"

#define MCS_LOG_BURST    20
#define MCS_LOG_WINDOW_S 10

void mcs_log_set_level(enum mcs_log_level level);
void mcs_log(enum mcs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes msg as one line whatever the level and rate (configuration errors). */
void mcs_log_raw(const char *msg);

#endif
