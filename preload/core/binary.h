/*
 * preload/core/binary.h: memcached BINARY protocol, both directions, sans-IO.
 *
 * Every packet is a 24-byte header (magic, opcode, key length, extras length,
 * data type, vbucket/status, body length, opaque, CAS; numbers big-endian)
 * followed by a body of extras, key and value, in that order.
 *
 * Requests (client -> shim): mcs_bin_parse() looks at the unread bytes of a
 * client connection and reports one of
 *   MCS_BIN_OK     a whole request is at buf[0, req.len): route it;
 *   MCS_BIN_MORE   the request is incomplete: read more bytes and call again;
 *   MCS_BIN_REPLY  consume req.len bytes; if req.status is not 0, answer with
 *                  an error packet (mcs_bin_put_error with req.opcode, the
 *                  status and req.opaque). Status 0 means the bytes are the
 *                  rest of a rejected body being skipped: send nothing;
 *   MCS_BIN_CLOSE  memcached would close the connection: send the error packet
 *                  for req.status unless it is 0 (bad magic: nothing), then
 *                  close.
 * The checks and answers are those of memcached 1.6.18 (proto_bin.c), checked
 * over a socket against the real server (tests/unit/test_binary.c):
 *   - magic other than 0x80: close without a word;
 *   - key length > body length, or key + extras > body length: status 0x0081
 *     (unknown command), then close;
 *   - key longer than 250 bytes: 0x0004 (invalid arguments), then close;
 *   - extras, key or value not as the opcode requires (MCS_BIN_OP_LIST):
 *     0x0004, then close;
 *   - unknown opcode: 0x0081, connection kept. memcached then skips the body
 *     length counted from the end of the key, so it also eats extras + key
 *     bytes of what follows; the parser does the same. When the body length
 *     is 2^31 or more memcached skips nothing (the body is parsed as the next
 *     packets); so does the parser;
 *   - verbosity (0x1b) is such an unknown opcode in 1.6.18 (it is not in its
 *     dispatch table, whatever older documents say); SASL opcodes are checked
 *     and then answered 0x0081 with the value skipped, as a server without SASL;
 *   - a value larger than item_max: 0x0003 (too large), the value is skipped
 *     (REPLY with status 0 for the rest), connection kept;
 *   - touch, gat* and stat: memcached reads the header, extras and key only
 *     and parses whatever the body length claims beyond them as the next
 *     packet. The parser does the same, so req.len can be less than
 *     MCS_BIN_HEADER_LEN + req.body_len: such a request must be forwarded
 *     rebuilt (mcs_bin_put_request), never as the client's bytes.
 * Every decision needs the 24-byte header only; memcached waits for the
 * extras and key too before it answers an invalid packet, so the shim may
 * answer earlier than memcached would. Not determined: a set whose value is
 * 2^31 bytes or more (memcached 1.6.18 answers nothing and hangs in the
 * probes); the parser answers 0x0003 and skips it.
 * Which opcode a connection speaks (first byte 0x80 or text) is the caller's
 * concern: memcached treats a connection whose first byte is not 0x80 as text.
 *
 * Spans are offsets into buf (the buffer may move between calls). Nothing is
 * allocated; the parser keeps only how many bytes of a rejected body are left
 * to skip. The largest request the parser waits for whole is
 * MCS_BIN_PACKET_MAX(item_max) bytes.
 *
 * Responses (server -> shim): mcs_bin_resp_parse() splits a server's reply
 * stream into packets. Builders write response headers, error responses,
 * whole responses and requests into a struct mcs_buf.
 */
#ifndef MCS_BINARY_H
#define MCS_BINARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "preload/core/ascii.h"
#include "preload/core/buf.h"

#define MCS_BIN_HEADER_LEN  24
#define MCS_BIN_MAGIC_REQ   0x80
#define MCS_BIN_MAGIC_RES   0x81
#define MCS_BIN_KEY_MAX     250     /* memcached's KEY_MAX_LENGTH */
#define MCS_BIN_EXTRAS_MAX  20      /* the largest extras a served request carries (incr/decr) */

