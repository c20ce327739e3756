/* Reader module: stream checks, authentication, queries, reports, time parsing, keyring
 * directories, allocation failures. Logs are produced with the public logger and the
 * memory sink, then read back from a buffer (phiaudit_reader_open_buffer). */
#include "testutil.h"
#include "internal.h"
#include "phiaudit_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct logbuf {
    uint8_t *p;
    size_t n;
    size_t nframes;
    size_t off[512];
    size_t len[512];
} logbuf;

/* Append every frame held by a memory sink to lb. */
static void collect(phiaudit_sink *mem, logbuf *lb)
{
    size_t count = phiaudit_sink_memory_count(mem);
    for (size_t i = 0; i < count; i++) {
        uint8_t frame[PHIAUDIT_MAX_FRAME_LEN];
        size_t len = sizeof frame;
        assert_int_equal(phiaudit_sink_memory_get(mem, i, frame, &len), 0);
        lb->p = realloc(lb->p, lb->n + len);
        assert_non_null(lb->p);
        memcpy(lb->p + lb->n, frame, len);
        assert_true(lb->nframes < 512);
        lb->off[lb->nframes] = lb->n;
        lb->len[lb->nframes] = len;
        lb->nframes++;
        lb->n += len;
    }
}

static unsigned g_sleep_us; /* pause between records (distinct sealing times) */

/* A log of one stream: OPEN, n DATA records (patient "P-<i>", clinician "dr-<i%3>"), CLOSE.
 * patient0 (if set) replaces the first DATA record's patient. */
static void make_log(logbuf *lb, int n, uint32_t flags, uint32_t format, const char *patient0)
{
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    test_config(&c, &mem);
    c.flags = flags;
    c.payload_format = format;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    for (int i = 0; i < n; i++) {
        phiaudit_event ev;
        phiaudit_event_init(&ev);
        char pat[32], cli[32];
        snprintf(pat, sizeof pat, "P-%d", i);
        snprintf(cli, sizeof cli, "dr-%d", i % 3);
        ev.action = "CRUDE"[i % 5];
        ev.clinician_id = cli;
        ev.patient_id = i == 0 && patient0 ? patient0 : pat;
        ev.start_us = INT64_C(1700000000000000) + i * INT64_C(1000000);
        ev.duration_us = 10;
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
        if (g_sleep_us)
            usleep(g_sleep_us);
    }
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    collect(mem, lb);
    assert_int_equal(phiaudit_sink_close(&mem), 0);
}

static phiaudit_reader *open_buf(const uint8_t *p, size_t n, phiaudit_keyring *kr)
{
    phiaudit_reader *r = NULL;
    assert_int_equal(phiaudit_reader_open_buffer(&r, p, n, "test", kr), 0);
    return r;
}

static int run_verdict(const uint8_t *p, size_t n, phiaudit_keyring *kr,
                       phiaudit_stream_report *sr)
{
    phiaudit_reader *r = open_buf(p, n, kr);
    assert_int_equal(phiaudit_reader_run(r), 0);
    int v = phiaudit_reader_verdict(r);
    if (sr) {
        assert_true(phiaudit_reader_stream_count(r) >= 1);
        assert_int_equal(phiaudit_reader_stream(r, 0, sr), 0);
        sr->missing_ranges = NULL; /* owned by the reader */
    }
    phiaudit_reader_free(&r);
    assert_null(r);
    return v;
}

/* ---- Tests -------------------------------------------------------------------------------- */

