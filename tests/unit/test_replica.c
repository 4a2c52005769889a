/*
 * tests/unit/test_replica.c: the copy rule (replica.h): reply classes, the
 * action for every write command and answer, and the requests built for copies.
 */
#include <stdbool.h>
#include <string.h>

#include "preload/core/ascii.h"
#include "preload/core/replica.h"
#include "tests/unit/unit.h"

static void
test_classify(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        enum mcs_reply_class want;
    } rows[] = {
        { "STORED\r\n", MCS_REPLY_STORED },       { "NOT_STORED\r\n", MCS_REPLY_NOT_STORED },
        { "EXISTS\r\n", MCS_REPLY_EXISTS },       { "NOT_FOUND\r\n", MCS_REPLY_NOT_FOUND },
        { "DELETED\r\n", MCS_REPLY_DELETED },     { "TOUCHED\r\n", MCS_REPLY_TOUCHED },
        { "42\r\n", MCS_REPLY_NUMBER },           { "18446744073709551615\r\n", MCS_REPLY_NUMBER },
        { "0\n", MCS_REPLY_NUMBER },              { "STORED", MCS_REPLY_STORED },
        { "ERROR\r\n", MCS_REPLY_ERROR },         { "CLIENT_ERROR bad data chunk\r\n", MCS_REPLY_ERROR },
        { "SERVER_ERROR out of memory storing object\r\n", MCS_REPLY_ERROR },
        { "STORED \r\n", MCS_REPLY_ERROR },       { "stored\r\n", MCS_REPLY_ERROR },
        { "\r\n", MCS_REPLY_ERROR },              { "-1\r\n", MCS_REPLY_ERROR },
        { "123456789012345678901\r\n", MCS_REPLY_ERROR },
    };
    for (size_t i = 0; i < NELEM(rows); i++) {
        if (mcs_reply_classify(rows[i].line, strlen(rows[i].line)) != rows[i].want) {
            fail_msg("%s", rows[i].line);
        }
    }
}

/* The table in replica.h, row by row, for every class. */
static void
test_actions(void **state)
{
    (void)state;
    enum { S = MCS_COPY_SET, D = MCS_COPY_DELETE, T = MCS_COPY_TOUCH, A = MCS_COPY_ARITH, N = MCS_COPY_NONE };
    /* columns: STORED NOT_STORED EXISTS NOT_FOUND DELETED TOUCHED NUMBER ERROR */
    static const struct {
        enum mcs_cmd cmd;
        int want[8];
    } rows[] = {
        { MCS_CMD_SET, { S, D, D, D, D, D, D, D } },     { MCS_CMD_ADD, { S, N, D, D, D, D, D, D } },
        { MCS_CMD_REPLACE, { S, D, D, D, D, D, D, D } }, { MCS_CMD_CAS, { S, D, N, D, D, D, D, D } },
        { MCS_CMD_APPEND, { D, D, D, D, D, D, D, D } },  { MCS_CMD_PREPEND, { D, D, D, D, D, D, D, D } },
        { MCS_CMD_DELETE, { D, D, D, D, D, D, D, D } },  { MCS_CMD_INCR, { D, D, D, D, D, D, A, D } },
        { MCS_CMD_DECR, { D, D, D, D, D, D, A, D } },    { MCS_CMD_TOUCH, { D, D, D, D, D, T, D, D } },
        { MCS_CMD_GAT, { T, N, N, N, N, N, N, N } },     { MCS_CMD_GATS, { T, N, N, N, N, N, N, N } },
        { MCS_CMD_GET, { N, N, N, N, N, N, N, N } },     { MCS_CMD_VERSION, { N, N, N, N, N, N, N, N } },
        { MCS_CMD_FLUSH_ALL, { N, N, N, N, N, N, N, N } },
    };
    for (size_t i = 0; i < NELEM(rows); i++) {
        for (int c = 0; c < 8; c++) {
            enum mcs_copy_action got = mcs_copy_action(rows[i].cmd, (enum mcs_reply_class)c);
            if ((int)got != rows[i].want[c]) {
                fail_msg("%s, class %d: %s", mcs_cmd_name(rows[i].cmd), c, mcs_copy_action_name(got));
            }
        }
    }
    assert_string_equal(mcs_copy_action_name(MCS_COPY_ARITH), "incr/decr");
    assert_string_equal(mcs_copy_action_name(MCS_COPY_COUNT), "?");
}

/* Parses one request and builds the copy request for action. */
static void
expect_build(const char *req, enum mcs_copy_action action, const char *key, const char *want)
{
    struct mcs_ascii_parser p = { 0 };
    struct mcs_ascii_req q;
    assert_int_equal(mcs_ascii_parse(&p, req, strlen(req), 1024 * 1024, &q), MCS_ASCII_OK);
    struct mcs_buf out = { 0 };
    mcs_buf_append(&out, "x", 1);   /* appends after what is there */
    int rc = mcs_copy_build(action, req, &q, key, key ? strlen(key) : 0, &out);
    if (want == NULL) {
        assert_int_equal(rc, -1);
        assert_int_equal(mcs_buf_len(&out), 1);
    } else {
        assert_int_equal(rc, 0);
        if (mcs_buf_len(&out) != strlen(want) + 1 || memcmp(mcs_buf_head(&out) + 1, want, strlen(want)) != 0) {
            fail_msg("%s -> '%.*s', want '%s'", req, (int)mcs_buf_len(&out) - 1, mcs_buf_head(&out) + 1, want);
        }
    }
    mcs_buf_free(&out);
}

