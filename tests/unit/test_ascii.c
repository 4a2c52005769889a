/*
 * tests/unit/test_ascii.c: the memcached ASCII request parser (mcs_ascii_parse)
 * and the server reply parser (mcs_ascii_resp_parse).
 *
 * Every request is parsed twice: whole, and fed one byte at a time into a
 * buffer that grows (MCS_ASCII_MORE until the last byte, then the same result).
 * Each input is placed so that its last byte sits right before a PROT_NONE
 * page, so a one-byte over-read crashes even without sanitizers.
 *
 * The expected replies were checked against a real memcached 1.6.18 (bytes
 * sent over a socket). Cases where the parser disagreed with memcached when
 * they were written are kept in compat_cases and test_memcached_compat_*:
 * they state memcached's behaviour and fail until the parser follows it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/ascii.h"
#include "tests/unit/unit.h"

UNIT_RESULTS_IN_ORDER(MCS_ASCII_OK, MCS_ASCII_MORE, MCS_ASCII_REPLY, MCS_ASCII_CLOSE);

static const char reply_error[] = "ERROR\r\n";
static const char reply_format[] = "CLIENT_ERROR bad command line format\r\n";
static const char reply_chunk[] = "CLIENT_ERROR bad data chunk\r\n";
static const char reply_large[] = "SERVER_ERROR object too large for cache\r\n";
static const char reply_delta[] = "CLIENT_ERROR invalid numeric delta argument\r\n";
static const char reply_exptime[] = "CLIENT_ERROR invalid exptime argument\r\n";
static const char reply_delete[] = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";

/* Request cases ---------------------------------------------------------- */

/* One request and what parsing it must give. */
struct req_case {
    const char *in;                 /* request bytes */
    uint32_t    item_max;           /* 0: ITEM_MAX */
    enum mcs_ascii_status status;
    enum mcs_cmd cmd;               /* OK */
    uint32_t    len;                /* bytes consumed; 0: all of in */
    const char *key;                /* OK: first key; NULL: none */
    uint32_t    nkeys;              /* OK, retrieval commands */
    const char *data;               /* OK, storage commands: the value */
    const char *stripped;           /* OK with noreply: the request without " noreply" */
    const char *reply;              /* REPLY/CLOSE: the answer; NULL: nothing */
    const char *args;               /* OK: stats arguments / gat exptime */
};

#define CASE_OK(c, ...)     { .status = MCS_ASCII_OK, .cmd = MCS_CMD_##c, __VA_ARGS__ }
#define CASE_REPLY(r, ...)  { .status = MCS_ASCII_REPLY, .reply = (r), __VA_ARGS__ }

