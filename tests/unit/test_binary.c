/*
 * tests/unit/test_binary.c: the memcached binary protocol core
 * (preload/core/binary.c): request parser, reply parser, builders, the opcode
 * and status tables and the quiet rules.
 *
 * Every request case is parsed whole and then fed one byte at a time into a
 * growing buffer (MCS_BIN_MORE until the parser has what it needs, then the
 * same result). Each input is placed so that its last byte sits right before
 * a PROT_NONE page, so a one-byte over-read crashes even without sanitizers.
 *
 * The expected statuses, and whether the connection is closed, were observed
 * on a real memcached 1.6.18 (packets sent over a socket, replies read back);
 * the rows say so where the behaviour is surprising.
 */
#include <stdbool.h>
#include <string.h>

#include "preload/core/binary.h"
#include "tests/unit/unit.h"

UNIT_RESULTS_IN_ORDER(MCS_BIN_OK, MCS_BIN_MORE, MCS_BIN_REPLY, MCS_BIN_CLOSE);

/* Extras: set flags 5 exptime 100; incr delta 1 initial 10 exptime 0; touch exptime 7. */
#define SET_EXT   "\x00\x00\x00\x05\x00\x00\x00\x64"
#define INCR_EXT  "\x00\x00\x00\x00\x00\x00\x00\x01" "\x00\x00\x00\x00\x00\x00\x00\x0a" "\x00\x00\x00\x00"
#define TOUCH_EXT "\x00\x00\x00\x07"
#define EXT4      "\x00\x00\x00\x01"
#define EXT8      "\x00\x00\x00\x01\x00\x00\x00\x02"

#define OPAQUE 0xdeadbeefu

/* Packets ----------------------------------------------------------------- */

static void
be16(char *p, uint16_t v)
{
    p[0] = (char)(v >> 8);
    p[1] = (char)v;
}

static void
be32(char *p, uint32_t v)
{
    be16(p, (uint16_t)(v >> 16));
    be16(p + 2, (uint16_t)v);
}

/* Writes a header with the given fields (status/vbucket 0) and returns 24. */
static size_t
put_header(char *out, uint8_t magic, uint8_t opcode, uint16_t key_len, uint8_t ext_len, uint32_t body_len,
           uint32_t opaque, uint64_t cas)
{
    out[0] = (char)magic;
    out[1] = (char)opcode;
    be16(out + 2, key_len);
    out[4] = (char)ext_len;
    out[5] = 0;
    be16(out + 6, 0);
    be32(out + 8, body_len);
    be32(out + 12, opaque);
    be32(out + 16, (uint32_t)(cas >> 32));
    be32(out + 20, (uint32_t)cas);
    return 24;
}

struct span {
    const char *p;
    size_t      n;
};

#define SP(lit) { (lit), sizeof(lit) - 1 }

/* A request case: the packet, and what parsing it must give. */
struct bin_case {
    const char  *what;
    bool         fix_magic;     /* magic other than 0x80 */
    uint8_t      magic;
    uint8_t      opcode;
    struct span  ext, key, val;
    bool         fix_key, fix_ext, fix_body;    /* header lengths other than the spans' */
    uint16_t     hdr_key;
    uint8_t      hdr_ext;
    uint32_t     hdr_body;
    uint64_t     cas;
    uint32_t     item_max;      /* 0: ITEM_MAX */
    enum mcs_bin_result want;
    uint16_t     status;        /* REPLY / CLOSE */
    uint64_t     swallow;       /* REPLY: bytes skipped after the 24 consumed */
    uint32_t     len;           /* OK: bytes consumed; 0: the whole packet */
};

#define MAGIC(m)   .fix_magic = true, .magic = (m)
#define KEYLEN(n)  .fix_key = true, .hdr_key = (n)
#define EXTLEN(n)  .fix_ext = true, .hdr_ext = (n)
#define BODYLEN(n) .fix_body = true, .hdr_body = (n)

#define OK(op, ...)           { .opcode = (op), .want = MCS_BIN_OK, __VA_ARGS__ }
#define REPLY(st, sw, ...)    { .want = MCS_BIN_REPLY, .status = (st), .swallow = (sw), __VA_ARGS__ }
#define CLOSE(st, ...)        { .want = MCS_BIN_CLOSE, .status = (st), __VA_ARGS__ }
#define EINVAL_CLOSE(...)     CLOSE(MCS_BIN_STATUS_EINVAL, __VA_ARGS__)

static size_t
build_case(const struct bin_case *c, char *out, size_t cap)
{
    size_t body = c->ext.n + c->key.n + c->val.n;
    assert_true(24 + body <= cap);
    put_header(out, c->fix_magic ? c->magic : 0x80, c->opcode, c->fix_key ? c->hdr_key : (uint16_t)c->key.n,
               c->fix_ext ? c->hdr_ext : (uint8_t)c->ext.n, c->fix_body ? c->hdr_body : (uint32_t)body, OPAQUE,
               c->cas);
    size_t n = 24;
    if (c->ext.n) {
        memcpy(out + n, c->ext.p, c->ext.n);
    }
    n += c->ext.n;
    if (c->key.n) {
        memcpy(out + n, c->key.p, c->key.n);
    }
    n += c->key.n;
    if (c->val.n) {
        memcpy(out + n, c->val.p, c->val.n);
    }
    return n + c->val.n;
}

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            print_error("%s [%s, opcode 0x%02x]: ", how, c->what, c->opcode);         \
            print_error(__VA_ARGS__);                                                 \
            print_error("\n");                                                        \
            return false;                                                             \
        }                                                                             \
    } while (0)

static bool
check_span(const char *buf, uint32_t off, size_t len, struct span want)
{
    return len == want.n && (len == 0 || memcmp(buf + off, want.p, len) == 0);
}

/* Checks one result against the case; prints what differs and returns false. */
static bool
check_result(const struct bin_case *c, const char *how, const char *buf, size_t n, enum mcs_bin_result st,
             const struct mcs_bin_req *r, const struct mcs_bin_parser *p)
{
    CHECK(st == c->want, "result %s, expected %s (status 0x%x)", result_name(st), result_name(c->want), r->status);
    if (st == MCS_BIN_MORE) {
        return true;
    }
    CHECK(r->opcode == c->opcode, "opcode 0x%02x", r->opcode);
    CHECK(r->opaque == OPAQUE, "opaque 0x%08x", r->opaque);
    CHECK(r->base == mcs_bin_op_base(c->opcode), "base 0x%02x", r->base);
    CHECK(r->quiet == mcs_bin_op_quiet(c->opcode), "quiet %d", r->quiet);
    CHECK(r->route == mcs_bin_op_route(c->opcode), "route %d", r->route);
    if (st != MCS_BIN_OK) {
        CHECK(r->status == c->status, "status 0x%04x, expected 0x%04x", r->status, c->status);
        CHECK(r->len == 24, "len %u, expected 24", r->len);
        if (st == MCS_BIN_REPLY) {
            bool drops = c->status == MCS_BIN_STATUS_E2BIG && mcs_bin_op_base(c->opcode) == MCS_BIN_OP_SET;
            CHECK(r->drop_key == drops, "drop_key %d", r->drop_key);
            CHECK(!drops || check_span(buf, r->key_off, r->key_len, c->key), "dropped key span");
            CHECK(p->swallow == c->swallow, "swallow %llu, expected %llu", (unsigned long long)p->swallow,
                  (unsigned long long)c->swallow);
        }
        return true;
    }
    uint32_t want_len = c->len ? c->len : (uint32_t)n;
    CHECK(r->len == want_len, "len %u, expected %u", r->len, want_len);
    CHECK(r->status == 0, "OK with status 0x%x", r->status);
    CHECK(p->swallow == 0, "OK with swallow %llu", (unsigned long long)p->swallow);
    CHECK(r->cas == c->cas, "cas %llu", (unsigned long long)r->cas);
    CHECK(r->extras_off == 24, "extras_off %u", r->extras_off);
    CHECK(check_span(buf, r->extras_off, r->extras_len, c->ext), "extras span");
    CHECK(r->key_off == 24u + r->extras_len, "key_off %u", r->key_off);
    CHECK(check_span(buf, r->key_off, r->key_len, c->key), "key span (%u bytes)", r->key_len);
    CHECK(r->value_off == r->key_off + r->key_len, "value_off %u", r->value_off);
    if (r->len == n) {
        CHECK(check_span(buf, r->value_off, r->value_len, c->val), "value span (%u bytes)", r->value_len);
        CHECK((uint64_t)r->value_off + r->value_len == r->len, "value does not end the packet");
    } else {
        CHECK(r->value_len == 0 && r->value_off == r->len, "unread value: value %u+%u", r->value_off, r->value_len);
    }
    CHECK(r->body_len == (c->fix_body ? c->hdr_body : c->ext.n + c->key.n + c->val.n), "body_len %u", r->body_len);
    return true;
}

/* Parses the case whole, then byte by byte: MORE until the parser has the
 * header (for answers) or the whole request (OK), then the same result. */