static void test_intact_report(void **state)
{
    (void)state;
    logbuf lb = {0};
    make_log(&lb, 10, 0, PHIAUDIT_FORMAT_JSON, CANARY_PATIENT);
    phiaudit_keyring *kr = keyring_with_test_key();
    phiaudit_reader *r = open_buf(lb.p, lb.n, kr);
    phiaudit_reader_record rec;
    size_t n = 0;
    int rc;
    while ((rc = phiaudit_reader_next(r, &rec)) == 1) {
        assert_int_equal(rec.header.seq, n);
        assert_int_equal(rec.offset, lb.off[n]);
        assert_true(rec.status & PHIAUDIT_RS_AUTHENTICATED);
        assert_int_equal(rec.status & PHIAUDIT_RS_TAMPER_MASK, 0);
        assert_int_equal(!!(rec.status & PHIAUDIT_RS_NEW_STREAM), n == 0);
        assert_non_null(rec.payload);
        assert_int_equal(rec.payload_len, rec.frame_len - PHIAUDIT_MIN_FRAME_LEN);
        assert_int_equal(rec.payload[0], '{');
        if (n == 1)
            assert_non_null(memmem(rec.payload, rec.payload_len, CANARY_PATIENT,
                                   strlen(CANARY_PATIENT)));
        n++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, 12);
    assert_int_equal(phiaudit_reader_next(r, &rec), 0); /* stays at the end */
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INTACT);
    assert_int_equal(phiaudit_reader_stream_count(r), 1);
    phiaudit_stream_report s;
    assert_int_equal(phiaudit_reader_stream(r, 0, &s), 0);
    assert_int_equal(s.verdict, PHIAUDIT_VERDICT_INTACT);
    assert_int_equal(s.records, 12);
    assert_int_equal(s.authenticated, 12);
    assert_int_equal(s.first_seq, 0);
    assert_int_equal(s.last_seq, 11);
    assert_true(s.first_time_us <= s.last_time_us);
    assert_int_equal(s.flags, PHIAUDIT_SR_HAS_OPEN | PHIAUDIT_SR_HAS_CLOSE);
    assert_memory_equal(s.key_id, test_key_id, 16);
    assert_int_equal(phiaudit_reader_stream(r, 1, &s), PHIAUDIT_E_NOT_FOUND);
    assert_int_equal(phiaudit_reader_source_count(r), 1);
    phiaudit_source_report src;
    assert_int_equal(phiaudit_reader_source(r, 0, &src), 0);
    assert_string_equal(src.path, "test");
    assert_int_equal(src.frames, 12);
    assert_int_equal(src.bytes, lb.n);
    assert_int_equal(src.verdict, PHIAUDIT_VERDICT_INTACT);
    assert_int_equal(phiaudit_reader_source(r, 1, &src), PHIAUDIT_E_NOT_FOUND);
    assert_string_equal(phiaudit_reader_errmsg(r), "");
    phiaudit_reader_free(&r);
    phiaudit_reader_free(&r); /* NULL-safe */
    phiaudit_keyring_free(&kr);
    free(lb.p);
}

static void test_keyless_no_payload(void **state)
{
    (void)state;
    logbuf lb = {0};
    make_log(&lb, 3, 0, PHIAUDIT_FORMAT_JSON, NULL);
    phiaudit_reader *r = open_buf(lb.p, lb.n, NULL);
    phiaudit_reader_record rec;
    while (phiaudit_reader_next(r, &rec) == 1) {
        assert_null(rec.payload);
        assert_int_equal(rec.status & (PHIAUDIT_RS_AUTHENTICATED | PHIAUDIT_RS_AUTH_FAILED), 0);
    }
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INTACT);
    phiaudit_query q;
    phiaudit_query_init(&q);
    assert_int_equal(phiaudit_reader_set_query(r, &q), PHIAUDIT_E_INVALID); /* no keyring */
    phiaudit_reader_free(&r);
    free(lb.p);
}

static void test_auth_failure_hides_plaintext(void **state)
{
    (void)state;
    logbuf lb = {0};
    make_log(&lb, 3, 0, PHIAUDIT_FORMAT_JSON, CANARY_PATIENT);
    lb.p[lb.off[1] + PHIAUDIT_HEADER_LEN + 5] ^= 1; /* ciphertext of the canary record */
    phiaudit_keyring *kr = keyring_with_test_key();
    phiaudit_reader *r = open_buf(lb.p, lb.n, kr);
    phiaudit_reader_record rec;
    int seen = 0;
    while (phiaudit_reader_next(r, &rec) == 1) {
        if (rec.header.seq == 1) {
            seen = 1;
            assert_true(rec.status & PHIAUDIT_RS_AUTH_FAILED);
            assert_false(rec.status & PHIAUDIT_RS_AUTHENTICATED);
            assert_null(rec.payload);
            assert_int_equal(rec.payload_len, 0);
        }
    }
    assert_true(seen);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_TAMPERED);
    phiaudit_stream_report s;
    assert_int_equal(phiaudit_reader_stream(r, 0, &s), 0);
    assert_int_equal(s.modified, 1);
    assert_int_equal(s.authenticated, 4);
    assert_false(s.flags & PHIAUDIT_SR_ALL_AUTH_FAILED);
    phiaudit_reader_free(&r);
    /* Keyless: the chain is intact (the link does not cover the ciphertext). */
    assert_int_equal(run_verdict(lb.p, lb.n, NULL, NULL), PHIAUDIT_VERDICT_INTACT);
    phiaudit_keyring_free(&kr);
    free(lb.p);
}

