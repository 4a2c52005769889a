/*
 * preload/core/meta.h: memcached meta protocol (mg ms md ma mn me), both
 * directions, sans-IO.
 *
 * Requests (client -> shim): mcs_meta_parse() looks at the unread bytes of a
 * client connection that start with a meta command and reports one of
 *   MCS_META_OK     a whole request (line and, for ms, its data block) is at
 *                   buf[0, req.len): route it;
 *   MCS_META_MORE   the request is incomplete: read more bytes and call again;
 *   MCS_META_REPLY  the request is invalid or must be skipped: consume req.len
 *                   bytes and send req.reply (NULL: send nothing), exactly as
 *                   memcached 1.6.18 answers it (meta errors are sent even
 *                   with the q flag);
 *   MCS_META_CLOSE  the client broke the line limit: close without a word.
 * Spans are offsets into buf (the buffer may move between calls). Nothing is
 * allocated; the parser keeps only how many bytes of a rejected ms value are
 * still to be skipped.
 *
 * Responses (server -> shim): mcs_meta_resp_parse() splits a server's reply
 * stream into items (HD, VA + data, EN, NF, NS, EX, MN, ME and error lines)
 * and reads the return flags the engine needs (f t c s k O b W X Z).
 *
 * Helpers: the flag bit of a letter, the routing key (base64-decoded for b),
 * which replies q hides, a copy of a request with some flags dropped or added
 * (the engine forwards without q so every request gets a reply it can match in
 * FIFO order, and applies quiet itself), and a request built from pieces.
 *
 * Limits (memcached 1.6.18, checked against a real server):
 *   keys up to MCS_META_KEY_MAX bytes as written (with b: the base64 text, so
 *   a decoded key has at most 186 bytes); at most MCS_META_TOKENS_MAX tokens
 *   (command, key, datalen, flags); O tokens up to MCS_META_OPAQUE_MAX bytes
 *   with the letter; a line's '\n' at most MCS_META_LINE_MAX bytes in
 *   (memcached closes a longer line when it arrives in pieces; the shim closes
 *   it always, so the result does not depend on how the bytes were cut).
 *
 * Flags: those memcached 1.6.18 accepts (b c f h k l q s t u v O P L N R T F
 * C M J D I, any of them with any command, as it does), and, when the parser
 * is told every server is newer, E (set the CAS value) and x (md: drop the
 * value only).
 */
#ifndef MCS_META_H
#define MCS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "preload/core/ascii.h"
#include "preload/core/buf.h"

#define MCS_META_KEY_MAX        250
#define MCS_META_LINE_MAX       2048
#define MCS_META_TOKENS_MAX     19
#define MCS_META_OPAQUE_MAX     32
#define MCS_META_RESP_LINE_MAX  8192

/* One list of commands: id, name, whether it can change data, route, whether
 * a data block follows the line. mg changes data only with T, N or E. */
#define MCS_META_CMD_LIST(X)                          \
    X(MG, "mg", true,  MCS_ROUTE_KEY,   false)        \
    X(MS, "ms", true,  MCS_ROUTE_KEY,   true)         \
    X(MD, "md", true,  MCS_ROUTE_KEY,   false)        \
    X(MA, "ma", true,  MCS_ROUTE_KEY,   false)        \
    X(MN, "mn", false, MCS_ROUTE_LOCAL, false)        \
    X(ME, "me", false, MCS_ROUTE_KEY,   false)

enum mcs_meta_cmd {
#define MCS_META_CMD_ENUM(id, name, writes, route, data) MCS_META_##id,
    MCS_META_CMD_LIST(MCS_META_CMD_ENUM)
#undef MCS_META_CMD_ENUM
    MCS_META_CMD_COUNT
};

/* Name ("mg"...), route, write ability and data block of a command; out of
 * range: "?", MCS_ROUTE_LOCAL, false, false. */
const char *mcs_meta_cmd_name(enum mcs_meta_cmd cmd);
enum mcs_cmd_route mcs_meta_cmd_route(enum mcs_meta_cmd cmd);
bool mcs_meta_cmd_can_write(enum mcs_meta_cmd cmd);
bool mcs_meta_cmd_has_data(enum mcs_meta_cmd cmd);

