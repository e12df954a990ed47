/* Unit tests of libkiteq-client against a fake broker on 127.0.0.1.
 *
 * The fake only accepts and answers the handshake in a helper thread; after that the
 * test itself plays the broker on the accepted socket, so every step is explicit. Byte
 * expectations come from the golden frames captured from the original Go client
 * (/work/shared/spec/golden/frames.jsonl, ids noted below) and from spec §1.4. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "client/kiteq_client.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "proto/codec.h"

/* --- golden frames ------------------------------------------------------------------------ */

/* spec §1.4: ConnMeta{"s-trade-a","123456",0}, opaque 1 */
static const char SPEC_CONN_META[] = "00000001020000000000000000000000000015"
                                     "0a09732d74726164652d611206313233343536"
                                     "1800";
/* golden id 1: ConnMeta{"s-user-profile","123456",5} from the Go test client */
static const char GOLD_CONN_META_WARMUP[] =
    "0000000102000000000000000000000000001a0a0e732d757365722d70726f66696c6512063132333435361805";
/* golden id 12 without its opaque (first 4 bytes) and without the 2048 body bytes:
 * uncommitted BytesMessage publish of the Go benchmark producer */
static const char GOLD_PUBLISH_PREFIX[] =
    "1100000000000000000000000008650a600a2063353162633430366561633334333336623639336537656463"
    "64646461643465120c757365722d70726f66696c651a0e70726f66696c652d757064617465208180acd8062864320c"
    "67"
    "6f2d6b6974652d74657374380040005081dda6d806128010";
/* golden id 14: the producer's commit of that message (opaque 0) */
static const char GOLD_TX_COMMIT[] = "000000000600000000000000000000000000660a600a20633531626334303"
                                     "66561633334333336623639336537656463"
                                     "64646461643465120c757365722d70726f66696c651a0e70726f66696c652"
                                     "d757064617465208180acd8062864320c67"
                                     "6f2d6b6974652d74657374380040005081dda6d80610011a00";
/* golden id 5: StringMessage delivery (opaque 1), and id 6: the Go consumer's DeliverAck */
static const char GOLD_DELIVERY[] = "0000000112000000000000000000000000007c0a640a203665633234663762"
                                    "6666666134666335613333393230393335"
                                    "33666363306461120c757365722d70726f66696c651a0e70726f66696c652d"
                                    "7570646174652093dea6d8062864320e73"
                                    "2d757365722d70726f66696c653801400050bbd9a6d806580112144454426f"
                                    "5a5778736279426e627931726158526c";
static const char GOLD_DELIVER_ACK[] = "000000010500000000000000000000000000540a2036656332346637626"
                                       "6666661346663356133333932303933353366"
                                       "6363306461120c757365722d70726f66696c651a0e70726f66696c652d7"
                                       "57064617465220e732d757365722d70726f66"
                                       "696c6528013200";
/* golden id 17: broker TX check (opaque 448), id 18: the Go producer's commit answer */
static const char GOLD_TX_CHECK[] =
    "000001c00600000000000000000000000000720a600a20313261356464396139353864343161643865636564323437"
    "33"
    "61663263636636120c757365722d70726f66696c651a0e70726f66696c652d757064617465208180acd8062864320c"
    "67"
    "6f2d6b6974652d74657374380040005081dda6d80610001a0c53657276657220436865636b";
static const char GOLD_TX_CHECK_REPLY[] = "000001c00600000000000000000000000000660a600a203132613564"
                                          "6439613935386434316164386563656432343733"
                                          "61663263636636120c757365722d70726f66696c651a0e70726f6669"
                                          "6c652d757064617465208180acd8062864320c67"
                                          "6f2d6b6974652d74657374380040005081dda6d80610011a00";

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static int64_t mono_ms(void) { return (int64_t)(kq_mono_us() / 1000); }

static void pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Poll a condition until it holds or the deadline passes (never a bare sleep). */
#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        int64_t wf_deadline_ = mono_ms() + (ms);                                                   \
        while (!(cond) && mono_ms() < wf_deadline_)                                                \
            pause_ms(1);                                                                           \
        assert_true(cond);                                                                         \
    } while (0)

/* --- the fake broker ----------------------------------------------------------------------- */

struct fake {
    int lfd, port;
    bool auth_ok;
    const char *feedback;
    const char *after_auth_hex; /* sent in the same write as the ConnAuthAck */
    pthread_t th;
    int conn;          /* the accepted connection, after the handshake */
    uint8_t meta[256]; /* the raw ConnMeta frame */
    size_t meta_len;
    uint32_t meta_opaque;
    struct kq_buf in; /* received, not yet parsed */
};

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        b += w;
        n -= (size_t)w;
    }
}

/* Next complete frame from f->conn into a malloc'd copy. Returns its length, 0 on EOF,
 * or -ETIMEDOUT. */
