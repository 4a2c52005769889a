/*
 * preload/core/meta.c: memcached meta request and reply parsing (see meta.h).
 *
 * The request parser follows memcached 1.6.18's proto_text.c, checked by
 * sending bytes to a real server: the order of its checks (token count, key
 * length, number of flags, datalen, then the flags one by one, opaque length,
 * mode), its error texts (which differ between mg/ms and md/ma), its number
 * reading (strtol family: leading whitespace, a sign, trailing whitespace,
 * values truncated to the field) and its base64 decoder, and which errors
 * after an ms line make it skip the data block. It never trusts a length
 * before checking it in unsigned arithmetic and never reads past buf[len).
 */
#include "preload/core/meta.h"

#include <stdio.h>
#include <string.h>

/* Commands ------------------------------------------------------------------ */

struct cmd_def {
    const char        *name;
    bool               writes;
    enum mcs_cmd_route route;
    bool               data;
};

static const struct cmd_def cmd_defs[MCS_META_CMD_COUNT] = {
#define MCS_META_CMD_DEF(id, name, writes, route, data) { name, writes, route, data },
    MCS_META_CMD_LIST(MCS_META_CMD_DEF)
#undef MCS_META_CMD_DEF
};

const char *
mcs_meta_cmd_name(enum mcs_meta_cmd cmd)
{
    return (unsigned)cmd < MCS_META_CMD_COUNT ? cmd_defs[cmd].name : "?";
}

enum mcs_cmd_route
mcs_meta_cmd_route(enum mcs_meta_cmd cmd)
{
    return (unsigned)cmd < MCS_META_CMD_COUNT ? cmd_defs[cmd].route : MCS_ROUTE_LOCAL;
}

bool
mcs_meta_cmd_can_write(enum mcs_meta_cmd cmd)
{
    return (unsigned)cmd < MCS_META_CMD_COUNT && cmd_defs[cmd].writes;
}

bool
mcs_meta_cmd_has_data(enum mcs_meta_cmd cmd)
{
    return (unsigned)cmd < MCS_META_CMD_COUNT && cmd_defs[cmd].data;
}

/* Flags --------------------------------------------------------------------- */

struct flag_def {
    bool               known;
    enum mcs_meta_arg  arg;
    const char        *bad;     /* reply for a bad token; NULL: keep the previous one */
    bool               newer;   /* unknown to memcached 1.6.18 */
};

static const struct flag_def flag_defs[128] = {
#define MCS_META_FLAG_DEF(letter, arg, bad, newer) [letter] = { true, arg, bad, newer },
    MCS_META_FLAG_LIST(MCS_META_FLAG_DEF)
#undef MCS_META_FLAG_DEF
};

static const char reply_mg_too_many[] = "CLIENT_ERROR options flags are too long\r\n";
static const char reply_too_many[] = "CLIENT_ERROR options flags too long\r\n";
static const char reply_duplicate[] = "CLIENT_ERROR duplicate flag\r\n";
static const char reply_invalid[] = "CLIENT_ERROR invalid flag\r\n";
static const char reply_bad_key[] = "CLIENT_ERROR error decoding key\r\n";
static const char reply_invalid_or_dup[] = "CLIENT_ERROR invalid or duplicate flag\r\n";
static const char reply_opaque[] = "CLIENT_ERROR opaque token too long\r\n";
static const char reply_ms_mode[] = "CLIENT_ERROR invalid mode for ms M token\r\n";
static const char reply_ma_mode[] = "CLIENT_ERROR invalid mode for ma M token\r\n";

uint64_t
mcs_meta_flag_bit(char letter)
{
    if (letter >= 'A' && letter <= 'Z') {
        return (uint64_t)1 << (letter - 'A');
    }
    if (letter >= 'a' && letter <= 'z') {
        return (uint64_t)1 << (26 + letter - 'a');
    }
    return 0;
}

bool
mcs_meta_has_flag(const struct mcs_meta_req *req, char letter)
{
    uint64_t bit = mcs_meta_flag_bit(letter);
    return bit != 0 && (req->flags & bit) != 0;
}

/* Numbers as memcached's safe_strtol / safe_strtoul / safe_strtoull read them ---- */