/* Every command of MCS_CMD_LIST, whole and well formed. */
static const struct req_case ok_cases[] = {
    CASE_OK(GET, .in = "get k\r\n", .key = "k", .nkeys = 1),
    CASE_OK(GET, .in = "get a bb ccc\r\n", .key = "a", .nkeys = 3),
    CASE_OK(GET, .in = "get k\n", .key = "k", .nkeys = 1),
    CASE_OK(GET, .in = "  get  a   b \r\n", .key = "a", .nkeys = 2),
    CASE_OK(GET, .in = "get a\r\r\n", .key = "a\r", .nkeys = 1),
    CASE_OK(GET, .in = "get a noreply\r\n", .key = "a", .nkeys = 2),
    CASE_OK(GET, .in = "get " K250 "\r\n", .key = K250, .nkeys = 1),
    CASE_OK(GET, .in = "get x " K250 " y\r\n", .key = "x", .nkeys = 3),
    CASE_OK(GETS, .in = "gets a b\r\n", .key = "a", .nkeys = 2),
    CASE_OK(GAT, .in = "gat 100 a b\r\n", .key = "a", .nkeys = 2, .args = "100"),
    CASE_OK(GAT, .in = "gat -1 a\r\n", .key = "a", .nkeys = 1, .args = "-1"),
    CASE_OK(GATS, .in = "gats 0 a\n", .key = "a", .nkeys = 1, .args = "0"),
    CASE_OK(SET, .in = "set k 5 0 5\r\nhello\r\n", .key = "k", .data = "hello"),
    CASE_OK(SET, .in = "set k 0 0 1\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set  k  0 0  1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 0 4\r\na\r\nb\r\n", .key = "k", .data = "a\r\nb"),
    CASE_OK(SET, .in = "set k 0 0 1 bogus\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 4294967295 -1 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 2147483647 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 -2147483648 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 -0 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 0 01\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set " K250 " 0 0 1\r\nx\r\n", .key = K250, .data = "x"),
    CASE_OK(SET, .in = "set k 0 0 16\r\n0123456789abcdef\r\n", .item_max = 16, .key = "k", .data = "0123456789abcdef"),
    CASE_OK(SET, .in = "set k 0 0 1 noreply\r\nx\r\n", .key = "k", .data = "x", .stripped = "set k 0 0 1\r\nx\r\n"),
    CASE_OK(SET, .in = "set k 0 0 1 noreply   \r\nx\r\n", .key = "k", .data = "x", .stripped = "set k 0 0 1\r\nx\r\n"),
    CASE_OK(SET, .in = "set k 0 0 1 noreply\nx\r\n", .key = "k", .data = "x", .stripped = "set k 0 0 1\nx\r\n"),
    CASE_OK(ADD, .in = "add k 0 0 0\r\n\r\n", .key = "k", .data = ""),
    CASE_OK(REPLACE, .in = "replace k 0 0 3\r\nabc\r\n", .key = "k", .data = "abc"),
    CASE_OK(APPEND, .in = "append k 0 0 2\r\nxy\r\n", .key = "k", .data = "xy"),
    CASE_OK(PREPEND, .in = "prepend k 0 0 2 noreply\r\nxy\r\n", .key = "k", .data = "xy",
       .stripped = "prepend k 0 0 2\r\nxy\r\n"),
    CASE_OK(CAS, .in = "cas k 0 0 1 12345\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(CAS, .in = "cas k 0 0 1 18446744073709551615\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(CAS, .in = "cas k 0 0 1 5 noreply\r\nx\r\n", .key = "k", .data = "x", .stripped = "cas k 0 0 1 5\r\nx\r\n"),
    CASE_OK(DELETE, .in = "delete k\r\n", .key = "k"),
    CASE_OK(DELETE, .in = "delete k 0\r\n", .key = "k"),
    CASE_OK(DELETE, .in = "delete k noreply\r\n", .key = "k", .stripped = "delete k\r\n"),
    CASE_OK(DELETE, .in = "delete k 0 noreply\r\n", .key = "k", .stripped = "delete k 0\r\n"),
    CASE_OK(DELETE, .in = "delete k noreply\n", .key = "k", .stripped = "delete k\n"),
    CASE_OK(INCR, .in = "incr k 5\r\n", .key = "k"),
    CASE_OK(INCR, .in = "incr k 1 noreply\r\n", .key = "k", .stripped = "incr k 1\r\n"),
    CASE_OK(INCR, .in = "incr k 18446744073709551615\r\n", .key = "k"),
    CASE_OK(DECR, .in = "decr k 3\r\n", .key = "k"),
    CASE_OK(DECR, .in = "decr k 3 noreply\r\n", .key = "k", .stripped = "decr k 3\r\n"),
    CASE_OK(TOUCH, .in = "touch k 10\r\n", .key = "k"),
    CASE_OK(TOUCH, .in = "touch k -2147483648\r\n", .key = "k"),
    CASE_OK(TOUCH, .in = "touch k 10 noreply\r\n", .key = "k", .stripped = "touch k 10\r\n"),
    CASE_OK(VERSION, .in = "version\r\n"),
    CASE_OK(VERSION, .in = "version\n"),
    CASE_OK(VERBOSITY, .in = "verbosity 1\r\n"),
    CASE_OK(VERBOSITY, .in = "verbosity 1 noreply\r\n", .stripped = "verbosity 1\r\n"),
    CASE_OK(FLUSH_ALL, .in = "flush_all\r\n"),
    CASE_OK(FLUSH_ALL, .in = "flush_all 10\r\n"),
    CASE_OK(FLUSH_ALL, .in = "flush_all -1\r\n"),
    CASE_OK(FLUSH_ALL, .in = "flush_all noreply\r\n", .stripped = "flush_all\r\n"),
    CASE_OK(FLUSH_ALL, .in = "flush_all 0 noreply\r\n", .stripped = "flush_all 0\r\n"),
    CASE_OK(STATS, .in = "stats\r\n"),
    CASE_OK(STATS, .in = "stats slabs\r\n", .args = "slabs"),
    CASE_OK(STATS, .in = "stats detail dump\r\n", .args = "detail dump"),
    CASE_OK(QUIT, .in = "quit\r\n"),
    /* a known command ending in an HTTP/ token is just that command */
    CASE_OK(GET, .in = "get HTTP/1.1\r\n", .key = "HTTP/1.1", .nkeys = 1),
    CASE_OK(DELETE, .in = "delete HTTP/1.0\r\n", .key = "HTTP/1.0"),
    CASE_OK(SET, .in = "set k 0 0 1 HTTP/1.1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(VERSION, .in = "version HTTP/1.1\r\n"),
};

/* Invalid requests and memcached 1.6.18's exact answers. */
static const struct req_case error_cases[] = {
    CASE_REPLY(reply_error, .in = "bogus\r\n"),
    CASE_REPLY(reply_error, .in = "\r\n"),
    CASE_REPLY(reply_error, .in = "\n"),
    CASE_REPLY(reply_error, .in = " \r\n"),
    CASE_REPLY(reply_error, .in = "\r\r\n"),
    CASE_REPLY(reply_error, .in = "g\r\n"),
    CASE_REPLY(reply_error, .in = "GET k\r\n"),
    CASE_REPLY(reply_error, .in = "get\r\n"),
    CASE_REPLY(reply_error, .in = "get \r\n"),
    CASE_REPLY(reply_error, .in = "gets\r\n"),
    CASE_REPLY(reply_error, .in = "gat\r\n"),
    CASE_REPLY(reply_error, .in = "set k 0 0\r\n"),
    CASE_REPLY(reply_error, .in = "set k 0 0 1 noreply extra\r\n"),
    CASE_REPLY(reply_error, .in = "cas k 0 0 1\r\n"),
    CASE_REPLY(reply_error, .in = "incr k\r\n"),
    CASE_REPLY(reply_error, .in = "incr k 1 2 3\r\n"),
    CASE_REPLY(reply_error, .in = "touch k\r\n"),
    CASE_REPLY(reply_error, .in = "touch noreply\r\n"),
    CASE_REPLY(reply_error, .in = "touch k 1 2 3\r\n"),
    CASE_REPLY(reply_error, .in = "delete\r\n"),
    CASE_REPLY(reply_error, .in = "delete k x y z\r\n"),
    CASE_REPLY(reply_error, .in = "delete k 0 noreply extra\r\n"),
    CASE_REPLY(reply_error, .in = "verbosity\r\n"),
    CASE_REPLY(reply_error, .in = "verbosity 1 2 3\r\n"),
    CASE_REPLY(reply_error, .in = "flush_all 1 2 3\r\n"),
    /* keys of 251 bytes */
    CASE_REPLY(reply_format, .in = "get " K251 "\r\n"),
    CASE_REPLY(reply_format, .in = "get a " K251 "\r\n"),
    CASE_REPLY(reply_format, .in = "gat 10 " K251 "\r\n"),
    CASE_REPLY(reply_format, .in = "set " K251 " 0 0 1\r\n"),
    CASE_REPLY(NULL, .in = "set " K251 " 0 0 1 noreply\r\n"),
    CASE_REPLY(reply_format, .in = "incr " K251 " 1\r\n"),
    CASE_REPLY(NULL, .in = "incr " K251 " 1 noreply\r\n"),
    CASE_REPLY(reply_format, .in = "touch " K251 " 1\r\n"),
    CASE_REPLY(reply_format, .in = "delete " K251 "\r\n"),
    CASE_REPLY(NULL, .in = "delete " K251 " noreply\r\n"),
    /* storage command lines */
    CASE_REPLY(reply_format, .in = "set k 0 0 -1\r\n"),
    CASE_REPLY(reply_format, .in = "set k 0 0 -2\r\n"),
    CASE_REPLY(reply_format, .in = "set k 0 0 abc\r\n"),
    CASE_REPLY(NULL, .in = "set k 0 0 abc noreply\r\n"),
    CASE_REPLY(NULL, .in = "set k 0 0 noreply\r\n"),
    CASE_REPLY(reply_format, .in = "set k 0 0 1x\r\n"),
    CASE_REPLY(reply_format, .in = "set k 0 0 0x1\r\n"),
    CASE_REPLY(reply_format, .in = "set k 0 0 9223372036854775808\r\n"),
    CASE_REPLY(reply_format, .in = "set k abc 0 1\r\n"),
    CASE_REPLY(reply_format, .in = "set k -1 0 1\r\n"),
    CASE_REPLY(reply_format, .in = "set k 18446744073709551616 0 1\r\n"),
    CASE_REPLY(reply_format, .in = "set k 0 abc 1\r\n"),
    CASE_REPLY(reply_format, .in = "cas k 0 0 1 abc\r\n"),
    CASE_REPLY(reply_format, .in = "cas k 0 0 1 -1\r\n"),
    CASE_REPLY(reply_format, .in = "cas k 0 0 1 18446744073709551616\r\n"),
    /* data blocks */
    CASE_REPLY(reply_chunk, .in = "set k 0 0 3\r\nhello\r\n", .len = 18),
    CASE_REPLY(reply_chunk, .in = "set k 0 0 1\r\nxy\r\n", .len = 16),
    CASE_REPLY(NULL, .in = "set k 0 0 3 noreply\r\nhello\r\n", .len = 26),
    CASE_REPLY(NULL, .in = "set k 0 0 1 noreply\r\nxy\r\n", .len = 24),
    CASE_REPLY(reply_large, .in = "set k 0 0 17\r\n", .item_max = 16),
    CASE_REPLY(NULL, .in = "set k 0 0 17 noreply\r\n", .item_max = 16),
    CASE_REPLY(reply_large, .in = "set k 0 0 1048577\r\n"),
    /* arithmetic, touch, gat, delete, flush_all */
    CASE_REPLY(reply_delta, .in = "incr k abc\r\n"),
    CASE_REPLY(reply_delta, .in = "incr k -1\r\n"),
    CASE_REPLY(reply_delta, .in = "incr k 18446744073709551616\r\n"),
    CASE_REPLY(reply_delta, .in = "decr k x\r\n"),
    CASE_REPLY(NULL, .in = "incr k abc noreply\r\n"),
    CASE_REPLY(NULL, .in = "incr k noreply\r\n"),
    CASE_REPLY(reply_exptime, .in = "touch k abc\r\n"),
    CASE_REPLY(reply_exptime, .in = "touch k 9223372036854775808\r\n"),
    CASE_REPLY(NULL, .in = "touch k abc noreply\r\n"),
    CASE_REPLY(NULL, .in = "touch k noreply\r\n"),
    CASE_REPLY(reply_exptime, .in = "gat abc k\r\n"),
    CASE_REPLY(reply_delete, .in = "delete k 5\r\n"),
    CASE_REPLY(reply_delete, .in = "delete k 0 5\r\n"),
    CASE_REPLY(reply_delete, .in = "delete k noreply 0\r\n"),
    CASE_REPLY(NULL, .in = "delete k 5 noreply\r\n"),
    CASE_REPLY(NULL, .in = "flush_all abc noreply\r\n"),
};

/*
 * Where the parser disagreed with memcached 1.6.18 when this file was written.
 * Each row is memcached's observed behaviour. memcached parses numbers with
 * strtol/strtoul: a leading '+', leading or trailing whitespace other than
 * ' ' (which separates tokens), "-0" for unsigned fields, and 64-bit values
 * truncated to 32 bits are all accepted.
 */
static const struct req_case compat_cases[] = {
    /* numeric fields */
    CASE_OK(SET, .in = "set k +0 0 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 +5 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 0 +1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k -0 0 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 4294967297 0 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 18446744073709551615 0 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 2147483648 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 99999999999 1\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(SET, .in = "set k 0 -2147483649 1\r\nx\r\n", .key = "k", .data = "x"),
    /* memcached stores these (strtol skips whitespace; the length is truncated to
     * 32 bits); the shim refuses them so it never forwards a request the server
     * could frame differently (docs/protocol.md) */
    CASE_REPLY(reply_format, .in = "set k 0 0 4294967297\r\nx\r\n", .len = 22),
    CASE_REPLY(reply_format, .in = "set k 0 0 -4294967295\r\nx\r\n", .len = 23),
    CASE_REPLY(reply_format, .in = "set k 0 0 1\t\r\nx\r\n", .len = 14),
    CASE_REPLY(reply_format, .in = "set k 0 0 \t1\r\nx\r\n", .len = 14),
    CASE_REPLY(reply_format, .in = "set k 0 0 1\x0b\r\nx\r\n", .len = 14),
    CASE_REPLY(reply_format, .in = "set k 0 0 1\tabc\r\nx\r\n", .len = 17),
    CASE_REPLY(reply_format, .in = "set k 0 0 1\r\r\nx\r\n", .len = 14),
    CASE_OK(CAS, .in = "cas k 0 0 1 +5\r\nx\r\n", .key = "k", .data = "x"),
    CASE_OK(INCR, .in = "incr k +1\r\n", .key = "k"),
    CASE_OK(INCR, .in = "incr k -0\r\n", .key = "k"),
    CASE_OK(TOUCH, .in = "touch k +5\r\n", .key = "k"),
    CASE_OK(TOUCH, .in = "touch k 2147483648\r\n", .key = "k"),
    CASE_OK(TOUCH, .in = "touch k 4294967296\r\n", .key = "k"),
    CASE_OK(GAT, .in = "gat +5 k\r\n", .key = "k", .nkeys = 1, .args = "+5"),
    CASE_OK(GAT, .in = "gat 2147483648 k\r\n", .key = "k", .nkeys = 1, .args = "2147483648"),
    CASE_OK(FLUSH_ALL, .in = "flush_all +0\r\n"),
    /* memcached checks vlen > INT_MAX - 2 before the item size, and does not swallow */
    CASE_REPLY(reply_format, .in = "set k 0 0 2147483646\r\n"),
    CASE_REPLY(reply_format, .in = "set k 0 0 2147483647\r\n"),
    /* flush_all's error text */
    CASE_REPLY(reply_exptime, .in = "flush_all abc\r\n"),
    /* gat/gats with an exptime and no key: the exptime is checked, then END */
    CASE_REPLY(reply_exptime, .in = "gats abc\r\n"),
    /* an unknown command whose last token starts with "HTTP/": closed silently */
    { .status = MCS_ASCII_CLOSE, .in = "GET / HTTP/1.1\r\n", .reply = NULL },
    { .status = MCS_ASCII_CLOSE, .in = "POST / HTTP/1.0\r\n", .reply = NULL },
    { .status = MCS_ASCII_CLOSE, .in = "xyz HTTP/1.1\r\n", .reply = NULL },
    { .status = MCS_ASCII_CLOSE, .in = "HTTP/1.1\r\n", .reply = NULL },
};

/* "HTTP/" lines memcached still answers ERROR: it closes only when the command
 * is unknown, at least two bytes long, and its first letter is not one that
 * starts a command group (g s a c i d t, or m with two letters). */
static const struct req_case http_not_closed_cases[] = {
    CASE_REPLY(reply_error, .in = "sss HTTP/1.1\r\n"),   /* 's' commands answer ERROR first */
    CASE_REPLY(reply_error, .in = "x HTTP/1.1\r\n"),     /* one-letter command */
    CASE_REPLY(reply_error, .in = "mx HTTP/1.1\r\n"),    /* two-letter meta name */
    CASE_REPLY(reply_error, .in = "xyz HTTPX\r\n"),
    CASE_REPLY(reply_error, .in = "xyz HTTP/1.1 noreply\r\n"),
};

static size_t
case_in_len(const struct req_case *c)
{
    return strlen(c->in);
}

static bool
cmd_has_data(enum mcs_cmd cmd)
{
    switch (cmd) {
    case MCS_CMD_SET:
    case MCS_CMD_ADD:
    case MCS_CMD_REPLACE:
    case MCS_CMD_APPEND:
    case MCS_CMD_PREPEND:
    case MCS_CMD_CAS:
        return true;
    default:
        return false;
    }
}

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            print_error("%s [%s]: ", how, show(c->in, in_len));                       \
            print_error(__VA_ARGS__);                                                 \
            print_error("\n");                                                        \
            return false;                                                             \
        }                                                                             \
    } while (0)

/* Checks one result against the case; prints what differs and returns false. */
static bool
check_result(const struct req_case *c, const char *how, const char *buf, size_t in_len,
             enum mcs_ascii_status st, const struct mcs_ascii_req *r)
{
    uint32_t want_len = c->len ? c->len : (uint32_t)in_len;

    CHECK(st == c->status, "status %s, expected %s", result_name(st), result_name(c->status));
    if (st == MCS_ASCII_REPLY || st == MCS_ASCII_CLOSE) {
        CHECK(r->len == want_len, "len %u, expected %u", r->len, want_len);
        if (c->reply == NULL) {
            CHECK(r->reply == NULL, "reply '%s', expected none", show(r->reply, strlen(r->reply)));
        } else {
            CHECK(r->reply != NULL, "no reply, expected '%s'", show(c->reply, strlen(c->reply)));
            CHECK(strcmp(r->reply, c->reply) == 0, "reply '%s'", show(r->reply, strlen(r->reply)));
        }
        return true;
    }
    if (st != MCS_ASCII_OK) {
        return true;
    }

    const char *nl = memchr(c->in, '\n', in_len);
    CHECK(nl != NULL, "test case without a newline");
    uint32_t line_len = (uint32_t)(nl - c->in) + 1;
    uint32_t eol = line_len - 1;
    if (eol > 0 && c->in[eol - 1] == '\r') {
        eol--;
    }
    CHECK(r->cmd == c->cmd, "cmd %s, expected %s", mcs_cmd_name(r->cmd), mcs_cmd_name(c->cmd));
    CHECK(r->len == want_len, "len %u, expected %u", r->len, want_len);
    CHECK(r->line_len == line_len, "line_len %u, expected %u", r->line_len, line_len);
    CHECK(r->eol_off == eol, "eol_off %u, expected %u", r->eol_off, eol);
    CHECK(r->reply == NULL, "OK with a reply");

    if (c->key != NULL) {
        uint32_t klen = (uint32_t)strlen(c->key);
        CHECK(r->key_len == klen, "key_len %u, expected %u", r->key_len, klen);
        CHECK(r->key_off + r->key_len <= r->eol_off, "key span past the line");
        CHECK(memcmp(buf + r->key_off, c->key, klen) == 0, "key '%s'", show(buf + r->key_off, r->key_len));
    } else {
        CHECK(r->key_len == 0, "key_len %u, expected no key", r->key_len);
    }
    if (mcs_cmd_route(c->cmd) == MCS_ROUTE_KEYS) {
        CHECK(r->nkeys == c->nkeys, "nkeys %u, expected %u", r->nkeys, c->nkeys);
        CHECK(r->keys_end <= r->eol_off && r->keys_end >= r->key_off + r->key_len, "keys_end %u", r->keys_end);
    }
    if (cmd_has_data(c->cmd)) {
        CHECK(c->data != NULL, "test case without data");
        uint32_t dlen = (uint32_t)strlen(c->data);
        CHECK(r->data_off == line_len, "data_off %u, expected %u", r->data_off, line_len);
        CHECK(r->data_len == dlen, "data_len %u, expected %u", r->data_len, dlen);
        CHECK((uint64_t)r->data_off + r->data_len + 2 == r->len, "data_off + data_len + 2 != len");
        CHECK(memcmp(buf + r->data_off, c->data, dlen) == 0, "data '%s'", show(buf + r->data_off, r->data_len));
    } else {
        CHECK(r->data_len == 0, "data_len %u on a command without data", r->data_len);
    }
    if (c->stripped != NULL) {
        CHECK(r->noreply, "noreply not set");
        CHECK(r->noreply_len > 0 && r->noreply_off + r->noreply_len <= r->eol_off, "noreply span %u+%u",
              r->noreply_off, r->noreply_len);
        char joined[512];
        size_t tail = r->len - (r->noreply_off + r->noreply_len);
        CHECK(r->noreply_off + tail < sizeof(joined), "request too long for the test");
        memcpy(joined, buf, r->noreply_off);
        memcpy(joined + r->noreply_off, buf + r->noreply_off + r->noreply_len, tail);
        joined[r->noreply_off + tail] = '\0';
        CHECK(strcmp(joined, c->stripped) == 0, "without noreply: '%s'", show(joined, strlen(joined)));
    } else {
        CHECK(!r->noreply, "noreply set");
        CHECK(r->noreply_len == 0, "noreply_len %u without noreply", r->noreply_len);
    }
    if (c->args != NULL) {
        uint32_t alen = (uint32_t)strlen(c->args);
        CHECK(r->args_len == alen && memcmp(buf + r->args_off, c->args, alen) == 0, "args '%s'",
              show(buf + r->args_off, r->args_len));
    }
    return true;
}

/* Parses the case whole, at the end of a guarded buffer. */
static bool
run_whole(const struct req_case *c)
{
    size_t in_len = case_in_len(c);
    struct guarded g;
    guarded_init(&g, in_len);
    const char *buf = guarded_put(&g, c->in, in_len);
    struct mcs_ascii_parser p = { 0 };
    struct mcs_ascii_req r;
    enum mcs_ascii_status st = mcs_ascii_parse(&p, buf, in_len, c->item_max ? c->item_max : ITEM_MAX, &r);
    bool ok = check_result(c, "whole", buf, in_len, st, &r);
    guarded_free(&g);
    return ok;
}

/* Feeds the case one byte at a time into a growing buffer: MORE until the
 * request is complete, then the same result as whole. */
static bool
run_bytewise(const struct req_case *c)
{
    size_t in_len = case_in_len(c);
    size_t want = c->len ? c->len : in_len;
    struct guarded g;
    guarded_init(&g, in_len);
    struct mcs_ascii_parser p = { 0 };
    struct mcs_ascii_req r;
    bool ok = true;
    for (size_t i = 0; i <= want && ok; i++) {
        const char *buf = guarded_put(&g, c->in, i);
        enum mcs_ascii_status st = mcs_ascii_parse(&p, buf, i, c->item_max ? c->item_max : ITEM_MAX, &r);
        if (i < want) {
            if (st != MCS_ASCII_MORE) {
                print_error("bytewise [%s]: %s after %zu of %zu bytes\n", show(c->in, in_len), result_name(st), i,
                            want);
                ok = false;
            }
        } else {
            ok = check_result(c, "bytewise", buf, in_len, st, &r);
        }
    }
    guarded_free(&g);
    return ok;
}

static void
run_cases(const struct req_case *cases, size_t n)
{
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        bool whole = run_whole(&cases[i]);
        bool bytes = run_bytewise(&cases[i]);
        if (!whole || !bytes) {
            failed++;
        }
    }
    if (failed > 0) {
        fail_msg("%zu of %zu cases failed", failed, n);
    }
}