static bool
run_case(const struct bin_case *c)
{
    char pkt[1024];
    size_t n = build_case(c, pkt, sizeof(pkt));
    uint32_t item_max = c->item_max ? c->item_max : ITEM_MAX;
    struct guarded g;
    guarded_init(&g, n);
    bool ok = true;

    struct mcs_bin_parser p = { 0 };
    struct mcs_bin_req r;
    const char *buf = guarded_put(&g, pkt, n);
    enum mcs_bin_result st = mcs_bin_parse(&p, buf, n, item_max, &r);
    const char *how = "whole";
    ok = check_result(c, how, buf, n, st, &r, &p);

    /* a set too large is answered once its key is in: memcached drops the key's old value */
    bool drops = c->want == MCS_BIN_REPLY && c->status == MCS_BIN_STATUS_E2BIG
                 && mcs_bin_op_base(c->opcode) == MCS_BIN_OP_SET;
    size_t need = c->want == MCS_BIN_OK ? (c->len ? c->len : n) : drops ? 24 + c->ext.n + c->key.n : 24;
    how = "bytewise";
    for (size_t i = 0; i <= n && ok; i++) {
        struct mcs_bin_parser q = { 0 };
        buf = guarded_put(&g, pkt, i);
        st = mcs_bin_parse(&q, buf, i, item_max, &r);
        if (i < need) {
            CHECK(st == MCS_BIN_MORE, "%s after %zu of %zu bytes", result_name(st), i, need);
        } else {
            ok = check_result(c, how, buf, n, st, &r, &q);
        }
    }
    guarded_free(&g);
    return ok;
}

static void
run_cases(const struct bin_case *cases, size_t n)
{
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!run_case(&cases[i])) {
            failed++;
        }
    }
    if (failed > 0) {
        fail_msg("%zu of %zu cases failed", failed, n);
    }
}

/* Runs the template cases once for each opcode of a family. */
static void
run_family(const uint8_t *ops, size_t nops, const struct bin_case *tmpl, size_t n)
{
    for (size_t o = 0; o < nops; o++) {
        struct bin_case cases[16];
        assert_true(n <= NELEM(cases));
        for (size_t i = 0; i < n; i++) {
            cases[i] = tmpl[i];
            cases[i].opcode = ops[o];
        }
        run_cases(cases, n);
    }
}

/* Well-formed requests ---------------------------------------------------- */

static const struct bin_case ok_cases[] = {
    OK(MCS_BIN_OP_GET, .what = "get", .key = SP("foo")),
    OK(MCS_BIN_OP_GET, .what = "get 250-byte key", .key = SP(K250)),
    OK(MCS_BIN_OP_GET, .what = "get with cas (ignored by memcached)", .key = SP("k"), .cas = 77),
    OK(MCS_BIN_OP_GETQ, .what = "getq", .key = SP("foo")),
    OK(MCS_BIN_OP_GETK, .what = "getk", .key = SP("foo")),
    OK(MCS_BIN_OP_GETKQ, .what = "getkq", .key = SP("foo")),
    OK(MCS_BIN_OP_SET, .what = "set", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("hello")),
    OK(MCS_BIN_OP_SET, .what = "set empty value", .ext = SP(SET_EXT), .key = SP("k")),
    OK(MCS_BIN_OP_SET, .what = "set with cas", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("v"), .cas = 12345),
    OK(MCS_BIN_OP_SET, .what = "set value of item_max", .ext = SP(SET_EXT), .key = SP("k"),
       .val = SP("0123456789abcdef"), .item_max = 16),
    OK(MCS_BIN_OP_SETQ, .what = "setq", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("hello")),
    OK(MCS_BIN_OP_ADD, .what = "add", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("v")),
    OK(MCS_BIN_OP_ADDQ, .what = "addq", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("v")),
    OK(MCS_BIN_OP_REPLACE, .what = "replace", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("v")),
    OK(MCS_BIN_OP_REPLACEQ, .what = "replaceq", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("v")),
    OK(MCS_BIN_OP_APPEND, .what = "append", .key = SP("k"), .val = SP("tail")),
    OK(MCS_BIN_OP_APPEND, .what = "append nothing", .key = SP("k")),
    OK(MCS_BIN_OP_APPENDQ, .what = "appendq", .key = SP("k"), .val = SP("tail")),
    OK(MCS_BIN_OP_PREPEND, .what = "prepend", .key = SP("k"), .val = SP("head")),
    OK(MCS_BIN_OP_PREPENDQ, .what = "prependq", .key = SP("k"), .val = SP("head")),
    OK(MCS_BIN_OP_DELETE, .what = "delete", .key = SP("k")),
    OK(MCS_BIN_OP_DELETE, .what = "delete with cas", .key = SP("k"), .cas = 9),
    OK(MCS_BIN_OP_DELETEQ, .what = "deleteq", .key = SP("k")),
    OK(MCS_BIN_OP_INCREMENT, .what = "increment", .ext = SP(INCR_EXT), .key = SP("n")),
    OK(MCS_BIN_OP_INCREMENTQ, .what = "incrementq", .ext = SP(INCR_EXT), .key = SP("n")),
    OK(MCS_BIN_OP_DECREMENT, .what = "decrement", .ext = SP(INCR_EXT), .key = SP("n")),
    OK(MCS_BIN_OP_DECREMENTQ, .what = "decrementq", .ext = SP(INCR_EXT), .key = SP("n")),
    OK(MCS_BIN_OP_QUIT, .what = "quit"),
    OK(MCS_BIN_OP_QUITQ, .what = "quitq"),
    OK(MCS_BIN_OP_FLUSH, .what = "flush"),
    OK(MCS_BIN_OP_FLUSH, .what = "flush with exptime", .ext = SP(EXT4)),
    OK(MCS_BIN_OP_FLUSHQ, .what = "flushq"),
    OK(MCS_BIN_OP_FLUSHQ, .what = "flushq with exptime", .ext = SP(EXT4)),
    OK(MCS_BIN_OP_NOOP, .what = "noop"),
    OK(MCS_BIN_OP_VERSION, .what = "version"),
    OK(MCS_BIN_OP_STAT, .what = "stat"),
    OK(MCS_BIN_OP_STAT, .what = "stat settings", .key = SP("settings")),
    OK(MCS_BIN_OP_TOUCH, .what = "touch", .ext = SP(TOUCH_EXT), .key = SP("k")),
    OK(MCS_BIN_OP_GAT, .what = "gat", .ext = SP(TOUCH_EXT), .key = SP("k")),
    OK(MCS_BIN_OP_GATQ, .what = "gatq", .ext = SP(TOUCH_EXT), .key = SP("k")),
    OK(MCS_BIN_OP_GATK, .what = "gatk", .ext = SP(TOUCH_EXT), .key = SP("k")),
    OK(MCS_BIN_OP_GATKQ, .what = "gatkq", .ext = SP(TOUCH_EXT), .key = SP("k")),
    /* memcached reads only header, extras and key of touch/gat/stat: the rest
     * of the body is the next packet (observed: a noop inside a touch's value
     * is answered as a noop) */
    OK(MCS_BIN_OP_TOUCH, .what = "touch with value", .ext = SP(TOUCH_EXT), .key = SP("k"), .val = SP("xyz"),
       .len = 24 + 4 + 1),
    OK(MCS_BIN_OP_GATKQ, .what = "gatkq with value", .ext = SP(TOUCH_EXT), .key = SP("k"), .val = SP("xyz"),
       .len = 24 + 4 + 1),
    OK(MCS_BIN_OP_STAT, .what = "stat with value", .key = SP("items"), .val = SP("xyz"), .len = 24 + 5),
    OK(MCS_BIN_OP_GAT, .what = "gat claiming 100 MB of body", .ext = SP(TOUCH_EXT), .key = SP("k"),
       BODYLEN(100000000), .len = 24 + 4 + 1),
    /* the data type and vbucket fields are ignored */
};

/* Opcodes that memcached 1.6.18 answers "Unknown command" (0x0081) and keeps
 * the connection. */
static const struct bin_case refused_cases[] = {
    /* SASL without SASL support: the value is skipped exactly */
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0, .what = "sasl list mechs", .opcode = MCS_BIN_OP_SASL_LIST),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 5 + 4, .what = "sasl auth", .opcode = MCS_BIN_OP_SASL_AUTH,
          .key = SP("PLAIN"), .val = SP("\0u\0p")),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 5, .what = "sasl step no value", .opcode = MCS_BIN_OP_SASL_STEP,
          .key = SP("PLAIN")),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 5 + 100000, .what = "sasl auth 100000-byte value",
          .opcode = MCS_BIN_OP_SASL_AUTH, .key = SP("PLAIN"), BODYLEN(5 + 100000)),
    /* a value of 2^31 bytes or more is not skipped by memcached (an int) */
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 5, .what = "sasl auth 2 GiB value", .opcode = MCS_BIN_OP_SASL_AUTH,
          .key = SP("PLAIN"), BODYLEN(5 + 0x80000000u)),
    /* verbosity is not dispatched by memcached 1.6.18: an unknown opcode, whose
     * body length memcached skips again after extras and key */
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0, .what = "verbosity without extras", .opcode = MCS_BIN_OP_VERBOSITY),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 4 + 4, .what = "verbosity", .opcode = MCS_BIN_OP_VERBOSITY,
          .ext = SP(EXT4)),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 5 + 5, .what = "verbosity with extras and key",
          .opcode = MCS_BIN_OP_VERBOSITY, .ext = SP(EXT4), .key = SP("k")),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0, .what = "unknown 0x30", .opcode = 0x30),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 3 + 5, .what = "unknown 0x30 key and value", .opcode = 0x30,
          .key = SP("abc"), .val = SP("xy")),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 8 + 8, .what = "unknown 0x30 extras and key", .opcode = 0x30,
          .ext = SP("1234"), .key = SP("abcd")),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0x7fffffff, .what = "unknown, body 2^31-1", .opcode = 0x3c,
          BODYLEN(0x7fffffff)),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0, .what = "unknown, body 2^31+5: not skipped", .opcode = 0x3c,
          BODYLEN(0x80000005u)),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0, .what = "unknown 0xff", .opcode = 0xff),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0, .what = "unknown 0x1f", .opcode = 0x1f),
    REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 0, .what = "multiply 0x30 range op", .opcode = 0x38),
};