static void test_interleaved_streams(void **state)
{
    (void)state;
    logbuf a = {0}, b = {0};
    make_log(&a, 6, 0, PHIAUDIT_FORMAT_JSON, NULL);
    make_log(&b, 6, 0, PHIAUDIT_FORMAT_JSON, NULL);
    uint8_t *mix = malloc(a.n + b.n);
    size_t n = 0;
    for (size_t i = 0; i < a.nframes; i++) {
        memcpy(mix + n, a.p + a.off[i], a.len[i]);
        n += a.len[i];
        memcpy(mix + n, b.p + b.off[i], b.len[i]);
        n += b.len[i];
    }
    phiaudit_keyring *kr = keyring_with_test_key();
    phiaudit_reader *r = open_buf(mix, n, kr);
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INTACT);
    assert_int_equal(phiaudit_reader_stream_count(r), 2);
    phiaudit_reader_free(&r);
    phiaudit_keyring_free(&kr);
    free(mix);
    free(a.p);
    free(b.p);
}

/* Rebuild a buffer from frames of lb in the given order. */
static size_t rebuild(const logbuf *lb, const int *order, size_t n, uint8_t *out)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(out + len, lb->p + lb->off[order[i]], lb->len[order[i]]);
        len += lb->len[order[i]];
    }
    return len;
}

static void test_sequence_findings(void **state)
{
    (void)state;
    logbuf lb = {0};
    make_log(&lb, 10, 0, PHIAUDIT_FORMAT_JSON, NULL); /* frames 0..11 */
    uint8_t *buf = malloc(lb.n * 3);
    phiaudit_stream_report s;

    /* missing predecessor: start at seq 3 */
    int o1[] = {3, 4, 5, 6, 7, 8, 9, 10, 11};
    size_t n = rebuild(&lb, o1, 9, buf);
    assert_int_equal(run_verdict(buf, n, NULL, &s), PHIAUDIT_VERDICT_INCOMPLETE);
    assert_true(s.flags & PHIAUDIT_SR_MISSING_PREDECESSOR);
    assert_int_equal(s.first_seq, 3);
    assert_int_equal(s.missing_records, 0);

    /* predecessor arrives late, in order: still a reorder (tampered) */
    int o2[] = {3, 4, 0, 1, 2, 5, 6, 7, 8, 9, 10, 11};
    n = rebuild(&lb, o2, 12, buf);
    assert_int_equal(run_verdict(buf, n, NULL, &s), PHIAUDIT_VERDICT_TAMPERED);
    assert_int_equal(s.reordered, 3);
    assert_int_equal(s.chain_breaks, 0);
    assert_false(s.flags & PHIAUDIT_SR_MISSING_PREDECESSOR);

    /* two gaps */
    int o3[] = {0, 1, 3, 4, 7, 8, 9, 10, 11};
    n = rebuild(&lb, o3, 9, buf);
    assert_int_equal(run_verdict(buf, n, NULL, &s), PHIAUDIT_VERDICT_TAMPERED);
    assert_int_equal(s.missing_records, 3);
    assert_int_equal(s.missing_range_count, 2);

    /* gap filled in the middle, out of order: 5 arrives after 8 (gap 4..7 split) */
    int o4[] = {0, 1, 2, 3, 8, 5, 4, 6, 7, 9, 10, 11};
    n = rebuild(&lb, o4, 12, buf);
    assert_int_equal(run_verdict(buf, n, NULL, &s), PHIAUDIT_VERDICT_TAMPERED);
    assert_int_equal(s.missing_records, 0);
    assert_int_equal(s.reordered, 4);
    assert_int_equal(s.chain_breaks, 0);

    /* record after CLOSE: CLOSE moved before the last DATA record */
    int o5[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 10};
    n = rebuild(&lb, o5, 12, buf);
    assert_int_equal(run_verdict(buf, n, NULL, &s), PHIAUDIT_VERDICT_TAMPERED);
    assert_int_equal(s.reordered, 1);

    /* duplicate of the OPEN right away, and of the CLOSE at the end: benign */
    int o6[] = {0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11};
    n = rebuild(&lb, o6, 14, buf);
    assert_int_equal(run_verdict(buf, n, NULL, &s), PHIAUDIT_VERDICT_INTACT);
    assert_int_equal(s.duplicates, 2);
    assert_int_equal(s.records, 14);

    /* the end cut off: incomplete */
    int o7[] = {0, 1, 2, 3, 4};
    n = rebuild(&lb, o7, 5, buf);
    assert_int_equal(run_verdict(buf, n, NULL, &s), PHIAUDIT_VERDICT_INCOMPLETE);
    assert_true(s.flags & PHIAUDIT_SR_MISSING_CLOSE);
    free(buf);
    free(lb.p);
}