static void
test_every_command_ok(void **state)
{
    (void)state;
    run_cases(ok_cases, NELEM(ok_cases));
}

/* The table above covers the whole command list, and names round-trip. */
static void
test_command_list_covered(void **state)
{
    (void)state;
    bool seen[MCS_CMD_COUNT] = { false };
    for (size_t i = 0; i < NELEM(ok_cases); i++) {
        seen[ok_cases[i].cmd] = true;
        const char *in = ok_cases[i].in;
        while (*in == ' ') {
            in++;
        }
        const char *name = mcs_cmd_name(ok_cases[i].cmd);
        assert_memory_equal(in, name, strlen(name));
    }
    for (unsigned c = 0; c < MCS_CMD_COUNT; c++) {
        if (!seen[c]) {
            fail_msg("command %s has no case", mcs_cmd_name((enum mcs_cmd)c));
        }
    }
    assert_string_equal(mcs_cmd_name(MCS_CMD_COUNT), "?");
    assert_int_equal(mcs_cmd_route(MCS_CMD_GET), MCS_ROUTE_KEYS);
    assert_int_equal(mcs_cmd_route(MCS_CMD_GATS), MCS_ROUTE_KEYS);
    assert_int_equal(mcs_cmd_route(MCS_CMD_CAS), MCS_ROUTE_KEY);
    assert_int_equal(mcs_cmd_route(MCS_CMD_TOUCH), MCS_ROUTE_KEY);
    assert_int_equal(mcs_cmd_route(MCS_CMD_VERSION), MCS_ROUTE_ANY);
    assert_int_equal(mcs_cmd_route(MCS_CMD_FLUSH_ALL), MCS_ROUTE_ALL);
    assert_int_equal(mcs_cmd_route(MCS_CMD_VERBOSITY), MCS_ROUTE_ALL);
    assert_int_equal(mcs_cmd_route(MCS_CMD_STATS), MCS_ROUTE_LOCAL);
    assert_int_equal(mcs_cmd_route(MCS_CMD_QUIT), MCS_ROUTE_LOCAL);
}