/* Malformed requests: rows common to all opcodes. */
static const struct bin_case framing_cases[] = {
    CLOSE(0, .what = "response magic", MAGIC(0x81), .opcode = MCS_BIN_OP_NOOP),
    CLOSE(0, .what = "magic 0x00", MAGIC(0x00), .opcode = MCS_BIN_OP_NOOP),
    CLOSE(0, .what = "magic 0xff", MAGIC(0xff), .opcode = MCS_BIN_OP_GET, .key = SP("k")),
    CLOSE(MCS_BIN_STATUS_UNKNOWN_COMMAND, .what = "key longer than body", .opcode = MCS_BIN_OP_GET,
          .key = SP("kk"), BODYLEN(1)),
    CLOSE(MCS_BIN_STATUS_UNKNOWN_COMMAND, .what = "extras + key longer than body", .opcode = MCS_BIN_OP_SET,
          .ext = SP(SET_EXT), .key = SP("k"), BODYLEN(5)),
    CLOSE(MCS_BIN_STATUS_UNKNOWN_COMMAND, .what = "unknown opcode, key longer than body", .opcode = 0x30,
          .key = SP("kk"), BODYLEN(1)),
    CLOSE(MCS_BIN_STATUS_UNKNOWN_COMMAND, .what = "sasl, extras longer than body", .opcode = MCS_BIN_OP_SASL_AUTH,
          .ext = SP("1234"), BODYLEN(2)),
    CLOSE(MCS_BIN_STATUS_UNKNOWN_COMMAND, .what = "body 0, key 65535", .opcode = MCS_BIN_OP_GET, KEYLEN(65535),
          BODYLEN(0)),
    CLOSE(MCS_BIN_STATUS_EINVAL, .what = "251-byte key", .opcode = MCS_BIN_OP_GET, .key = SP(K251)),
    CLOSE(MCS_BIN_STATUS_EINVAL, .what = "251-byte key on set", .opcode = MCS_BIN_OP_SET, .ext = SP(SET_EXT),
          .key = SP(K251), .val = SP("v")),
    CLOSE(MCS_BIN_STATUS_EINVAL, .what = "251-byte key, unknown opcode", .opcode = 0x30, .key = SP(K251)),
    CLOSE(MCS_BIN_STATUS_EINVAL, .what = "65535-byte key (header only)", .opcode = MCS_BIN_OP_GET, KEYLEN(65535),
          BODYLEN(65535)),
    /* the length check comes first */
    CLOSE(MCS_BIN_STATUS_UNKNOWN_COMMAND, .what = "251-byte key, body 10", .opcode = MCS_BIN_OP_GET,
          .key = SP(K251), BODYLEN(10)),
};

/* Per-opcode length rules: every opcode of a family gets the same answers. */
static const uint8_t get_ops[] = { MCS_BIN_OP_GET, MCS_BIN_OP_GETQ, MCS_BIN_OP_GETK, MCS_BIN_OP_GETKQ };
static const struct bin_case get_bad[] = {
    EINVAL_CLOSE(.what = "no key"),
    EINVAL_CLOSE(.what = "extras", .ext = SP(EXT4), .key = SP("k")),
    EINVAL_CLOSE(.what = "value", .key = SP("k"), .val = SP("v")),
    EINVAL_CLOSE(.what = "value, no key", .val = SP("v")),
};

static const uint8_t store_ops[] = {
    MCS_BIN_OP_SET, MCS_BIN_OP_SETQ, MCS_BIN_OP_ADD, MCS_BIN_OP_ADDQ, MCS_BIN_OP_REPLACE, MCS_BIN_OP_REPLACEQ,
};
static const struct bin_case store_bad[] = {
    EINVAL_CLOSE(.what = "no extras", .key = SP("k"), .val = SP("v")),
    EINVAL_CLOSE(.what = "4 bytes extras", .ext = SP(EXT4), .key = SP("k"), .val = SP("v")),
    EINVAL_CLOSE(.what = "20 bytes extras", .ext = SP(INCR_EXT), .key = SP("k"), .val = SP("v")),
    EINVAL_CLOSE(.what = "no key", .ext = SP(SET_EXT), .val = SP("v")),
    /* too large: answered after the header, value skipped, connection kept
     * (setq too: errors are never quiet) */
    REPLY(MCS_BIN_STATUS_E2BIG, 8 + 1 + 17, .what = "value over item_max", .ext = SP(SET_EXT), .key = SP("k"),
          .val = SP("0123456789abcdefg"), .item_max = 16),
    REPLY(MCS_BIN_STATUS_E2BIG, 8 + 1 + 1048577, .what = "value over 1 MiB", .ext = SP(SET_EXT), .key = SP("k"),
          BODYLEN(8 + 1 + 1048577)),
    REPLY(MCS_BIN_STATUS_E2BIG, 0xffffffffu, .what = "body 4 GiB", .ext = SP(SET_EXT), .key = SP("k"),
          BODYLEN(0xffffffffu)),
    /* the key check comes before the value size */
    EINVAL_CLOSE(.what = "too large and 251-byte key", .ext = SP(SET_EXT), .key = SP(K251), BODYLEN(8 + 251 + 17),
                 .item_max = 16),
};

static const uint8_t concat_ops[] = { MCS_BIN_OP_APPEND, MCS_BIN_OP_APPENDQ, MCS_BIN_OP_PREPEND,
                                      MCS_BIN_OP_PREPENDQ };
static const struct bin_case concat_bad[] = {
    EINVAL_CLOSE(.what = "no key", .val = SP("v")),
    EINVAL_CLOSE(.what = "extras", .ext = SP(EXT4), .key = SP("k"), .val = SP("v")),
    EINVAL_CLOSE(.what = "set extras", .ext = SP(SET_EXT), .key = SP("k"), .val = SP("v")),
    REPLY(MCS_BIN_STATUS_E2BIG, 1 + 17, .what = "value over item_max", .key = SP("k"),
          .val = SP("0123456789abcdefg"), .item_max = 16),
    REPLY(MCS_BIN_STATUS_E2BIG, 1 + 2097152, .what = "value of 2 MiB", .key = SP("k"), BODYLEN(1 + 2097152)),
};

static const uint8_t delete_ops[] = { MCS_BIN_OP_DELETE, MCS_BIN_OP_DELETEQ };
static const struct bin_case delete_bad[] = {
    EINVAL_CLOSE(.what = "no key"),
    EINVAL_CLOSE(.what = "extras", .ext = SP(EXT4), .key = SP("k")),
    EINVAL_CLOSE(.what = "value", .key = SP("k"), .val = SP("v")),
};

static const uint8_t arith_ops[] = { MCS_BIN_OP_INCREMENT, MCS_BIN_OP_INCREMENTQ, MCS_BIN_OP_DECREMENT,
                                     MCS_BIN_OP_DECREMENTQ };
static const struct bin_case arith_bad[] = {
    EINVAL_CLOSE(.what = "no extras", .key = SP("n")),
    EINVAL_CLOSE(.what = "8 bytes extras", .ext = SP(EXT8), .key = SP("n")),
    EINVAL_CLOSE(.what = "no key", .ext = SP(INCR_EXT)),
    EINVAL_CLOSE(.what = "value", .ext = SP(INCR_EXT), .key = SP("n"), .val = SP("1")),
};

static const uint8_t bare_ops[] = { MCS_BIN_OP_NOOP, MCS_BIN_OP_VERSION, MCS_BIN_OP_QUIT, MCS_BIN_OP_QUITQ,
                                    MCS_BIN_OP_SASL_LIST };
static const struct bin_case bare_bad[] = {
    EINVAL_CLOSE(.what = "key", .key = SP("k")),
    EINVAL_CLOSE(.what = "extras", .ext = SP(EXT4)),
    EINVAL_CLOSE(.what = "value", .val = SP("v")),
};

static const uint8_t flush_ops[] = { MCS_BIN_OP_FLUSH, MCS_BIN_OP_FLUSHQ };
static const struct bin_case flush_bad[] = {
    EINVAL_CLOSE(.what = "8 bytes extras", .ext = SP(EXT8)),
    EINVAL_CLOSE(.what = "1 byte extras", .ext = SP("\x01")),
    EINVAL_CLOSE(.what = "extras and key", .ext = SP(EXT4), .key = SP("k")),
    EINVAL_CLOSE(.what = "key", .key = SP("k")),
    EINVAL_CLOSE(.what = "value", .val = SP("v")),
    EINVAL_CLOSE(.what = "extras and value", .ext = SP(EXT4), .val = SP("v")),
};

static const uint8_t touch_ops[] = { MCS_BIN_OP_TOUCH, MCS_BIN_OP_GAT, MCS_BIN_OP_GATQ, MCS_BIN_OP_GATK,
                                     MCS_BIN_OP_GATKQ };
static const struct bin_case touch_bad[] = {
    EINVAL_CLOSE(.what = "no extras", .key = SP("k")),
    EINVAL_CLOSE(.what = "8 bytes extras", .ext = SP(EXT8), .key = SP("k")),
    EINVAL_CLOSE(.what = "no key", .ext = SP(TOUCH_EXT)),
};

static const uint8_t stat_ops[] = { MCS_BIN_OP_STAT };
static const struct bin_case stat_bad[] = {
    EINVAL_CLOSE(.what = "extras", .ext = SP(EXT4)),
    EINVAL_CLOSE(.what = "extras and key", .ext = SP(EXT4), .key = SP("items")),
};