/* What a flag's token carries after the letter. Numbers are read as memcached
 * reads them (strtol / strtoul / strtoull, then truncated to the field). */
enum mcs_meta_arg {
    MCS_META_ARG_NONE,      /* nothing (anything after the letter is ignored) */
    MCS_META_ARG_TOKEN,     /* any bytes */
    MCS_META_ARG_I32,       /* a TTL */
    MCS_META_ARG_U32,       /* client flags */
    MCS_META_ARG_U64,       /* CAS, delta, initial value */
    MCS_META_ARG_MODE       /* exactly one character */
};

/* Replies for bad flag tokens. */
#define MCS_META_BAD_TOKEN   "CLIENT_ERROR bad token in command line format\r\n"

#define MCS_META_BAD_INITIAL "CLIENT_ERROR invalid numeric initial value\r\n"
#define MCS_META_BAD_DELTA   "CLIENT_ERROR invalid numeric delta value\r\n"
#define MCS_META_BAD_MODE    "CLIENT_ERROR incorrect length for M token\r\n"

/* Request flags: letter, what its token carries, the reply when that token is
 * bad (NULL: memcached keeps the previous error text, by default "bad command
 * line format"), and whether only servers newer than 1.6.18 know it (accepted
 * when the parser's newer_flags is set, else "invalid flag" as 1.6.18 says).
 * md and ma answer every flag error "invalid or duplicate flag". */
#define MCS_META_FLAG_LIST(X)                                                                       \
    X('b', MCS_META_ARG_NONE,  NULL,                  false) /* key is base64 */                    \
    X('c', MCS_META_ARG_NONE,  NULL,                  false) /* return CAS */                       \
    X('f', MCS_META_ARG_NONE,  NULL,                  false) /* return client flags */              \
    X('h', MCS_META_ARG_NONE,  NULL,                  false) /* return hit before */                \
    X('k', MCS_META_ARG_NONE,  NULL,                  false) /* return key */                       \
    X('l', MCS_META_ARG_NONE,  NULL,                  false) /* return last access */               \
    X('q', MCS_META_ARG_NONE,  NULL,                  false) /* quiet: hide the nominal reply */    \
    X('s', MCS_META_ARG_NONE,  NULL,                  false) /* return size */                      \
    X('t', MCS_META_ARG_NONE,  NULL,                  false) /* return TTL (-1: none) */            \
    X('u', MCS_META_ARG_NONE,  NULL,                  false) /* no LRU bump */                      \
    X('v', MCS_META_ARG_NONE,  NULL,                  false) /* return value */                     \
    X('x', MCS_META_ARG_NONE,  NULL,                  true)  /* md: drop the value only */          \
    X('I', MCS_META_ARG_NONE,  NULL,                  false) /* invalidate / mark stale */          \
    X('O', MCS_META_ARG_TOKEN, NULL,                  false) /* opaque, echoed back */              \
    X('P', MCS_META_ARG_TOKEN, NULL,                  false) /* proxy hint, ignored */              \
    X('L', MCS_META_ARG_TOKEN, NULL,                  false) /* proxy hint, ignored */              \
    X('N', MCS_META_ARG_I32,   MCS_META_BAD_TOKEN,    false) /* vivify on miss with this TTL */     \
    X('R', MCS_META_ARG_I32,   MCS_META_BAD_TOKEN,    false) /* win recache below this TTL */       \
    X('T', MCS_META_ARG_I32,   MCS_META_BAD_TOKEN,    false) /* set the TTL */                      \
    X('F', MCS_META_ARG_U32,   NULL,                  false) /* client flags */                     \
    X('C', MCS_META_ARG_U64,   MCS_META_BAD_TOKEN,    false) /* compare CAS */                      \
    X('E', MCS_META_ARG_U64,   MCS_META_BAD_TOKEN,    true)  /* set the CAS value */                \
    X('J', MCS_META_ARG_U64,   MCS_META_BAD_INITIAL,  false) /* initial value (ma) */               \
    X('D', MCS_META_ARG_U64,   MCS_META_BAD_DELTA,    false) /* delta (ma) */                       \
    X('M', MCS_META_ARG_MODE,  MCS_META_BAD_MODE,     false) /* mode (ms, ma) */

/* The bit of a flag letter in a flag set ('A'-'Z' then 'a'-'z'); 0 for any
 * other character. */