static void
test_errors_as_memcached(void **state)
{
    (void)state;
    run_cases(error_cases, NELEM(error_cases));
    run_cases(http_not_closed_cases, NELEM(http_not_closed_cases));
}

static void
test_memcached_compat_cases(void **state)
{
    (void)state;
    run_cases(compat_cases, NELEM(compat_cases));
}

static void
test_next_token(void **state)
{
    (void)state;
    const char s[] = "  a bb  ccc ";
    uint32_t pos = 0, off, len;
    assert_true(mcs_ascii_next_token(s, &pos, sizeof(s) - 1, &off, &len));
    assert_int_equal(off, 2);
    assert_int_equal(len, 1);
    assert_true(mcs_ascii_next_token(s, &pos, sizeof(s) - 1, &off, &len));
    assert_int_equal(off, 4);
    assert_int_equal(len, 2);
    assert_true(mcs_ascii_next_token(s, &pos, sizeof(s) - 1, &off, &len));
    assert_int_equal(off, 8);
    assert_int_equal(len, 3);
    assert_false(mcs_ascii_next_token(s, &pos, sizeof(s) - 1, &off, &len));
    assert_int_equal(pos, sizeof(s) - 1);
    pos = 0;
    assert_false(mcs_ascii_next_token(s, &pos, 0, &off, &len));
    /* end inside a token cuts it */
    pos = 0;
    assert_true(mcs_ascii_next_token(s, &pos, 5, &off, &len));
    assert_true(mcs_ascii_next_token(s, &pos, 5, &off, &len));
    assert_int_equal(off, 4);
    assert_int_equal(len, 1);
}

/* Pipelining -------------------------------------------------------------- */

/* One parse result in a stream: status, command, bytes consumed, reply. */
struct event {
    enum mcs_ascii_status st;
    enum mcs_cmd cmd;
    uint32_t len;
    const char *reply;
};

/* Parses stream[0, n) delivered in chunks of the given sizes (cycled; 0: all at
 * once) into events; a guard page follows the received bytes at every call. */
static size_t
parse_stream(const char *stream, size_t n, const size_t *chunks, size_t nchunks, uint32_t item_max,
             struct event *ev, size_t cap)
{
    struct feed f;
    feed_start(&f, stream, n);
    struct mcs_ascii_parser p = { 0 };
    size_t nev = 0;
    for (size_t k = 0; f.received < n; k++) {
        feed_arrive(&f, nchunks ? chunks[k % nchunks] : n);
        for (;;) {
            struct mcs_ascii_req r;
            size_t len;
            const char *buf = feed_window(&f, &len);
            enum mcs_ascii_status st = mcs_ascii_parse(&p, buf, len, item_max, &r);
            if (st == MCS_ASCII_MORE) {
                assert_true(f.received < n || len == 0);
                break;
            }
            assert_true(nev < cap);
            assert_true(r.len > 0 && r.len <= len);
            ev[nev].st = st;
            ev[nev].cmd = r.cmd;
            ev[nev].len = r.len;
            ev[nev].reply = r.reply;
            nev++;
            f.consumed += r.len;
            if (st == MCS_ASCII_CLOSE) {
                feed_end(&f);
                return nev;
            }
        }
    }
    feed_end(&f);
    return nev;  /* an incomplete tail stays unconsumed */
}

static void
test_pipelined(void **state)
{
    (void)state;
    static const char stream[] =
        "get a b\r\n"
        "set k 0 0 5\r\nhello\r\n"
        "bogus\r\n"
        "delete k noreply\r\n"
        "set k 0 0 3\r\nhello\r\n"   /* bad chunk: 18 bytes, then "\r\n" is an empty line */
        "incr k 1\n"
        "gets " K250 "\r\n"
        "set " K251 " 0 0 1\r\nx\r\n" /* bad format; then "x" is an unknown command */
        "version\r\n";
    static const struct event want[] = {
        { MCS_ASCII_OK, MCS_CMD_GET, 9, NULL },
        { MCS_ASCII_OK, MCS_CMD_SET, 20, NULL },
        { MCS_ASCII_REPLY, 0, 7, reply_error },
        { MCS_ASCII_OK, MCS_CMD_DELETE, 18, NULL },
        { MCS_ASCII_REPLY, 0, 18, reply_chunk },
        { MCS_ASCII_REPLY, 0, 2, reply_error },
        { MCS_ASCII_OK, MCS_CMD_INCR, 9, NULL },
        { MCS_ASCII_OK, MCS_CMD_GETS, 5 + 250 + 2, NULL },
        { MCS_ASCII_REPLY, 0, 4 + 251 + 6 + 2, reply_format },
        { MCS_ASCII_REPLY, 0, 3, reply_error },
        { MCS_ASCII_OK, MCS_CMD_VERSION, 9, NULL },
    };
    static const size_t chunk_sets[][4] = {
        { 0, 0, 0, 0 }, { 1, 1, 1, 1 }, { 2, 3, 5, 7 }, { 13, 1, 64, 2 }, { 100, 100, 100, 100 },
    };
    size_t n = sizeof(stream) - 1;
    for (size_t s = 0; s < NELEM(chunk_sets); s++) {
        struct event ev[32];
        size_t nev = parse_stream(stream, n, chunk_sets[s], chunk_sets[s][0] ? 4 : 0, ITEM_MAX, ev, 32);
        assert_int_equal(nev, NELEM(want));
        for (size_t i = 0; i < nev; i++) {
            assert_int_equal(ev[i].st, want[i].st);
            assert_int_equal(ev[i].len, want[i].len);
            if (want[i].st == MCS_ASCII_OK) {
                assert_int_equal(ev[i].cmd, want[i].cmd);
            } else {
                assert_string_equal(ev[i].reply, want[i].reply);
            }
        }
    }
}