static const uint8_t sasl_auth_ops[] = { MCS_BIN_OP_SASL_AUTH, MCS_BIN_OP_SASL_STEP };
static const struct bin_case sasl_auth_bad[] = {
    EINVAL_CLOSE(.what = "no key", .val = SP("v")),
    EINVAL_CLOSE(.what = "extras", .ext = SP(EXT4), .key = SP("PLAIN")),
};

static void
test_every_opcode_ok(void **state)
{
    (void)state;
    run_cases(ok_cases, NELEM(ok_cases));
}

static void
test_refused_and_unknown(void **state)
{
    (void)state;
    run_cases(refused_cases, NELEM(refused_cases));
}

static void
test_framing_errors(void **state)
{
    (void)state;
    run_cases(framing_cases, NELEM(framing_cases));
}

static void
test_malformed_per_opcode(void **state)
{
    (void)state;
    run_family(get_ops, NELEM(get_ops), get_bad, NELEM(get_bad));
    run_family(store_ops, NELEM(store_ops), store_bad, NELEM(store_bad));
    run_family(concat_ops, NELEM(concat_ops), concat_bad, NELEM(concat_bad));
    run_family(delete_ops, NELEM(delete_ops), delete_bad, NELEM(delete_bad));
    run_family(arith_ops, NELEM(arith_ops), arith_bad, NELEM(arith_bad));
    run_family(bare_ops, NELEM(bare_ops), bare_bad, NELEM(bare_bad));
    run_family(flush_ops, NELEM(flush_ops), flush_bad, NELEM(flush_bad));
    run_family(touch_ops, NELEM(touch_ops), touch_bad, NELEM(touch_bad));
    run_family(stat_ops, NELEM(stat_ops), stat_bad, NELEM(stat_bad));
    run_family(sasl_auth_ops, NELEM(sasl_auth_ops), sasl_auth_bad, NELEM(sasl_auth_bad));
}

/* Every listed opcode has a well-formed case, or is refused; every opcode
 * that is not listed is answered "Unknown command". */
static void
test_opcode_list_covered(void **state)
{
    (void)state;
    static const uint8_t listed[] = {
#define LISTED(id, code, name, route, base, quiet, ext, ext2, key, value, handling) code,
        MCS_BIN_OP_LIST(LISTED)
#undef LISTED
    };
    for (size_t i = 0; i < NELEM(listed); i++) {
        bool seen = false;
        for (size_t k = 0; k < NELEM(ok_cases); k++) {
            seen = seen || ok_cases[k].opcode == listed[i];
        }
        for (size_t k = 0; k < NELEM(refused_cases); k++) {
            seen = seen || refused_cases[k].opcode == listed[i];
        }
        if (!seen) {
            fail_msg("opcode 0x%02x (%s) has no case", listed[i], mcs_bin_op_name(listed[i]));
        }
    }
    for (unsigned op = 0; op < 256; op++) {
        bool is_listed = memchr(listed, (int)op, sizeof(listed)) != NULL;
        assert_int_equal(mcs_bin_op_known((uint8_t)op), is_listed);
        if (is_listed) {
            continue;
        }
        struct bin_case c = REPLY(MCS_BIN_STATUS_UNKNOWN_COMMAND, 3, .what = "unlisted", .key = SP("k"),
                                  .val = SP("v"));
        c.opcode = (uint8_t)op;
        assert_true(run_case(&c));
        assert_string_equal(mcs_bin_op_name((uint8_t)op), "?");
        assert_int_equal(mcs_bin_op_base((uint8_t)op), op);
        assert_false(mcs_bin_op_quiet((uint8_t)op));
        assert_int_equal(mcs_bin_op_route((uint8_t)op), MCS_ROUTE_LOCAL);
    }
}

/* Tables ------------------------------------------------------------------ */

static void
test_opcode_table(void **state)
{
    (void)state;
    static const struct {
        uint8_t quiet, base;
    } pairs[] = {
        { MCS_BIN_OP_GETQ, MCS_BIN_OP_GET },         { MCS_BIN_OP_GETKQ, MCS_BIN_OP_GETK },
        { MCS_BIN_OP_SETQ, MCS_BIN_OP_SET },         { MCS_BIN_OP_ADDQ, MCS_BIN_OP_ADD },
        { MCS_BIN_OP_REPLACEQ, MCS_BIN_OP_REPLACE }, { MCS_BIN_OP_DELETEQ, MCS_BIN_OP_DELETE },
        { MCS_BIN_OP_INCREMENTQ, MCS_BIN_OP_INCREMENT }, { MCS_BIN_OP_DECREMENTQ, MCS_BIN_OP_DECREMENT },
        { MCS_BIN_OP_QUITQ, MCS_BIN_OP_QUIT },       { MCS_BIN_OP_FLUSHQ, MCS_BIN_OP_FLUSH },
        { MCS_BIN_OP_APPENDQ, MCS_BIN_OP_APPEND },   { MCS_BIN_OP_PREPENDQ, MCS_BIN_OP_PREPEND },
        { MCS_BIN_OP_GATQ, MCS_BIN_OP_GAT },         { MCS_BIN_OP_GATKQ, MCS_BIN_OP_GATK },
    };
    unsigned quiet_count = 0;
    for (unsigned op = 0; op < 256; op++) {
        quiet_count += mcs_bin_op_quiet((uint8_t)op);
    }
    assert_int_equal(quiet_count, NELEM(pairs));
    for (size_t i = 0; i < NELEM(pairs); i++) {
        assert_true(mcs_bin_op_quiet(pairs[i].quiet));
        assert_false(mcs_bin_op_quiet(pairs[i].base));
        assert_int_equal(mcs_bin_op_base(pairs[i].quiet), pairs[i].base);
        assert_int_equal(mcs_bin_op_base(pairs[i].base), pairs[i].base);
        assert_int_equal(mcs_bin_op_route(pairs[i].quiet), mcs_bin_op_route(pairs[i].base));
    }
    /* wire values */
    assert_int_equal(MCS_BIN_OP_GET, 0x00);
    assert_int_equal(MCS_BIN_OP_GETKQ, 0x0d);
    assert_int_equal(MCS_BIN_OP_STAT, 0x10);
    assert_int_equal(MCS_BIN_OP_PREPENDQ, 0x1a);
    assert_int_equal(MCS_BIN_OP_VERBOSITY, 0x1b);
    assert_int_equal(MCS_BIN_OP_TOUCH, 0x1c);
    assert_int_equal(MCS_BIN_OP_GATQ, 0x1e);
    assert_int_equal(MCS_BIN_OP_SASL_LIST, 0x20);
    assert_int_equal(MCS_BIN_OP_SASL_STEP, 0x22);
    assert_int_equal(MCS_BIN_OP_GATK, 0x23);
    assert_int_equal(MCS_BIN_OP_GATKQ, 0x24);
    /* routes */
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_GET), MCS_ROUTE_KEY);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_GETKQ), MCS_ROUTE_KEY);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_SET), MCS_ROUTE_KEY);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_DECREMENT), MCS_ROUTE_KEY);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_TOUCH), MCS_ROUTE_KEY);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_GATK), MCS_ROUTE_KEY);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_FLUSH), MCS_ROUTE_ALL);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_FLUSHQ), MCS_ROUTE_ALL);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_VERSION), MCS_ROUTE_ANY);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_NOOP), MCS_ROUTE_LOCAL);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_QUIT), MCS_ROUTE_LOCAL);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_STAT), MCS_ROUTE_LOCAL);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_VERBOSITY), MCS_ROUTE_LOCAL);
    assert_int_equal(mcs_bin_op_route(MCS_BIN_OP_SASL_AUTH), MCS_ROUTE_LOCAL);
    /* no listed opcode routes by many keys */
    for (unsigned op = 0; op < 256; op++) {
        assert_int_not_equal(mcs_bin_op_route((uint8_t)op), MCS_ROUTE_KEYS);
    }
    /* names */
    assert_string_equal(mcs_bin_op_name(MCS_BIN_OP_GET), "get");
    assert_string_equal(mcs_bin_op_name(MCS_BIN_OP_GATKQ), "gatkq");
    assert_string_equal(mcs_bin_op_name(MCS_BIN_OP_INCREMENTQ), "incrementq");
    assert_string_equal(mcs_bin_op_name(MCS_BIN_OP_VERBOSITY), "verbosity");
    assert_string_equal(mcs_bin_op_name(MCS_BIN_OP_SASL_LIST), "sasl_list_mechs");
    assert_string_equal(mcs_bin_op_name(0x30), "?");
}

static void
test_status_table(void **state)
{
    (void)state;
    /* memcached 1.6.18's texts, as observed on the wire */
    assert_string_equal(mcs_bin_status_text(0x0001), "Not found");
    assert_string_equal(mcs_bin_status_text(0x0002), "Data exists for key.");
    assert_string_equal(mcs_bin_status_text(0x0003), "Too large.");
    assert_string_equal(mcs_bin_status_text(0x0004), "Invalid arguments");
    assert_string_equal(mcs_bin_status_text(0x0005), "Not stored.");
    assert_string_equal(mcs_bin_status_text(0x0006), "Non-numeric server-side value for incr or decr");
    assert_string_equal(mcs_bin_status_text(0x0081), "Unknown command");
    assert_string_equal(mcs_bin_status_text(0x0082), "Out of memory");
    assert_string_equal(mcs_bin_status_text(0x0020), "Auth failure.");
    assert_null(mcs_bin_status_text(0x0000));
    assert_null(mcs_bin_status_text(0x0021));
    assert_null(mcs_bin_status_text(0x1234));
    assert_string_equal(mcs_bin_status_name(MCS_BIN_STATUS_SUCCESS), "success");
    assert_string_equal(mcs_bin_status_name(MCS_BIN_STATUS_KEY_ENOENT), "key_enoent");
    assert_string_equal(mcs_bin_status_name(MCS_BIN_STATUS_E2BIG), "e2big");
    assert_string_equal(mcs_bin_status_name(MCS_BIN_STATUS_UNKNOWN_COMMAND), "unknown_command");
    assert_string_equal(mcs_bin_status_name(MCS_BIN_STATUS_ETMPFAIL), "etmpfail");
    assert_string_equal(mcs_bin_status_name(0x1234), "?");
    assert_int_equal(MCS_BIN_STATUS_EINVAL, 0x0004);
    assert_int_equal(MCS_BIN_STATUS_ENOMEM, 0x0082);
}