/* The most bytes mcs_bin_parse() can need before it answers anything but MORE. */
#define MCS_BIN_PACKET_MAX(item_max) \
    ((uint64_t)MCS_BIN_HEADER_LEN + MCS_BIN_EXTRAS_MAX + MCS_BIN_KEY_MAX + (uint64_t)(item_max))

/* What memcached requires of a request's key. */
enum mcs_bin_key_rule {
    MCS_BIN_KEY_NONE,       /* key length 0 */
    MCS_BIN_KEY_NEED,       /* key length > 0 */
    MCS_BIN_KEY_ANY
};

/* What memcached does with the body after extras and key. */
enum mcs_bin_value_rule {
    MCS_BIN_VALUE_NONE,     /* body length must be extras + key exactly */
    MCS_BIN_VALUE_ANY,      /* the rest of the body is the value */
    MCS_BIN_VALUE_UNREAD    /* not checked and not read: bytes past the key are the next packet */
};

/* How memcached 1.6.18 (built without SASL) treats a listed opcode. */
enum mcs_bin_handling {
    MCS_BIN_SERVE,          /* checked, then served */
    MCS_BIN_REFUSE,         /* checked, then 0x0081 with the value skipped (SASL) */
    MCS_BIN_UNKNOWN         /* not dispatched: answered as an unknown opcode */
};

/*
 * One list of opcodes: id, code, name, route, non-quiet id, quiet, extras
 * length (or either of two lengths), key rule, value rule, handling.
 */