/* Every good and bad case of the tables in one stream, delivered in many
 * segmentations, yields the same events as the cases parsed one by one. */
static void
test_pipelined_all_cases(void **state)
{
    (void)state;
    static char stream[64 * 1024];
    static struct event want[512], ev[512];
    size_t n = 0, nwant = 0;
    const struct req_case *tables[] = { ok_cases, error_cases };
    size_t sizes[] = { NELEM(ok_cases), NELEM(error_cases) };
    for (size_t t = 0; t < 2; t++) {
        for (size_t i = 0; i < sizes[t]; i++) {
            const struct req_case *c = &tables[t][i];
            size_t len = case_in_len(c);
            /* item_max and swallow cases are left out: one item_max for the stream */
            if (c->item_max != 0 || c->reply == reply_large || (c->len != 0 && c->len != len)) {
                continue;
            }
            memcpy(stream + n, c->in, len);
            n += len;
            want[nwant].st = c->status;
            want[nwant].cmd = c->cmd;
            want[nwant].len = (uint32_t)len;
            want[nwant].reply = c->reply;
            nwant++;
        }
    }
    static const size_t chunk_sets[][4] = { { 0 }, { 1, 1, 1, 1 }, { 3, 1, 4, 1 }, { 7, 19, 2, 33 }, { 512, 1, 1, 1 } };
    for (size_t s = 0; s < NELEM(chunk_sets); s++) {
        size_t nev = parse_stream(stream, n, chunk_sets[s], chunk_sets[s][0] ? 4 : 0, ITEM_MAX, ev, 512);
        assert_int_equal(nev, nwant);
        for (size_t i = 0; i < nev; i++) {
            assert_int_equal(ev[i].st, want[i].st);
            assert_int_equal(ev[i].len, want[i].len);
            if (want[i].st == MCS_ASCII_OK) {
                assert_int_equal(ev[i].cmd, want[i].cmd);
            } else if (want[i].reply == NULL) {
                assert_null(ev[i].reply);
            } else {
                assert_string_equal(ev[i].reply, want[i].reply);
            }
        }
    }
}

/* Values larger than item_max ------------------------------------------------ */

/* A set too large drops the key's old value in memcached (t/getset.t): the
 * parser names the key; other storage commands leave it. */
static void
test_too_large_set_drops_key(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        bool drop;
    } cases[] = {
        { "set kk 0 0 2000\r\n", true },        { "set kk 0 0 2000 noreply\r\n", true },
        { "add kk 0 0 2000\r\n", false },       { "replace kk 0 0 2000\r\n", false },
        { "append kk 0 0 2000\r\n", false },    { "cas kk 0 0 2000 1\r\n", false },
        { "set kk 0 0 10\r\n0123456789\r\n", false },
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        struct mcs_ascii_parser p = { 0 };
        struct mcs_ascii_req q;
        mcs_ascii_parse(&p, cases[i].line, strlen(cases[i].line), 1024, &q);
        assert_int_equal(q.drop_key, cases[i].drop);
        if (cases[i].drop) {
            assert_int_equal(q.key_len, 2);
            assert_memory_equal(cases[i].line + q.key_off, "kk", 2);
        }
    }
}

/* memcached answers SERVER_ERROR and swallows the value and its \r\n, even when
 * they arrive over many reads; nothing inside is taken as a command. */
static void
test_too_large_swallowed(void **state)
{
    (void)state;
    const uint32_t item_max = 1024;
    const size_t vlen = 2000;
    char *stream = malloc(4096);
    assert_non_null(stream);
    size_t n = (size_t)sprintf(stream, "set k 0 0 %zu\r\n", vlen);
    size_t line = n;
    for (size_t i = 0; i < vlen; i++) {
        stream[n++] = "get x\r\n"[i % 7];   /* looks like commands: must be skipped */
    }
    memcpy(stream + n, "\r\nget a\r\n", 9);
    n += 9;

    /* line, then the value in chunks across calls */
    static const size_t chunk_sets[][4] = { { 0 }, { 1, 1, 1, 1 }, { 700, 700, 700, 700 }, { 3, 500, 1, 2000 } };
    for (size_t s = 0; s < NELEM(chunk_sets); s++) {
        struct event ev[4000];
        size_t nev = parse_stream(stream, n, chunk_sets[s], chunk_sets[s][0] ? 4 : 0, item_max, ev, 4000);
        assert_true(nev >= 3);
        assert_int_equal(ev[0].st, MCS_ASCII_REPLY);
        assert_int_equal(ev[0].len, line);
        assert_string_equal(ev[0].reply, reply_large);
        size_t skipped = 0;
        for (size_t i = 1; i + 1 < nev; i++) {
            assert_int_equal(ev[i].st, MCS_ASCII_REPLY);
            assert_null(ev[i].reply);
            skipped += ev[i].len;
        }
        assert_int_equal(skipped, vlen + 2);
        assert_int_equal(ev[nev - 1].st, MCS_ASCII_OK);
        assert_int_equal(ev[nev - 1].cmd, MCS_CMD_GET);
        assert_int_equal(ev[nev - 1].len, 7);
    }

    /* the parser state itself: swallow counts down, an empty buffer is MORE */
    struct mcs_ascii_parser p = { 0 };
    struct mcs_ascii_req r;
    assert_int_equal(mcs_ascii_parse(&p, stream, line, item_max, &r), MCS_ASCII_REPLY);
    assert_int_equal(p.swallow, vlen + 2);
    assert_int_equal(mcs_ascii_parse(&p, stream + line, 0, item_max, &r), MCS_ASCII_MORE);
    assert_int_equal(mcs_ascii_parse(&p, stream + line, 1500, item_max, &r), MCS_ASCII_REPLY);
    assert_int_equal(r.len, 1500);
    assert_null(r.reply);
    assert_int_equal(p.swallow, vlen + 2 - 1500);
    assert_int_equal(mcs_ascii_parse(&p, stream + line + 1500, n - line - 1500, item_max, &r), MCS_ASCII_REPLY);
    assert_int_equal(r.len, vlen + 2 - 1500);
    assert_int_equal(p.swallow, 0);
    assert_int_equal(mcs_ascii_parse(&p, stream + line + vlen + 2, 7, item_max, &r), MCS_ASCII_OK);
    assert_int_equal(r.cmd, MCS_CMD_GET);

    /* noreply: no answer, still swallowed */
    memset(&p, 0, sizeof(p));
    const char *nr = "set k 0 0 2000 noreply\r\n";
    assert_int_equal(mcs_ascii_parse(&p, nr, strlen(nr), item_max, &r), MCS_ASCII_REPLY);
    assert_null(r.reply);
    assert_int_equal(r.len, strlen(nr));
    assert_int_equal(p.swallow, vlen + 2);

    /* exactly item_max is forwarded */
    memset(&p, 0, sizeof(p));
    n = (size_t)sprintf(stream, "set k 0 0 %u\r\n", item_max);
    memset(stream + n, 'v', item_max);
    memcpy(stream + n + item_max, "\r\n", 2);
    assert_int_equal(mcs_ascii_parse(&p, stream, n + item_max + 2, item_max, &r), MCS_ASCII_OK);
    assert_int_equal(r.data_len, item_max);
    assert_int_equal(p.swallow, 0);
    free(stream);
}

/* Line limits ----------------------------------------------------------------- */

/* Feeds data[0, n) growing by `step` bytes; returns the first non-MORE status and
 * the prefix length where it happened (*at), or MORE with *at == n. */
static enum mcs_ascii_status
grow(const char *data, size_t n, size_t step, struct mcs_ascii_req *r, size_t *at)
{
    struct guarded g;
    guarded_init(&g, n);
    struct mcs_ascii_parser p = { 0 };
    enum mcs_ascii_status st = MCS_ASCII_MORE;
    size_t i = 0;
    for (;;) {
        i = i + step > n ? n : i + step;
        st = mcs_ascii_parse(&p, guarded_put(&g, data, i), i, ITEM_MAX, r);
        if (st != MCS_ASCII_MORE || i == n) {
            break;
        }
    }
    *at = i;
    guarded_free(&g);
    return st;
}