uint64_t mcs_meta_flag_bit(char letter);

enum mcs_meta_status {
    MCS_META_OK,
    MCS_META_MORE,
    MCS_META_REPLY,
    MCS_META_CLOSE
};

/* Per-connection parser state; zero-initialise (the owner may then set
 * newer_flags, when every server is newer than 1.6.18). */
struct mcs_meta_parser {
    uint64_t swallow;       /* bytes of a rejected ms value still to skip */
    bool     newer_flags;   /* also accept the flags marked newer (E, x) */
};

/* One parsed request. Offsets are relative to the buffer given to parse.
 * Created by the caller (usually on its stack) and filled by mcs_meta_parse. */
struct mcs_meta_req {
    enum mcs_meta_cmd cmd;
    uint32_t len;           /* whole request: line + data block (+ its \r\n) */
    uint32_t line_len;      /* line including its terminator */
    uint32_t eol_off;       /* offset of the terminator (\r\n or \n) */
    uint32_t key_off;       /* key as written (the base64 text with b); mn: none */
    uint32_t key_len;
    uint32_t flags_off;     /* the tokens after the key (ms: after datalen) */
    uint32_t flags_len;     /* 0: no flags */
    uint32_t data_off;      /* ms: the value, without its \r\n */
    uint32_t data_len;
    uint32_t opaque_off;    /* O: the bytes after the letter */
    uint32_t opaque_len;
    uint64_t flags;         /* mcs_meta_flag_bit() of every flag present */
    int32_t  ttl;           /* T */
    int32_t  vivify_ttl;    /* N */
    int32_t  recache_ttl;   /* R */
    uint32_t client_flags;  /* F */
    uint64_t compare_cas;   /* C */
    uint64_t set_cas;       /* E */
    uint64_t delta;         /* D; 1 when absent */
    uint64_t initial;       /* J */
    char     mode;          /* M: the mode character; 0 when absent */
    bool     base64;        /* b: key_bin holds the decoded key */
    bool     quiet;         /* q */
    bool     write;         /* changes data: ms, md, ma; mg with T, N or E */
    bool     drop_key;      /* REPLY to an ms too large: memcached deletes the key's old value
                               (mcs_meta_route_key), so the caller must too */
    const char *reply;      /* MCS_META_REPLY: what to answer (NULL: nothing) */
    uint32_t key_bin_len;   /* b: the decoded key (at most 186 bytes) */
    uint8_t  key_bin[MCS_META_KEY_MAX];
};

/* Parses the next request in buf[0, len), which should start with a meta
 * command (anything else is answered "ERROR"). item_max is the largest ms
 * value the shim forwards (larger ones are answered "SERVER_ERROR object too
 * large for cache" and skipped, as memcached does). See the file comment for
 * the results. */
enum mcs_meta_status mcs_meta_parse(struct mcs_meta_parser *p, const char *buf, size_t len,
                                    uint32_t item_max, struct mcs_meta_req *req);

/* True when the parsed request carries the flag letter. */
bool mcs_meta_has_flag(const struct mcs_meta_req *req, char letter);

/* The key to route by: the decoded key for b, else the key as written in buf.
 * Sets *len; mn has no key (length 0). */
const char *mcs_meta_route_key(const struct mcs_meta_req *req, const char *buf, uint32_t *len);

/* Appends to out a copy of the parsed request in buf without the flag tokens
 * whose letter is in drop (NULL: none), with add (NULL or "": nothing; one or
 * more space-separated flag tokens) after the remaining flags, keeping the
 * terminator and, for ms, the data block (me keeps all its tokens: it has no
 * flags but a "b" right after the key). The caller keeps the result valid
 * (a flag in add should be in drop too, and at most MCS_META_TOKENS_MAX
 * tokens). Returns 0, or -1 when memory runs out (out unchanged). */
int mcs_meta_rewrite(const char *buf, const struct mcs_meta_req *req, const char *drop, const char *add,
                     struct mcs_buf *out);