/* The quiet rules: which server answers memcached does not send for a quiet
 * request (observed: getq/gatq/gatkq hits and getkq hits are sent, misses are
 * not; setq/addq/appendq/deleteq/incrq/replaceq errors are sent, successes
 * are not; flushq and quitq send nothing on success). */
static void
test_quiet_rules(void **state)
{
    (void)state;
    static const uint16_t statuses[] = { 0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, 0x0081, 0x0082 };
    static const uint8_t quiet_gets[] = { MCS_BIN_OP_GETQ, MCS_BIN_OP_GETKQ, MCS_BIN_OP_GATQ, MCS_BIN_OP_GATKQ };
    static const uint8_t quiet_writes[] = {
        MCS_BIN_OP_SETQ,    MCS_BIN_OP_ADDQ,     MCS_BIN_OP_REPLACEQ, MCS_BIN_OP_DELETEQ, MCS_BIN_OP_INCREMENTQ,
        MCS_BIN_OP_DECREMENTQ, MCS_BIN_OP_QUITQ, MCS_BIN_OP_FLUSHQ,   MCS_BIN_OP_APPENDQ, MCS_BIN_OP_PREPENDQ,
    };
    for (unsigned op = 0; op < 256; op++) {
        bool is_get = memchr(quiet_gets, (int)op, sizeof(quiet_gets)) != NULL;
        bool is_write = memchr(quiet_writes, (int)op, sizeof(quiet_writes)) != NULL;
        for (size_t s = 0; s < NELEM(statuses); s++) {
            bool want = (is_get && statuses[s] == 0x0001) || (is_write && statuses[s] == 0x0000);
            if (mcs_bin_quiet_suppresses((uint8_t)op, statuses[s]) != want) {
                fail_msg("opcode 0x%02x status 0x%04x: expected %s", op, statuses[s], want ? "silent" : "sent");
            }
        }
    }
}

/* Decoded fields ---------------------------------------------------------- */

static void
parse_one(const char *pkt, size_t n, struct mcs_bin_req *r)
{
    struct guarded g;
    guarded_init(&g, n);
    struct mcs_bin_parser p = { 0 };
    assert_int_equal(mcs_bin_parse(&p, guarded_put(&g, pkt, n), n, ITEM_MAX, r), MCS_BIN_OK);
    guarded_free(&g);
}

static void
test_decoded_fields(void **state)
{
    (void)state;
    char pkt[128];
    struct mcs_bin_req r;

    size_t n = put_header(pkt, 0x80, MCS_BIN_OP_SETQ, 1, 8, 8 + 1 + 2, 0x01020304, 0x1122334455667788ull);
    memcpy(pkt + n, "\xfe\xdc\xba\x98\x80\x00\x00\x01" "k" "vv", 11);
    parse_one(pkt, n + 11, &r);
    assert_int_equal(r.opaque, 0x01020304);
    assert_true(r.cas == 0x1122334455667788ull);
    assert_int_equal(r.flags, 0xfedcba98u);
    assert_int_equal(r.exptime, 0x80000001u);
    assert_int_equal(r.base, MCS_BIN_OP_SET);
    assert_true(r.quiet);
    assert_int_equal(r.value_len, 2);

    n = put_header(pkt, 0x80, MCS_BIN_OP_DECREMENT, 1, 20, 21, 0, 0);
    memcpy(pkt + n, "\x01\x02\x03\x04\x05\x06\x07\x08" "\xff\xff\xff\xff\xff\xff\xff\xfe" "\xff\xff\xff\xff" "n",
           21);
    parse_one(pkt, n + 21, &r);
    assert_true(r.delta == 0x0102030405060708ull);
    assert_true(r.initial == 0xfffffffffffffffeull);
    assert_int_equal(r.exptime, 0xffffffffu);

    n = put_header(pkt, 0x80, MCS_BIN_OP_GATKQ, 1, 4, 5, 7, 0);
    memcpy(pkt + n, "\x00\x01\x00\x00" "k", 5);
    parse_one(pkt, n + 5, &r);
    assert_int_equal(r.exptime, 65536);
    assert_int_equal(r.base, MCS_BIN_OP_GATK);

    n = put_header(pkt, 0x80, MCS_BIN_OP_FLUSH, 0, 4, 4, 7, 0);
    memcpy(pkt + n, "\x00\x00\x01\x00", 4);
    parse_one(pkt, n + 4, &r);
    assert_int_equal(r.exptime, 256);
    n = put_header(pkt, 0x80, MCS_BIN_OP_FLUSHQ, 0, 0, 0, 7, 0);
    parse_one(pkt, n, &r);
    assert_int_equal(r.exptime, 0);

    /* data type and vbucket are ignored */
    n = put_header(pkt, 0x80, MCS_BIN_OP_GET, 1, 0, 1, 7, 0);
    pkt[5] = 1;
    pkt[6] = 0x12;
    pkt[7] = 0x34;
    pkt[n] = 'k';
    parse_one(pkt, n + 1, &r);
    assert_int_equal(r.key_len, 1);
}

/* Streams ----------------------------------------------------------------- */

/* One parse result in a stream. */
struct event {
    enum mcs_bin_result st;
    uint8_t  opcode;
    uint16_t status;
    uint32_t len;
};

/* Parses stream[0, n) delivered in chunks of the given sizes (cycled; 0: all
 * at once) into events, merging consecutive skips (status-0 REPLYs); a guard
 * page follows the received bytes at every call. */
static size_t
parse_stream(const char *stream, size_t n, const size_t *chunks, size_t nchunks, uint32_t item_max,
             struct event *ev, size_t cap)
{
    struct feed f;
    feed_start(&f, stream, n);
    struct mcs_bin_parser p = { 0 };
    size_t nev = 0;
    for (size_t k = 0; f.received < n; k++) {
        feed_arrive(&f, nchunks ? chunks[k % nchunks] : n);
        for (;;) {
            struct mcs_bin_req r;
            size_t len;
            const char *buf = feed_window(&f, &len);
            enum mcs_bin_result st = mcs_bin_parse(&p, buf, len, item_max, &r);
            if (st == MCS_BIN_MORE) {
                break;
            }
            assert_true(r.len > 0 && r.len <= len);
            f.consumed += r.len;
            if (st == MCS_BIN_REPLY && r.status == 0 && nev > 0 && ev[nev - 1].st == MCS_BIN_REPLY
                && ev[nev - 1].status == 0) {
                ev[nev - 1].len += r.len;
                continue;
            }
            assert_true(nev < cap);
            ev[nev].st = st;
            ev[nev].opcode = r.opcode;
            ev[nev].status = r.status;
            ev[nev].len = r.len;
            nev++;
            if (st == MCS_BIN_CLOSE) {
                feed_end(&f);
                return nev;
            }
        }
    }
    feed_end(&f);
    return nev;  /* an incomplete tail stays unconsumed */
}

/* Appends a well-formed request to out at *n. */
static void
add_req(char *out, size_t *n, uint8_t op, const char *ext, size_t ext_n, const char *key, size_t key_n,
        const char *val, size_t val_n)
{
    *n += put_header(out + *n, 0x80, op, (uint16_t)key_n, (uint8_t)ext_n, (uint32_t)(ext_n + key_n + val_n), 1, 0);
    memcpy(out + *n, ext, ext_n);
    *n += ext_n;
    memcpy(out + *n, key, key_n);
    *n += key_n;
    memcpy(out + *n, val, val_n);
    *n += val_n;
}

static const size_t chunk_sets[][4] = {
    { 0, 0, 0, 0 }, { 1, 1, 1, 1 }, { 2, 3, 5, 7 }, { 23, 1, 25, 2 }, { 24, 24, 24, 24 }, { 100, 3, 100, 9 },
};

static void
check_stream(const char *stream, size_t n, uint32_t item_max, const struct event *want, size_t nwant)
{
    for (size_t s = 0; s < NELEM(chunk_sets); s++) {
        struct event ev[64];
        size_t nev = parse_stream(stream, n, chunk_sets[s], chunk_sets[s][0] ? 4 : 0, item_max, ev, NELEM(ev));
        if (nev != nwant) {
            fail_msg("chunk set %zu: %zu events, expected %zu", s, nev, nwant);
        }
        for (size_t i = 0; i < nev; i++) {
            if (ev[i].st != want[i].st || ev[i].len != want[i].len || ev[i].status != want[i].status
                || (want[i].st != MCS_BIN_REPLY || want[i].status != 0 ? ev[i].opcode != want[i].opcode : false)) {
                fail_msg("chunk set %zu, event %zu: %s op 0x%02x status 0x%x len %u; expected %s op 0x%02x "
                         "status 0x%x len %u",
                         s, i, result_name(ev[i].st), ev[i].opcode, ev[i].status, ev[i].len,
                         result_name(want[i].st), want[i].opcode, want[i].status, want[i].len);
            }
        }
    }
}