static void
test_line_too_long(void **state)
{
    (void)state;
    static char buf[MCS_ASCII_LINE_MAX + 64];
    memset(buf, 'x', sizeof(buf));
    memcpy(buf, "set k 0 0 1", 11);
    struct mcs_ascii_req r;
    size_t at;
    /* up to the limit: wait for the newline */
    assert_int_equal(grow(buf, MCS_ASCII_LINE_MAX, 1, &r, &at), MCS_ASCII_MORE);
    /* one byte more without a newline: close, whatever the segmentation */
    assert_int_equal(grow(buf, MCS_ASCII_LINE_MAX + 1, 1, &r, &at), MCS_ASCII_CLOSE);
    assert_int_equal(at, MCS_ASCII_LINE_MAX + 1);
    /* even when the byte past the limit is the '\r' of the terminator */
    buf[MCS_ASCII_LINE_MAX] = '\r';
    assert_int_equal(grow(buf, MCS_ASCII_LINE_MAX + 1, 1, &r, &at), MCS_ASCII_CLOSE);
    assert_int_equal(at, MCS_ASCII_LINE_MAX + 1);
    buf[MCS_ASCII_LINE_MAX] = 'x';
    assert_int_equal(grow(buf, MCS_ASCII_LINE_MAX + 64, 1000, &r, &at), MCS_ASCII_CLOSE);
    assert_int_equal(grow(buf, MCS_ASCII_LINE_MAX + 64, MCS_ASCII_LINE_MAX + 64, &r, &at), MCS_ASCII_CLOSE);
    /* an unknown command too */
    memcpy(buf, "bogus", 5);
    assert_int_equal(grow(buf, MCS_ASCII_LINE_MAX + 1, 7, &r, &at), MCS_ASCII_CLOSE);
    /* 101 leading spaces: not taken as a get line (memcached looks at most 100 deep) */
    memset(buf, ' ', 101);
    memcpy(buf + 101, "get ", 4);
    assert_int_equal(grow(buf, MCS_ASCII_LINE_MAX + 1, 1, &r, &at), MCS_ASCII_CLOSE);
    /* a complete long storage line that arrives in one read is parsed, as memcached does */
    static char big[3000];
    memset(big, ' ', sizeof(big));
    memcpy(big, "set k 0 0 1", 11);
    memcpy(big + 3000 - 5, "\r\nx\r\n", 5);
    struct mcs_ascii_parser p = { 0 };
    assert_int_equal(mcs_ascii_parse(&p, big, 3000, ITEM_MAX, &r), MCS_ASCII_OK);
    assert_int_equal(r.cmd, MCS_CMD_SET);
    assert_int_equal(r.len, 3000);
    assert_int_equal(r.data_len, 1);
}

/* Memcached closes such a connection without a word. */
static void
test_memcached_compat_line_too_long_silent(void **state)
{
    (void)state;
    char buf[MCS_ASCII_LINE_MAX + 1];
    memset(buf, 'x', sizeof(buf));
    struct mcs_ascii_parser p = { 0 };
    struct mcs_ascii_req r;
    assert_int_equal(mcs_ascii_parse(&p, buf, sizeof(buf), ITEM_MAX, &r), MCS_ASCII_CLOSE);
    assert_null(r.reply);
}

/* Builds "get k00000 k00001 ..." of exactly n bytes (no newline). */
static char *
long_get(size_t n, const char *cmd)
{
    char *s = malloc(n + 16);
    assert_non_null(s);
    size_t o = (size_t)sprintf(s, "%s", cmd);
    unsigned k = 0;
    while (o < n) {
        o += (size_t)snprintf(s + o, n + 16 - o, " k%05u", k++ % 100000);
    }
    return s;
}

static void
test_long_get_line(void **state)
{
    (void)state;
    const size_t max = MCS_ASCII_GET_LINE_MAX;
    char *s = long_get(max + 8, "get");
    struct mcs_ascii_req r;
    size_t at;
    /* without a newline, a get line may grow to the limit (the shim's own: memcached
     * has none); one byte more may still be the '\r' of a line of max + 2 bytes,
     * two bytes more cannot be */
    assert_int_equal(grow(s, 5000, 1, &r, &at), MCS_ASCII_MORE);
    assert_int_equal(grow(s, max, 4096, &r, &at), MCS_ASCII_MORE);
    assert_int_equal(grow(s, max + 2, 4096, &r, &at), MCS_ASCII_CLOSE);
    assert_in_range(at, max + 1, max + 2);

    /* a whole get line of max bytes (with its \r\n) is accepted, whole and growing */
    s[max - 2] = '\r';
    s[max - 1] = '\n';
    if (s[max - 3] == ' ') {
        s[max - 3] = 'z';
    }
    struct mcs_ascii_parser p = { 0 };
    assert_int_equal(mcs_ascii_parse(&p, s, max, ITEM_MAX, &r), MCS_ASCII_OK);
    assert_int_equal(r.cmd, MCS_CMD_GET);
    assert_int_equal(r.len, max);
    assert_int_equal(r.eol_off, max - 2);
    uint32_t n = 0, pos = 4, off, len;
    while (mcs_ascii_next_token(s, &pos, r.eol_off, &off, &len)) {
        n++;
    }
    assert_int_equal(r.nkeys, n);
    assert_true(n > 100000);
    assert_int_equal(grow(s, max, 65536, &r, &at), MCS_ASCII_OK);
    assert_int_equal(r.nkeys, n);

    /* gets too, and leading spaces (up to 100) */
    free(s);
    s = long_get(5000, "gets");
    assert_int_equal(grow(s, 5000, 1, &r, &at), MCS_ASCII_MORE);
    free(s);
    s = long_get(5100, "                                                                                                    get");
    assert_int_equal(grow(s, 5000, 1, &r, &at), MCS_ASCII_MORE);
    free(s);
}

/* memcached only lets get/gets lines grow past 2048 bytes; gat/gats close. */
static void
test_memcached_compat_long_gat_closes(void **state)
{
    (void)state;
    static const char *const cmds[] = { "gat 10", "gats 10" };
    for (size_t i = 0; i < NELEM(cmds); i++) {
        struct mcs_ascii_req r;
        size_t at;
        char *s = long_get(5000, cmds[i]);
        enum mcs_ascii_status st = grow(s, 5000, 1, &r, &at);
        free(s);
        if (st != MCS_ASCII_CLOSE || at != MCS_ASCII_LINE_MAX + 1) {
            fail_msg("long '%s ...' line without a newline: %s after %zu bytes, expected CLOSE after %u", cmds[i],
                     result_name(st), at, MCS_ASCII_LINE_MAX + 1);
        }
    }
}

/* The same get line is accepted or refused whatever the segmentation: here
 * whole, and with its last byte (the '\n') arriving in a second read. */
static void
test_get_line_limit_segmentation(void **state)
{
    (void)state;
    const size_t max = MCS_ASCII_GET_LINE_MAX;
    for (size_t total = max; total <= max + 3; total++) {
        char *s = long_get(total, "get");
        s[total - 2] = '\r';
        s[total - 1] = '\n';
        if (s[total - 3] == ' ') {
            s[total - 3] = 'z';
        }
        struct mcs_ascii_parser p = { 0 };
        struct mcs_ascii_req r;
        enum mcs_ascii_status whole = mcs_ascii_parse(&p, s, total, ITEM_MAX, &r);
        memset(&p, 0, sizeof(p));
        enum mcs_ascii_status split = mcs_ascii_parse(&p, s, total - 1, ITEM_MAX, &r);
        if (split == MCS_ASCII_MORE) {
            split = mcs_ascii_parse(&p, s, total, ITEM_MAX, &r);
        }
        free(s);
        if (whole != split) {
            fail_msg("get line of %zu bytes: whole %s, in two reads %s", total, result_name(whole),
                     result_name(split));
        }
    }
}

/* gat/gats with an exptime and no key: memcached answers END. The parser may
 * answer it locally or hand it on with no keys. */
static void
test_memcached_compat_gat_without_keys(void **state)
{
    (void)state;
    static const char *const inputs[] = { "gat 10\r\n", "gats 0\r\n", "gat 10 \r\n" };
    for (size_t i = 0; i < NELEM(inputs); i++) {
        struct mcs_ascii_parser p = { 0 };
        struct mcs_ascii_req r;
        enum mcs_ascii_status st = mcs_ascii_parse(&p, inputs[i], strlen(inputs[i]), ITEM_MAX, &r);
        bool ok = (st == MCS_ASCII_REPLY && r.reply != NULL && strcmp(r.reply, "END\r\n") == 0)
                  || (st == MCS_ASCII_OK && r.nkeys == 0);
        if (!ok) {
            fail_msg("'%s': %s %s, expected END", show(inputs[i], strlen(inputs[i])), result_name(st),
                     r.reply ? show(r.reply, strlen(r.reply)) : "");
        }
        assert_int_equal(r.len, strlen(inputs[i]));
    }
}

/* memcached reads a command line as a C string: it ends at the first NUL byte.
 * A parser that reads past the NUL frames requests differently from the server
 * the bytes are forwarded to: "set k\0 0 0 1\r\nx\r\n" is one request to the
 * parser but two to memcached (ERROR, ERROR), and "... noreply\0" gets no reply
 * from memcached while the parser expects one, so replies on a shared backend
 * connection would be matched to the wrong requests. */
/* Regression (found by UBSan): the engine asks the route of MCS_CMD_COUNT, the
 * placeholder command of answers the shim gives itself. */