static void test_many_gaps_capped(void **state)
{
    (void)state;
    logbuf lb = {0};
    make_log(&lb, 300, 0, PHIAUDIT_FORMAT_JSON, NULL);
    uint8_t *buf = malloc(lb.n);
    int order[400];
    size_t k = 0;
    for (size_t i = 0; i < lb.nframes; i++)
        if (i % 3 != 1) /* drop every third record: 100 gaps of 1 */
            order[k++] = (int)i;
    size_t n = rebuild(&lb, order, k, buf);
    phiaudit_reader *r = open_buf(buf, n, NULL);
    assert_int_equal(phiaudit_reader_run(r), 0);
    phiaudit_stream_report s;
    assert_int_equal(phiaudit_reader_stream(r, 0, &s), 0);
    assert_int_equal(s.missing_range_count, 100);
    assert_int_equal(s.missing_records, 100);
    assert_int_equal(s.missing_ranges_len, PHIAUDIT_REPORT_MAX_RANGES);
    assert_int_equal(s.missing_ranges[0].first, 1);
    assert_int_equal(s.missing_ranges[1].first, 4);
    phiaudit_reader_free(&r);
    free(buf);
    free(lb.p);
}

static void test_damage_and_torn(void **state)
{
    (void)state;
    logbuf lb = {0};
    make_log(&lb, 4, 0, PHIAUDIT_FORMAT_JSON, NULL);
    uint8_t *buf = malloc(lb.n + 100);
    phiaudit_source_report src;

    /* garbage between frames 2 and 3, containing a fake magic */
    memcpy(buf, lb.p, lb.off[3]);
    memcpy(buf + lb.off[3], "xxPHA1yyPHzz", 12);
    memcpy(buf + lb.off[3] + 12, lb.p + lb.off[3], lb.n - lb.off[3]);
    phiaudit_reader *r = open_buf(buf, lb.n + 12, NULL);
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_TAMPERED);
    assert_int_equal(phiaudit_reader_source(r, 0, &src), 0);
    assert_int_equal(src.damaged_bytes, 12);
    assert_int_equal(src.damaged_range_count, 1);
    assert_int_equal(src.damaged_ranges[0].first, lb.off[3]);
    assert_int_equal(src.damaged_ranges[0].last, lb.off[3] + 11);
    assert_int_equal(src.frames, 6);
    phiaudit_reader_free(&r);

    /* torn tail: every possible cut inside the last frame */
    for (size_t cut = 1; cut < lb.len[5]; cut += 7) {
        r = open_buf(lb.p, lb.off[5] + cut, NULL);
        assert_int_equal(phiaudit_reader_run(r), 0);
        assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INCOMPLETE);
        assert_int_equal(phiaudit_reader_source(r, 0, &src), 0);
        assert_int_equal(src.torn_tail_bytes, cut);
        assert_int_equal(src.torn_tail_offset, lb.off[5]);
        assert_int_equal(src.damaged_bytes, 0);
        phiaudit_reader_free(&r);
    }

    /* no frame at all: not a phiaudit log */
    r = open_buf((const uint8_t *)"hello world\n", 12, NULL);
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_ERROR);
    assert_int_equal(phiaudit_reader_source(r, 0, &src), 0);
    assert_int_equal(src.error, PHIAUDIT_E_FORMAT);
    assert_int_equal(src.damaged_bytes, 0);
    phiaudit_reader_free(&r);

    /* empty input */
    r = open_buf(NULL, 0, NULL);
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_ERROR);
    phiaudit_reader_free(&r);
    free(buf);
    free(lb.p);
}