/* Appends to out the request "<cmd> <key>[ <data_len>][ b][ <flags>]\r\n"
 * (+ data + "\r\n" for ms). binary_key: key holds raw bytes, sent base64 with
 * the b flag; else the key is sent as is and must have no ' ', '\n' or NUL.
 * mn ignores key and flags; data is used by ms only. Returns 0, or -1 when the
 * key does not fit (empty, over MCS_META_KEY_MAX on the wire), a piece holds a
 * forbidden byte, cmd is unknown, or memory runs out (out unchanged). */
int mcs_meta_build(struct mcs_buf *out, enum mcs_meta_cmd cmd, const char *key, size_t key_len, bool binary_key,
                   const char *flags, const char *data, size_t data_len);

/* Base64 as memcached reads keys: characters outside the alphabet are skipped,
 * '=' counts as a zero digit and ends the input after its group. Writes at most
 * cap bytes to out and returns their count; 0 when the text is not base64 or
 * does not fit. */
size_t mcs_meta_base64_decode(const char *src, size_t len, uint8_t *out, size_t cap);

/* Standard padded base64 of src into out (no NUL). Returns the length, or 0
 * when len is 0 or out (cap bytes) is too small. */
size_t mcs_meta_base64_encode(const uint8_t *src, size_t len, char *out, size_t cap);

/* Server reply items: code and text. The error codes match a line that starts
 * with the text. */
#define MCS_META_RESP_LIST(X)                     \
    X(HD,           "HD")                         \
    X(VA,           "VA")                         \
    X(EN,           "EN")                         \
    X(NF,           "NF")                         \
    X(NS,           "NS")                         \
    X(EX,           "EX")                         \
    X(MN,           "MN")                         \
    X(ME,           "ME")                         \
    X(ERROR,        "ERROR")                      \
    X(CLIENT_ERROR, "CLIENT_ERROR")               \
    X(SERVER_ERROR, "SERVER_ERROR")

enum mcs_meta_resp_code {
#define MCS_META_RESP_ENUM(id, text) MCS_META_RESP_##id,
    MCS_META_RESP_LIST(MCS_META_RESP_ENUM)
#undef MCS_META_RESP_ENUM
    MCS_META_RESP_COUNT
};

/* Text of a reply code ("?" out of range). */
const char *mcs_meta_resp_name(enum mcs_meta_resp_code code);

/* One server reply item. Offsets are relative to the buffer given. */
struct mcs_meta_resp {
    enum mcs_meta_resp_code code;
    uint32_t len;           /* whole item including any data block */
    uint32_t line_len;      /* line including its terminator */
    uint32_t data_off;      /* VA: the value, without its \r\n */
    uint32_t data_len;
    uint32_t flags_off;     /* return flags (VA: after the size; ME: the k=v list) */
    uint32_t flags_len;     /* 0: none */
    uint64_t flags;         /* mcs_meta_flag_bit() of every return flag present */
    uint32_t client_flags;  /* f */
    int64_t  ttl;           /* t: remaining seconds, -1 = no expiry */
    uint64_t cas;           /* c */
    uint32_t size;          /* s */
    uint32_t key_off;       /* k (ME: the key token) */
    uint32_t key_len;
    uint32_t opaque_off;    /* O: the bytes after the letter */
    uint32_t opaque_len;
    bool     error;         /* ERROR / CLIENT_ERROR / SERVER_ERROR */
};

/* Parses the next reply item in buf[0, len); value_max bounds VA sizes.
 * MCS_RESP_BAD: not a meta reply (unknown code, bad VA size or f t c s
 * number, data not ending "\r\n", no newline in MCS_META_RESP_LINE_MAX). */
enum mcs_resp_status mcs_meta_resp_parse(const char *buf, size_t len, uint32_t value_max,
                                         struct mcs_meta_resp *r);

/* True when memcached hides this reply to a request with q: mg EN; ms HD;
 * md HD; ma HD and VA. Errors and every other reply are always sent. (A 1.6.18
 * server still sends ma's reply when N created the item.) */
bool mcs_meta_quiet_suppresses(enum mcs_meta_cmd cmd, enum mcs_meta_resp_code code);

/* True if code is an answer memcached gives to cmd: mg VA/HD/EN; ms HD/NS/EX/NF;
 * md HD/NF/EX; ma HD/VA/NF/NS/EX; me ME/EN; every command an error line. */
bool mcs_meta_reply_fits(enum mcs_meta_cmd cmd, enum mcs_meta_resp_code code);

#endif
