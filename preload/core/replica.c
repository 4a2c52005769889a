/*
 * preload/core/replica.c: the copy rule of replica.h.
 */
#include "preload/core/replica.h"

#include <string.h>

#include "preload/core/meta.h"

static const char *const action_names[] = {
#define MCS_COPY_NAME(id, name) name,
    MCS_COPY_ACTION_LIST(MCS_COPY_NAME)
#undef MCS_COPY_NAME
};

const char *
mcs_copy_action_name(enum mcs_copy_action a)
{
    return (unsigned)a < MCS_COPY_COUNT ? action_names[a] : "?";
}

static bool
is(const char *line, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len == n && memcmp(line, word, n) == 0;
}

enum mcs_reply_class
mcs_reply_classify(const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
        len--;
    }
    if (is(line, len, "STORED")) {
        return MCS_REPLY_STORED;
    }
    if (is(line, len, "NOT_STORED")) {
        return MCS_REPLY_NOT_STORED;
    }
    if (is(line, len, "EXISTS")) {
        return MCS_REPLY_EXISTS;
    }
    if (is(line, len, "NOT_FOUND")) {
        return MCS_REPLY_NOT_FOUND;
    }
    if (is(line, len, "DELETED")) {
        return MCS_REPLY_DELETED;
    }
    if (is(line, len, "TOUCHED")) {
        return MCS_REPLY_TOUCHED;
    }
    if (len > 0 && len <= 20) {
        size_t i = 0;
        while (i < len && line[i] >= '0' && line[i] <= '9') {
            i++;
        }
        if (i == len) {
            return MCS_REPLY_NUMBER;
        }
    }
    return MCS_REPLY_ERROR;
}

enum mcs_copy_action
mcs_copy_action(enum mcs_cmd cmd, enum mcs_reply_class reply)
{
    switch (cmd) {
    case MCS_CMD_SET:
        return reply == MCS_REPLY_STORED ? MCS_COPY_SET : MCS_COPY_DELETE;
    case MCS_CMD_ADD:
        return reply == MCS_REPLY_STORED ? MCS_COPY_SET : reply == MCS_REPLY_NOT_STORED ? MCS_COPY_NONE : MCS_COPY_DELETE;
    case MCS_CMD_CAS:
        return reply == MCS_REPLY_STORED ? MCS_COPY_SET : reply == MCS_REPLY_EXISTS ? MCS_COPY_NONE : MCS_COPY_DELETE;
    case MCS_CMD_REPLACE:
        return reply == MCS_REPLY_STORED ? MCS_COPY_SET : MCS_COPY_DELETE;
    case MCS_CMD_APPEND:
    case MCS_CMD_PREPEND:
    case MCS_CMD_DELETE:
        return MCS_COPY_DELETE;
    case MCS_CMD_INCR:
    case MCS_CMD_DECR:
        return reply == MCS_REPLY_NUMBER ? MCS_COPY_ARITH : MCS_COPY_DELETE;
    case MCS_CMD_TOUCH:
        return reply == MCS_REPLY_TOUCHED ? MCS_COPY_TOUCH : MCS_COPY_DELETE;
    case MCS_CMD_GAT:
    case MCS_CMD_GATS:
        return reply == MCS_REPLY_STORED ? MCS_COPY_TOUCH : MCS_COPY_NONE;
    default:
        return MCS_COPY_NONE;
    }
}

/* The n-th space-separated token of the command line (0 = command name). */
static bool
token(const char *req, const struct mcs_ascii_req *q, unsigned n, uint32_t *off, uint32_t *len)
{
    uint32_t pos = 0;
    for (unsigned i = 0; mcs_ascii_next_token(req, &pos, q->eol_off, off, len); i++) {
        if (i == n) {
            return true;
        }
    }
    return false;
}

static int
append_tokens(struct mcs_buf *out, const char *req, const struct mcs_ascii_req *q, unsigned first, unsigned last)
{
    int rc = 0;
    for (unsigned i = first; i <= last; i++) {
        uint32_t off, len;
        if (!token(req, q, i, &off, &len)) {
            return -1;
        }
        rc |= mcs_buf_append(out, " ", 1);
        rc |= mcs_buf_append(out, req + off, len);
    }
    return rc;
}