static void
test_pipelined(void **state)
{
    (void)state;
    char s[1024];
    size_t n = 0;
    add_req(s, &n, MCS_BIN_OP_GETKQ, "", 0, "a", 1, "", 0);
    add_req(s, &n, MCS_BIN_OP_GETKQ, "", 0, "bb", 2, "", 0);
    add_req(s, &n, MCS_BIN_OP_SET, SET_EXT, 8, "k", 1, "hello", 5);
    add_req(s, &n, MCS_BIN_OP_INCREMENT, INCR_EXT, 20, "n", 1, "", 0);
    add_req(s, &n, 0x30, "", 0, "", 0, "", 0);                 /* unknown, no body */
    add_req(s, &n, MCS_BIN_OP_SASL_AUTH, "", 0, "PLAIN", 5, "secret", 6);
    add_req(s, &n, MCS_BIN_OP_APPENDQ, "", 0, "k", 1, "0123456789abcdefXYZ", 19);   /* too large */
    add_req(s, &n, MCS_BIN_OP_TOUCH, TOUCH_EXT, 4, "k", 1, "", 0);
    add_req(s, &n, MCS_BIN_OP_STAT, "", 0, K250, 250, "", 0);
    add_req(s, &n, MCS_BIN_OP_NOOP, "", 0, "", 0, "", 0);
    add_req(s, &n, MCS_BIN_OP_GET, "", 0, "", 0, "", 0);       /* no key: closes */
    add_req(s, &n, MCS_BIN_OP_NOOP, "", 0, "", 0, "", 0);      /* never parsed */
    static const struct event want[] = {
        { MCS_BIN_OK, MCS_BIN_OP_GETKQ, 0, 25 },
        { MCS_BIN_OK, MCS_BIN_OP_GETKQ, 0, 26 },
        { MCS_BIN_OK, MCS_BIN_OP_SET, 0, 24 + 8 + 1 + 5 },
        { MCS_BIN_OK, MCS_BIN_OP_INCREMENT, 0, 24 + 20 + 1 },
        { MCS_BIN_REPLY, 0x30, MCS_BIN_STATUS_UNKNOWN_COMMAND, 24 },
        { MCS_BIN_REPLY, MCS_BIN_OP_SASL_AUTH, MCS_BIN_STATUS_UNKNOWN_COMMAND, 24 },
        { MCS_BIN_REPLY, 0, 0, 11 },
        { MCS_BIN_REPLY, MCS_BIN_OP_APPENDQ, MCS_BIN_STATUS_E2BIG, 24 },
        { MCS_BIN_REPLY, 0, 0, 20 },
        { MCS_BIN_OK, MCS_BIN_OP_TOUCH, 0, 29 },
        { MCS_BIN_OK, MCS_BIN_OP_STAT, 0, 24 + 250 },
        { MCS_BIN_OK, MCS_BIN_OP_NOOP, 0, 24 },
        { MCS_BIN_CLOSE, MCS_BIN_OP_GET, MCS_BIN_STATUS_EINVAL, 24 },
    };
    check_stream(s, n, 16, want, NELEM(want));
}

/* Every well-formed case back to back, cut every which way. */
static void
test_pipelined_all_ok_cases(void **state)
{
    (void)state;
    static char s[16384];
    size_t n = 0;
    struct event want[NELEM(ok_cases)];
    size_t nwant = 0;
    for (size_t i = 0; i < NELEM(ok_cases); i++) {
        if (ok_cases[i].len != 0 || ok_cases[i].item_max != 0) {
            continue;   /* unread values and small limits are tested on their own */
        }
        size_t len = build_case(&ok_cases[i], s + n, sizeof(s) - n);
        want[nwant++] = (struct event){ MCS_BIN_OK, ok_cases[i].opcode, 0, (uint32_t)len };
        n += len;
    }
    check_stream(s, n, ITEM_MAX, want, nwant);
}

/* A value over item_max is answered after the header and skipped as it
 * arrives, in as many calls as it takes; the next packet is intact. */
static void
test_too_large_swallowed(void **state)
{
    (void)state;
    static char s[8192];
    size_t n = 0;
    char value[3000];
    memset(value, 'v', sizeof(value));
    add_req(s, &n, MCS_BIN_OP_SETQ, SET_EXT, 8, "key", 3, value, sizeof(value));
    add_req(s, &n, MCS_BIN_OP_GETQ, "", 0, "key", 3, "", 0);
    add_req(s, &n, MCS_BIN_OP_SET, SET_EXT, 8, "key", 3, value, 1000);
    add_req(s, &n, MCS_BIN_OP_NOOP, "", 0, "", 0, "", 0);
    const struct event want[] = {
        { MCS_BIN_REPLY, MCS_BIN_OP_SETQ, MCS_BIN_STATUS_E2BIG, 24 },
        { MCS_BIN_REPLY, 0, 0, 8 + 3 + 3000 },
        { MCS_BIN_OK, MCS_BIN_OP_GETQ, 0, 27 },
        { MCS_BIN_OK, MCS_BIN_OP_SET, 0, 24 + 8 + 3 + 1000 },
        { MCS_BIN_OK, MCS_BIN_OP_NOOP, 0, 24 },
    };
    check_stream(s, n, 1000, want, NELEM(want));

    /* the parser state carries the skip across calls; no bytes: MORE. A set's
     * answer waits for its key (24 + 8 + 3 bytes), whose old value is dropped. */
    struct mcs_bin_parser p = { 0 };
    struct mcs_bin_req r;
    assert_int_equal(mcs_bin_parse(&p, s, 34, 1000, &r), MCS_BIN_MORE);
    assert_int_equal(mcs_bin_parse(&p, s, 35, 1000, &r), MCS_BIN_REPLY);
    assert_true(r.drop_key);
    assert_int_equal(r.key_len, 3);
    assert_memory_equal(s + r.key_off, "key", 3);
    assert_int_equal(r.status, MCS_BIN_STATUS_E2BIG);
    assert_int_equal(r.opcode, MCS_BIN_OP_SETQ);
    assert_int_equal(r.opaque, 1);
    assert_true(p.swallow == 3011);
    assert_int_equal(mcs_bin_parse(&p, s + 24, 0, 1000, &r), MCS_BIN_MORE);
    assert_int_equal(mcs_bin_parse(&p, s + 24, 11, 1000, &r), MCS_BIN_REPLY);
    assert_int_equal(r.len, 11);
    assert_int_equal(r.status, 0);
    assert_true(p.swallow == 3000);
    assert_int_equal(mcs_bin_parse(&p, s + 35, 5000, 1000, &r), MCS_BIN_REPLY);
    assert_int_equal(r.len, 3000);
    assert_true(p.swallow == 0);
    assert_int_equal(mcs_bin_parse(&p, s + 3035, 27, 1000, &r), MCS_BIN_OK);
    assert_int_equal(r.opcode, MCS_BIN_OP_GETQ);
}

/* memcached skips an unknown opcode's body length after its extras and key,
 * so it eats that many bytes of the next packet (observed: a noop after
 * "verbosity" with 4 bytes of extras is never answered). */
static void
test_unknown_skips_like_memcached(void **state)
{
    (void)state;
    char s[256];
    size_t n = 0;
    add_req(s, &n, MCS_BIN_OP_VERBOSITY, EXT4, 4, "", 0, "", 0);
    add_req(s, &n, MCS_BIN_OP_NOOP, "", 0, "", 0, "", 0);     /* 4 bytes eaten: the rest is a partial header */
    add_req(s, &n, MCS_BIN_OP_NOOP, "", 0, "", 0, "", 0);
    const struct event want[] = {
        { MCS_BIN_REPLY, MCS_BIN_OP_VERBOSITY, MCS_BIN_STATUS_UNKNOWN_COMMAND, 24 },
        { MCS_BIN_REPLY, 0, 0, 8 },
        { MCS_BIN_CLOSE, 0, 0, 24 },     /* the stream is now 20 bytes off: bad magic */
    };
    check_stream(s, n, ITEM_MAX, want, NELEM(want));

    /* without extras and key nothing is eaten */
    n = 0;
    add_req(s, &n, 0x40, "", 0, "", 0, "ab", 2);
    add_req(s, &n, MCS_BIN_OP_NOOP, "", 0, "", 0, "", 0);
    const struct event want2[] = {
        { MCS_BIN_REPLY, 0x40, MCS_BIN_STATUS_UNKNOWN_COMMAND, 24 },
        { MCS_BIN_REPLY, 0, 0, 2 },
        { MCS_BIN_OK, MCS_BIN_OP_NOOP, 0, 24 },
    };
    check_stream(s, n, ITEM_MAX, want2, NELEM(want2));
}