static int count_matches(const logbuf *lb, const phiaudit_query *q)
{
    phiaudit_keyring *kr = keyring_with_test_key();
    phiaudit_reader *r = open_buf(lb->p, lb->n, kr);
    assert_int_equal(phiaudit_reader_set_query(r, q), 0);
    phiaudit_reader_record rec;
    int m = 0;
    while (phiaudit_reader_next(r, &rec) == 1) {
        if (rec.status & PHIAUDIT_RS_MATCH) {
            assert_true(rec.status & PHIAUDIT_RS_AUTHENTICATED);
            assert_int_equal(rec.header.type, PHIAUDIT_RECORD_DATA);
            m++;
        }
    }
    phiaudit_reader_free(&r);
    phiaudit_keyring_free(&kr);
    return m;
}

static void test_query(void **state)
{
    (void)state;
    /* A patient ID that needs JSON escaping: quote, backslash; and non-ASCII. */
    static const char odd[] = "P\"x\\y-\xc3\xa9-\xf0\x9f\x98\x80-end";
    const uint32_t formats[] = {PHIAUDIT_FORMAT_JSON, PHIAUDIT_FORMAT_TEXT};
    for (int f = 0; f < 2; f++) {
        for (int bi = 0; bi < 2; bi++) {
            logbuf lb = {0};
            make_log(&lb, 15, bi ? PHIAUDIT_FLAG_BLIND_INDEX : 0, formats[f], odd);
            phiaudit_query q;
            phiaudit_query_init(&q);
            assert_int_equal(count_matches(&lb, &q), 15);
            q.patient_id = odd;
            assert_int_equal(count_matches(&lb, &q), 1);
            q.patient_id = "P-3";
            assert_int_equal(count_matches(&lb, &q), 1);
            q.patient_id = "P-";
            assert_int_equal(count_matches(&lb, &q), 0);
            q.patient_id = "p-3"; /* exact, no case folding */
            assert_int_equal(count_matches(&lb, &q), 0);
            q.patient_id = NULL;
            q.clinician_id = "dr-1"; /* i = 1, 4, 7, 10, 13 */
            assert_int_equal(count_matches(&lb, &q), 5);
            q.action = 'R'; /* i % 5 == 1: 1, 6, 11 -> with dr-1: 1 */
            assert_int_equal(count_matches(&lb, &q), 1);
            q.clinician_id = NULL;
            assert_int_equal(count_matches(&lb, &q), 3);
            q.action = 0;
            if (formats[f] == PHIAUDIT_FORMAT_JSON) {
                /* start times: 1700000000 + i seconds */
                q.since_us = INT64_C(1700000000000000) + 5 * INT64_C(1000000);
                q.until_us = INT64_C(1700000000000000) + 8 * INT64_C(1000000);
                assert_int_equal(count_matches(&lb, &q), 3);
            }
            free(lb.p);
        }
    }
    /* Invalid queries. */
    logbuf lb = {0};
    make_log(&lb, 1, 0, PHIAUDIT_FORMAT_JSON, NULL);
    phiaudit_keyring *kr = keyring_with_test_key();
    phiaudit_reader *r = open_buf(lb.p, lb.n, kr);
    phiaudit_query q;
    phiaudit_query_init(&q);
    q.action = 'X';
    assert_int_equal(phiaudit_reader_set_query(r, &q), PHIAUDIT_E_INVALID);
    q.action = 0;
    q.patient_id = "";
    assert_int_equal(phiaudit_reader_set_query(r, &q), PHIAUDIT_E_EMPTY);
    q.patient_id = "a\nb";
    assert_int_equal(phiaudit_reader_set_query(r, &q), PHIAUDIT_E_BAD_CHAR);
    q.patient_id = NULL;
    q.version = 99;
    assert_int_equal(phiaudit_reader_set_query(r, &q), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_reader_set_query(r, NULL), 0);
    assert_int_equal(phiaudit_reader_set_query(NULL, NULL), PHIAUDIT_E_INVALID);
    phiaudit_reader_free(&r);
    phiaudit_keyring_free(&kr);
    free(lb.p);
}

