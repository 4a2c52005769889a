/*
 * preload/core/ascii.h: memcached ASCII protocol, both directions, sans-IO.
 *
 * Requests (client -> shim): mcs_ascii_parse() looks at the unread bytes of a
 * client connection and reports one of
 *   MCS_ASCII_OK     a whole request (command line and, for storage commands,
 *                    its data block) is at buf[0, req.len): route it;
 *   MCS_ASCII_MORE   the request is incomplete: read more bytes and call again;
 *   MCS_ASCII_REPLY  the request is invalid or must be skipped: consume req.len
 *                    bytes and send req.reply (NULL: send nothing), exactly
 *                    as memcached 1.6 would answer it;
 *   MCS_ASCII_CLOSE  the client broke a hard limit: send req.reply, then close.
 * Spans in the request are offsets into buf (the buffer may move between
 * calls). Nothing is allocated; the parser keeps a few bytes of state between
 * calls (how far it has scanned, how many bytes of a rejected value to skip).
 *
 * Responses (server -> shim): mcs_ascii_resp_parse() splits a server's reply
 * stream into items: VALUE blocks, END, STAT lines and single status lines.
 *
 * Limits (docs/protocol.md): keys up to MCS_ASCII_KEY_MAX bytes; command lines
 * up to MCS_ASCII_LINE_MAX bytes, retrieval lines (many keys) up to
 * MCS_ASCII_GET_LINE_MAX; values up to the configured item size.
 */
#ifndef MCS_ASCII_H
#define MCS_ASCII_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCS_ASCII_KEY_MAX       250
#define MCS_ASCII_LINE_MAX      2048
#define MCS_ASCII_GET_LINE_MAX  (1024 * 1024)
#define MCS_ASCII_RESP_LINE_MAX 8192

/* How a command is routed. */
enum mcs_cmd_route {
    MCS_ROUTE_KEYS,     /* retrieval: every key to its server, replies merged */
    MCS_ROUTE_KEY,      /* one key: to its server */
    MCS_ROUTE_ANY,      /* no key, one answer: any live server */
    MCS_ROUTE_ALL,      /* broadcast to every server, one merged answer */
    MCS_ROUTE_LOCAL     /* answered by the shim itself */
};

/* One list of commands: id, name, route, whether it carries a data block. */
#define MCS_CMD_LIST(X)                                  \
    X(GET,       "get",       MCS_ROUTE_KEYS,  false)    \
    X(GETS,      "gets",      MCS_ROUTE_KEYS,  false)    \
    X(GAT,       "gat",       MCS_ROUTE_KEYS,  false)    \
    X(GATS,      "gats",      MCS_ROUTE_KEYS,  false)    \
    X(SET,       "set",       MCS_ROUTE_KEY,   true)     \
    X(ADD,       "add",       MCS_ROUTE_KEY,   true)     \
    X(REPLACE,   "replace",   MCS_ROUTE_KEY,   true)     \
    X(APPEND,    "append",    MCS_ROUTE_KEY,   true)     \
    X(PREPEND,   "prepend",   MCS_ROUTE_KEY,   true)     \
    X(CAS,       "cas",       MCS_ROUTE_KEY,   true)     \
    X(DELETE,    "delete",    MCS_ROUTE_KEY,   false)    \
    X(INCR,      "incr",      MCS_ROUTE_KEY,   false)    \
    X(DECR,      "decr",      MCS_ROUTE_KEY,   false)    \
    X(TOUCH,     "touch",     MCS_ROUTE_KEY,   false)    \
    X(VERSION,   "version",   MCS_ROUTE_ANY,   false)    \
    X(VERBOSITY, "verbosity", MCS_ROUTE_ALL,   false)    \
    X(FLUSH_ALL, "flush_all", MCS_ROUTE_ALL,   false)    \
    X(STATS,     "stats",     MCS_ROUTE_LOCAL, false)    \
    X(QUIT,      "quit",      MCS_ROUTE_LOCAL, false)

enum mcs_cmd {
#define MCS_CMD_ENUM(id, name, route, data) MCS_CMD_##id,
    MCS_CMD_LIST(MCS_CMD_ENUM)
#undef MCS_CMD_ENUM
    MCS_CMD_COUNT
};

/* memcached's replies shared by the text and meta parsers (meta.c). */
extern const char mcs_reply_error[];          /* "ERROR\r\n" */
extern const char mcs_reply_bad_format[];     /* "CLIENT_ERROR bad command line format\r\n" */
extern const char mcs_reply_bad_chunk[];      /* "CLIENT_ERROR bad data chunk\r\n" */
extern const char mcs_reply_too_large[];      /* "SERVER_ERROR object too large for cache\r\n" */