static int recv_frame(struct fake *f, uint8_t **out, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        struct kq_frame fr;
        int used = kq_frame_parse(f->in.data, f->in.len, &fr);
        if (used > 0) {
            *out = malloc((size_t)used);
            memcpy(*out, f->in.data, (size_t)used);
            kq_buf_consume(&f->in, (size_t)used);
            return used;
        }
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pf = {.fd = f->conn, .events = POLLIN};
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        kq_buf_reserve(&f->in, 4096);
        ssize_t n = recv(f->conn, f->in.data + f->in.len, f->in.cap - f->in.len, 0);
        if (n <= 0)
            return 0;
        f->in.len += (size_t)n;
    }
}

static void *fake_accept_main(void *arg)
{
    struct fake *f = arg;
    struct pollfd pf = {.fd = f->lfd, .events = POLLIN};
    if (poll(&pf, 1, 5000) != 1)
        return NULL;
    f->conn = accept(f->lfd, NULL, NULL);
    int one = 1;
    setsockopt(f->conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint8_t *fr = NULL;
    int n = recv_frame(f, &fr, 5000);
    if (n <= 0 || (size_t)n > sizeof f->meta)
        return NULL;
    memcpy(f->meta, fr, (size_t)n);
    f->meta_len = (size_t)n;
    struct kq_frame h;
    kq_frame_parse(fr, (size_t)n, &h);
    f->meta_opaque = h.opaque;
    free(fr);
    struct kq_buf b = {0};
    kq_codec_append_conn_auth(&b, h.opaque, f->auth_ok, f->feedback);
    if (f->after_auth_hex) {
        kq_buf_reserve(&b, strlen(f->after_auth_hex) / 2);
        b.len += unhex(f->after_auth_hex, b.data + b.len, b.cap - b.len);
    }
    send_all(f->conn, b.data, b.len);
    kq_buf_free(&b);
    return NULL;
}

static void fake_listen(struct fake *f, bool auth_ok, const char *feedback)
{
    memset(f, 0, sizeof *f);
    f->conn = -1;
    f->auth_ok = auth_ok;
    f->feedback = feedback;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    socklen_t sl = sizeof a;
    getsockname(f->lfd, (struct sockaddr *)&a, &sl);
    f->port = ntohs(a.sin_port);
}

/* Accept (and handshake) the next connection in the background. */
static void fake_accept_start(struct fake *f)
{
    if (f->conn >= 0)
        close(f->conn);
    f->conn = -1;
    f->in.len = 0;
    f->meta_len = 0;
    assert_int_equal(pthread_create(&f->th, NULL, fake_accept_main, f), 0);
}

static void fake_accept_join(struct fake *f) { pthread_join(f->th, NULL); }

static void fake_close(struct fake *f)
{
    if (f->conn >= 0)
        close(f->conn);
    close(f->lfd);
    kq_buf_free(&f->in);
}

/* --- what the callbacks saw ---------------------------------------------------------------- */

struct seen {
    pthread_mutex_t mu;
    int n_msgs;
    struct kq_message last;
    char topic[64], type[64], group[64], body[256], prop[64];
    bool ack; /* what on_message returns */
    int tx_status;
    int n_checks;
    char check_id[40];
    int n_done;
    int errs[8];
    struct kq_publish_result res[8];
};
static struct seen S;

static void seen_reset(void)
{
    memset(&S, 0, sizeof S);
    pthread_mutex_init(&S.mu, NULL);
    S.ack = true;
}

static bool on_message(void *ud, const struct kq_message *m)
{
    pthread_mutex_lock(&S.mu);
    S.last = *m;
    snprintf(S.topic, sizeof S.topic, "%s", m->topic);
    snprintf(S.type, sizeof S.type, "%s", m->message_type);
    snprintf(S.group, sizeof S.group, "%s", m->group_id);
    snprintf(S.body, sizeof S.body, "%.*s", (int)m->body_len, (const char *)m->body);
    if (m->n_properties)
        snprintf(S.prop, sizeof S.prop, "%s=%s", m->properties[0].key, m->properties[0].value);
    S.n_msgs++;
    bool ack = S.ack;
    pthread_mutex_unlock(&S.mu);
    return ack;
}

static int on_tx_check(void *ud, const struct kq_message *m)
{
    pthread_mutex_lock(&S.mu);
    S.n_checks++;
    snprintf(S.check_id, sizeof S.check_id, "%s", m->message_id);
    int st = S.tx_status;
    pthread_mutex_unlock(&S.mu);
    return st;
}

static void on_published(void *ud, int err, const struct kq_publish_result *r)
{
    int i = (int)(intptr_t)ud;
    pthread_mutex_lock(&S.mu);
    S.errs[i] = err;
    S.res[i] = *r;
    S.n_done++;
    pthread_mutex_unlock(&S.mu);
}

static int seen_int(int *p)
{
    pthread_mutex_lock(&S.mu);
    int v = *p;
    pthread_mutex_unlock(&S.mu);
    return v;
}

/* --- helpers ------------------------------------------------------------------------------ */

static struct kq_client_options base_opts(const char *group, kq_on_message_fn om,
                                          kq_on_tx_check_fn tc)
{
    struct kq_client_options o = {.group_id = group,
                                  .secret = "123456",
                                  .on_message = om,
                                  .on_tx_check = tc,
                                  .connect_timeout_ms = 2000,
                                  .ack_timeout_ms = 2000,
                                  .reconnect = false};
    return o;
}

static struct kq_client *open_client(struct fake *f, struct kq_client_options *o)
{
    static char broker[64];
    snprintf(broker, sizeof broker, "127.0.0.1:%d", f->port);
    o->broker = broker;
    fake_accept_start(f);
    struct kq_client *c = NULL;
    char err[128];
    int rc = kq_client_open(o, &c, err, sizeof err);
    fake_accept_join(f);
    if (rc)
        fprintf(stderr, "open: %s\n", err);
    assert_int_equal(rc, 0);
    assert_true(f->conn >= 0);
    return c;
}

static void expect_frame_hex(struct fake *f, const char *hex)
{
    uint8_t want[512];
    size_t wn = unhex(hex, want, sizeof want);
    uint8_t *got = NULL;
    int n = recv_frame(f, &got, 3000);
    assert_int_equal(n, (int)wn);
    assert_memory_equal(got, want, wn);
    free(got);
}

static void send_hex(struct fake *f, const char *hex)
{
    uint8_t b[512];
    size_t n = unhex(hex, b, sizeof b);
    send_all(f->conn, b, n);
}

/* A golden frame with one protobuf bool turned false: `field` is the hex of the bool's
 * tag and value 01 followed by what comes after it, so it is found once in the frame. */
static void expect_frame_hex_false(struct fake *f, const char *golden, const char *field)
{
    char hex[1024];
    assert_true(strlen(golden) < sizeof hex);
    strcpy(hex, golden);
    char *st = strstr(hex, field);
    assert_non_null(st);
    st[3] = '0';
    expect_frame_hex(f, hex);
}

/* A client of group without callbacks answers the golden request with the golden reply but
 * for one bool turned false (see expect_frame_hex_false). */
static void expect_answer_without_callback(struct fake *f, const char *group, const char *request,
                                           const char *reply, const char *field)
{
    struct kq_client_options o = base_opts(group, NULL, NULL);
    struct kq_client *c = open_client(f, &o);
    send_hex(f, request);
    expect_frame_hex_false(f, reply, field);
    kq_client_close(c);
}

/* The next frame, parsed into *h; the caller frees the returned copy. */
static uint8_t *expect_frame(struct fake *f, struct kq_frame *h, int timeout_ms)
{
    uint8_t *fr = NULL;
    int n = recv_frame(f, &fr, timeout_ms);
    assert_true(n > 0);
    assert_int_equal(kq_frame_parse(fr, (size_t)n, h), n);
    return fr;
}

static void send_store_ack(struct fake *f, uint32_t opaque, const char *id, bool ok,
                           const char *feedback)
{
    struct kq_buf b = {0};
    kq_codec_append_store_ack(&b, opaque, id, ok, feedback);
    send_all(f->conn, b.data, b.len);
    kq_buf_free(&b);
}

/* The header of the deliveries the tests write themselves. */
static Protocol__Header delivery_header(void)
{
    Protocol__Header hd = PROTOCOL__HEADER__INIT;
    hd.messageid = "0123456789abcdef0123456789abcdef";
    hd.topic = "trade";
    hd.messagetype = "pay";
    hd.groupid = "s-producer";
    return hd;
}

/* `count` BytesMessage deliveries of one header, opaques from `opaque` on, in one write. */
static void send_deliveries(struct fake *f, const Protocol__Header *hd, uint32_t opaque, int count,
                            const char *body, size_t len)
{
    uint8_t *hb = NULL;
    size_t hl = 0;
    kq_header_pack(hd, &hb, &hl);
    struct kq_buf b = {0};
    for (int i = 0; i < count; i++)
        kq_codec_append_message(&b, opaque + (uint32_t)i, KQ_CMD_BYTES_MESSAGE, hb, hl,
                                (const uint8_t *)body, len);
    free(hb);
    send_all(f->conn, b.data, b.len);
    kq_buf_free(&b);
}

/* A plain publish: topic "t", type "mt", no expiry and no delivery limit. */
static struct kq_message plain_message(const void *body, size_t len)
{
    struct kq_message m = {.topic = "t",
                           .message_type = "mt",
                           .expired_time = -1,
                           .deliver_limit = -1,
                           .body = body,
                           .body_len = len};
    return m;
}

/* The golden id-12 message (commit=false, benchmark producer). */
static struct kq_message golden_message(uint8_t *body)
{
    for (int i = 0; i < 2048; i++)
        body[i] = (uint8_t)(i * 7);
    struct kq_message m = {.topic = "user-profile",
                           .message_type = "profile-update",
                           .group_id = "",
                           .expired_time = 1795883009,
                           .deliver_limit = 100,
                           .two_phase = true,
                           .fly = false,
                           .body = body,
                           .body_len = 2048,
                           .create_time = 1795796609};
    strcpy(m.message_id, "c51bc406eac34336b693e7edcdddad4e");
    return m;
}

/* --- tests -------------------------------------------------------------------------------- */

static void test_handshake_golden(void **state)
{
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("s-trade-a", NULL, NULL);
    struct kq_client *c = open_client(&f, &o);
    uint8_t want[128];
    size_t wn = unhex(SPEC_CONN_META, want, sizeof want);
    assert_int_equal(f.meta_len, wn);
    assert_memory_equal(f.meta, want, wn);
    kq_client_close(c);

    o = base_opts("s-user-profile", NULL, NULL);
    o.warmingup_sec = 5;
    c = open_client(&f, &o);
    wn = unhex(GOLD_CONN_META_WARMUP, want, sizeof want);
    assert_int_equal(f.meta_len, wn);
    assert_memory_equal(f.meta, want, wn);
    kq_client_close(c);
    fake_close(&f);
}

static void test_handshake_refused(void **state)
{
    struct fake f;
    fake_listen(&f, false, "Unauthorized,Connection broken!");
    struct kq_client_options o = base_opts("g", NULL, NULL);
    char broker[64], err[128];
    snprintf(broker, sizeof broker, "127.0.0.1:%d", f.port);
    o.broker = broker;
    fake_accept_start(&f);
    struct kq_client *c = NULL;
    assert_int_equal(kq_client_open(&o, &c, err, sizeof err), -EACCES);
    fake_accept_join(&f);
    assert_string_equal(err, "Unauthorized,Connection broken!");
    assert_null(c);
    fake_close(&f);

    /* nobody listening: a clean error, not a hang */
    fake_listen(&f, true, "");
    close(f.lfd);
    snprintf(broker, sizeof broker, "127.0.0.1:%d", f.port);
    assert_true(kq_client_open(&o, &c, err, sizeof err) < 0);
    assert_true(strlen(err) > 0);
    kq_buf_free(&f.in);
    o.broker = "no-port";
    assert_int_equal(kq_client_open(&o, &c, err, sizeof err), -EINVAL);
}

struct sync_pub {
    struct kq_client *c;
    struct kq_message m;
    struct kq_publish_result r;
    int rc;
};

static void *sync_pub_main(void *arg)
{
    struct sync_pub *p = arg;
    p->rc = kq_publish(p->c, &p->m, &p->r);
    return NULL;
}

static void test_publish_golden_and_tx_finish(void **state)
{
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("go-kite-test", NULL, NULL);
    struct kq_client *c = open_client(&f, &o);

    static uint8_t body[2048];
    struct sync_pub p = {.c = c, .m = golden_message(body)};
    pthread_t th;
    pthread_create(&th, NULL, sync_pub_main, &p);

    uint8_t *fr = NULL;
    int n = recv_frame(&f, &fr, 3000);
    uint8_t want[256];
    size_t wn = unhex(GOLD_PUBLISH_PREFIX, want, sizeof want);
    assert_int_equal(n, 19 + 2149);
    assert_memory_equal(fr + 4, want, wn); /* everything but the opaque */
    assert_memory_equal(fr + 4 + wn, body, sizeof body);
    struct kq_frame h;
    kq_frame_parse(fr, (size_t)n, &h);
    assert_int_equal(h.opaque, f.meta_opaque + 1); /* one counter per client */
    free(fr);

    send_store_ack(&f, h.opaque, "c51bc406eac34336b693e7edcdddad4e", true,
                   "Store Result true Cost:0");
    pthread_join(th, NULL);
    assert_int_equal(p.rc, 0);
    assert_true(p.r.status);
    assert_string_equal(p.r.feedback, "Store Result true Cost:0");
    assert_string_equal(p.r.message_id, "c51bc406eac34336b693e7edcdddad4e");

    /* second phase: byte-identical to the Go producer's commit */
    assert_int_equal(kq_tx_finish(c, &p.m, KQ_TX_COMMIT, NULL), 0);
    expect_frame_hex(&f, GOLD_TX_COMMIT);
    assert_int_equal(kq_tx_finish(c, &p.m, 3, NULL), -EINVAL);

    struct kq_client_stats st;
    kq_client_stats(c, &st);
    assert_int_equal(st.published, 1);
    assert_int_equal(st.acked_ok, 1);
    kq_client_close(c);
    fake_close(&f);
}

static void test_async_acks_out_of_order(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("g1", NULL, NULL);
    struct kq_client *c = open_client(&f, &o);

    struct kq_property props[] = {{"k", "v"}};
    struct kq_message m = plain_message("hi", 2);
    m.string_body = true;
    m.properties = props;
    m.n_properties = 1;
    for (intptr_t i = 0; i < 3; i++)
        assert_int_equal(kq_publish_async(c, &m, on_published, (void *)i), 0);

    uint32_t ops[3];
    char ids[3][KQ_CLIENT_ID_LEN + 1];
    for (int i = 0; i < 3; i++) {
        struct kq_frame h;
        uint8_t *fr = expect_frame(&f, &h, 3000);
        assert_int_equal(h.cmd, KQ_CMD_STRING_MESSAGE);
        ops[i] = h.opaque;
        ProtobufCMessage *pm = kq_codec_unpack(h.cmd, h.body, (size_t)h.body_len);
        struct kq_message_view v;
        assert_int_equal(kq_message_view(h.cmd, pm, &v), 0);
        assert_true(kq_message_id_valid(v.header->messageid));
        snprintf(ids[i], sizeof ids[i], "%s", v.header->messageid);
        assert_string_equal(v.header->groupid, "g1"); /* defaults to the client's group */
        assert_int_equal(v.header->expiredtime, -1);  /* passed through, not defaulted */
        assert_int_equal(v.header->deliverlimit, -1);
        assert_true(v.header->has_createtime && v.header->createtime > 1700000000);
        assert_int_equal(v.header->n_properties, 1);
        assert_string_equal(v.header->properties[0]->key, "k");
        assert_false(v.header->has_snappy);
        kq_codec_free(pm);
        free(fr);
    }
    assert_true(strcmp(ids[0], ids[1]) != 0);

    /* acks in reverse order, all in one write; the 2nd one is negative */
    struct kq_buf b = {0};
    for (int i = 2; i >= 0; i--) {
        char fb[128];
        snprintf(fb, sizeof fb, "ack-%s", ids[i]);
        kq_codec_append_store_ack(&b, ops[i], ids[i], i != 1, fb);
    }
    send_all(f.conn, b.data, b.len);
    kq_buf_free(&b);
    WAIT_FOR(seen_int(&S.n_done) == 3, 3000);
    for (int i = 0; i < 3; i++) {
        char fb[128];
        snprintf(fb, sizeof fb, "ack-%s", ids[i]);
        assert_int_equal(S.errs[i], 0);
        assert_string_equal(S.res[i].message_id, ids[i]);
        assert_string_equal(S.res[i].feedback, fb);
        assert_int_equal(S.res[i].status, i != 1);
    }
    struct kq_client_stats st;
    kq_client_stats(c, &st);
    assert_int_equal(st.published, 3);
    assert_int_equal(st.acked_ok, 2);
    assert_int_equal(st.acked_fail, 1);
    kq_client_close(c);
    fake_close(&f);
}

static void test_ack_timeout(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("g1", NULL, NULL);
    o.ack_timeout_ms = 200;
    struct kq_client *c = open_client(&f, &o);
    struct kq_message m = plain_message("x", 1);
    int64_t t0 = mono_ms();
    struct kq_publish_result r;
    assert_int_equal(kq_publish(c, &m, &r), -ETIMEDOUT);
    int64_t dt = mono_ms() - t0;
    assert_true(dt >= 190 && dt < 2000);
    assert_false(r.status);
    assert_true(kq_message_id_valid(r.message_id));

    assert_int_equal(kq_publish_async(c, &m, on_published, (void *)0), 0);
    WAIT_FOR(seen_int(&S.n_done) == 1, 2000);
    assert_int_equal(S.errs[0], -ETIMEDOUT);

    /* a late ack for the expired publish is ignored */
    struct kq_frame h;
    uint8_t *fr = expect_frame(&f, &h, 1000);
    send_store_ack(&f, h.opaque, r.message_id, true, "late");
    free(fr);
    kq_client_close(c);
    assert_int_equal(seen_int(&S.n_done), 1);
    fake_close(&f);
}

static void test_delivery_acked(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("s-consumer", on_message, NULL);
    struct kq_client *c = open_client(&f, &o);

    /* golden: delivery (id 5) -> the Go consumer's DeliverAck (id 6), byte for byte */
    send_hex(&f, GOLD_DELIVERY);
    expect_frame_hex(&f, GOLD_DELIVER_ACK);
    assert_int_equal(seen_int(&S.n_msgs), 1);
    assert_string_equal(S.last.message_id, "6ec24f7bfffa4fc5a339209353fcc0da");
    assert_string_equal(S.topic, "user-profile");
    assert_string_equal(S.type, "profile-update");
    assert_string_equal(S.group, "s-user-profile");
    assert_string_equal(S.body, "DTBoZWxsbyBnby1raXRl");
    assert_true(S.last.string_body);
    assert_int_equal(S.last.deliver_limit, 100);

    /* a nack, with properties, on a broker opaque of our own */
    pthread_mutex_lock(&S.mu);
    S.ack = false;
    pthread_mutex_unlock(&S.mu);
    Protocol__Entry e = PROTOCOL__ENTRY__INIT, *ep = &e;
    e.key = "color";
    e.value = "blue";
    Protocol__Header hd = delivery_header();
    hd.n_properties = 1;
    hd.properties = &ep;
    send_deliveries(&f, &hd, 4242, 1, "\0\1\2", 3);
    struct kq_frame h;
    uint8_t *fr = expect_frame(&f, &h, 3000);
    assert_int_equal(h.opaque, 4242);
    assert_int_equal(h.cmd, KQ_CMD_DELIVER_ACK);
    Protocol__DeliverAck *a =
        (Protocol__DeliverAck *)kq_codec_unpack(h.cmd, h.body, (size_t)h.body_len);
    assert_non_null(a);
    assert_string_equal(a->messageid, hd.messageid);
    assert_string_equal(a->topic, "trade");
    assert_string_equal(a->messagetype, "pay");
    assert_string_equal(a->groupid, "s-producer");
    assert_false(a->status);
    assert_non_null(a->feedback);
    assert_string_equal(a->feedback, "");
    kq_codec_free(&a->base);
    free(fr);
    assert_string_equal(S.prop, "color=blue");
    assert_false(S.last.string_body);
    kq_client_close(c);

    /* no on_message: the delivery is nacked */
    expect_answer_without_callback(&f, "s-consumer", GOLD_DELIVERY, GOLD_DELIVER_ACK, "28013200");
    fake_close(&f);
}

static void test_tx_check_answered(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("go-kite-test", NULL, on_tx_check);
    S.tx_status = KQ_TX_COMMIT;
    struct kq_client *c = open_client(&f, &o);
    send_hex(&f, GOLD_TX_CHECK);
    expect_frame_hex(&f, GOLD_TX_CHECK_REPLY);
    assert_int_equal(seen_int(&S.n_checks), 1);
    assert_string_equal(S.check_id, "12a5dd9a958d41ad8eced2473af2ccf6");
    kq_client_close(c);

    /* no callback: answer 0 (unknown), header still echoed */
    expect_answer_without_callback(&f, "go-kite-test", GOLD_TX_CHECK, GOLD_TX_CHECK_REPLY,
                                   "10011a00");
    fake_close(&f);
}

static void test_broker_close_fails_pending(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("g1", NULL, NULL);
    o.ack_timeout_ms = 10000;
    struct kq_client *c = open_client(&f, &o);
    struct kq_message m = plain_message("x", 1);
    for (intptr_t i = 0; i < 2; i++)
        assert_int_equal(kq_publish_async(c, &m, on_published, (void *)i), 0);
    struct sync_pub p = {.c = c, .m = m};
    pthread_t th;
    pthread_create(&th, NULL, sync_pub_main, &p);
    for (int i = 0; i < 3; i++) { /* all three are on the wire */
        uint8_t *fr = NULL;
        assert_true(recv_frame(&f, &fr, 3000) > 0);
        free(fr);
    }
    int64_t t0 = mono_ms();
    close(f.conn);
    f.conn = -1;
    pthread_join(th, NULL);
    assert_int_equal(p.rc, -ECONNRESET);
    WAIT_FOR(seen_int(&S.n_done) == 2, 3000);
    assert_true(mono_ms() - t0 < 3000);
    assert_int_equal(S.errs[0], -ECONNRESET);
    assert_int_equal(S.errs[1], -ECONNRESET);
    assert_false(S.res[0].status);
    /* reconnect is off: the client stays down */
    WAIT_FOR(kq_publish_async(c, &m, on_published, (void *)2) == -ENOTCONN, 2000);
    kq_client_close(c);
    fake_close(&f);
}

static void test_split_and_coalesced_frames(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("s-consumer", on_message, NULL);
    struct kq_client *c = open_client(&f, &o);
    uint8_t d[512];
    size_t n = unhex(GOLD_DELIVERY, d, sizeof d);
    /* one byte per write, paced so that the client sees many partial reads */
    for (size_t i = 0; i < n; i++) {
        send_all(f.conn, d + i, 1);
        if (i % 16 == 0)
            pause_ms(1);
    }
    expect_frame_hex(&f, GOLD_DELIVER_ACK);
    /* two deliveries and the start of a third in one write, the rest later */
    uint8_t three[1536];
    memcpy(three, d, n);
    memcpy(three + n, d, n);
    memcpy(three + 2 * n, d, n);
    send_all(f.conn, three, 2 * n + 10);
    expect_frame_hex(&f, GOLD_DELIVER_ACK);
    expect_frame_hex(&f, GOLD_DELIVER_ACK);
    pause_ms(5);
    send_all(f.conn, three + 2 * n + 10, n - 10);
    expect_frame_hex(&f, GOLD_DELIVER_ACK);
    assert_int_equal(seen_int(&S.n_msgs), 4);
    kq_client_close(c);
    fake_close(&f);
}

static void test_delivery_in_handshake_read(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    f.after_auth_hex = GOLD_DELIVERY; /* read together with the ConnAuthAck */
    struct kq_client_options o = base_opts("s-consumer", on_message, NULL);
    struct kq_client *c = open_client(&f, &o);
    expect_frame_hex(&f, GOLD_DELIVER_ACK);
    assert_int_equal(seen_int(&S.n_msgs), 1);
    kq_client_close(c);
    fake_close(&f);
}

static void test_heartbeat_and_reconnect(void **state)
{
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("g1", NULL, NULL);
    o.heartbeat_ms = 50;
    o.reconnect = true;
    struct kq_client *c = open_client(&f, &o);
    uint32_t first_meta = f.meta_opaque;
    assert_int_equal(first_meta, 1);

    uint8_t *fr = NULL;
    int n = recv_frame(&f, &fr, 2000);
    assert_int_equal(n, 19 + 6);
    struct kq_frame h;
    kq_frame_parse(fr, (size_t)n, &h);
    assert_int_equal(h.cmd, KQ_CMD_HEARTBEAT);
    assert_int_equal(h.opaque, 2);
    Protocol__HeartBeat *hb = (Protocol__HeartBeat *)kq_codec_unpack(h.cmd, h.body, 6);
    assert_true(llabs(hb->version - kq_now_sec()) <= 2);
    kq_codec_free(&hb->base);
    free(fr);

    /* never answer: after 3 missed replies the client reconnects and handshakes again */
    int old = f.conn;
    f.conn = -1;
    fake_accept_start(&f);
    fake_accept_join(&f);
    close(old);
    assert_true(f.conn >= 0);
    assert_true(f.meta_opaque > 2);
    struct kq_client_stats st;
    WAIT_FOR((kq_client_stats(c, &st), st.reconnects == 1), 3000);

    /* answered heartbeats keep the connection */
    int64_t until = mono_ms() + 400;
    int beats = 0;
    while (mono_ms() < until) {
        n = recv_frame(&f, &fr, 200);
        if (n <= 0)
            continue;
        kq_frame_parse(fr, (size_t)n, &h);
        if (h.cmd == KQ_CMD_HEARTBEAT) {
            send_all(f.conn, fr, (size_t)n); /* echo: same opaque and version */
            beats++;
        }
        free(fr);
    }
    assert_true(beats >= 4);
    kq_client_stats(c, &st);
    assert_int_equal(st.reconnects, 1);

    /* publishing works on the new connection */
    seen_reset();
    struct kq_message m = plain_message(NULL, 0);
    m.fly = true;
    assert_int_equal(kq_publish_async(c, &m, on_published, (void *)0), 0);
    for (;;) {
        n = recv_frame(&f, &fr, 2000);
        assert_true(n > 0);
        kq_frame_parse(fr, (size_t)n, &h);
        free(fr);
        if (h.cmd == KQ_CMD_BYTES_MESSAGE)
            break;
    }
    send_store_ack(&f, h.opaque, "x", true, "FLY NO NEED SAVE");
    WAIT_FOR(seen_int(&S.n_done) == 1, 2000);
    assert_int_equal(S.errs[0], 0);
    assert_true(S.res[0].status);
    kq_client_close(c);
    fake_close(&f);
}

/* Corked publishes wait in the client until uncork (or until 64 KiB are buffered), then
 * reach the broker in publish order. */
static void test_cork_batches_publishes(void **state)
{
    seen_reset();
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    struct kq_client_options o = base_opts("g1", NULL, NULL);
    struct kq_client *c = open_client(&f, &o);
    struct kq_message m = plain_message("hi", 2);

    kq_client_cork(c);
    kq_client_cork(c); /* corks nest */
    for (intptr_t i = 0; i < 3; i++)
        assert_int_equal(kq_publish_async(c, &m, on_published, (void *)i), 0);
    uint8_t *fr = NULL;
    assert_int_equal(recv_frame(&f, &fr, 100), -ETIMEDOUT); /* still corked */
    kq_client_uncork(c);
    assert_int_equal(recv_frame(&f, &fr, 100), -ETIMEDOUT); /* one cork left */
    kq_client_uncork(c);
    uint32_t prev = 0;
    for (int i = 0; i < 3; i++) {
        struct kq_frame h;
        fr = expect_frame(&f, &h, 3000);
        assert_int_equal(h.cmd, KQ_CMD_BYTES_MESSAGE);
        assert_true(h.opaque > prev); /* publish order */
        prev = h.opaque;
        free(fr);
    }

    /* 100 corked 1 KiB publishes: the buffer is sent once it passes 64 KiB, uncorked or not */
    static uint8_t big[1024];
    m.body = big;
    m.body_len = sizeof big;
    kq_client_cork(c);
    for (int i = 0; i < 100; i++)
        assert_int_equal(kq_publish_async(c, &m, on_published, (void *)(intptr_t)3), 0);
    int got = 0;
    while (recv_frame(&f, &fr, 500) > 0) {
        got++;
        free(fr);
    }
    /* the first 64 KiB (a frame is ~1.1 KiB) went out, the tail waits */
    assert_true(got >= 50 && got < 100);
    kq_client_uncork(c);
    while (got < 100 && recv_frame(&f, &fr, 3000) > 0) {
        got++;
        free(fr);
    }
    assert_int_equal(got, 100);
    kq_client_close(c); /* fails the 103 unacked publishes */
    assert_int_equal(seen_int(&S.n_done), 103);
    fake_close(&f);
}

/* DeliverAcks of one read batch leave together, but a slow callback does not hold the
 * acks of the messages before it: the 2nd callback finds the 1st ack at the broker. */
static struct {
    struct fake *f; /* read by the callback until calls reaches 3, then by the test */
    atomic_int calls;
    bool first_ack_seen_in_second_call;
} SLOW;

static bool on_message_slow(void *ud, const struct kq_message *m)
{
    (void)ud;
    (void)m;
    int call = atomic_load(&SLOW.calls);
    if (call == 0) {
        pause_ms(5); /* longer than the client's ack hold */
    } else if (call == 1) {
        uint8_t *fr = NULL;
        int n = recv_frame(SLOW.f, &fr, 3000);
        struct kq_frame h;
        SLOW.first_ack_seen_in_second_call = n > 0 && kq_frame_parse(fr, (size_t)n, &h) > 0 &&
                                             h.cmd == KQ_CMD_DELIVER_ACK && h.opaque == 100;
        free(fr);
    }
    atomic_fetch_add(&SLOW.calls, 1);
    return true;
}

static void test_acks_not_held_by_slow_callback(void **state)
{
    struct fake f;
    fake_listen(&f, true, "Auth Succ");
    SLOW.f = &f;
    atomic_store(&SLOW.calls, 0);
    SLOW.first_ack_seen_in_second_call = false;
    struct kq_client_options o = base_opts("s-consumer", on_message_slow, NULL);
    struct kq_client *c = open_client(&f, &o);
    Protocol__Header hd = delivery_header();
    send_deliveries(&f, &hd, 100, 3, "x", 1); /* one write: one read batch in the client */
    WAIT_FOR(atomic_load(&SLOW.calls) == 3, 5000);
    for (uint32_t op = 101; op < 103; op++) {
        struct kq_frame h;
        uint8_t *fr = expect_frame(&f, &h, 3000);
        assert_int_equal(h.cmd, KQ_CMD_DELIVER_ACK);
        assert_int_equal(h.opaque, op);
        free(fr);
    }
    assert_true(SLOW.first_ack_seen_in_second_call);
    kq_client_close(c);
    fake_close(&f);
}

static void test_message_id(void **state)
{
    char a[KQ_CLIENT_ID_LEN + 1], b[KQ_CLIENT_ID_LEN + 1];
    kq_generate_message_id(a);
    kq_generate_message_id(b);
    assert_int_equal(strlen(a), 32);
    assert_true(kq_message_id_valid(a));
    assert_true(strcmp(a, b) != 0);
}

int main(void)
{
    kq_log_set_level(KQ_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_golden),
        cmocka_unit_test(test_handshake_refused),
        cmocka_unit_test(test_publish_golden_and_tx_finish),
        cmocka_unit_test(test_async_acks_out_of_order),
        cmocka_unit_test(test_ack_timeout),
        cmocka_unit_test(test_delivery_acked),
        cmocka_unit_test(test_tx_check_answered),
        cmocka_unit_test(test_broker_close_fails_pending),
        cmocka_unit_test(test_split_and_coalesced_frames),
        cmocka_unit_test(test_delivery_in_handshake_read),
        cmocka_unit_test(test_heartbeat_and_reconnect),
        cmocka_unit_test(test_message_id),
        cmocka_unit_test(test_cork_batches_publishes),
        cmocka_unit_test(test_acks_not_held_by_slow_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