static void test_time_parse(void **state)
{
    (void)state;
    int64_t t;
    assert_int_equal(phiaudit_time_parse("1970-01-01", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(phiaudit_time_parse("2023-11-14T22:13:20Z", &t), 0);
    assert_int_equal(t, INT64_C(1700000000000000));
    assert_int_equal(phiaudit_time_parse("2023-11-14T22:13:20.5Z", &t), 0);
    assert_int_equal(t, INT64_C(1700000000500000));
    assert_int_equal(phiaudit_time_parse("2023-11-14T22:13:20.123456789Z", &t), 0);
    assert_int_equal(t, INT64_C(1700000000123456));
    assert_int_equal(phiaudit_time_parse("2023-11-15T00:13:20+02:00", &t), 0);
    assert_int_equal(t, INT64_C(1700000000000000));
    assert_int_equal(phiaudit_time_parse("2023-11-14 22:13Z", &t), 0);
    assert_int_equal(t, INT64_C(1699999980000000));
    assert_int_equal(phiaudit_time_parse("1969-12-31T23:59:59Z", &t), 0);
    assert_int_equal(t, INT64_C(-1000000));
    assert_int_equal(phiaudit_time_parse("2024-02-29", &t), 0);
    const char *bad[] = {"", "2023", "2023-13-01", "2023-02-29", "2023-11-14T", "2023-11-14T22:13",
                         "2023-11-14T22:13:20", "2023-11-14T25:00Z", "2023-11-14T22:13:20.Z",
                         "2023-11-14T22:13:20Zx", "2023-11-14T22:13:20+2:00", "x023-11-14",
                         "2023-11-14T22:13:20.1234567890Z"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(phiaudit_time_parse(bad[i], &t), PHIAUDIT_E_FORMAT);
    assert_int_equal(phiaudit_time_parse(NULL, &t), PHIAUDIT_E_INVALID);
    assert_string_equal(phiaudit_verdict_name(0), "intact");
    assert_string_equal(phiaudit_verdict_name(1), "tampered");
    assert_string_equal(phiaudit_verdict_name(2), "incomplete");
    assert_string_equal(phiaudit_verdict_name(3), "error");
    assert_string_equal(phiaudit_verdict_name(4), "unknown");
}

static void test_files_and_dirs(void **state)
{
    (void)state;
    char dir[] = "/tmp/phiaudit-reader-XXXXXX";
    assert_non_null(mkdtemp(dir));
    logbuf lb = {0};
    g_sleep_us = 2000;
    make_log(&lb, 8, 0, PHIAUDIT_FORMAT_JSON, NULL); /* frames 0..9 */
    g_sleep_us = 0;
    /* Split into three files whose names sort in the wrong order. */
    char p[3][128];
    size_t cuts[4] = {0, lb.off[3], lb.off[7], lb.n};
    const char *names[3] = {"c.log", "b.log", "a.log"};
    for (int i = 0; i < 3; i++) {
        snprintf(p[i], sizeof p[i], "%s/%s", dir, names[i]);
        int fd = open(p[i], O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, lb.p + cuts[i], cuts[i + 1] - cuts[i]),
                         (ssize_t)(cuts[i + 1] - cuts[i]));
        close(fd);
    }
    /* The first-frame times of the files order them (records sealed 2 ms apart). */
    const char *one[1] = {dir};
    phiaudit_reader *r = NULL;
    assert_int_equal(phiaudit_reader_open(&r, one, 1, NULL), 0);
    assert_int_equal(phiaudit_reader_source_count(r), 3);
    phiaudit_source_report src;
    assert_int_equal(phiaudit_reader_source(r, 0, &src), 0);
    assert_non_null(strstr(src.path, "c.log"));
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INTACT);
    phiaudit_reader_free(&r);
    /* The same file twice (directory + explicit path) is read once. */
    const char *twice[2] = {p[1], dir};
    assert_int_equal(phiaudit_reader_open(&r, twice, 2, NULL), 0);
    assert_int_equal(phiaudit_reader_source_count(r), 3);
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INTACT);
    phiaudit_reader_free(&r);
    /* Errors. */
    const char *missing[1] = {"/nonexistent/phiaudit"};
    assert_int_equal(phiaudit_reader_open(&r, missing, 1, NULL), PHIAUDIT_E_NOT_FOUND);
    assert_null(r);
    const char *devnull[1] = {"/dev/null"};
    assert_int_equal(phiaudit_reader_open(&r, devnull, 1, NULL), PHIAUDIT_E_IO);
    assert_int_equal(phiaudit_reader_open(&r, one, 0, NULL), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_reader_open(NULL, one, 1, NULL), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_reader_open_buffer(&r, NULL, 5, NULL, NULL), PHIAUDIT_E_INVALID);
    phiaudit_reader_record rec;
    assert_int_equal(phiaudit_reader_next(NULL, &rec), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_reader_verdict(NULL), PHIAUDIT_VERDICT_ERROR);

    /* Keyring directories. */
    char kd[160], kp[200];
    snprintf(kd, sizeof kd, "%s/keys", dir);
    assert_int_equal(mkdir(kd, 0700), 0);
    snprintf(kp, sizeof kp, "%s/one.key", kd);
    assert_int_equal(phiaudit_key_generate_file(kp, NULL), 0);
    snprintf(kp, sizeof kp, "%s/two.key", kd);
    assert_int_equal(phiaudit_key_generate_file(kp, NULL), 0);
    snprintf(kp, sizeof kp, "%s/.hidden", kd);
    int fd = open(kp, O_WRONLY | O_CREAT, 0600);
    close(fd);
    phiaudit_keyring *kr = NULL;
    assert_int_equal(phiaudit_keyring_new(&kr), 0);
    size_t added = 99;
    assert_int_equal(phiaudit_keyring_add_dir(kr, kd, &added), 0);
    assert_int_equal(added, 2);
    assert_int_equal(phiaudit_keyring_count(kr), 2);
    snprintf(kp, sizeof kp, "%s/zz-not-a-key", kd);
    fd = open(kp, O_WRONLY | O_CREAT, 0600);
    assert_int_equal(write(fd, "hello\n", 6), 6);
    close(fd);
    assert_int_equal(phiaudit_keyring_add_dir(kr, kd, &added), PHIAUDIT_E_KEY);
    assert_int_equal(added, 2);
    assert_int_equal(phiaudit_keyring_add_dir(kr, "/nonexistent/keys", NULL),
                     PHIAUDIT_E_NOT_FOUND);
    assert_int_equal(phiaudit_keyring_add_dir(NULL, kd, NULL), PHIAUDIT_E_INVALID);
    phiaudit_keyring_free(&kr);

    test_rm_rf(dir);
    free(lb.p);
}