/* Name and route of a command; MCS_CMD_COUNT (a local answer) is "?" and MCS_ROUTE_LOCAL. */
const char *mcs_cmd_name(enum mcs_cmd cmd);
enum mcs_cmd_route mcs_cmd_route(enum mcs_cmd cmd);
/* True for storage commands (a data block follows the line). */
bool mcs_cmd_has_data(enum mcs_cmd cmd);

enum mcs_ascii_status {
    MCS_ASCII_OK,
    MCS_ASCII_MORE,
    MCS_ASCII_REPLY,
    MCS_ASCII_CLOSE
};

/* Per-connection parser state; zero-initialise. */
struct mcs_ascii_parser {
    uint64_t swallow;   /* bytes of a rejected value still to skip */
    size_t   scanned;   /* bytes already searched for the end of line */
};

/* One parsed request. Offsets are relative to the buffer given to parse. */
struct mcs_ascii_req {
    enum mcs_cmd cmd;
    uint32_t len;           /* whole request: line + data block (+ its \r\n) */
    uint32_t line_len;      /* command line including its terminator */
    uint32_t eol_off;       /* offset of the terminator (\r\n or \n) */
    uint32_t key_off;       /* first key */
    uint32_t key_len;
    uint32_t keys_end;      /* KEYS route: end of the key list */
    uint32_t nkeys;
    uint32_t data_off;      /* data block (value bytes, without \r\n) */
    uint32_t data_len;
    uint32_t noreply_off;   /* span " noreply" to drop when forwarding (len 0: none) */
    uint32_t noreply_len;
    uint32_t args_off;      /* bytes after the command name (stats args, gat exptime) */
    uint32_t args_len;
    bool     noreply;
    bool     drop_key;      /* REPLY to a set too large: memcached deletes the key's old value
                               (key_off/key_len), so the caller must too */
    const char *reply;      /* MCS_ASCII_REPLY / CLOSE: what to answer (NULL: nothing) */
};

/* Parses the next request in buf[0, len). item_max is the largest value the
 * shim forwards (larger ones are answered "SERVER_ERROR object too large for
 * cache" and skipped, as memcached does). See the file comment for results. */
enum mcs_ascii_status mcs_ascii_parse(struct mcs_ascii_parser *p, const char *buf, size_t len,
                                      uint32_t item_max, struct mcs_ascii_req *req);

/* Iterates the space-separated tokens in buf[*pos, end): returns false when
 * there are no more, else sets *off and *tlen and advances *pos. */
bool mcs_ascii_next_token(const char *buf, uint32_t *pos, uint32_t end, uint32_t *off, uint32_t *tlen);

/* Server reply items. */
enum mcs_resp_kind {
    MCS_RESP_VALUE,     /* VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n */
    MCS_RESP_END,       /* END\r\n */
    MCS_RESP_STAT,      /* STAT ...\r\n */
    MCS_RESP_LINE       /* any other single line (STORED, 42, VERSION x, ...) */
};

enum mcs_resp_status {
    MCS_RESP_OK,
    MCS_RESP_MORE,
    MCS_RESP_BAD        /* the server sent something that is not memcached */
};

struct mcs_ascii_resp {
    enum mcs_resp_kind kind;
    uint32_t len;       /* whole item including any data block */
    uint32_t key_off;   /* VALUE: the key */
    uint32_t key_len;
    bool     error;     /* LINE: ERROR / CLIENT_ERROR / SERVER_ERROR */
};

/* Parses the next reply item in buf[0, len); value_max bounds VALUE sizes.
 * A line not ended by \r\n, or holding a NUL, is MCS_RESP_BAD: memcached never
 * sends one. */
enum mcs_resp_status mcs_ascii_resp_parse(const char *buf, size_t len, uint32_t value_max,
                                          struct mcs_ascii_resp *r);

/* True if line[0, len) (a whole reply line with its \r\n) is an answer memcached
 * gives to cmd: its status words (STORED, NOT_STORED, EXISTS, NOT_FOUND for storage;
 * DELETED/NOT_FOUND; a decimal number or NOT_FOUND for incr/decr; TOUCHED/NOT_FOUND;
 * VERSION x; OK for flush_all and verbosity) or an error line (ERROR, CLIENT_ERROR x,
 * SERVER_ERROR x). Anything else from a server is a protocol failure of that server. */
bool mcs_ascii_reply_fits(enum mcs_cmd cmd, const char *line, uint32_t len);

#endif