static bool
c_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* strtol/strtoull on s[0, len) (the token ends as at a NUL): skips leading
 * whitespace, reads a sign and decimal digits; the next byte must be the end
 * or whitespace. Sets *neg and the magnitude; false on no digits, other
 * trailing bytes, or a magnitude past UINT64_MAX. */
static bool
c_digits(const char *s, uint32_t len, bool *neg, uint64_t *mag)
{
    uint32_t i = 0;
    while (i < len && c_space(s[i])) {
        i++;
    }
    *neg = false;
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        *neg = s[i] == '-';
        i++;
    }
    uint32_t start = i;
    uint64_t v = 0;
    bool overflow = false;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            overflow = true;
        } else {
            v = v * 10 + d;
        }
        i++;
    }
    if (i == start || overflow || (i < len && !c_space(s[i]))) {
        return false;
    }
    *mag = v;
    return true;
}

/* safe_strtol: a 64-bit long, stored into an int32 (truncated). */
static bool
read_i32(const char *s, uint32_t len, int32_t *out)
{
    bool neg;
    uint64_t mag;
    if (!c_digits(s, len, &neg, &mag) || mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
        return false;
    }
    *out = (int32_t)(uint32_t)(neg ? 0 - mag : mag);
    return true;
}

/* safe_strtoull: negation wraps; a result with the top bit set is refused when
 * the token holds a '-' anywhere. */
static bool
read_u64(const char *s, uint32_t len, uint64_t *out)
{
    bool neg;
    uint64_t mag;
    if (!c_digits(s, len, &neg, &mag)) {
        return false;
    }
    uint64_t v = neg ? 0 - mag : mag;
    if ((v >> 63) != 0 && memchr(s, '-', len) != NULL) {
        return false;
    }
    *out = v;
    return true;
}

/* Base64 ------------------------------------------------------------------- */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 digit ('=' is 0), or -1 for a byte memcached skips. */
static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return c == '=' ? 0 : -1;
}

size_t
mcs_meta_base64_decode(const char *src, size_t len, uint8_t *out, size_t cap)
{
    size_t digits = 0;
    for (size_t i = 0; i < len; i++) {
        digits += b64_value((unsigned char)src[i]) >= 0;
    }
    if (digits == 0 || digits % 4 != 0 || digits / 4 * 3 > cap) {
        return 0;
    }
    size_t n = 0;
    unsigned group = 0, fill = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)src[i]);
        if (v < 0) {
            continue;
        }
        pad += src[i] == '=';
        group = (group << 6) | (unsigned)v;
        if (++fill < 4) {
            continue;
        }
        out[n++] = (uint8_t)(group >> 16);
        out[n++] = (uint8_t)(group >> 8);
        out[n++] = (uint8_t)group;
        group = 0;
        fill = 0;
        if (pad > 0) {
            /* the first group with '=' ends the key; at most two of them */
            return pad <= 2 ? n - pad : 0;
        }
    }
    return n;
}