/* Fail the Nth allocation for N = 0, 1, ... until open + run + report succeed: every
 * failure is reported as PHIAUDIT_E_NOMEM and nothing crashes (leaks: ASan builds). */
static void test_alloc_failures(void **state)
{
    (void)state;
    logbuf lb = {0};
    make_log(&lb, 5, 0, PHIAUDIT_FORMAT_JSON, NULL);
    uint8_t *buf = malloc(lb.n);
    int order[] = {0, 1, 3, 4, 5, 6}; /* a gap, so the gap store allocates */
    size_t n = rebuild(&lb, order, 6, buf);
    phiaudit_keyring *kr = keyring_with_test_key();
    int ok = 0;
    for (long fail = 0; fail < 200 && !ok; fail++) {
        phiaudit_test_fail_alloc_after(fail);
        phiaudit_reader *r = NULL;
        int rc = phiaudit_reader_open_buffer(&r, buf, n, "x", kr);
        if (rc == 0) {
            rc = phiaudit_reader_run(r);
            if (rc == 0) {
                phiaudit_stream_report s;
                rc = phiaudit_reader_stream(r, 0, &s);
                if (rc == 0) {
                    ok = 1;
                    assert_int_equal(s.missing_records, 1);
                }
            }
        } else {
            assert_null(r);
        }
        if (!ok)
            assert_int_equal(rc, PHIAUDIT_E_NOMEM);
        phiaudit_reader_free(&r);
    }
    phiaudit_test_fail_alloc_after(-1);
    assert_true(ok);
    phiaudit_keyring_free(&kr);
    free(buf);
    free(lb.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intact_report),
        cmocka_unit_test(test_keyless_no_payload),
        cmocka_unit_test(test_auth_failure_hides_plaintext),
        cmocka_unit_test(test_interleaved_streams),
        cmocka_unit_test(test_sequence_findings),
        cmocka_unit_test(test_many_gaps_capped),
        cmocka_unit_test(test_damage_and_torn),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_files_and_dirs),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
