/*
 * preload/core/ascii.c: memcached ASCII request and reply parsing (see ascii.h).
 *
 * The request parser mirrors memcached 1.6's proto_text.c checks and replies
 * (token counts, numeric fields, key length, data chunk terminator, noreply
 * suppressing error replies) so an application sees the same bytes through
 * the shim as from a single server. It never trusts a length before checking
 * it in unsigned arithmetic and never reads past buf[len).
 */
#include "preload/core/ascii.h"

#include <string.h>

struct cmd_def {
    const char        *name;
    uint8_t            name_len;
    enum mcs_cmd_route route;
    bool               data;
};

static const struct cmd_def cmd_defs[MCS_CMD_COUNT] = {
#define MCS_CMD_DEF(id, name, route, data) { name, sizeof(name) - 1, route, data },
    MCS_CMD_LIST(MCS_CMD_DEF)
#undef MCS_CMD_DEF
};

const char mcs_reply_error[] = "ERROR\r\n";
const char mcs_reply_bad_format[] = "CLIENT_ERROR bad command line format\r\n";
const char mcs_reply_bad_chunk[] = "CLIENT_ERROR bad data chunk\r\n";
const char mcs_reply_too_large[] = "SERVER_ERROR object too large for cache\r\n";
static const char reply_end[] = "END\r\n";
static const char reply_bad_delta[] = "CLIENT_ERROR invalid numeric delta argument\r\n";
static const char reply_bad_exptime[] = "CLIENT_ERROR invalid exptime argument\r\n";
static const char reply_delete_usage[] =
    "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";

#define MAX_TOKENS 8    /* tokens remembered by position; more are only counted */

struct tokens {
    uint32_t off[MAX_TOKENS];
    uint32_t len[MAX_TOKENS];
    uint32_t count;
    uint32_t last_off;
    uint32_t last_len;
    uint32_t prev_end;  /* end of the token before the last one */
};

const char *
mcs_cmd_name(enum mcs_cmd cmd)
{
    return (unsigned)cmd < MCS_CMD_COUNT ? cmd_defs[cmd].name : "?";
}

bool
mcs_cmd_has_data(enum mcs_cmd cmd)
{
    return (unsigned)cmd < MCS_CMD_COUNT && cmd_defs[cmd].data;
}

enum mcs_cmd_route
mcs_cmd_route(enum mcs_cmd cmd)
{
    return (unsigned)cmd < MCS_CMD_COUNT ? cmd_defs[cmd].route : MCS_ROUTE_LOCAL;
}

bool
mcs_ascii_next_token(const char *buf, uint32_t *pos, uint32_t end, uint32_t *off, uint32_t *tlen)
{
    uint32_t i = *pos;
    while (i < end && buf[i] == ' ') {
        i++;
    }
    if (i >= end) {
        *pos = end;
        return false;
    }
    uint32_t start = i;
    while (i < end && buf[i] != ' ') {
        i++;
    }
    *off = start;
    *tlen = i - start;
    *pos = i;
    return true;
}

static void
tokenize(const char *buf, uint32_t end, struct tokens *t)
{
    uint32_t pos = 0, off, len, last_end = 0;
    t->count = 0;
    t->prev_end = 0;
    while (mcs_ascii_next_token(buf, &pos, end, &off, &len)) {
        if (t->count < MAX_TOKENS) {
            t->off[t->count] = off;
            t->len[t->count] = len;
        }
        t->prev_end = last_end;
        t->last_off = off;
        t->last_len = len;
        last_end = off + len;
        t->count++;
    }
}

static bool
token_is(const char *buf, const struct tokens *t, uint32_t i, const char *word)
{
    size_t n = strlen(word);
    return i < MAX_TOKENS && i < t->count && t->len[i] == n && memcmp(buf + t->off[i], word, n) == 0;
}

static bool
last_is_noreply(const char *buf, const struct tokens *t)
{
    return t->count > 1 && t->last_len == 7 && memcmp(buf + t->last_off, "noreply", 7) == 0;
}

/* Unsigned decimal as memcached's strtoull-based checks accept it: an optional
 * '+', or a '-' followed only by zeros ("-0"), then digits; no overflow past max. */
static bool
parse_unsigned(const char *s, uint32_t len, uint64_t max, uint64_t *out)
{
    bool minus = false;
    if (len > 0 && (s[0] == '+' || s[0] == '-')) {
        minus = s[0] == '-';
        s++;
        len--;
    }
    if (len == 0 || len > 20) {
        return false;
    }
    uint64_t v = 0;
    for (uint32_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        unsigned d = (unsigned)(s[i] - '0');
        if (d > max || v > (max - d) / 10) {   /* d > max: max - d would wrap */
            return false;
        }
        v = v * 10 + d;
    }
    if (minus && v != 0) {
        return false;
    }
    *out = v;
    return true;
}