size_t
mcs_meta_base64_encode(const uint8_t *src, size_t len, char *out, size_t cap)
{
    if (len == 0 || len > (SIZE_MAX / 4) * 3 - 3 || (len + 2) / 3 * 4 > cap) {
        return 0;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t group = (uint32_t)src[i] << 16;
        if (i + 1 < len) {
            group |= (uint32_t)src[i + 1] << 8;
        }
        if (i + 2 < len) {
            group |= src[i + 2];
        }
        out[o++] = b64_alphabet[(group >> 18) & 63];
        out[o++] = b64_alphabet[(group >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(group >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_alphabet[group & 63] : '=';
    }
    return o;
}

/* Requests ------------------------------------------------------------------ */

/* Tokens of a line, split on ' ' as memcached does. Only the first
 * MCS_META_TOKENS_MAX are kept: a line with more is refused before any flag is
 * looked at (mn and me, which ignore extra tokens, look at three at most). */
struct tokens {
    uint32_t off[MCS_META_TOKENS_MAX];
    uint32_t len[MCS_META_TOKENS_MAX];
    uint32_t count;
};

static void
tokenize(const char *buf, uint32_t end, struct tokens *t)
{
    uint32_t pos = 0, off, len;
    t->count = 0;
    while (mcs_ascii_next_token(buf, &pos, end, &off, &len)) {
        if (t->count < MCS_META_TOKENS_MAX) {
            t->off[t->count] = off;
            t->len[t->count] = len;
        }
        t->count++;
    }
}

/* Finishes a local reply that consumes n bytes. */
static enum mcs_meta_status
reply(struct mcs_meta_req *req, uint32_t n, const char *text)
{
    req->len = n;
    req->reply = text;
    return MCS_META_REPLY;
}

/* An ms error after a readable datalen: memcached answers, then skips the
 * data block and its "\r\n" whatever they hold. */
static enum mcs_meta_status
reply_swallow(struct mcs_meta_parser *p, struct mcs_meta_req *req, uint32_t vlen, const char *text)
{
    p->swallow = (uint64_t)vlen + 2;
    return reply(req, req->line_len, text);
}

enum flag_result {
    FLAG_OK,
    FLAG_BAD,       /* a bad token: memcached notes the error and reads on */
    FLAG_FATAL      /* an unknown or repeated flag: memcached stops here */
};

/* Stores the value of a flag whose token was read. */
static void
store_flag(struct mcs_meta_req *req, char letter, uint32_t arg_off, uint32_t arg_len, int32_t i32, uint64_t u64,
           char mode)
{
    switch (letter) {
    case 'O':
        req->opaque_off = arg_off;
        req->opaque_len = arg_len;
        break;
    case 'T':
        req->ttl = i32;
        break;
    case 'N':
        req->vivify_ttl = i32;
        break;
    case 'R':
        req->recache_ttl = i32;
        break;
    case 'F':
        req->client_flags = (uint32_t)u64;
        break;
    case 'C':
        req->compare_cas = u64;
        break;
    case 'E':
        req->set_cas = u64;
        break;
    case 'D':
        req->delta = u64;
        break;
    case 'J':
        req->initial = u64;
        break;
    case 'M':
        req->mode = mode;
        break;
    case 'q':
        req->quiet = true;
        break;
    default:
        break;
    }
}

/* Reads the flag token buf[off, off + len) into req. On FLAG_BAD and
 * FLAG_FATAL *text is the reply (FLAG_BAD: NULL keeps the previous one). */
static enum flag_result
parse_flag(const struct mcs_meta_parser *p, const char *buf, uint32_t off, uint32_t len, struct mcs_meta_req *req,
           const char **text)
{
    unsigned char c = (unsigned char)buf[off];
    uint64_t bit = mcs_meta_flag_bit((char)c);
    if (c >= 127 || (bit != 0 && (req->flags & bit) != 0)) {
        *text = reply_duplicate;    /* memcached files bytes >= 127 as repeats too */
        return FLAG_FATAL;
    }
    if (!flag_defs[c].known || (flag_defs[c].newer && !p->newer_flags)) {
        *text = reply_invalid;
        return FLAG_FATAL;
    }
    req->flags |= bit;
    const char *arg = buf + off + 1;
    uint32_t arg_len = len - 1;
    int32_t i32 = 0;
    uint64_t u64 = 0;
    bool ok = true;
    switch (flag_defs[c].arg) {
    case MCS_META_ARG_NONE:
    case MCS_META_ARG_TOKEN:
        break;
    case MCS_META_ARG_I32:
        ok = read_i32(arg, arg_len, &i32);
        break;
    case MCS_META_ARG_U32:      /* safe_strtoul: an unsigned long, 32 bits kept */
    case MCS_META_ARG_U64:
        ok = read_u64(arg, arg_len, &u64);
        break;
    case MCS_META_ARG_MODE:
        ok = arg_len == 1;
        break;
    }
    if (!ok) {
        *text = flag_defs[c].bad;
        return FLAG_BAD;
    }
    store_flag(req, (char)c, off + 1, arg_len, i32, u64, arg_len > 0 ? arg[0] : 0);
    if (c == 'b') {
        req->base64 = true;
        req->key_bin_len = (uint32_t)mcs_meta_base64_decode(buf + req->key_off, req->key_len, req->key_bin,
                                                            sizeof(req->key_bin));
        if (req->key_bin_len == 0) {
            *text = reply_bad_key;
            return FLAG_BAD;
        }
    }
    return FLAG_OK;
}

/* memcached's flag pre-parse over tokens [first, count): NULL when all are
 * good, else the reply of the first unknown/repeated flag or, without one, of
 * the last bad token ("bad command line format" if none had its own text). */
static const char *
parse_flags(const struct mcs_meta_parser *p, const char *buf, const struct tokens *t, uint32_t first,
            struct mcs_meta_req *req)
{
    const char *err = NULL;
    bool bad = false;
    for (uint32_t i = first; i < t->count; i++) {
        const char *text = NULL;
        switch (parse_flag(p, buf, t->off[i], t->len[i], req, &text)) {
        case FLAG_OK:
            break;
        case FLAG_BAD:
            bad = true;
            err = text != NULL ? text : err;
            break;
        case FLAG_FATAL:
            return text;
        }
    }
    if (t->count > first) {
        req->flags_off = t->off[first];
        req->flags_len = t->off[t->count - 1] + t->len[t->count - 1] - t->off[first];
    }
    return bad ? (err != NULL ? err : mcs_reply_bad_format) : NULL;
}

/* memcached checks the O length while it writes the reply, after the flags. */
static bool
opaque_too_long(const struct mcs_meta_req *req)
{
    return mcs_meta_has_flag(req, 'O') && req->opaque_len + 1 > MCS_META_OPAQUE_MAX;
}

/* The checks shared by mg, md and ma (memcached's order): at least a key, a
 * key of at most 250 bytes, at most MCS_META_TOKENS_MAX tokens, the flags,
 * then the O length. */
static enum mcs_meta_status
parse_keyed(const struct mcs_meta_parser *p, const char *buf, const struct tokens *t, struct mcs_meta_req *req)
{
    if (t->count < 2) {
        return reply(req, req->line_len, mcs_reply_error);
    }
    req->key_off = t->off[1];
    req->key_len = t->len[1];
    if (req->key_len > MCS_META_KEY_MAX) {
        return reply(req, req->line_len, mcs_reply_bad_format);
    }
    if (t->count > MCS_META_TOKENS_MAX) {
        return reply(req, req->line_len, req->cmd == MCS_META_MG ? reply_mg_too_many : reply_too_many);
    }
    const char *err = parse_flags(p, buf, t, 2, req);
    if (err != NULL) {
        return reply(req, req->line_len, req->cmd == MCS_META_MG ? err : reply_invalid_or_dup);
    }
    if (req->cmd == MCS_META_MA && req->mode != 0 && strchr("I+D-", req->mode) == NULL) {
        return reply(req, req->line_len, reply_ma_mode);
    }
    if (opaque_too_long(req)) {
        return reply(req, req->line_len, reply_opaque);
    }
    req->write = req->cmd != MCS_META_MG || mcs_meta_has_flag(req, 'T') || mcs_meta_has_flag(req, 'N')
                 || mcs_meta_has_flag(req, 'E');
    return MCS_META_OK;
}

/* ms <key> <datalen> <flags>*: errors before a readable datalen consume only
 * the line (the data block is then read as commands, as memcached does);
 * later ones skip the data block too. */
static enum mcs_meta_status
parse_set(struct mcs_meta_parser *p, const char *buf, size_t len, uint32_t item_max, const struct tokens *t,
          struct mcs_meta_req *req)
{
    if (t->count < 2) {
        return reply(req, req->line_len, mcs_reply_error);
    }
    req->key_off = t->off[1];
    req->key_len = t->len[1];
    if (req->key_len > MCS_META_KEY_MAX || t->count < 3) {
        return reply(req, req->line_len, mcs_reply_bad_format);
    }
    if (t->count > MCS_META_TOKENS_MAX) {
        return reply(req, req->line_len, reply_too_many);
    }
    int32_t vlen;
    if (!read_i32(buf + t->off[2], t->len[2], &vlen) || vlen < 0 || vlen > INT32_MAX - 2) {
        return reply(req, req->line_len, mcs_reply_bad_format);
    }
    const char *err = parse_flags(p, buf, t, 3, req);
    if (err == NULL && req->mode != 0 && strchr("EAPRS", req->mode) == NULL) {
        err = reply_ms_mode;
    }
    if (err == NULL && opaque_too_long(req)) {
        err = reply_opaque;
    }
    if (err == NULL && (uint32_t)vlen > item_max) {
        err = mcs_reply_too_large;
        req->drop_key = true;   /* memcached drops the old value, whatever the mode */
    }
    if (err != NULL) {
        return reply_swallow(p, req, (uint32_t)vlen, err);
    }
    uint64_t total = (uint64_t)req->line_len + (uint64_t)vlen + 2;
    if (total > len) {
        return MCS_META_MORE;
    }
    req->data_off = req->line_len;
    req->data_len = (uint32_t)vlen;
    req->len = (uint32_t)total;
    if (buf[total - 2] != '\r' || buf[total - 1] != '\n') {
        return reply(req, (uint32_t)total, mcs_reply_bad_chunk);
    }
    req->write = true;
    return MCS_META_OK;
}

/* me <key> [b]: memcached looks only at the key and a "b" right after it. */
static enum mcs_meta_status
parse_debug(const char *buf, const struct tokens *t, struct mcs_meta_req *req)
{
    if (t->count < 2 || t->len[1] > MCS_META_KEY_MAX) {
        return reply(req, req->line_len, mcs_reply_bad_format);
    }
    req->key_off = t->off[1];
    req->key_len = t->len[1];
    if (t->count > 2) {
        req->flags_off = t->off[2];
        req->flags_len = req->eol_off - t->off[2];
        while (req->flags_len > 0 && buf[req->flags_off + req->flags_len - 1] == ' ') {
            req->flags_len--;
        }
        if (t->len[2] == 1 && buf[t->off[2]] == 'b') {
            req->base64 = true;
            req->flags = mcs_meta_flag_bit('b');
            req->key_bin_len = (uint32_t)mcs_meta_base64_decode(buf + req->key_off, req->key_len, req->key_bin,
                                                                sizeof(req->key_bin));
            if (req->key_bin_len == 0) {
                return reply(req, req->line_len, mcs_reply_bad_format);
            }
        }
    }
    return MCS_META_OK;
}

/* The command of the first token: "m" and one of the letters of the list. */
static enum mcs_meta_cmd
find_cmd(const char *buf, const struct tokens *t)
{
    if (t->count == 0 || t->len[0] != 2) {
        return MCS_META_CMD_COUNT;
    }
    for (unsigned i = 0; i < MCS_META_CMD_COUNT; i++) {
        if (memcmp(buf + t->off[0], cmd_defs[i].name, 2) == 0) {
            return (enum mcs_meta_cmd)i;
        }
    }
    return MCS_META_CMD_COUNT;
}

/* Skips what is left of a rejected ms value. */
static enum mcs_meta_status
swallow(struct mcs_meta_parser *p, size_t len, struct mcs_meta_req *req)
{
    if (len == 0) {
        return MCS_META_MORE;
    }
    uint64_t n = len < p->swallow ? len : p->swallow;
    p->swallow -= n;
    return reply(req, (uint32_t)n, NULL);
}

enum mcs_meta_status
mcs_meta_parse(struct mcs_meta_parser *p, const char *buf, size_t len, uint32_t item_max,
               struct mcs_meta_req *req)
{
    memset(req, 0, offsetof(struct mcs_meta_req, key_bin));
    req->delta = 1;
    req->cmd = MCS_META_CMD_COUNT;
    if (p->swallow > 0) {
        return swallow(p, len, req);
    }
    /* A line whose '\n' is past MCS_META_LINE_MAX closes, however it arrives. */
    size_t scan = len < MCS_META_LINE_MAX + 1 ? len : MCS_META_LINE_MAX + 1;
    const char *nl = scan > 0 ? memchr(buf, '\n', scan) : NULL;
    if (nl == NULL) {
        if (len > MCS_META_LINE_MAX) {
            req->len = MCS_META_LINE_MAX + 1;
            return MCS_META_CLOSE;
        }
        return MCS_META_MORE;
    }
    req->line_len = (uint32_t)(nl - buf) + 1;
    req->eol_off = req->line_len - 1;
    if (req->eol_off > 0 && buf[req->eol_off - 1] == '\r') {
        req->eol_off--;
    }
    req->len = req->line_len;

    struct tokens t;
    tokenize(buf, req->eol_off, &t);
    req->cmd = find_cmd(buf, &t);
    if (req->cmd == MCS_META_CMD_COUNT) {
        return reply(req, req->line_len, mcs_reply_error);
    }
    /* memcached reads the line as a C string, so a NUL would end it there: such
     * a line is refused rather than framed differently from the server. */
    if (memchr(buf, '\0', req->eol_off) != NULL) {
        return reply(req, req->line_len, mcs_reply_bad_format);
    }
    switch (req->cmd) {
    case MCS_META_MS:
        return parse_set(p, buf, len, item_max, &t, req);
    case MCS_META_MN:
        return MCS_META_OK;
    case MCS_META_ME:
        return parse_debug(buf, &t, req);
    default:
        return parse_keyed(p, buf, &t, req);
    }
}

const char *
mcs_meta_route_key(const struct mcs_meta_req *req, const char *buf, uint32_t *len)
{
    if (req->base64) {
        *len = req->key_bin_len;
        return (const char *)req->key_bin;
    }
    *len = req->key_len;
    return buf + req->key_off;
}

/* Rewriting and building requests ----------------------------------------- */

/* Whether a flag token goes; me has no flags to drop (it only reads a "b"
 * right after the key, which dropping a token before it could create). */
static bool
dropped(const struct mcs_meta_req *req, const char *drop, char letter)
{
    return req->cmd != MCS_META_ME && drop != NULL && letter != '\0' && strchr(drop, letter) != NULL;
}

int
mcs_meta_rewrite(const char *buf, const struct mcs_meta_req *req, const char *drop, const char *add,
                 struct mcs_buf *out)
{
    /* head: command, key, datalen (without the spaces after them); tail: the
     * bytes after the last flag, terminator and data block, kept as they are.
     * A token ending in '\r' must not come to stand before a bare '\n'. */
    uint32_t head = req->flags_len > 0 ? req->flags_off : req->eol_off;
    while (head > 0 && buf[head - 1] == ' ') {
        head--;
    }
    uint32_t flags_end = req->flags_off + req->flags_len;
    uint32_t tail = req->flags_len > 0 ? flags_end : head;
    size_t add_len = add != NULL ? strlen(add) : 0;
    size_t need = head + (add_len > 0 ? add_len + 1 : 0) + (req->len - tail);
    char last = head > 0 ? buf[head - 1] : '\0';
    uint32_t pos = req->flags_off, off, tlen;
    while (mcs_ascii_next_token(buf, &pos, flags_end, &off, &tlen)) {
        if (!dropped(req, drop, buf[off])) {
            need += tlen + 1;
            last = buf[off + tlen - 1];
        }
    }
    last = add_len > 0 ? add[add_len - 1] : last;
    bool pad = last == '\r' && buf[tail] == '\n';    /* else memcached would drop that '\r' */
    need += pad;
    if (mcs_buf_reserve(out, need) != 0) {
        return -1;
    }
    char *w = out->data + out->end;
    memcpy(w, buf, head);
    w += head;
    pos = req->flags_off;
    while (mcs_ascii_next_token(buf, &pos, flags_end, &off, &tlen)) {
        if (!dropped(req, drop, buf[off])) {
            *w++ = ' ';
            memcpy(w, buf + off, tlen);
            w += tlen;
        }
    }
    if (add_len > 0) {
        *w++ = ' ';
        memcpy(w, add, add_len);
        w += add_len;
    }
    if (pad) {
        *w++ = ' ';
    }
    memcpy(w, buf + tail, req->len - tail);
    out->end += need;
    return 0;
}

/* True when s[0, len) holds none of the bytes in bad (NUL included). */
static bool
clean(const char *s, size_t len, const char *bad)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0' || strchr(bad, s[i]) != NULL) {
            return false;
        }
    }
    return true;
}