/* The bytes a touch, gat or stat claims past its key are the next packet. */
static void
test_unread_value_is_next_packet(void **state)
{
    (void)state;
    char s[256];
    char noop[24];
    size_t n = 0;
    put_header(noop, 0x80, MCS_BIN_OP_NOOP, 0, 0, 0, 2, 0);
    add_req(s, &n, MCS_BIN_OP_TOUCH, TOUCH_EXT, 4, "k", 1, noop, 24);
    add_req(s, &n, MCS_BIN_OP_STAT, "", 0, "", 0, noop, 24);
    add_req(s, &n, MCS_BIN_OP_GATQ, TOUCH_EXT, 4, "k", 1, "x", 1);
    const struct event want[] = {
        { MCS_BIN_OK, MCS_BIN_OP_TOUCH, 0, 29 },
        { MCS_BIN_OK, MCS_BIN_OP_NOOP, 0, 24 },
        { MCS_BIN_OK, MCS_BIN_OP_STAT, 0, 24 },
        { MCS_BIN_OK, MCS_BIN_OP_NOOP, 0, 24 },
        { MCS_BIN_OK, MCS_BIN_OP_GATQ, 0, 29 },
        { MCS_BIN_CLOSE, 'y', 0, 24 },       /* "x" is not a magic byte (told once 24 bytes are in) */
    };
    char t[512];
    memcpy(t, s, n);
    memset(t + n, 'y', 23);     /* so the stray "x" has a header's worth of bytes */
    check_stream(t, n + 23, ITEM_MAX, want, NELEM(want));
}

/* Replies ----------------------------------------------------------------- */

/* Writes a reply packet at out (returns its length). */
static size_t
put_resp(char *out, uint8_t op, uint16_t status, const char *ext, size_t ext_n, const char *key, size_t key_n,
         const char *val, size_t val_n)
{
    size_t n = put_header(out, 0x81, op, (uint16_t)key_n, (uint8_t)ext_n, (uint32_t)(ext_n + key_n + val_n),
                          0xa1b2c3d4, 42);
    be16(out + 6, status);
    memcpy(out + n, ext, ext_n);
    memcpy(out + n + ext_n, key, key_n);
    memcpy(out + n + ext_n + key_n, val, val_n);
    return n + ext_n + key_n + val_n;
}

static void
test_resp_parse(void **state)
{
    (void)state;
    char pkt[256];
    struct mcs_bin_resp r;
    struct guarded g;
    guarded_init(&g, sizeof(pkt));

    /* a getk hit: flags, key, value; every prefix is MORE */
    size_t n = put_resp(pkt, MCS_BIN_OP_GETK, 0, "\0\0\0\5", 4, "key", 3, "value", 5);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, i), i, ITEM_MAX, &r), MCS_RESP_MORE);
    }
    const char *buf = guarded_put(&g, pkt, n);
    assert_int_equal(mcs_bin_resp_parse(buf, n, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.len, n);
    assert_int_equal(r.opcode, MCS_BIN_OP_GETK);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.opaque, 0xa1b2c3d4);
    assert_true(r.cas == 42);
    assert_int_equal(r.extras_off, 24);
    assert_int_equal(r.extras_len, 4);
    assert_int_equal(r.key_off, 28);
    assert_int_equal(r.key_len, 3);
    assert_memory_equal(buf + r.key_off, "key", 3);
    assert_int_equal(r.value_off, 31);
    assert_int_equal(r.value_len, 5);
    assert_memory_equal(buf + r.value_off, "value", 5);

    /* an error reply */
    n = put_resp(pkt, MCS_BIN_OP_GET, MCS_BIN_STATUS_KEY_ENOENT, "", 0, "", 0, "Not found", 9);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, n), n, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.status, 1);
    assert_int_equal(r.value_len, 9);

    /* value_max bounds the value only */
    n = put_resp(pkt, MCS_BIN_OP_GETK, 0, "\0\0\0\0", 4, "key", 3, "12345", 5);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, n), n, 5, &r), MCS_RESP_OK);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, n), n, 4, &r), MCS_RESP_BAD);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, 24), 24, 4, &r), MCS_RESP_BAD);

    /* request magic, or garbage: BAD as soon as the first byte is there */
    n = put_resp(pkt, MCS_BIN_OP_NOOP, 0, "", 0, "", 0, "", 0);
    pkt[0] = (char)0x80;
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, n), n, ITEM_MAX, &r), MCS_RESP_BAD);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, 1), 1, ITEM_MAX, &r), MCS_RESP_BAD);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, "END\r\n", 5), 5, ITEM_MAX, &r), MCS_RESP_BAD);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, 0), 0, ITEM_MAX, &r), MCS_RESP_MORE);

    /* extras + key longer than the body */
    n = put_header(pkt, 0x81, MCS_BIN_OP_GETK, 3, 4, 6, 0, 0);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, n), n, ITEM_MAX, &r), MCS_RESP_BAD);
    n = put_header(pkt, 0x81, MCS_BIN_OP_GETK, 0xffff, 0xff, 0xffff, 0, 0);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, n), n, ITEM_MAX, &r), MCS_RESP_BAD);
    /* a huge body within value_max is just MORE */
    n = put_header(pkt, 0x81, MCS_BIN_OP_GET, 0, 4, 0xffffffffu, 0, 0);
    assert_int_equal(mcs_bin_resp_parse(guarded_put(&g, pkt, n), n, UINT32_MAX, &r), MCS_RESP_MORE);
    guarded_free(&g);
}

/* A stat reply is one packet per statistic and an empty one to end it; fed
 * in pieces it comes out packet by packet. */
static void
test_resp_stat_stream(void **state)
{
    (void)state;
    static const char *const stats[][2] = {
        { "pid", "10880" }, { "uptime", "5" }, { "version", "1.6.18" }, { "curr_connections", "1" }, { "", "" },
    };
    char s[512];
    size_t n = 0;
    for (size_t i = 0; i < NELEM(stats); i++) {
        n += put_resp(s + n, MCS_BIN_OP_STAT, 0, "", 0, stats[i][0], strlen(stats[i][0]), stats[i][1],
                      strlen(stats[i][1]));
    }
    for (size_t chunk = 1; chunk <= n; chunk += (chunk < 30 ? 1 : 17)) {
        struct feed f;
        feed_start(&f, s, n);
        size_t k = 0;
        while (f.consumed < n) {
            feed_arrive(&f, chunk);
            for (;;) {
                struct mcs_bin_resp r;
                size_t len;
                const char *buf = feed_window(&f, &len);
                enum mcs_resp_status st = mcs_bin_resp_parse(buf, len, ITEM_MAX, &r);
                assert_int_not_equal(st, MCS_RESP_BAD);
                if (st == MCS_RESP_MORE) {
                    break;
                }
                assert_true(k < NELEM(stats));
                assert_int_equal(r.opcode, MCS_BIN_OP_STAT);
                assert_int_equal(r.key_len, strlen(stats[k][0]));
                assert_memory_equal(buf + r.key_off, stats[k][0], r.key_len);
                assert_int_equal(r.value_len, strlen(stats[k][1]));
                assert_memory_equal(buf + r.value_off, stats[k][1], r.value_len);
                f.consumed += r.len;
                k++;
            }
        }
        assert_int_equal(k, NELEM(stats));
        feed_end(&f);
    }
}

/* Builders ---------------------------------------------------------------- */

static void
test_build_request_roundtrip(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    /* the non-quiet form of a quiet request, as the engine sends it */
    struct mcs_bin_msg m = {
        .opcode = MCS_BIN_OP_SET, .opaque = 0x01020304, .cas = 0x0102030405060708ull,
        .extras = SET_EXT, .extras_len = 8, .key = "key", .key_len = 3, .value = "value", .value_len = 5,
        .status = 0x7777,   /* ignored for requests */
    };
    assert_int_equal(mcs_bin_put_request(&b, &m), 0);
    assert_int_equal(mcs_buf_len(&b), 24 + 8 + 3 + 5);
    assert_int_equal((uint8_t)mcs_buf_head(&b)[0], 0x80);
    assert_int_equal(mcs_buf_head(&b)[6], 0);
    assert_int_equal(mcs_buf_head(&b)[7], 0);
    struct mcs_bin_parser p = { 0 };
    struct mcs_bin_req r;
    assert_int_equal(mcs_bin_parse(&p, mcs_buf_head(&b), mcs_buf_len(&b), ITEM_MAX, &r), MCS_BIN_OK);
    assert_int_equal(r.len, mcs_buf_len(&b));
    assert_int_equal(r.opcode, MCS_BIN_OP_SET);
    assert_int_equal(r.opaque, 0x01020304);
    assert_true(r.cas == 0x0102030405060708ull);
    assert_int_equal(r.flags, 5);
    assert_int_equal(r.exptime, 100);
    assert_memory_equal(mcs_buf_head(&b) + r.key_off, "key", 3);
    assert_memory_equal(mcs_buf_head(&b) + r.value_off, "value", 5);

    /* a second packet is appended after the first */
    struct mcs_bin_msg get = { .opcode = MCS_BIN_OP_GETK, .opaque = 9, .key = "k", .key_len = 1 };
    assert_int_equal(mcs_bin_put_request(&b, &get), 0);
    mcs_buf_consume(&b, r.len);
    assert_int_equal(mcs_bin_parse(&p, mcs_buf_head(&b), mcs_buf_len(&b), ITEM_MAX, &r), MCS_BIN_OK);
    assert_int_equal(r.opcode, MCS_BIN_OP_GETK);
    assert_int_equal(r.opaque, 9);
    assert_int_equal(r.len, 25);

    /* a body over 2^32 - 1 bytes is refused and the buffer left as it was */
    size_t before = mcs_buf_len(&b);
    struct mcs_bin_msg huge = {
        .opcode = MCS_BIN_OP_SET, .key = "k", .key_len = 1, .value = "", .value_len = UINT32_MAX,
    };
    assert_int_equal(mcs_bin_put_request(&b, &huge), -1);
    assert_int_equal(mcs_bin_put_response(&b, &huge), -1);
    assert_int_equal(mcs_buf_len(&b), before);
    mcs_buf_free(&b);
}

