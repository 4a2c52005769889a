/*
 * preload/core/replica.h: what a write does to the copies of its key.
 *
 * The rule (docs/availability.md): a copy may miss a key, but must never hold
 * a value that the primary would not return. So the command runs on the
 * primary first (or on the first usable copy when the primary is away), and
 * what the other copies get is decided from that answer:
 *
 *   command               primary answered          copies get
 *   set add replace cas   STORED                    set of the same value, flags, exptime
 *   add, cas              NOT_STORED / EXISTS       nothing (the primary kept its value)
 *   replace, cas          NOT_STORED / NOT_FOUND    delete (the primary has no such key)
 *   append prepend        anything                  delete (the result is not known here)
 *   delete                anything                  delete
 *   incr decr             a number                  the same incr/decr, and a delete if the
 *                                                   copy's result differs from the primary's
 *   incr decr             NOT_FOUND                 delete
 *   touch                 TOUCHED                   the same touch
 *   touch                 NOT_FOUND                 delete
 *   gat gats              a hit (per key)           touch with the same exptime
 *   any write             an error                  delete (nothing is known: be safe)
 *
 * flush_all and verbosity are not per-key: they go to every server.
 * Sans-IO: classification and byte building only.
 */
#ifndef MCS_REPLICA_H
#define MCS_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "preload/core/ascii.h"
#include "preload/core/binary.h"
#include "preload/core/buf.h"

#define MCS_COPY_ACTION_LIST(X) \
    X(NONE,   "nothing")        \
    X(SET,    "set")            \
    X(DELETE, "delete")         \
    X(TOUCH,  "touch")          \
    X(ARITH,  "incr/decr")

enum mcs_copy_action {
#define MCS_COPY_ENUM(id, name) MCS_COPY_##id,
    MCS_COPY_ACTION_LIST(MCS_COPY_ENUM)
#undef MCS_COPY_ENUM
    MCS_COPY_COUNT
};

/* A server's one-line answer to a write, reduced to what the rule needs. */
enum mcs_reply_class {
    MCS_REPLY_STORED,
    MCS_REPLY_NOT_STORED,
    MCS_REPLY_EXISTS,
    MCS_REPLY_NOT_FOUND,
    MCS_REPLY_DELETED,
    MCS_REPLY_TOUCHED,
    MCS_REPLY_NUMBER,
    MCS_REPLY_ERROR,    /* ERROR, CLIENT_ERROR, SERVER_ERROR, or anything unexpected */
};

/* Classifies a reply line (with or without its \r\n). */
enum mcs_reply_class mcs_reply_classify(const char *line, size_t len);

/* What the copies of a key get after the primary answered `reply` to cmd
 * (for gat/gats: MCS_REPLY_STORED stands for a hit, MCS_REPLY_NOT_FOUND for a miss). */
enum mcs_copy_action mcs_copy_action(enum mcs_cmd cmd, enum mcs_reply_class reply);

/* Builds the request a copy gets for action, from the original request (req,
 * described by q, whose offsets are relative to req) and, for gat/gats, the
 * key of one hit (key, key_len; ignored otherwise). Always asks for a reply.
 * Appends to out; returns 0, or -1 (allocation failure, or NONE). */
int mcs_copy_build(enum mcs_copy_action action, const char *req, const struct mcs_ascii_req *q, const char *key,
                   size_t key_len, struct mcs_buf *out);

const char *mcs_copy_action_name(enum mcs_copy_action a);

/* The class of a binary reply: status 0 is the success of the (non-quiet)
 * opcode (STORED, DELETED, NUMBER, TOUCHED; a hit for gets), 0x0001
 * NOT_FOUND, 0x0002 EXISTS, 0x0005 NOT_STORED, anything else ERROR. */
enum mcs_reply_class mcs_bin_reply_class(uint8_t base_opcode, uint16_t status);

/* Appends a request deleting key on a text connection: "delete <key>" when the
 * key can be written in the text protocol, else the meta "md <base64> b"
 * (binary clients' keys may hold spaces or control bytes). Returns 0 or -1. */
int mcs_copy_delete_line(struct mcs_buf *out, const char *key, size_t len);

/* Can key be written as a text-protocol key (1-250 bytes, no space, control or DEL)? */
bool mcs_copy_text_safe(const char *key, size_t len);

#endif