static void
test_build(void **state)
{
    (void)state;
    expect_build("set k 5 60 3\r\nabc\r\n", MCS_COPY_SET, NULL, "set k 5 60 3\r\nabc\r\n");
    expect_build("add k 5 60 3 noreply\r\nabc\r\n", MCS_COPY_SET, NULL, "set k 5 60 3\r\nabc\r\n");
    expect_build("cas k 1 0 2 999\r\nxy\r\n", MCS_COPY_SET, NULL, "set k 1 0 2\r\nxy\r\n");
    expect_build("replace  k  7  -1  0 \r\n\r\n", MCS_COPY_SET, NULL, "set k 7 -1 0\r\n\r\n");
    expect_build("set k 5 60 3\nz\r\n\r\n", MCS_COPY_SET, NULL, "set k 5 60 3\r\nz\r\n\r\n");
    expect_build("append k 0 0 1\r\nz\r\n", MCS_COPY_DELETE, NULL, "delete k\r\n");
    expect_build("delete k noreply\r\n", MCS_COPY_DELETE, NULL, "delete k\r\n");
    expect_build("touch k 100\r\n", MCS_COPY_TOUCH, NULL, "touch k 100\r\n");
    expect_build("touch k 100 noreply\r\n", MCS_COPY_TOUCH, NULL, "touch k 100\r\n");
    expect_build("gat 30 a b c\r\n", MCS_COPY_TOUCH, "b", "touch b 30\r\n");
    expect_build("gats -1 a\r\n", MCS_COPY_TOUCH, "a", "touch a -1\r\n");
    expect_build("incr k 5\r\n", MCS_COPY_ARITH, NULL, "incr k 5\r\n");
    expect_build("decr k 18446744073709551615 noreply\r\n", MCS_COPY_ARITH, NULL,
                 "decr k 18446744073709551615\r\n");
    expect_build("delete k\r\n", MCS_COPY_SET, NULL, NULL);   /* no value to copy */
    expect_build("set k 0 0 1\r\na\r\n", MCS_COPY_NONE, NULL, NULL);
}

/* Binary statuses in the terms of the text rule. */
static void
test_bin_classes(void **state)
{
    (void)state;
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_SET, 0), MCS_REPLY_STORED);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_GET, 0), MCS_REPLY_STORED);   /* a hit */
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_DELETE, 0), MCS_REPLY_DELETED);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_INCREMENT, 0), MCS_REPLY_NUMBER);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_TOUCH, 0), MCS_REPLY_TOUCHED);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_REPLACE, MCS_BIN_STATUS_KEY_ENOENT), MCS_REPLY_NOT_FOUND);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_SET, MCS_BIN_STATUS_KEY_EEXISTS), MCS_REPLY_EXISTS);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_ADD, MCS_BIN_STATUS_KEY_EEXISTS), MCS_REPLY_NOT_STORED);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_APPEND, MCS_BIN_STATUS_NOT_STORED), MCS_REPLY_NOT_STORED);
    assert_int_equal(mcs_bin_reply_class(MCS_BIN_OP_SET, MCS_BIN_STATUS_E2BIG), MCS_REPLY_ERROR);
    /* so an add refused by the primary leaves the copies alone, as in text */
    assert_int_equal(mcs_copy_action(MCS_CMD_ADD, mcs_bin_reply_class(MCS_BIN_OP_ADD, MCS_BIN_STATUS_KEY_EEXISTS)),
                     MCS_COPY_NONE);
}

/* Keys the text protocol can carry are deleted in text, others with a base64 meta md. */
static void
test_delete_line(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        size_t len;
        const char *want;
    } rows[] = {
        { "abc", 3, "delete abc\r\n" },
        { "a b", 3, "md YSBi b\r\n" },
        { "\x00", 1, "md AA== b\r\n" },
        { "ab\x7f\n", 4, "md YWJ/Cg== b\r\n" },
        { "\xff\xfe\xfd", 3, "delete \xff\xfe\xfd\r\n" },   /* high bytes are fine in text keys */
        { "\x01\xff", 2, "md Af8= b\r\n" },
    };
    for (size_t i = 0; i < NELEM(rows); i++) {
        struct mcs_buf out = { 0 };
        assert_int_equal(mcs_copy_delete_line(&out, rows[i].key, rows[i].len), 0);
        assert_int_equal(mcs_buf_len(&out), strlen(rows[i].want));
        assert_memory_equal(mcs_buf_head(&out), rows[i].want, strlen(rows[i].want));
        mcs_buf_free(&out);
    }
    char k251[251];
    memset(k251, 'k', sizeof(k251));
    assert_false(mcs_copy_text_safe(k251, 251));
    assert_true(mcs_copy_text_safe(k251, 250));
    assert_false(mcs_copy_text_safe(k251, 0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_actions),
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_bin_classes),
        cmocka_unit_test(test_delete_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