int
mcs_meta_build(struct mcs_buf *out, enum mcs_meta_cmd cmd, const char *key, size_t key_len, bool binary_key,
               const char *flags, const char *data, size_t data_len)
{
    if ((unsigned)cmd >= MCS_META_CMD_COUNT) {
        return -1;
    }
    if (cmd == MCS_META_MN) {
        return mcs_buf_append(out, "mn\r\n", 4);
    }
    char wire[MCS_META_KEY_MAX];
    size_t wire_len = key_len;
    if (binary_key) {
        wire_len = mcs_meta_base64_encode((const uint8_t *)key, key_len, wire, sizeof(wire));
        key = wire;
    }
    size_t flags_len = flags != NULL ? strlen(flags) : 0;
    if (wire_len == 0 || wire_len > MCS_META_KEY_MAX || !clean(key, wire_len, " \n")
        || !clean(flags != NULL ? flags : "", flags_len, "\r\n")
        || (cmd == MCS_META_MS && data_len > (size_t)INT32_MAX - 2)) {
        return -1;
    }
    char num[16] = "";
    size_t num_len = cmd == MCS_META_MS ? (size_t)snprintf(num, sizeof(num), " %zu", data_len) : 0;
    size_t need = 2 + 1 + wire_len + num_len + (flags_len > 0 ? flags_len + 1 : 0) + (binary_key ? 2 : 0) + 2
                  + (cmd == MCS_META_MS ? data_len + 2 : 0);
    if (mcs_buf_reserve(out, need) != 0) {
        return -1;
    }
    char *w = out->data + out->end;
    memcpy(w, cmd_defs[cmd].name, 2);
    w[2] = ' ';
    w += 3;
    memcpy(w, key, wire_len);
    w += wire_len;
    memcpy(w, num, num_len);
    w += num_len;
    if (binary_key) {
        memcpy(w, " b", 2);     /* me reads b only right after the key */
        w += 2;
    }
    if (flags_len > 0) {
        *w++ = ' ';
        memcpy(w, flags, flags_len);
        w += flags_len;
    }
    memcpy(w, "\r\n", 2);
    w += 2;
    if (cmd == MCS_META_MS) {
        if (data_len > 0) {
            memcpy(w, data, data_len);
        }
        memcpy(w + data_len, "\r\n", 2);
    }
    out->end += need;
    return 0;
}

