/*
 * preload/core/request.h: the request machine's own functions, shared by its
 * files (machine.h is what drivers see):
 *   machine.c          set-up, sends to the driver, server replies, completions, "unavailable"
 *   session.c          a connection: parsing, pipeline order, the shim's own answers, reply memory
 *   request.c          a request's life: text dispatch, get/put, merge in key order, completion
 *   request_binary.c   binary requests: dispatch, replies, quiet rules, stats packets
 *   request_meta.c     meta requests: dispatch, replies, what copies of a meta write get
 *   avail.c            failover, copies, warm-up, probes, identification, rejoin
 */
#ifndef MCS_REQUEST_H
#define MCS_REQUEST_H

#include "preload/core/machine.h"

/* machine.c */
void mcs_machine_unstall(struct mcs_machine *m);
void mcs_machine_log(struct mcs_machine *m, enum mcs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mcs_machine_send(struct mcs_machine *m, struct mcs_sub *sub, uint64_t conn, const char *a, size_t alen,
                      const char *b, size_t blen);
/* The first server from `from` on that is usable, or nservers when none is. */
uint32_t mcs_machine_first_usable(struct mcs_machine *m, uint32_t from);
/* Appends "mcshim: server <label> unavailable" to out; line: as a whole text
 * reply line (SERVER_ERROR ..., CRLF). Returns 0 or -1 (out of memory). */
int mcs_reply_unavailable(const struct mcs_machine *m, uint32_t server, bool line, struct mcs_buf *out);
/* Nobody could answer r (one server, or none of its copies): its protocol's
 * answer. A read misses (binary, meta); anything else: server unavailable. */
void mcs_request_unavailable(struct mcs_machine *m, struct mcs_request *r, uint32_t server);

/* request.c */
/* r (detached: noreply, or a job such as a copy, a fill or a drop of a key) was
 * caused by session c's requests and travels on its connections: it joins c's
 * list `unanswered` until it is freed or c closes. */
void mcs_request_origin(struct mcs_request *r, struct mcs_session *c);
struct mcs_request *mcs_request_new(struct mcs_machine *m, struct mcs_session *c, enum mcs_cmd cmd, uint32_t nsubs,
                                    bool detached);
void mcs_request_free(struct mcs_machine *m, struct mcs_request *r);
void mcs_request_finish(struct mcs_machine *m, struct mcs_request *r);
/* pending counts the references on a request: each sub owed a reply, and one
 * hold while a function is still sending it (so that a sub failing at once,
 * its server down, cannot finish the request under that function's feet).
 * get takes one; put drops one, and the last finishes the request. */
static inline void
mcs_request_get(struct mcs_request *r)
{
    r->pending++;
}
void mcs_request_put(struct mcs_machine *m, struct mcs_request *r);
void mcs_request_send_keys(struct mcs_machine *m, struct mcs_request *r, struct mcs_sub *sub);
void mcs_sub_send(struct mcs_machine *m, struct mcs_session *c, struct mcs_sub *sub, const char *p, size_t n);
void mcs_request_sub_done(struct mcs_machine *m, struct mcs_sub *sub);
bool mcs_request_hold(struct mcs_machine *m, struct mcs_request *r, struct mcs_buf *to, const char *p, size_t n);
void mcs_request_dispatch(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q);
void mcs_request_merge(struct mcs_machine *m, struct mcs_request *r, bool final);

/* session.c */
void mcs_session_stats(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q);
void mcs_session_local_reply(struct mcs_machine *m, struct mcs_session *c, const char *p, size_t n);
void mcs_session_advance(struct mcs_machine *m, struct mcs_session *c);
void mcs_stats_build(struct mcs_machine *m, const char *args, size_t args_len, struct mcs_buf *out);
bool mcs_stats_forwarded(const char *args, size_t args_len);
void mcs_stats_forward(struct mcs_machine *m, struct mcs_session *c, struct mcs_request *r);
void mcs_request_stream(struct mcs_machine *m, struct mcs_request *r);
bool mcs_request_wants(const struct mcs_request *r, const struct mcs_sub *sub);

/* avail.c: failover, copies, probes, rejoin, warm-up */
void mcs_avail_dispatch_key(struct mcs_machine *m, struct mcs_session *c, const char *buf,
                            const struct mcs_ascii_req *q);
void mcs_avail_dispatch_kept(struct mcs_machine *m, struct mcs_request *r, const char *key, size_t key_len);
void mcs_avail_dispatch_keys(struct mcs_machine *m, struct mcs_session *c, const char *buf,
                             const struct mcs_ascii_req *q);
bool mcs_avail_sub_done(struct mcs_machine *m, struct mcs_sub *sub);
void mcs_avail_merged(struct mcs_machine *m, struct mcs_request *r, const char *key, uint32_t len,
                      const struct mcs_sub *from);
void mcs_avail_note(struct mcs_machine *m, uint32_t server, enum mcs_health before, enum mcs_failure why);
enum mcs_resp_status mcs_avail_meta_reply(struct mcs_machine *m, struct mcs_sub *sub, const char *p, size_t len,
                                          size_t *used);
void mcs_avail_stat(struct mcs_request *r, const char *line, size_t len);
void mcs_avail_drop_key(struct mcs_machine *m, struct mcs_session *c, const char *key, size_t len);

/* request_binary.c: binary clients */
void mcs_bin_dispatch(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_bin_req *q);
bool mcs_bin_deliver(struct mcs_machine *m, struct mcs_sub *sub, const char *p, const struct mcs_bin_resp *resp,
                     bool *bad);
void mcs_bin_failed(struct mcs_machine *m, struct mcs_request *r, uint32_t server);
int mcs_bin_request_line(struct mcs_request *r, struct mcs_buf *out);
void mcs_bin_stats_build(struct mcs_machine *m, struct mcs_request *r);
void mcs_bin_stats_packets(struct mcs_request *r, const struct mcs_buf *text);

/* request_meta.c: meta commands on text connections */
bool mcs_meta_detect(const char *buf, size_t len, bool *more);
void mcs_meta_dispatch(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_meta_req *q);
enum mcs_resp_status mcs_meta_reply(struct mcs_machine *m, struct mcs_sub *sub, const char *p, size_t len,
                                    size_t *used);
void mcs_meta_failed(struct mcs_machine *m, struct mcs_request *r, uint32_t server);
enum mcs_copy_action mcs_meta_copy_action(const struct mcs_request *r);
int mcs_meta_copy_line(const struct mcs_request *r, enum mcs_copy_action action, struct mcs_buf *out);

#endif