int
mcs_copy_build(enum mcs_copy_action action, const char *req, const struct mcs_ascii_req *q, const char *key,
               size_t key_len, struct mcs_buf *out)
{
    size_t before = mcs_buf_len(out);
    int rc = 0;
    switch (action) {
    case MCS_COPY_SET:
        /* "<cmd> <key> <flags> <exptime> <bytes> [cas] [noreply]" -> "set <key> <flags> <exptime> <bytes>" */
        if (!mcs_cmd_has_data(q->cmd)) {
            return -1;
        }
        rc |= mcs_buf_append(out, "set", 3);
        rc |= append_tokens(out, req, q, 1, 4);
        rc |= mcs_buf_append(out, "\r\n", 2);
        rc |= mcs_buf_append(out, req + q->data_off, q->data_len);
        rc |= mcs_buf_append(out, "\r\n", 2);
        break;
    case MCS_COPY_DELETE:
        rc |= mcs_buf_append(out, "delete ", 7);
        rc |= mcs_buf_append(out, req + q->key_off, q->key_len);
        rc |= mcs_buf_append(out, "\r\n", 2);
        break;
    case MCS_COPY_TOUCH:
        rc |= mcs_buf_append(out, "touch ", 6);
        if (q->cmd == MCS_CMD_GAT || q->cmd == MCS_CMD_GATS) {
            rc |= mcs_buf_append(out, key, key_len);
            rc |= mcs_buf_append(out, " ", 1);
            rc |= mcs_buf_append(out, req + q->args_off, q->args_len);   /* the exptime */
        } else {
            uint32_t off, len;
            rc |= mcs_buf_append(out, req + q->key_off, q->key_len);
            rc |= token(req, q, 2, &off, &len) ? mcs_buf_append(out, " ", 1) | mcs_buf_append(out, req + off, len)
                                               : -1;
        }
        rc |= mcs_buf_append(out, "\r\n", 2);
        break;
    case MCS_COPY_ARITH:
        rc |= mcs_buf_append(out, mcs_cmd_name(q->cmd), strlen(mcs_cmd_name(q->cmd)));
        rc |= append_tokens(out, req, q, 1, 2);
        rc |= mcs_buf_append(out, "\r\n", 2);
        break;
    case MCS_COPY_NONE:
    case MCS_COPY_COUNT:
        return -1;
    }
    if (rc != 0) {
        out->end = out->start + before;
        return -1;
    }
    return 0;
}

enum mcs_reply_class
mcs_bin_reply_class(uint8_t base_opcode, uint16_t status)
{
    switch (status) {
    case MCS_BIN_STATUS_SUCCESS:
        switch (base_opcode) {
        case MCS_BIN_OP_DELETE:
            return MCS_REPLY_DELETED;
        case MCS_BIN_OP_INCREMENT:
        case MCS_BIN_OP_DECREMENT:
            return MCS_REPLY_NUMBER;
        case MCS_BIN_OP_TOUCH:
            return MCS_REPLY_TOUCHED;
        default:
            return MCS_REPLY_STORED;   /* storage, or a hit */
        }
    case MCS_BIN_STATUS_KEY_ENOENT:
        return MCS_REPLY_NOT_FOUND;
    case MCS_BIN_STATUS_KEY_EEXISTS:
        /* a binary add of an existing key answers EXISTS where text says NOT_STORED */
        return base_opcode == MCS_BIN_OP_ADD ? MCS_REPLY_NOT_STORED : MCS_REPLY_EXISTS;
    case MCS_BIN_STATUS_NOT_STORED:
        return MCS_REPLY_NOT_STORED;
    default:
        return MCS_REPLY_ERROR;
    }
}

bool
mcs_copy_text_safe(const char *key, size_t len)
{
    if (len == 0 || len > MCS_ASCII_KEY_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (ch <= 0x20 || ch == 0x7f) {
            return false;
        }
    }
    return true;
}

int
mcs_copy_delete_line(struct mcs_buf *out, const char *key, size_t len)
{
    size_t before = mcs_buf_len(out);
    int rc;
    if (mcs_copy_text_safe(key, len)) {
        rc = mcs_buf_append(out, "delete ", 7) | mcs_buf_append(out, key, len) | mcs_buf_append(out, "\r\n", 2);
    } else {
        char b64[((MCS_BIN_KEY_MAX + 2) / 3) * 4 + 1];
        size_t n = mcs_meta_base64_encode((const uint8_t *)key, len, b64, sizeof(b64));
        rc = n == 0 ? -1
                    : mcs_buf_append(out, "md ", 3) | mcs_buf_append(out, b64, n) | mcs_buf_append(out, " b\r\n", 4);
    }
    if (rc != 0) {
        out->end = out->start + before;
        return -1;
    }
    return 0;
}