/* Server replies ------------------------------------------------------------ */

static const char *const resp_names[MCS_META_RESP_COUNT] = {
#define MCS_META_RESP_NAME(id, text) text,
    MCS_META_RESP_LIST(MCS_META_RESP_NAME)
#undef MCS_META_RESP_NAME
};

const char *
mcs_meta_resp_name(enum mcs_meta_resp_code code)
{
    return (unsigned)code < MCS_META_RESP_COUNT ? resp_names[code] : "?";
}

/* Strict unsigned decimal (what memcached writes): 1-20 digits, at most max. */
static bool
resp_number(const char *s, uint32_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20) {
        return false;
    }
    uint64_t v = 0;
    for (uint32_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        unsigned d = (unsigned)(s[i] - '0');
        if (d > max || v > (max - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Reads one return flag; false when a number the engine uses is malformed. */
static bool
resp_flag(const char *buf, uint32_t off, uint32_t len, struct mcs_meta_resp *r)
{
    char c = buf[off];
    const char *arg = buf + off + 1;
    uint32_t arg_len = len - 1;
    uint64_t v = 0;
    r->flags |= mcs_meta_flag_bit(c);
    switch (c) {
    case 'f':
        if (!resp_number(arg, arg_len, UINT32_MAX, &v)) {
            return false;
        }
        r->client_flags = (uint32_t)v;
        break;
    case 't':
        if (arg_len == 2 && arg[0] == '-' && arg[1] == '1') {
            r->ttl = -1;
        } else if (resp_number(arg, arg_len, UINT32_MAX, &v)) {
            r->ttl = (int64_t)v;
        } else {
            return false;
        }
        break;
    case 'c':
        if (!resp_number(arg, arg_len, UINT64_MAX, &r->cas)) {
            return false;
        }
        break;
    case 's':
        if (!resp_number(arg, arg_len, UINT32_MAX, &v)) {
            return false;
        }
        r->size = (uint32_t)v;
        break;
    case 'k':
        r->key_off = off + 1;
        r->key_len = arg_len;
        break;
    case 'O':
        r->opaque_off = off + 1;
        r->opaque_len = arg_len;
        break;
    default:
        break;  /* b W X Z h l and flags of newer servers: the bit only */
    }
    return true;
}

/* The reply code of a line: two-letter codes stand alone or before a space;
 * error codes start the line. */
static enum mcs_meta_resp_code
resp_code(const char *buf, uint32_t eol)
{
    for (unsigned i = 0; i < MCS_META_RESP_COUNT; i++) {
        size_t n = strlen(resp_names[i]);
        bool error = i >= MCS_META_RESP_ERROR;
        if (eol >= n && memcmp(buf, resp_names[i], n) == 0 && (error || eol == n || buf[n] == ' ')) {
            return (enum mcs_meta_resp_code)i;
        }
    }
    return MCS_META_RESP_COUNT;
}

enum mcs_resp_status
mcs_meta_resp_parse(const char *buf, size_t len, uint32_t value_max, struct mcs_meta_resp *r)
{
    memset(r, 0, sizeof(*r));
    size_t scan = len < MCS_META_RESP_LINE_MAX ? len : MCS_META_RESP_LINE_MAX;
    const char *nl = scan > 0 ? memchr(buf, '\n', scan) : NULL;
    if (nl == NULL) {
        return len >= MCS_META_RESP_LINE_MAX ? MCS_RESP_BAD : MCS_RESP_MORE;
    }
    r->line_len = (uint32_t)(nl - buf) + 1;
    r->len = r->line_len;
    uint32_t eol = r->line_len - 1;
    if (eol > 0 && buf[eol - 1] == '\r') {
        eol--;
    }
    r->code = resp_code(buf, eol);
    if (r->code == MCS_META_RESP_COUNT) {
        return MCS_RESP_BAD;
    }
    if (r->code >= MCS_META_RESP_ERROR) {
        r->error = true;
        return MCS_RESP_OK;
    }
    uint32_t pos = 2, off, tlen;
    if (r->code == MCS_META_RESP_VA) {
        uint64_t size;
        if (!mcs_ascii_next_token(buf, &pos, eol, &off, &tlen) || !resp_number(buf + off, tlen, value_max, &size)) {
            return MCS_RESP_BAD;
        }
        r->data_off = r->line_len;
        r->data_len = (uint32_t)size;
    } else if (r->code == MCS_META_RESP_ME) {
        if (!mcs_ascii_next_token(buf, &pos, eol, &r->key_off, &r->key_len)) {
            return MCS_RESP_BAD;
        }
    }
    while (mcs_ascii_next_token(buf, &pos, eol, &off, &tlen)) {
        if (r->flags_len == 0) {
            r->flags_off = off;
        }
        r->flags_len = off + tlen - r->flags_off;
        if (r->code != MCS_META_RESP_ME && !resp_flag(buf, off, tlen, r)) {
            return MCS_RESP_BAD;
        }
    }
    if (r->code == MCS_META_RESP_VA) {
        uint64_t total = (uint64_t)r->line_len + r->data_len + 2;
        if (total > len) {
            return MCS_RESP_MORE;
        }
        if (buf[total - 2] != '\r' || buf[total - 1] != '\n') {
            return MCS_RESP_BAD;
        }
        r->len = (uint32_t)total;
    }
    return MCS_RESP_OK;
}

bool
mcs_meta_quiet_suppresses(enum mcs_meta_cmd cmd, enum mcs_meta_resp_code code)
{
    switch (cmd) {
    case MCS_META_MG:
        return code == MCS_META_RESP_EN;
    case MCS_META_MS:
    case MCS_META_MD:
        return code == MCS_META_RESP_HD;
    case MCS_META_MA:
        return code == MCS_META_RESP_HD || code == MCS_META_RESP_VA;
    default:
        return false;
    }
}

bool
mcs_meta_reply_fits(enum mcs_meta_cmd cmd, enum mcs_meta_resp_code code)
{
    if (code == MCS_META_RESP_ERROR || code == MCS_META_RESP_CLIENT_ERROR || code == MCS_META_RESP_SERVER_ERROR) {
        return true;
    }
    switch (cmd) {
    case MCS_META_MG:
        return code == MCS_META_RESP_VA || code == MCS_META_RESP_HD || code == MCS_META_RESP_EN;
    case MCS_META_MS:
        return code == MCS_META_RESP_HD || code == MCS_META_RESP_NS || code == MCS_META_RESP_EX
               || code == MCS_META_RESP_NF;
    case MCS_META_MD:
        return code == MCS_META_RESP_HD || code == MCS_META_RESP_NF || code == MCS_META_RESP_EX;
    case MCS_META_MA:
        return code == MCS_META_RESP_HD || code == MCS_META_RESP_VA || code == MCS_META_RESP_NF
               || code == MCS_META_RESP_NS || code == MCS_META_RESP_EX;
    case MCS_META_ME:
        return code == MCS_META_RESP_ME || code == MCS_META_RESP_EN;
    default:
        return false;
    }
}