static void
test_cmd_table_bounds(void **state)
{
    (void)state;
    assert_int_equal(mcs_cmd_route(MCS_CMD_COUNT), MCS_ROUTE_LOCAL);
    assert_string_equal(mcs_cmd_name(MCS_CMD_COUNT), "?");
    assert_int_equal(mcs_cmd_route(MCS_CMD_GET), MCS_ROUTE_KEYS);
}

/* memcached ends a line at its first NUL (C string); the shim refuses such a
 * line with CLIENT_ERROR bad command line format and never forwards it, so no
 * server can frame it differently from the shim (docs/protocol.md). */
static void
test_memcached_compat_nul_ends_line(void **state)
{
    (void)state;
    /* memcached 1.6.18 reads the line up to the NUL: where that is an error, its
     * exact answer; where it would run the truncated command, the shim refuses */
    static const struct {
        const char *in;
        size_t in_len;
        uint32_t line_len;
        const char *reply;
    } cases[] = {
        { "set k\0 0 0 1\r\nx\r\n", 17, 14, reply_error },
        { "set k 0 0 1 noreply\0\r\nx\r\n", 25, 22, reply_format },
        { "get a\0b c\r\n", 11, 11, reply_format },
        { "delete a\0 noreply\r\n", 19, 19, reply_format },
        { "set k 0 0 1\0\r\nx\r\n", 17, 14, reply_format },
        { "get \0\r\n", 7, 7, reply_error },
        { "get \0", 6, 0, NULL },
        { "incr \0 1\r\n", 10, 10, reply_error },
        { "gets \0abc\r\n", 11, 11, reply_error },
        { "delete \0\r\n", 10, 10, reply_error },
        { "touch \0 1\r\n", 11, 11, reply_error },
    };
    size_t failed = 0;
    for (size_t i = 0; i < NELEM(cases); i++) {
        struct mcs_ascii_parser p = { 0 };
        struct mcs_ascii_req r;
        enum mcs_ascii_status st = mcs_ascii_parse(&p, cases[i].in, cases[i].in_len, ITEM_MAX, &r);
        if (cases[i].reply == NULL) {
            if (st != MCS_ASCII_MORE) {
                print_error("NUL case %zu: %s, expected MORE\n", i, result_name(st));
                failed++;
            }
            continue;
        }
        if (st != MCS_ASCII_REPLY || r.len != cases[i].line_len || r.reply == NULL
            || strcmp(r.reply, cases[i].reply) != 0) {
            print_error("NUL case %zu: %s len %u reply %s, expected %s for the %u-byte line\n", i,
                        result_name(st), r.len, r.reply ? r.reply : "(none)", cases[i].reply, cases[i].line_len);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
}

/* Server replies ----------------------------------------------------------- */

/* One server reply item and what parsing it must give. */
struct resp_case {
    const char *in;
    uint32_t value_max;         /* 0: ITEM_MAX */
    enum mcs_resp_status status;
    enum mcs_resp_kind kind;
    uint32_t len;               /* 0: all of in */
    const char *key;            /* VALUE */
    bool error;
};

static const struct resp_case resp_cases[] = {
    { "VALUE k 0 5\r\nhello\r\n", 0, MCS_RESP_OK, MCS_RESP_VALUE, 0, "k", false },
    { "VALUE key 4294967295 3 18446744073709551615\r\nabc\r\n", 0, MCS_RESP_OK, MCS_RESP_VALUE, 0, "key", false },
    { "VALUE k 0 0\r\n\r\n", 0, MCS_RESP_OK, MCS_RESP_VALUE, 0, "k", false },
    { "VALUE k 0 4\r\na\r\nb\r\n", 0, MCS_RESP_OK, MCS_RESP_VALUE, 0, "k", false },
    { "VALUE " K250 " 1 1 99\r\nx\r\n", 0, MCS_RESP_OK, MCS_RESP_VALUE, 0, K250, false },
    { "VALUE k 0 16\r\n0123456789abcdef\r\n", 16, MCS_RESP_OK, MCS_RESP_VALUE, 0, "k", false },
    { "END\r\n", 0, MCS_RESP_OK, MCS_RESP_END, 0, NULL, false },
    /* memcached never ends a line with a bare \n: such a reply is not memcached's */
    { "END\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "STORED\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 1\nx\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "STAT pid 42\r\n", 0, MCS_RESP_OK, MCS_RESP_STAT, 0, NULL, false },
    { "STAT version 1.6.18\r\n", 0, MCS_RESP_OK, MCS_RESP_STAT, 0, NULL, false },
    { "STORED\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "NOT_STORED\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "EXISTS\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "NOT_FOUND\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "DELETED\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "TOUCHED\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "OK\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "RESET\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "18446744073709551615\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "VERSION 1.6.18\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "ENDX\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    { "ERROR\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, true },
    { "CLIENT_ERROR bad data chunk\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, true },
    { "SERVER_ERROR object too large for cache\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, true },
    { "SERVER_ERROR out of memory storing object\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, true },
    { "SERVER_ERROR\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, true },
    { "ERRORS\r\n", 0, MCS_RESP_OK, MCS_RESP_LINE, 0, NULL, false },
    /* bad VALUE lines */
    { "VALUE k 0\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    /* a small value_max: a digit above it must not wrap the bound */
    { "VALUE k 0 6\r\nabcdef\r\n", 5, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 5\r\nabcde\r\n", 5, MCS_RESP_OK, MCS_RESP_VALUE, 0, "k", false },
    { "VALUE k 0 9\r\nabcdefghi\r\n", 1, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 abc\r\nabc\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 -1\r\n\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k x 1\r\nx\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 4294967296 1\r\nx\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 1 abc\r\nx\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 1 18446744073709551616\r\nx\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 1 2 3\r\nx\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 17\r\n", 16, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 99999999999999999999\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    /* missing or wrong data terminator */
    { "VALUE k 0 3\r\nabcXY", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 3\r\nabc\n\r", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 3\r\nabcd\r\n", 0, MCS_RESP_BAD, 0, 0, NULL, false },
    { "VALUE k 0 3\r\nab\r\n", 0, MCS_RESP_MORE, 0, 0, NULL, false },
};

/* resp results are compared field by field; prints and returns false on a difference */
static bool
check_resp(const struct resp_case *c, const char *how, const char *buf, size_t in_len, enum mcs_resp_status st,
           const struct mcs_ascii_resp *r)
{
    uint32_t want_len = c->len ? c->len : (uint32_t)in_len;
    if (st != c->status) {
        print_error("%s [%s]: status %d, expected %d\n", how, show(c->in, in_len), st, c->status);
        return false;
    }
    if (st != MCS_RESP_OK) {
        return true;
    }
    if (r->kind != c->kind || r->len != want_len || r->error != c->error) {
        print_error("%s [%s]: kind %d len %u error %d, expected %d %u %d\n", how, show(c->in, in_len), r->kind,
                    r->len, r->error, c->kind, want_len, c->error);
        return false;
    }
    if (c->key != NULL
        && (r->key_len != strlen(c->key) || r->key_off + r->key_len > r->len
            || memcmp(buf + r->key_off, c->key, r->key_len) != 0)) {
        print_error("%s [%s]: key '%s'\n", how, show(c->in, in_len), show(buf + r->key_off, r->key_len));
        return false;
    }
    return true;
}

static void
test_resp_cases(void **state)
{
    (void)state;
    size_t failed = 0;
    for (size_t i = 0; i < NELEM(resp_cases); i++) {
        const struct resp_case *c = &resp_cases[i];
        size_t in_len = strlen(c->in);
        uint32_t vmax = c->value_max ? c->value_max : ITEM_MAX;
        struct guarded g;
        guarded_init(&g, in_len);
        struct mcs_ascii_resp r;
        const char *buf = guarded_put(&g, c->in, in_len);
        bool ok = check_resp(c, "whole", buf, in_len, mcs_ascii_resp_parse(buf, in_len, vmax, &r), &r);
        /* byte by byte: MORE until complete (BAD may show as soon as it is known) */
        size_t want = c->len ? c->len : in_len;
        for (size_t n = 0; n <= want && ok; n++) {
            buf = guarded_put(&g, c->in, n);
            enum mcs_resp_status st = mcs_ascii_resp_parse(buf, n, vmax, &r);
            if (n < want) {
                if (st == MCS_RESP_OK || (st == MCS_RESP_BAD && c->status != MCS_RESP_BAD)) {
                    print_error("bytewise [%s]: status %d after %zu bytes\n", show(c->in, in_len), st, n);
                    ok = false;
                }
                if (st == MCS_RESP_BAD) {
                    break;
                }
            } else {
                ok = check_resp(c, "bytewise", buf, in_len, st, &r);
            }
        }
        guarded_free(&g);
        if (!ok) {
            failed++;
        }
    }
    if (failed > 0) {
        fail_msg("%zu of %zu reply cases failed", failed, NELEM(resp_cases));
    }
}

/* A multi-get reply: VALUE, VALUE, END in one buffer, and in any segmentation. */
static void
test_resp_pipelined(void **state)
{
    (void)state;
    static const char stream[] = "VALUE a 0 1\r\na\r\nVALUE bb 7 2 99\r\nbb\r\nEND\r\nSTAT x 1\r\nSTORED\r\nERROR\r\n";
    static const struct {
        enum mcs_resp_kind kind;
        uint32_t len;
        bool error;
    } want[] = {
        { MCS_RESP_VALUE, 16, false }, { MCS_RESP_VALUE, 21, false }, { MCS_RESP_END, 5, false },
        { MCS_RESP_STAT, 10, false },  { MCS_RESP_LINE, 8, false },   { MCS_RESP_LINE, 7, true },
    };
    size_t n = sizeof(stream) - 1;
    for (size_t step = 1; step <= n; step++) {
        struct feed f;
        feed_start(&f, stream, n);
        size_t k = 0;
        while (f.consumed < n) {
            feed_arrive(&f, step);
            for (;;) {
                struct mcs_ascii_resp r;
                size_t len;
                const char *buf = feed_window(&f, &len);
                enum mcs_resp_status st = mcs_ascii_resp_parse(buf, len, ITEM_MAX, &r);
                assert_int_not_equal(st, MCS_RESP_BAD);
                if (st == MCS_RESP_MORE) {
                    break;
                }
                assert_true(k < NELEM(want));
                assert_int_equal(r.kind, want[k].kind);
                assert_int_equal(r.len, want[k].len);
                assert_int_equal(r.error, want[k].error);
                if (k == 1) {
                    assert_int_equal(r.key_len, 2);
                    assert_memory_equal(buf + r.key_off, "bb", 2);
                }
                f.consumed += r.len;
                k++;
            }
        }
        assert_int_equal(k, NELEM(want));
        feed_end(&f);
    }
}

static void
test_resp_line_too_long(void **state)
{
    (void)state;
    size_t n = MCS_ASCII_RESP_LINE_MAX + 100;
    char *s = malloc(n);
    assert_non_null(s);
    memset(s, 'x', n);
    memcpy(s, "STAT ", 5);
    struct mcs_ascii_resp r;
    assert_int_equal(mcs_ascii_resp_parse(s, MCS_ASCII_RESP_LINE_MAX - 1, ITEM_MAX, &r), MCS_RESP_MORE);
    assert_int_equal(mcs_ascii_resp_parse(s, MCS_ASCII_RESP_LINE_MAX, ITEM_MAX, &r), MCS_RESP_BAD);
    assert_int_equal(mcs_ascii_resp_parse(s, n, ITEM_MAX, &r), MCS_RESP_BAD);
    /* a newline beyond the limit does not help */
    s[n - 1] = '\n';
    assert_int_equal(mcs_ascii_resp_parse(s, n, ITEM_MAX, &r), MCS_RESP_BAD);
    /* just inside the limit is fine */
    s[MCS_ASCII_RESP_LINE_MAX - 2] = '\r';
    s[MCS_ASCII_RESP_LINE_MAX - 1] = '\n';
    assert_int_equal(mcs_ascii_resp_parse(s, n, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.kind, MCS_RESP_STAT);
    assert_int_equal(r.len, MCS_ASCII_RESP_LINE_MAX);
    free(s);
}

/* Which reply lines each command may get (anything else is a server failure). */
static void
test_reply_fits(void **state)
{
    (void)state;
    static const struct {
        enum mcs_cmd cmd;
        const char *line;
        bool fits;
    } cases[] = {
        { MCS_CMD_SET, "STORED\r\n", true },
        { MCS_CMD_ADD, "NOT_STORED\r\n", true },
        { MCS_CMD_CAS, "EXISTS\r\n", true },
        { MCS_CMD_CAS, "NOT_FOUND\r\n", true },
        { MCS_CMD_APPEND, "ERROR\r\n", true },
        { MCS_CMD_PREPEND, "CLIENT_ERROR bad data chunk\r\n", true },
        { MCS_CMD_REPLACE, "SERVER_ERROR out of memory storing object\r\n", true },
        { MCS_CMD_SET, "DELETED\r\n", false },
        { MCS_CMD_SET, "END\r\n", false },
        { MCS_CMD_SET, "42\r\n", false },
        { MCS_CMD_SET, "STORED \r\n", false },
        { MCS_CMD_SET, "STOREDX\r\n", false },
        { MCS_CMD_SET, "ERRORS\r\n", false },
        { MCS_CMD_SET, "stored\r\n", false },
        { MCS_CMD_DELETE, "DELETED\r\n", true },
        { MCS_CMD_DELETE, "NOT_FOUND\r\n", true },
        { MCS_CMD_DELETE, "STORED\r\n", false },
        { MCS_CMD_INCR, "0\r\n", true },
        { MCS_CMD_DECR, "18446744073709551615\r\n", true },
        { MCS_CMD_INCR, "NOT_FOUND\r\n", true },
        { MCS_CMD_INCR, "18446744073709551616\r\n", false },
        { MCS_CMD_INCR, "-5\r\n", false },
        { MCS_CMD_INCR, "+5\r\n", false },
        { MCS_CMD_INCR, "12a\r\n", false },
        { MCS_CMD_INCR, "\r\n", false },
        { MCS_CMD_INCR, "STORED\r\n", false },
        { MCS_CMD_TOUCH, "TOUCHED\r\n", true },
        { MCS_CMD_TOUCH, "STORED\r\n", false },
        { MCS_CMD_VERSION, "VERSION 1.6.18\r\n", true },
        { MCS_CMD_VERSION, "VERSIONX\r\n", false },
        { MCS_CMD_FLUSH_ALL, "OK\r\n", true },
        { MCS_CMD_VERBOSITY, "OK\r\n", true },
        { MCS_CMD_FLUSH_ALL, "STORED\r\n", false },
        { MCS_CMD_GET, "STORED\r\n", false },
        { MCS_CMD_GET, "SERVER_ERROR x\r\n", true },
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        bool got = mcs_ascii_reply_fits(cases[i].cmd, cases[i].line, (uint32_t)strlen(cases[i].line));
        if (got != cases[i].fits) {
            print_message("%s [%s]: %d, expected %d\n", mcs_cmd_name(cases[i].cmd), cases[i].line, got,
                          cases[i].fits);
        }
        assert_int_equal(got, cases[i].fits);
    }
    /* a NUL anywhere in a reply line is not memcached's */
    static const char nul_line[] = "STO\0RED\r\n";
    struct mcs_ascii_resp r;
    assert_int_equal(mcs_ascii_resp_parse(nul_line, sizeof(nul_line) - 1, ITEM_MAX, &r), MCS_RESP_BAD);
    static const char nul_value[] = "VALUE k\0 0 1\r\nx\r\n";
    assert_int_equal(mcs_ascii_resp_parse(nul_value, sizeof(nul_value) - 1, ITEM_MAX, &r), MCS_RESP_BAD);
}

/* A VALUE whose data is larger than the line limit is fine: only lines are bounded. */
static void
test_resp_big_value(void **state)
{
    (void)state;
    size_t vlen = 100000;
    char *s = malloc(vlen + 64);
    assert_non_null(s);
    int h = sprintf(s, "VALUE big 0 %zu\r\n", vlen);
    memset(s + h, 'v', vlen);
    memcpy(s + h + vlen, "\r\n", 2);
    size_t n = (size_t)h + vlen + 2;
    struct mcs_ascii_resp r;
    assert_int_equal(mcs_ascii_resp_parse(s, n - 1, ITEM_MAX, &r), MCS_RESP_MORE);
    assert_int_equal(mcs_ascii_resp_parse(s, n, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.len, n);
    assert_int_equal(mcs_ascii_resp_parse(s, n, (uint32_t)vlen - 1, &r), MCS_RESP_BAD);
    free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_command_ok),
        cmocka_unit_test(test_command_list_covered),
        cmocka_unit_test(test_errors_as_memcached),
        cmocka_unit_test(test_next_token),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_pipelined_all_cases),
        cmocka_unit_test(test_too_large_swallowed),
        cmocka_unit_test(test_too_large_set_drops_key),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_long_get_line),
        cmocka_unit_test(test_get_line_limit_segmentation),
        cmocka_unit_test(test_memcached_compat_cases),
        cmocka_unit_test(test_memcached_compat_line_too_long_silent),
        cmocka_unit_test(test_memcached_compat_long_gat_closes),
        cmocka_unit_test(test_memcached_compat_gat_without_keys),
        cmocka_unit_test(test_memcached_compat_nul_ends_line),
        cmocka_unit_test(test_cmd_table_bounds),
        cmocka_unit_test(test_resp_cases),
        cmocka_unit_test(test_resp_pipelined),
        cmocka_unit_test(test_resp_line_too_long),
        cmocka_unit_test(test_resp_big_value),
        cmocka_unit_test(test_reply_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