#define MCS_BIN_OP_LIST(X)                                                                                      \
    X(GET,        0x00, "get",        MCS_ROUTE_KEY,   GET,       false, 0,  0, KEY_NEED, VALUE_NONE,   SERVE)   \
    X(SET,        0x01, "set",        MCS_ROUTE_KEY,   SET,       false, 8,  8, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(ADD,        0x02, "add",        MCS_ROUTE_KEY,   ADD,       false, 8,  8, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(REPLACE,    0x03, "replace",    MCS_ROUTE_KEY,   REPLACE,   false, 8,  8, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(DELETE,     0x04, "delete",     MCS_ROUTE_KEY,   DELETE,    false, 0,  0, KEY_NEED, VALUE_NONE,   SERVE)   \
    X(INCREMENT,  0x05, "increment",  MCS_ROUTE_KEY,   INCREMENT, false, 20, 20, KEY_NEED, VALUE_NONE,  SERVE)   \
    X(DECREMENT,  0x06, "decrement",  MCS_ROUTE_KEY,   DECREMENT, false, 20, 20, KEY_NEED, VALUE_NONE,  SERVE)   \
    X(QUIT,       0x07, "quit",       MCS_ROUTE_LOCAL, QUIT,      false, 0,  0, KEY_NONE, VALUE_NONE,   SERVE)   \
    X(FLUSH,      0x08, "flush",      MCS_ROUTE_ALL,   FLUSH,     false, 0,  4, KEY_NONE, VALUE_NONE,   SERVE)   \
    X(GETQ,       0x09, "getq",       MCS_ROUTE_KEY,   GET,       true,  0,  0, KEY_NEED, VALUE_NONE,   SERVE)   \
    X(NOOP,       0x0a, "noop",       MCS_ROUTE_LOCAL, NOOP,      false, 0,  0, KEY_NONE, VALUE_NONE,   SERVE)   \
    X(VERSION,    0x0b, "version",    MCS_ROUTE_ANY,   VERSION,   false, 0,  0, KEY_NONE, VALUE_NONE,   SERVE)   \
    X(GETK,       0x0c, "getk",       MCS_ROUTE_KEY,   GETK,      false, 0,  0, KEY_NEED, VALUE_NONE,   SERVE)   \
    X(GETKQ,      0x0d, "getkq",      MCS_ROUTE_KEY,   GETK,      true,  0,  0, KEY_NEED, VALUE_NONE,   SERVE)   \
    X(APPEND,     0x0e, "append",     MCS_ROUTE_KEY,   APPEND,    false, 0,  0, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(PREPEND,    0x0f, "prepend",    MCS_ROUTE_KEY,   PREPEND,   false, 0,  0, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(STAT,       0x10, "stat",       MCS_ROUTE_LOCAL, STAT,      false, 0,  0, KEY_ANY,  VALUE_UNREAD, SERVE)   \
    X(SETQ,       0x11, "setq",       MCS_ROUTE_KEY,   SET,       true,  8,  8, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(ADDQ,       0x12, "addq",       MCS_ROUTE_KEY,   ADD,       true,  8,  8, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(REPLACEQ,   0x13, "replaceq",   MCS_ROUTE_KEY,   REPLACE,   true,  8,  8, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(DELETEQ,    0x14, "deleteq",    MCS_ROUTE_KEY,   DELETE,    true,  0,  0, KEY_NEED, VALUE_NONE,   SERVE)   \
    X(INCREMENTQ, 0x15, "incrementq", MCS_ROUTE_KEY,   INCREMENT, true,  20, 20, KEY_NEED, VALUE_NONE,  SERVE)   \
    X(DECREMENTQ, 0x16, "decrementq", MCS_ROUTE_KEY,   DECREMENT, true,  20, 20, KEY_NEED, VALUE_NONE,  SERVE)   \
    X(QUITQ,      0x17, "quitq",      MCS_ROUTE_LOCAL, QUIT,      true,  0,  0, KEY_NONE, VALUE_NONE,   SERVE)   \
    X(FLUSHQ,     0x18, "flushq",     MCS_ROUTE_ALL,   FLUSH,     true,  0,  4, KEY_NONE, VALUE_NONE,   SERVE)   \
    X(APPENDQ,    0x19, "appendq",    MCS_ROUTE_KEY,   APPEND,    true,  0,  0, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(PREPENDQ,   0x1a, "prependq",   MCS_ROUTE_KEY,   PREPEND,   true,  0,  0, KEY_NEED, VALUE_ANY,    SERVE)   \
    X(VERBOSITY,  0x1b, "verbosity",  MCS_ROUTE_LOCAL, VERBOSITY, false, 4,  4, KEY_NONE, VALUE_NONE,   UNKNOWN) \
    X(TOUCH,      0x1c, "touch",      MCS_ROUTE_KEY,   TOUCH,     false, 4,  4, KEY_NEED, VALUE_UNREAD, SERVE)   \
    X(GAT,        0x1d, "gat",        MCS_ROUTE_KEY,   GAT,       false, 4,  4, KEY_NEED, VALUE_UNREAD, SERVE)   \
    X(GATQ,       0x1e, "gatq",       MCS_ROUTE_KEY,   GAT,       true,  4,  4, KEY_NEED, VALUE_UNREAD, SERVE)   \
    X(SASL_LIST,  0x20, "sasl_list_mechs", MCS_ROUTE_LOCAL, SASL_LIST, false, 0, 0, KEY_NONE, VALUE_NONE, REFUSE) \
    X(SASL_AUTH,  0x21, "sasl_auth",  MCS_ROUTE_LOCAL, SASL_AUTH, false, 0,  0, KEY_NEED, VALUE_ANY,    REFUSE)  \
    X(SASL_STEP,  0x22, "sasl_step",  MCS_ROUTE_LOCAL, SASL_STEP, false, 0,  0, KEY_NEED, VALUE_ANY,    REFUSE)  \
    X(GATK,       0x23, "gatk",       MCS_ROUTE_KEY,   GATK,      false, 4,  4, KEY_NEED, VALUE_UNREAD, SERVE)   \
    X(GATKQ,      0x24, "gatkq",      MCS_ROUTE_KEY,   GATK,      true,  4,  4, KEY_NEED, VALUE_UNREAD, SERVE)

/* Opcodes, valued as on the wire. */
enum mcs_bin_op {
#define MCS_BIN_OP_ENUM(id, code, name, route, base, quiet, ext, ext2, key, value, handling) MCS_BIN_OP_##id = code,
    MCS_BIN_OP_LIST(MCS_BIN_OP_ENUM)
#undef MCS_BIN_OP_ENUM
};

/* One list of response statuses: id, code, name, memcached's error text (NULL: none). */
#define MCS_BIN_STATUS_LIST(X)                                                                     \
    X(SUCCESS,         0x0000, "success",         NULL)                                            \
    X(KEY_ENOENT,      0x0001, "key_enoent",      "Not found")                                     \
    X(KEY_EEXISTS,     0x0002, "key_eexists",     "Data exists for key.")                          \
    X(E2BIG,           0x0003, "e2big",           "Too large.")                                    \
    X(EINVAL,          0x0004, "einval",          "Invalid arguments")                             \
    X(NOT_STORED,      0x0005, "not_stored",      "Not stored.")                                   \
    X(DELTA_BADVAL,    0x0006, "delta_badval",    "Non-numeric server-side value for incr or decr") \
    X(NOT_MY_VBUCKET,  0x0007, "not_my_vbucket",  NULL)                                            \
    X(AUTH_ERROR,      0x0020, "auth_error",      "Auth failure.")                                 \
    X(AUTH_CONTINUE,   0x0021, "auth_continue",   NULL)                                            \
    X(ERANGE,          0x0022, "erange",          NULL)                                            \
    X(UNKNOWN_COMMAND, 0x0081, "unknown_command", "Unknown command")                               \
    X(ENOMEM,          0x0082, "enomem",          "Out of memory")                                 \
    X(NOT_SUPPORTED,   0x0083, "not_supported",   NULL)                                            \
    X(EINTERNAL,       0x0084, "einternal",       NULL)                                            \
    X(EBUSY,           0x0085, "ebusy",           NULL)                                            \
    X(ETMPFAIL,        0x0086, "etmpfail",        NULL)

enum mcs_bin_status_code {
#define MCS_BIN_STATUS_ENUM(id, code, name, text) MCS_BIN_STATUS_##id = code,
    MCS_BIN_STATUS_LIST(MCS_BIN_STATUS_ENUM)
#undef MCS_BIN_STATUS_ENUM
};

/* Name of an opcode ("?" when not listed) and of a status ("?" when not listed). */
const char *mcs_bin_op_name(uint8_t opcode);
const char *mcs_bin_status_name(uint16_t status);

/* memcached's error text for a status (the body of its error packets), or NULL. */
const char *mcs_bin_status_text(uint16_t status);

/* True when the opcode is in MCS_BIN_OP_LIST. */
bool mcs_bin_op_known(uint8_t opcode);

/* The non-quiet form of an opcode (GetQ -> Get, GATKQ -> GATK); an opcode
 * that is not listed or not quiet is returned unchanged. */
uint8_t mcs_bin_op_base(uint8_t opcode);

/* True for the quiet opcodes of MCS_BIN_OP_LIST. */
bool mcs_bin_op_quiet(uint8_t opcode);

/* How an opcode is routed; MCS_ROUTE_LOCAL for opcodes not listed. */
enum mcs_cmd_route mcs_bin_op_route(uint8_t opcode);

/* For a request with this (client) opcode, true when memcached would send no
 * reply for a server answer with this status: quiet gets (GetQ, GetKQ, GATQ,
 * GATKQ) stay silent on a miss (0x0001), the other quiet opcodes on success;
 * every other answer, and every answer to a non-quiet opcode, is sent. */
bool mcs_bin_quiet_suppresses(uint8_t opcode, uint16_t status);

enum mcs_bin_result {
    MCS_BIN_OK,
    MCS_BIN_MORE,
    MCS_BIN_REPLY,
    MCS_BIN_CLOSE
};

/* Per-connection parser state; zero-initialise. */
struct mcs_bin_parser {
    uint64_t swallow;   /* bytes of a rejected body still to skip */
};

/* One parsed request. Offsets are relative to the buffer given to parse.
 * REPLY and CLOSE set len, status and the header fields (opcode, base, quiet,
 * route, opaque, cas, body_len, extras_len, key_len), not the spans or the
 * decoded extras; a skip (REPLY with status 0) sets only len and route (LOCAL). */
struct mcs_bin_req {
    uint32_t len;           /* bytes of this request (see VALUE_UNREAD in the file comment) */
    uint8_t  opcode;        /* as sent */
    uint8_t  base;          /* non-quiet form of opcode */
    bool     quiet;
    enum mcs_cmd_route route;
    uint16_t status;        /* REPLY / CLOSE: status of the error packet to send, 0: none */
    uint32_t opaque;        /* as sent (host order; builders write it back unchanged) */
    uint64_t cas;           /* host order */
    uint32_t body_len;      /* the header's total body length, as sent */
    uint32_t extras_off;    /* MCS_BIN_HEADER_LEN */
    uint8_t  extras_len;
    uint32_t key_off;
    uint16_t key_len;
    uint32_t value_off;
    uint32_t value_len;
    /* Decoded extras (host order), for the opcodes that carry them: */
    uint32_t flags;         /* set/add/replace */
    uint32_t exptime;       /* set/add/replace, incr/decr, touch/gat*, flush (0 without extras) */
    uint64_t delta;         /* incr/decr */
    uint64_t initial;       /* incr/decr; exptime 0xffffffff: do not create */
    bool     drop_key;      /* REPLY 0x0003 to a set(q) too large: memcached deletes the key's old
                               value (key_off/key_len), so the caller must too */
};

/* Parses the next request in buf[0, len). item_max is the largest value the
 * shim forwards (larger ones are answered 0x0003 and skipped, as memcached
 * does). See the file comment for the results. */
enum mcs_bin_result mcs_bin_parse(struct mcs_bin_parser *p, const char *buf, size_t len, uint32_t item_max,
                                  struct mcs_bin_req *req);

/* One server reply packet. */
struct mcs_bin_resp {
    uint32_t len;           /* whole packet: header + body */
    uint8_t  opcode;
    uint16_t status;
    uint32_t opaque;
    uint64_t cas;
    uint32_t extras_off;
    uint8_t  extras_len;
    uint32_t key_off;
    uint16_t key_len;
    uint32_t value_off;
    uint32_t value_len;
};

/* Parses the next reply packet in buf[0, len): MCS_RESP_OK (a packet at
 * buf[0, resp.len)), MCS_RESP_MORE, or MCS_RESP_BAD (magic other than 0x81,
 * extras + key longer than the body, or a value longer than value_max: the
 * server connection cannot be trusted). A stat reply is several packets, the
 * last with an empty key and body. */
enum mcs_resp_status mcs_bin_resp_parse(const char *buf, size_t len, uint32_t value_max, struct mcs_bin_resp *resp);

/* True if resp is a reply memcached gives to a (non-quiet) request with this
 * opcode and opaque: same opcode and opaque, a listed status, and the shape of
 * that opcode's answer. Success: get/gat 4 bytes of flags and a value, getk/gatk
 * the same plus the key, touch the 4 bytes of flags alone, incr/decr an 8-byte value, version a value, every other
 * opcode an empty body. An error: no extras, a text body (getk/gatk may echo the
 * key). Anything else is a protocol failure of the server. */
bool mcs_bin_reply_fits(uint8_t opcode, uint32_t opaque, const struct mcs_bin_resp *resp);

/* A packet to build. status is the response status (ignored for requests,
 * whose vbucket field is written 0). */
struct mcs_bin_msg {
    uint8_t     opcode;
    uint16_t    status;
    uint32_t    opaque;
    uint64_t    cas;
    const char *extras;
    uint8_t     extras_len;
    const char *key;
    uint16_t    key_len;
    const char *value;
    uint32_t    value_len;
};

/* The builders append to b. Each returns 0, or -1 with b unchanged when the
 * allocation fails or the body would be longer than 2^32 - 1 bytes. */

/* A response header only (the caller appends body_len bytes of body). */
int mcs_bin_put_resp_header(struct mcs_buf *b, uint8_t opcode, uint16_t status, uint8_t extras_len, uint16_t key_len,
                            uint32_t body_len, uint32_t opaque, uint64_t cas);

/* An error response as memcached sends it: no extras, no key, CAS 0, the
 * status's text (mcs_bin_status_text) as the value, or no value without one. */
int mcs_bin_put_error(struct mcs_buf *b, uint8_t opcode, uint16_t status, uint32_t opaque);

/* A whole response (magic 0x81) or request (magic 0x80) from m. */
int mcs_bin_put_response(struct mcs_buf *b, const struct mcs_bin_msg *m);
int mcs_bin_put_request(struct mcs_buf *b, const struct mcs_bin_msg *m);

#endif