/* Signed decimal with an optional sign, within [-(max+1), max]. */
static bool
parse_signed(const char *s, uint32_t len, uint64_t max, int64_t *out)
{
    bool neg = len > 0 && s[0] == '-';
    if (len > 0 && s[0] == '+') {
        s++;
        len--;
    }
    uint64_t v;
    if (len - neg == 0 || (len > neg && (s[neg] == '+' || s[neg] == '-'))
        || !parse_unsigned(s + neg, len - neg, neg ? max + 1 : max, &v)) {
        return false;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static bool
tok_u64(const char *buf, const struct tokens *t, uint32_t i, uint64_t max)
{
    uint64_t v;
    return i < MAX_TOKENS && parse_unsigned(buf + t->off[i], t->len[i], max, &v);
}

/* memcached reads exptime with strtol (64-bit long) and lengths as int32. */
static bool
tok_exptime(const char *buf, const struct tokens *t, uint32_t i)
{
    int64_t v;
    return i < MAX_TOKENS && parse_signed(buf + t->off[i], t->len[i], INT64_MAX, &v);
}

static bool
tok_i32(const char *buf, const struct tokens *t, uint32_t i, int64_t *v)
{
    return i < MAX_TOKENS && parse_signed(buf + t->off[i], t->len[i], INT32_MAX, v);
}

/* Finishes a local reply: consume n bytes, answer reply unless noreply. */
static enum mcs_ascii_status
reply(struct mcs_ascii_req *req, uint32_t n, const char *text)
{
    req->len = n;
    req->reply = req->noreply ? NULL : text;
    return MCS_ASCII_REPLY;
}

/* memcached lets only "get " and "gets " lines grow past the normal limit. */
static bool
is_retrieval_prefix(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && i < 100 && buf[i] == ' ') {
        i++;
    }
    return (len - i >= 4 && memcmp(buf + i, "get ", 4) == 0) || (len - i >= 5 && memcmp(buf + i, "gets ", 5) == 0);
}

/* memcached closes, without a word, a connection whose line looks like HTTP: an
 * unknown command of two bytes or more that does not start like one of its
 * commands (g s a c i d t, or m plus one letter), whose last word starts "HTTP/". */
static bool
looks_like_http(const char *buf, const struct tokens *t)
{
    const char *cmd = buf + t->off[0];
    if (t->len[0] < 2 || strchr("gsacidt", cmd[0]) != NULL || (cmd[0] == 'm' && t->len[0] == 2)) {
        return false;
    }
    return t->last_len >= 5 && memcmp(buf + t->last_off, "HTTP/", 5) == 0;
}

static void
set_noreply(struct mcs_ascii_req *req, const char *buf, const struct tokens *t)
{
    if (last_is_noreply(buf, t)) {
        req->noreply = true;
        req->noreply_off = t->prev_end;
        req->noreply_len = req->eol_off - t->prev_end;
    }
}

static enum mcs_ascii_status
parse_keys(const char *buf, const struct tokens *t, uint32_t first, struct mcs_ascii_req *req)
{
    uint32_t pos, off = 0, len = 0, n = 0;
    /* Every key must be valid before anything is sent. */
    pos = t->off[first];
    req->key_off = t->off[first];
    req->key_len = t->len[first];
    while (mcs_ascii_next_token(buf, &pos, req->eol_off, &off, &len)) {
        if (len > MCS_ASCII_KEY_MAX) {
            return reply(req, req->line_len, mcs_reply_bad_format);
        }
        n++;
    }
    req->keys_end = req->eol_off;
    req->nkeys = n;
    return MCS_ASCII_OK;
}

static enum mcs_ascii_status
parse_storage(struct mcs_ascii_parser *p, const char *buf, size_t len, uint32_t item_max,
              const struct tokens *t, struct mcs_ascii_req *req)
{
    bool is_cas = req->cmd == MCS_CMD_CAS;
    uint32_t want = is_cas ? 6 : 5;
    if (t->count != want && t->count != want + 1) {
        return reply(req, req->line_len, mcs_reply_error);
    }
    set_noreply(req, buf, t);
    req->key_off = t->off[1];
    req->key_len = t->len[1];
    int64_t vlen;
    /* As memcached: flags are read as a 64-bit unsigned (and truncated by the server),
     * exptime as a long, the length as an int that leaves room for "\r\n". */
    if (t->len[1] > MCS_ASCII_KEY_MAX || !tok_u64(buf, t, 2, UINT64_MAX) || !tok_exptime(buf, t, 3)
        || !tok_i32(buf, t, 4, &vlen) || (is_cas && !tok_u64(buf, t, 5, UINT64_MAX)) || vlen < 0
        || vlen > INT32_MAX - 2) {
        return reply(req, req->line_len, mcs_reply_bad_format);
    }
    if ((uint64_t)vlen > item_max) {
        p->swallow = (uint64_t)vlen + 2;
        req->drop_key = req->cmd == MCS_CMD_SET;   /* memcached: a failed set leaves no stale value */
        return reply(req, req->line_len, mcs_reply_too_large);
    }
    uint64_t total = (uint64_t)req->line_len + (uint64_t)vlen + 2;
    if (total > len) {
        return MCS_ASCII_MORE;
    }
    req->data_off = req->line_len;
    req->data_len = (uint32_t)vlen;
    req->len = (uint32_t)total;
    if (buf[total - 2] != '\r' || buf[total - 1] != '\n') {
        return reply(req, (uint32_t)total, mcs_reply_bad_chunk);
    }
    return MCS_ASCII_OK;
}

static enum mcs_ascii_status
parse_command(struct mcs_ascii_parser *p, const char *buf, size_t len, uint32_t item_max,
              const struct tokens *t, struct mcs_ascii_req *req)
{
    switch (req->cmd) {
    case MCS_CMD_GET:
    case MCS_CMD_GETS:
        if (t->count < 2) {
            return reply(req, req->line_len, mcs_reply_error);
        }
        return parse_keys(buf, t, 1, req);
    case MCS_CMD_GAT:
    case MCS_CMD_GATS:
        if (t->count < 2) {
            return reply(req, req->line_len, mcs_reply_error);
        }
        req->args_off = t->off[1];
        req->args_len = t->len[1];
        if (!tok_exptime(buf, t, 1)) {
            return reply(req, req->line_len, reply_bad_exptime);
        }
        if (t->count == 2) {
            return reply(req, req->line_len, reply_end);   /* memcached: no key, empty answer */
        }
        return parse_keys(buf, t, 2, req);
    case MCS_CMD_SET:
    case MCS_CMD_ADD:
    case MCS_CMD_REPLACE:
    case MCS_CMD_APPEND:
    case MCS_CMD_PREPEND:
    case MCS_CMD_CAS:
        return parse_storage(p, buf, len, item_max, t, req);
    case MCS_CMD_INCR:
    case MCS_CMD_DECR:
        if (t->count != 3 && t->count != 4) {
            return reply(req, req->line_len, mcs_reply_error);
        }
        set_noreply(req, buf, t);
        if (t->len[1] > MCS_ASCII_KEY_MAX) {
            return reply(req, req->line_len, mcs_reply_bad_format);
        }
        if (!tok_u64(buf, t, 2, UINT64_MAX)) {
            return reply(req, req->line_len, reply_bad_delta);
        }
        break;
    case MCS_CMD_TOUCH:
        if (t->count != 3 && t->count != 4) {
            return reply(req, req->line_len, mcs_reply_error);
        }
        set_noreply(req, buf, t);
        if (t->len[1] > MCS_ASCII_KEY_MAX) {
            return reply(req, req->line_len, mcs_reply_bad_format);
        }
        if (!tok_exptime(buf, t, 2)) {
            return reply(req, req->line_len, reply_bad_exptime);
        }
        break;
    case MCS_CMD_DELETE:
        if (t->count < 2 || t->count > 4) {
            return reply(req, req->line_len, mcs_reply_error);
        }
        if (t->count > 2) {
            bool hold_zero = token_is(buf, t, 2, "0");
            set_noreply(req, buf, t);
            bool ok = (t->count == 3 && (hold_zero || req->noreply)) || (t->count == 4 && hold_zero && req->noreply);
            if (!ok) {
                return reply(req, req->line_len, reply_delete_usage);
            }
        }
        if (t->len[1] > MCS_ASCII_KEY_MAX) {
            return reply(req, req->line_len, mcs_reply_bad_format);
        }
        break;
    case MCS_CMD_VERBOSITY:
        if (t->count != 2 && t->count != 3) {
            return reply(req, req->line_len, mcs_reply_error);
        }
        set_noreply(req, buf, t);
        return MCS_ASCII_OK;
    case MCS_CMD_FLUSH_ALL:
        if (t->count > 3) {
            return reply(req, req->line_len, mcs_reply_error);
        }
        set_noreply(req, buf, t);
        if (t->count == (req->noreply ? 3u : 2u) && !tok_exptime(buf, t, 1)) {
            return reply(req, req->line_len, reply_bad_exptime);
        }
        return MCS_ASCII_OK;
    case MCS_CMD_STATS:
        if (t->count > 1) {
            req->args_off = t->off[1];
            req->args_len = req->eol_off - t->off[1];
        }
        return MCS_ASCII_OK;
    case MCS_CMD_VERSION:
    case MCS_CMD_QUIT:
    case MCS_CMD_COUNT:
        return MCS_ASCII_OK;
    }
    req->key_off = t->off[1];
    req->key_len = t->len[1];
    return MCS_ASCII_OK;
}

enum mcs_ascii_status
mcs_ascii_parse(struct mcs_ascii_parser *p, const char *buf, size_t len, uint32_t item_max,
                struct mcs_ascii_req *req)
{
    memset(req, 0, sizeof(*req));
    if (p->swallow > 0) {
        if (len == 0) {
            return MCS_ASCII_MORE;
        }
        uint64_t n = len < p->swallow ? len : p->swallow;
        p->swallow -= n;
        req->len = (uint32_t)n;
        return MCS_ASCII_REPLY;
    }
    size_t from = p->scanned < len ? p->scanned : 0;
    const char *nl = len > from ? memchr(buf + from, '\n', len - from) : NULL;
    if (nl == NULL) {
        p->scanned = len;
        /* More than 2048 bytes without a newline closes, silently, as memcached.
         * get/gets lines have the shim's own bound, applied so that a line that is
         * accepted whole (up to limit bytes plus "\r\n") is also accepted in pieces. */
        bool get_line = is_retrieval_prefix(buf, len);
        size_t limit = get_line ? MCS_ASCII_GET_LINE_MAX + 1 : MCS_ASCII_LINE_MAX;
        if (len > limit) {
            p->scanned = 0;
            req->len = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
            return MCS_ASCII_CLOSE;
        }
        return MCS_ASCII_MORE;
    }
    p->scanned = 0;
    size_t line_len = (size_t)(nl - buf) + 1;
    if (line_len > MCS_ASCII_GET_LINE_MAX + 2) {
        req->len = (uint32_t)line_len;
        return MCS_ASCII_CLOSE;
    }
    req->line_len = (uint32_t)line_len;
    req->eol_off = (uint32_t)(nl - buf);
    if (req->eol_off > 0 && buf[req->eol_off - 1] == '\r') {
        req->eol_off--;
    }

    struct tokens t;
    tokenize(buf, req->eol_off, &t);
    if (t.count == 0) {
        return reply(req, req->line_len, mcs_reply_error);
    }
    req->cmd = MCS_CMD_COUNT;
    for (unsigned i = 0; i < MCS_CMD_COUNT; i++) {
        if (t.len[0] == cmd_defs[i].name_len && memcmp(buf + t.off[0], cmd_defs[i].name, t.len[0]) == 0) {
            req->cmd = (enum mcs_cmd)i;
            break;
        }
    }
    if (req->cmd == MCS_CMD_COUNT) {
        if (looks_like_http(buf, &t)) {
            req->len = req->line_len;
            return MCS_ASCII_CLOSE;
        }
        return reply(req, req->line_len, mcs_reply_error);
    }
    /* A NUL inside a line is refused here and never forwarded: memcached reads the
     * line as a C string (the NUL ends it), so it would frame the request
     * differently from the shim and shift every later reply on the shared server
     * connection. (Whitespace other than ' ' inside a number is refused by the
     * number checks for the same reason.) */
    const char *nul = memchr(buf, '\0', req->eol_off);
    if (nul != NULL) {
        /* Where memcached's reading of the line up to the NUL is an error, give
         * its exact answer (`get \0` and `incr \0 1` are ERROR); where it would
         * run the truncated command, refuse it instead (docs/protocol.md). */
        struct mcs_ascii_req cut = *req;
        cut.eol_off = (uint32_t)(nul - buf);
        tokenize(buf, cut.eol_off, &t);
        struct mcs_ascii_parser scratch = *p;
        enum mcs_ascii_status st = parse_command(&scratch, buf, req->line_len, item_max, &t, &cut);
        if (st == MCS_ASCII_REPLY || st == MCS_ASCII_CLOSE) {
            *p = scratch;
            *req = cut;
            return st;
        }
        return reply(req, req->line_len, mcs_reply_bad_format);
    }
    req->len = req->line_len;
    return parse_command(p, buf, len, item_max, &t, req);
}

/* Server replies ------------------------------------------------------------ */

static bool
starts_with(const char *buf, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(buf, word, n) == 0;
}

/* memcached's error lines: "ERROR", "CLIENT_ERROR <text>", "SERVER_ERROR <text>"
 * (a word alone or followed by a space; "ERRORS" is not one). */
static bool
word_line(const char *buf, uint32_t eol, const char *word)
{
    size_t n = strlen(word);
    return starts_with(buf, eol, word) && (eol == n || buf[n] == ' ');
}

static bool
is_error_line(const char *buf, uint32_t eol)
{
    return word_line(buf, eol, "ERROR") || word_line(buf, eol, "CLIENT_ERROR") || word_line(buf, eol, "SERVER_ERROR");
}

static bool
line_is(const char *buf, uint32_t eol, const char *word)
{
    return eol == strlen(word) && memcmp(buf, word, eol) == 0;
}

bool
mcs_ascii_reply_fits(enum mcs_cmd cmd, const char *line, uint32_t len)
{
    if (len < 2) {
        return false;
    }
    uint32_t eol = len - 2;
    if (is_error_line(line, eol)) {
        return true;
    }
    if (mcs_cmd_has_data(cmd)) {
        return line_is(line, eol, "STORED") || line_is(line, eol, "NOT_STORED") || line_is(line, eol, "EXISTS")
               || line_is(line, eol, "NOT_FOUND");
    }
    uint64_t v;
    switch (cmd) {
    case MCS_CMD_DELETE:
        return line_is(line, eol, "DELETED") || line_is(line, eol, "NOT_FOUND");
    case MCS_CMD_INCR:
    case MCS_CMD_DECR:
        return line_is(line, eol, "NOT_FOUND")
               || (eol > 0 && line[0] >= '0' && line[0] <= '9' && parse_unsigned(line, eol, UINT64_MAX, &v));
    case MCS_CMD_TOUCH:
        return line_is(line, eol, "TOUCHED") || line_is(line, eol, "NOT_FOUND");
    case MCS_CMD_VERSION:
        return starts_with(line, eol, "VERSION ");
    case MCS_CMD_VERBOSITY:
    case MCS_CMD_FLUSH_ALL:
        return line_is(line, eol, "OK");
    default:
        return false;   /* retrieval and local commands have no single-line success */
    }
}

enum mcs_resp_status
mcs_ascii_resp_parse(const char *buf, size_t len, uint32_t value_max, struct mcs_ascii_resp *r)
{
    memset(r, 0, sizeof(*r));
    size_t scan = len < MCS_ASCII_RESP_LINE_MAX ? len : MCS_ASCII_RESP_LINE_MAX;
    const char *nl = memchr(buf, '\n', scan);
    if (nl == NULL) {
        return len >= MCS_ASCII_RESP_LINE_MAX ? MCS_RESP_BAD : MCS_RESP_MORE;
    }
    uint32_t line_len = (uint32_t)(nl - buf) + 1;
    /* memcached ends every line with \r\n and never puts a NUL in one: anything
     * else is not a memcached reply (and might frame differently than it looks). */
    if (line_len < 2 || buf[line_len - 2] != '\r' || memchr(buf, '\0', line_len) != NULL) {
        return MCS_RESP_BAD;
    }
    uint32_t eol = line_len - 2;
    r->len = line_len;
    if (starts_with(buf, eol, "VALUE ")) {
        struct tokens t;
        tokenize(buf, eol, &t);
        uint64_t bytes;
        if ((t.count != 4 && t.count != 5) || !tok_u64(buf, &t, 2, UINT32_MAX)
            || !parse_unsigned(buf + t.off[3], t.len[3], value_max, &bytes)
            || (t.count == 5 && !tok_u64(buf, &t, 4, UINT64_MAX))) {
            return MCS_RESP_BAD;
        }
        uint64_t total = (uint64_t)line_len + bytes + 2;
        if (total > len) {
            return MCS_RESP_MORE;
        }
        if (buf[total - 2] != '\r' || buf[total - 1] != '\n') {
            return MCS_RESP_BAD;
        }
        r->kind = MCS_RESP_VALUE;
        r->len = (uint32_t)total;
        r->key_off = t.off[1];
        r->key_len = t.len[1];
        return MCS_RESP_OK;
    }
    if (eol == 3 && memcmp(buf, "END", 3) == 0) {
        r->kind = MCS_RESP_END;
    } else if (starts_with(buf, eol, "STAT ")) {
        r->kind = MCS_RESP_STAT;
    } else {
        r->kind = MCS_RESP_LINE;
        r->error = is_error_line(buf, eol);
    }
    return MCS_RESP_OK;
}