static void
test_build_response_roundtrip(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    struct mcs_bin_msg m = {
        .opcode = MCS_BIN_OP_GETKQ, .status = 0, .opaque = 0xfffffffe, .cas = 99,
        .extras = "\0\0\0\7", .extras_len = 4, .key = "kk", .key_len = 2, .value = "vvv", .value_len = 3,
    };
    assert_int_equal(mcs_bin_put_response(&b, &m), 0);
    assert_int_equal(mcs_bin_put_error(&b, MCS_BIN_OP_SETQ, MCS_BIN_STATUS_E2BIG, 0x11223344), 0);
    assert_int_equal(mcs_bin_put_error(&b, MCS_BIN_OP_NOOP, MCS_BIN_STATUS_AUTH_CONTINUE, 5), 0);
    assert_int_equal(mcs_bin_put_resp_header(&b, MCS_BIN_OP_STAT, 0, 0, 3, 5, 6, 0), 0);
    assert_int_equal(mcs_buf_append(&b, "pid12", 5), 0);

    const char *s = mcs_buf_head(&b);
    size_t n = mcs_buf_len(&b), off = 0;
    struct mcs_bin_resp r;
    assert_int_equal(mcs_bin_resp_parse(s, n, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.opcode, MCS_BIN_OP_GETKQ);
    assert_int_equal(r.opaque, 0xfffffffe);
    assert_true(r.cas == 99);
    assert_int_equal(r.extras_len, 4);
    assert_memory_equal(s + r.key_off, "kk", 2);
    assert_memory_equal(s + r.value_off, "vvv", 3);
    off += r.len;

    /* exactly memcached's bytes for "setq too large" (observed) */
    static const char e2big[] = "\x81\x11\x00\x00\x00\x00\x00\x03\x00\x00\x00\x0a\x11\x22\x33\x44"
                                "\x00\x00\x00\x00\x00\x00\x00\x00" "Too large.";
    assert_int_equal(mcs_bin_resp_parse(s + off, n - off, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.len, sizeof(e2big) - 1);
    assert_memory_equal(s + off, e2big, sizeof(e2big) - 1);
    off += r.len;

    /* a status without a text: no body */
    assert_int_equal(mcs_bin_resp_parse(s + off, n - off, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.status, MCS_BIN_STATUS_AUTH_CONTINUE);
    assert_int_equal(r.len, 24);
    off += r.len;

    assert_int_equal(mcs_bin_resp_parse(s + off, n - off, ITEM_MAX, &r), MCS_RESP_OK);
    assert_int_equal(r.opcode, MCS_BIN_OP_STAT);
    assert_int_equal(r.opaque, 6);
    assert_memory_equal(s + off + r.key_off, "pid", 3);
    assert_memory_equal(s + off + r.value_off, "12", 2);
    off += r.len;
    assert_int_equal(off, n);
    mcs_buf_free(&b);
}

/* Every error status memcached can send parses back with its text. */
static void
test_build_errors(void **state)
{
    (void)state;
    static const uint16_t codes[] = {
#define CODE(id, code, name, text) code,
        MCS_BIN_STATUS_LIST(CODE)
#undef CODE
    };
    for (size_t i = 0; i < NELEM(codes); i++) {
        struct mcs_buf b = { 0 };
        assert_int_equal(mcs_bin_put_error(&b, MCS_BIN_OP_GET, codes[i], (uint32_t)i), 0);
        struct mcs_bin_resp r;
        assert_int_equal(mcs_bin_resp_parse(mcs_buf_head(&b), mcs_buf_len(&b), 64, &r), MCS_RESP_OK);
        assert_int_equal(r.len, mcs_buf_len(&b));
        assert_int_equal(r.status, codes[i]);
        assert_int_equal(r.opaque, i);
        assert_true(r.cas == 0);
        assert_int_equal(r.extras_len + r.key_len, 0);
        const char *text = mcs_bin_status_text(codes[i]);
        assert_int_equal(r.value_len, text ? strlen(text) : 0);
        if (text != NULL) {
            assert_memory_equal(mcs_buf_head(&b) + r.value_off, text, r.value_len);
        }
        mcs_buf_free(&b);
    }
}

/* Observed on memcached 1.6.18: a get miss answered "Not found". */
static void
test_error_bytes_as_memcached(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    assert_int_equal(mcs_bin_put_error(&b, MCS_BIN_OP_GET, MCS_BIN_STATUS_KEY_ENOENT, 0x11223344), 0);
    static const char want[] = "\x81\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09\x11\x22\x33\x44"
                               "\x00\x00\x00\x00\x00\x00\x00\x00" "Not found";
    assert_int_equal(mcs_buf_len(&b), sizeof(want) - 1);
    assert_memory_equal(mcs_buf_head(&b), want, sizeof(want) - 1);
    mcs_buf_free(&b);
}

/* A server packet must answer the request it is matched to (opcode, opaque, shape). */
static bool
fits(uint8_t sent, uint32_t opaque, const struct mcs_bin_msg *m)
{
    struct mcs_buf b = { 0 };
    struct mcs_bin_resp r;
    assert_int_equal(mcs_bin_put_response(&b, m), 0);
    assert_int_equal(mcs_bin_resp_parse(mcs_buf_head(&b), mcs_buf_len(&b), 1u << 20, &r), MCS_RESP_OK);
    bool ok = mcs_bin_reply_fits(sent, opaque, &r);
    mcs_buf_free(&b);
    return ok;
}

static void
test_reply_fits(void **state)
{
    (void)state;
    const char flags[4] = { 0 }, eight[8] = { 0, 0, 0, 0, 0, 0, 0, 42 };
    struct mcs_bin_msg stored = { .opcode = MCS_BIN_OP_SET, .opaque = 7 };
    assert_true(fits(MCS_BIN_OP_SET, 7, &stored));
    assert_false(fits(MCS_BIN_OP_SET, 8, &stored));           /* another request's opaque */
    assert_false(fits(MCS_BIN_OP_ADD, 7, &stored));           /* another opcode */
    struct mcs_bin_msg getlike = { .opcode = MCS_BIN_OP_SET, .opaque = 7, .extras = flags, .extras_len = 4,
                                   .value = "v", .value_len = 1 };
    assert_false(fits(MCS_BIN_OP_SET, 7, &getlike));          /* a get-shaped answer to a set */
    struct mcs_bin_msg hit = { .opcode = MCS_BIN_OP_GET, .extras = flags, .extras_len = 4, .value = "v",
                               .value_len = 1 };
    assert_true(fits(MCS_BIN_OP_GET, 0, &hit));
    hit.extras_len = 0;
    assert_false(fits(MCS_BIN_OP_GET, 0, &hit));              /* a hit without flags */
    struct mcs_bin_msg khit = { .opcode = MCS_BIN_OP_GETK, .extras = flags, .extras_len = 4, .key = "k",
                                .key_len = 1 };
    assert_true(fits(MCS_BIN_OP_GETK, 0, &khit));
    khit.key_len = 0;
    assert_false(fits(MCS_BIN_OP_GETK, 0, &khit));            /* getk without its key */
    struct mcs_bin_msg miss = { .opcode = MCS_BIN_OP_GETK, .status = MCS_BIN_STATUS_KEY_ENOENT, .key = "k",
                                .key_len = 1, .value = "Not found", .value_len = 9 };
    assert_true(fits(MCS_BIN_OP_GETK, 0, &miss));
    miss.opcode = MCS_BIN_OP_GET;
    assert_false(fits(MCS_BIN_OP_GET, 0, &miss));             /* get errors carry no key */
    struct mcs_bin_msg odd = { .opcode = MCS_BIN_OP_SET, .status = 0x0099 };
    assert_false(fits(MCS_BIN_OP_SET, 0, &odd));              /* a status memcached never sends */
    struct mcs_bin_msg incr = { .opcode = MCS_BIN_OP_INCREMENT, .value = eight, .value_len = 8 };
    assert_true(fits(MCS_BIN_OP_INCREMENT, 0, &incr));
    incr.value_len = 4;
    assert_false(fits(MCS_BIN_OP_INCREMENT, 0, &incr));
    struct mcs_bin_msg touched = { .opcode = MCS_BIN_OP_TOUCH, .extras = flags, .extras_len = 4 };
    assert_true(fits(MCS_BIN_OP_TOUCH, 0, &touched));
    touched.value = "v";
    touched.value_len = 1;
    assert_false(fits(MCS_BIN_OP_TOUCH, 0, &touched));
    struct mcs_bin_msg version = { .opcode = MCS_BIN_OP_VERSION, .value = "1.6.18", .value_len = 6 };
    assert_true(fits(MCS_BIN_OP_VERSION, 0, &version));
    version.value_len = 0;
    assert_false(fits(MCS_BIN_OP_VERSION, 0, &version));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_opcode_ok),
        cmocka_unit_test(test_refused_and_unknown),
        cmocka_unit_test(test_framing_errors),
        cmocka_unit_test(test_malformed_per_opcode),
        cmocka_unit_test(test_opcode_list_covered),
        cmocka_unit_test(test_opcode_table),
        cmocka_unit_test(test_status_table),
        cmocka_unit_test(test_quiet_rules),
        cmocka_unit_test(test_decoded_fields),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_pipelined_all_ok_cases),
        cmocka_unit_test(test_too_large_swallowed),
        cmocka_unit_test(test_unknown_skips_like_memcached),
        cmocka_unit_test(test_unread_value_is_next_packet),
        cmocka_unit_test(test_resp_parse),
        cmocka_unit_test(test_resp_stat_stream),
        cmocka_unit_test(test_build_request_roundtrip),
        cmocka_unit_test(test_build_response_roundtrip),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_error_bytes_as_memcached),
        cmocka_unit_test(test_reply_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
