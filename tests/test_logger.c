/* Logger module: scopes, events, chain, failure policy, threads, fork, allocation failures. */
#include "testutil.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- A user-written sink that records (stream, seq) of every frame, checks each frame
 * parses, and can be told to fail: exercises the sink interface and the failure policy. ---- */

typedef struct tuple {
    uint8_t stream[16];
    uint64_t seq;
    uint8_t type;
} tuple;

typedef struct probe_sink {
    pthread_mutex_t mu;
    tuple *t;
    size_t count, cap;
    atomic_int fail;      /* write returns PHIAUDIT_E_IO while set */
    atomic_int fail_syncs; /* this many next syncs fail */
    atomic_int sleep_ms;  /* slow sink */
    atomic_int writes, syncs, failed_writes;
    int fd;               /* if >= 0, tuples are also appended here (fork test) */
} probe_sink;

static int probe_write(void *state, const phiaudit_batch *b)
{
    probe_sink *p = state;
    if (atomic_load(&p->sleep_ms))
        usleep((useconds_t)atomic_load(&p->sleep_ms) * 1000);
    if (atomic_load(&p->fail)) {
        atomic_fetch_add(&p->failed_writes, 1);
        return PHIAUDIT_E_IO;
    }
    pthread_mutex_lock(&p->mu);
    if (p->count + b->count > p->cap) {
        p->cap = (p->count + b->count) * 2;
        p->t = realloc(p->t, p->cap * sizeof *p->t);
    }
    size_t off = 0;
    for (size_t i = 0; i < b->count; i++) {
        const phiaudit_batch_record *r = &b->records[i];
        phiaudit_header h;
        assert_int_equal(phiaudit_frame_parse(r->frame, r->frame_len, &h), 0);
        assert_ptr_equal(r->frame, b->data + off); /* contiguous, in order */
        off += r->frame_len;
        assert_int_equal(h.seq, r->seq);
        assert_memory_equal(h.stream_id, r->stream_id, 16);
        tuple *t = &p->t[p->count++];
        memcpy(t->stream, h.stream_id, 16);
        t->seq = h.seq;
        t->type = h.type;
        if (p->fd >= 0)
            assert_int_equal(write(p->fd, t, sizeof *t), (ssize_t)sizeof *t);
    }
    assert_int_equal(off, b->len);
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->writes, 1);
    return 0;
}

static int probe_sync(void *state)
{
    probe_sink *p = state;
    atomic_fetch_add(&p->syncs, 1);
    if (atomic_load(&p->fail_syncs) > 0) {
        atomic_fetch_sub(&p->fail_syncs, 1);
        return PHIAUDIT_E_IO;
    }
    return 0;
}

static void probe_destroy(void *state)
{
    probe_sink *p = state;
    pthread_mutex_destroy(&p->mu);
    free(p->t);
    free(p);
}

static int probe_after_fork_child(void *state)
{
    probe_sink *p = state;
    memset(&p->mu, 0, sizeof p->mu); /* the parent's flusher may have held it at fork() */
    return pthread_mutex_init(&p->mu, NULL) == 0 ? 0 : PHIAUDIT_E_NOMEM;
}

static const phiaudit_sink_ops probe_ops = {
    .version = PHIAUDIT_SINK_OPS_VERSION,
    .name = "probe",
    .write = probe_write,
    .after_fork_child = probe_after_fork_child,
    .sync = probe_sync,
    .destroy = probe_destroy,
};

static phiaudit_sink *probe_open(probe_sink **out)
{
    probe_sink *p = calloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->fd = -1;
    phiaudit_sink *s = NULL;
    assert_int_equal(phiaudit_sink_new(&s, &probe_ops, p), 0);
    *out = p;
    return s;
}

static int cmp_tuple(const void *a, const void *b)
{
    const tuple *x = a, *y = b;
    int c = memcmp(x->stream, y->stream, 16);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Each (stream, seq) names one (stream key, nonce) pair: no two frames may share one, and
 * each stream's sequence must be 0..n-1 with no gap. */
static size_t assert_unique_and_gapless(tuple *t, size_t n, size_t *streams)
{
    qsort(t, n, sizeof *t, cmp_tuple);
    size_t s = n ? 1 : 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || memcmp(t[i].stream, t[i - 1].stream, 16) != 0) {
            if (i)
                s++;
            assert_int_equal(t[i].seq, 0);
            assert_int_equal(t[i].type, PHIAUDIT_RECORD_OPEN);
        } else {
            assert_int_equal(t[i].seq, t[i - 1].seq + 1);
        }
    }
    if (streams)
        *streams = n ? s : 0;
    return n;
}

/* The (stream, seq) tuples several processes appended to fd; closes fd. */
static tuple *read_tuples(int fd, size_t *n)
{
    off_t size = lseek(fd, 0, SEEK_END);
    tuple *all = malloc((size_t)size);
    assert_int_equal(pread(fd, all, (size_t)size, 0), size);
    close(fd);
    *n = (size_t)size / sizeof(tuple);
    return all;
}

/* ThreadSanitizer cannot follow a multi-threaded process through fork() (it reports the
 * parent's threads as leaked in the child); the TSan run sets this to skip those tests. */
static void skip_fork_under_tsan(void)
{
    if (getenv("PHIAUDIT_TEST_NO_FORK"))
        skip();
}

/* ---- Round trip and payload fields ---------------------------------------------------------- */

static void test_scope_round_trip(void **state)
{
    (void)state;
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    test_config(&c, &mem);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);

    phiaudit_scope *s = NULL;
    assert_int_equal(phiaudit_scope_begin(&s, lg, "dr-house", CANARY_PATIENT, 'U'), 0);
    assert_int_equal(phiaudit_scope_set_event_type(s, "rest"), 0);
    assert_int_equal(phiaudit_scope_set_event_subtype(s, "update"), 0);
    assert_int_equal(phiaudit_scope_set_purpose(s, "TREAT"), 0);
    assert_int_equal(phiaudit_scope_set_detail(s, "changed \"dose\"\nline2"), 0);
    assert_int_equal(phiaudit_scope_set_break_glass(s, 1), 0);
    usleep(2000);
    assert_int_equal(phiaudit_scope_end(&s, PHIAUDIT_OUTCOME_MINOR_FAILURE), 0);
    assert_null(s);
    assert_int_equal(phiaudit_logger_flush(lg), 0);
    assert_int_equal(phiaudit_sink_memory_count(mem), 2);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_null(lg);
    assert_int_equal(phiaudit_sink_memory_count(mem), 3);

    phiaudit_header h;
    char *open = test_open_frame(mem, 0, &h);
    assert_int_equal(h.type, PHIAUDIT_RECORD_OPEN);
    assert_non_null(strstr(open, "\"reason\":\"start\""));
    assert_null(strstr(open, CANARY_PATIENT));
    free(open);

    char *pt = test_open_frame(mem, 1, &h);
    assert_int_equal(h.type, PHIAUDIT_RECORD_DATA);
    assert_int_equal(h.seq, 1);
    assert_non_null(strstr(pt, "\"action\":\"U\",\"outcome\":4,\"clinician\":\"dr-house\",\"patient\":\"" CANARY_PATIENT "\""));
    assert_non_null(strstr(pt, "\"type\":\"rest\",\"subtype\":\"update\",\"purpose\":\"TREAT\",\"break_glass\":true"));
    assert_non_null(strstr(pt, "\"detail\":\"changed \\\"dose\\\"\\nline2\""));
    assert_non_null(strstr(pt, "\"app\":\"phiaudit-test\",\"host\":\"test-host\""));
    const char *d = strstr(pt, "\"duration_us\":");
    assert_non_null(d);
    long dur = strtol(d + 14, NULL, 10);
    assert_true(dur >= 2000 && dur < 10000000);
    char id[80];
    char hex[33];
    phiaudit_hex(h.stream_id, 16, hex);
    hex[32] = 0;
    snprintf(id, sizeof id, "\"id\":\"%s-00000000000000000001\"", hex);
    assert_non_null(strstr(pt, id));
    free(pt);

    /* the test-harness helper: exact field matches over authenticated records */
    phiaudit_keyring *kr = keyring_with_test_key();
    size_t count = 99;
    assert_int_equal(phiaudit_sink_memory_count_access(mem, kr, "dr-house", CANARY_PATIENT, 'U', 4, &count), 0);
    assert_int_equal(count, 1);
    assert_int_equal(phiaudit_sink_memory_count_access(mem, kr, NULL, NULL, 0, -1, &count), 0);
    assert_int_equal(count, 1); /* DATA records only */
    assert_int_equal(phiaudit_sink_memory_count_access(mem, kr, "dr-hous", NULL, 0, -1, &count), 0);
    assert_int_equal(count, 0); /* no prefix matches */
    assert_int_equal(phiaudit_sink_memory_count_access(mem, kr, NULL, CANARY_PATIENT, 'R', -1, &count), 0);
    assert_int_equal(count, 0);
    assert_int_equal(phiaudit_sink_memory_count_access(mem, kr, NULL, NULL, 0, 0, &count), 0);
    assert_int_equal(count, 0);
    char small[8];
    size_t need = 0;
    assert_int_equal(phiaudit_sink_memory_open_record(mem, kr, 1, small, sizeof small, &need, NULL),
                     PHIAUDIT_E_TOO_LONG);
    assert_true(need > sizeof small);
    phiaudit_keyring_free(&kr);

    char *cl = test_open_frame(mem, 2, &h);
    assert_int_equal(h.type, PHIAUDIT_RECORD_CLOSE);
    assert_string_equal(cl, "{\"v\":1,\"event\":\"stream-close\",\"records\":1,\"abandoned\":0}");
    free(cl);
    phiaudit_sink_close(&mem);
}

static void test_chain_links(void **state)
{
    (void)state;
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    test_config(&c, &mem);
    c.flags = PHIAUDIT_FLAG_BLIND_INDEX;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    for (int i = 0; i < 50; i++) {
        phiaudit_event ev;
        phiaudit_event_init(&ev);
        ev.clinician_id = "dr-1";
        ev.patient_id = i % 2 ? CANARY_PATIENT : "other";
        ev.duration_us = i;
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    }
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    size_t n = phiaudit_sink_memory_count(mem);
    assert_int_equal(n, 52);

    phiaudit_keyring *kr = keyring_with_test_key();
    uint8_t canary_tag[8];
    assert_int_equal(phiaudit_blind_index(kr, test_key_id, 'P', CANARY_PATIENT, canary_tag), 0);
    uint8_t prev[32] = {0};
    static uint8_t f[PHIAUDIT_MAX_FRAME_LEN];
    for (size_t i = 0; i < n; i++) {
        size_t len = sizeof f;
        phiaudit_header h;
        assert_int_equal(phiaudit_sink_memory_get(mem, i, f, &len), 0);
        assert_int_equal(phiaudit_frame_parse(f, len, &h), 0);
        assert_int_equal(h.seq, i);
        assert_memory_equal(h.prev_link, prev, 32);
        assert_int_equal(phiaudit_frame_link(f, len, prev), 0);
        assert_memory_equal(h.key_id, test_key_id, 16);
        if (h.type == PHIAUDIT_RECORD_DATA) {
            assert_int_equal(h.flags, PHIAUDIT_HFLAG_BLIND_INDEX);
            int is_canary = memcmp(h.bi_patient, canary_tag, 8) == 0;
            assert_int_equal(is_canary, (int)(i - 1) % 2);
        }
    }
    phiaudit_keyring_free(&kr);
    phiaudit_sink_close(&mem);
}

static void test_text_format(void **state)
{
    (void)state;
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    test_config(&c, &mem);
    c.payload_format = PHIAUDIT_FORMAT_TEXT;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_event ev = canary_event("C1");
    ev.duration_us = 1500000;
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    phiaudit_header h;
    char *pt = test_open_frame(mem, 1, &h);
    assert_string_equal(pt, "Clinician C1 processed action R on Patient " CANARY_PATIENT " in 1.5000s");
    free(pt);
    phiaudit_sink_close(&mem);
}

/* ---- Bad input: clear errors, nothing written, nothing lost ------------------------------------ */

static void test_hostile_input(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);

    size_t mib = 1u << 20;
    char *huge = malloc(mib + 1);
    memset(huge, 'A', mib);
    huge[mib] = 0;
    struct {
        const char *clin, *pat;
        int action, want;
    } cases[] = {
        {NULL, "p", 'R', PHIAUDIT_E_INVALID},
        {"c", NULL, 'R', PHIAUDIT_E_INVALID},
        {"", "p", 'R', PHIAUDIT_E_EMPTY},
        {"c", "", 'R', PHIAUDIT_E_EMPTY},
        {"c", "p", 'X', PHIAUDIT_E_INVALID},
        {"c", "p", 0, PHIAUDIT_E_INVALID},
        {"c", huge, 'R', PHIAUDIT_E_TOO_LONG},
        {huge, "p", 'R', PHIAUDIT_E_TOO_LONG},
        {"c", "p\xff", 'R', PHIAUDIT_E_UTF8},
        {"c", "p\ninjected", 'R', PHIAUDIT_E_BAD_CHAR},
        {"c\r", "p", 'R', PHIAUDIT_E_BAD_CHAR},
        {"c", "p\xe2\x80\xa8", 'R', PHIAUDIT_E_BAD_CHAR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        phiaudit_scope *s = (phiaudit_scope *)huge;
        assert_int_equal(phiaudit_scope_begin(&s, lg, cases[i].clin, cases[i].pat, cases[i].action),
                         cases[i].want);
        assert_null(s);
    }
    assert_int_equal(phiaudit_scope_begin(NULL, lg, "c", "p", 'R'), PHIAUDIT_E_INVALID);
    phiaudit_scope *s = NULL;
    assert_int_equal(phiaudit_scope_begin(&s, NULL, "c", "p", 'R'), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_scope_end(NULL, 0), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_scope_end(&s, 0), PHIAUDIT_E_INVALID); /* s is NULL: no double end */

    /* Setters: errors leave the scope usable and unchanged. */
    assert_int_equal(phiaudit_scope_begin(&s, lg, "%n%s", "'\"quoted\\", 'R'), 0);
    assert_int_equal(phiaudit_scope_set_detail(s, huge), PHIAUDIT_E_TOO_LONG);
    assert_int_equal(phiaudit_scope_set_detail(s, "\xc3\x28"), PHIAUDIT_E_UTF8);
    assert_int_equal(phiaudit_scope_set_event_type(s, ""), PHIAUDIT_E_EMPTY);
    assert_int_equal(phiaudit_scope_set_purpose(s, "a\tb"), PHIAUDIT_E_BAD_CHAR);
    assert_int_equal(phiaudit_scope_set_break_glass(s, 2), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_scope_set_outcome(s, 3), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_scope_set_detail(NULL, "x"), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_scope_set_detail(s, "first"), 0);
    assert_int_equal(phiaudit_scope_set_detail(s, "tab\there \xe2\x80\xa8 %n"), 0); /* replaces */
    /* A bad outcome still records the access (as a serious failure) and reports EINVAL. */
    assert_int_equal(phiaudit_scope_end(&s, 5), PHIAUDIT_E_INVALID);
    assert_null(s);

    phiaudit_event ev = canary_event("c");
    ev.detail = huge;
    assert_int_equal(phiaudit_log_event(lg, &ev), PHIAUDIT_E_TOO_LONG);
    ev.detail = NULL;
    ev.version = 99;
    assert_int_equal(phiaudit_log_event(lg, &ev), PHIAUDIT_E_VERSION);
    ev.version = PHIAUDIT_EVENT_VERSION;
    ev.duration_us = -1;
    assert_int_equal(phiaudit_log_event(lg, &ev), PHIAUDIT_E_INVALID);
    ev.duration_us = 0;
    ev.outcome = 1;
    assert_int_equal(phiaudit_log_event(lg, &ev), PHIAUDIT_E_INVALID);
    ev.outcome = 0;
    assert_int_equal(phiaudit_log_event(NULL, &ev), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_log_event(lg, NULL), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    free(huge);

    assert_int_equal(phiaudit_logger_close(&lg), 0);
    /* open + 2 accepted records + close: rejected input wrote nothing, no gaps */
    assert_int_equal(p->count, 4);
    assert_unique_and_gapless(p->t, p->count, NULL);
    phiaudit_sink_close(&sink);
}

static void test_bad_config(void **state)
{
    (void)state;
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(NULL, &c), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_logger_open(&lg, NULL), PHIAUDIT_E_INVALID);
    test_config(&c, &mem);
    c.version = 2;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_VERSION);
    test_config(&c, &mem);
    c.durability = 3;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_INVALID);
    test_config(&c, &mem);
    c.sink_count = 0;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_INVALID);
    test_config(&c, &mem);
    c.app_name = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_INVALID);
    test_config(&c, &mem);
    c.app_name = "bad\napp";
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_BAD_CHAR);
    test_config(&c, &mem);
    const char *uris[] = {"nosuch:thing"};
    c.sink_uris = uris;
    c.sink_uri_count = 1;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_URI);
    uris[0] = "postgresql://localhost/db";
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_UNSUPPORTED);
    uris[0] = "memory:";
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    assert_string_equal(phiaudit_logger_errmsg(lg), "no error");
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0); /* NULL is fine */
    assert_int_equal(phiaudit_sink_memory_count(mem), 2); /* open+close; the URI sink got its own copy */
    phiaudit_sink_close(&mem);
    phiaudit_sink_close(&mem);
    assert_null(mem);
    assert_string_equal(phiaudit_strerror(12345), "unknown error");
    assert_string_equal(phiaudit_strerror(0), "success");
}

static void test_abandoned_scopes(void **state)
{
    (void)state;
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    test_config(&c, &mem);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_scope *a = NULL, *b = NULL, *done = NULL;
    assert_int_equal(phiaudit_scope_begin(&a, lg, "c-a", CANARY_PATIENT, 'R'), 0);
    assert_int_equal(phiaudit_scope_begin(&b, lg, "c-b", CANARY_PATIENT, 'D'), 0);
    assert_int_equal(phiaudit_scope_begin(&done, lg, "c-d", CANARY_PATIENT, 'C'), 0);
    assert_int_equal(phiaudit_scope_end(&done, 0), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    /* open, done, two abandoned, close */
    assert_int_equal(phiaudit_sink_memory_count(mem), 5);
    int abandoned = 0;
    for (size_t i = 2; i < 4; i++) {
        phiaudit_header h;
        char *pt = test_open_frame(mem, i, &h);
        assert_non_null(strstr(pt, "\"outcome\":8"));
        assert_non_null(strstr(pt, "\"abandoned\":true"));
        abandoned++;
        free(pt);
    }
    phiaudit_header h;
    char *cl = test_open_frame(mem, 4, &h);
    assert_string_equal(cl, "{\"v\":1,\"event\":\"stream-close\",\"records\":3,\"abandoned\":2}");
    free(cl);
    /* Ending after close frees the scope and says the logger is gone. */
    assert_int_equal(phiaudit_scope_end(&a, 0), PHIAUDIT_E_CLOSED);
    assert_null(a);
    phiaudit_scope_autoend(&b);
    assert_null(b);
    phiaudit_sink_close(&mem);
}

static void test_cleanup_macro(void **state)
{
    (void)state;
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    test_config(&c, &mem);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    {
        PHIAUDIT_SCOPE(s);
        assert_int_equal(phiaudit_scope_begin(&s, lg, "c", CANARY_PATIENT, 'R'), 0);
        assert_int_equal(phiaudit_scope_set_outcome(s, PHIAUDIT_OUTCOME_MAJOR_FAILURE), 0);
    } /* ends here */
    {
        PHIAUDIT_SCOPE(s);
        assert_int_equal(phiaudit_scope_begin(&s, lg, "c", CANARY_PATIENT, 'R'), 0);
        assert_int_equal(phiaudit_scope_end(&s, 0), 0); /* explicit end: cleanup is a no-op */
    }
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_int_equal(phiaudit_sink_memory_count(mem), 4);
    phiaudit_header h;
    char *pt = test_open_frame(mem, 1, &h);
    assert_non_null(strstr(pt, "\"outcome\":12"));
    assert_null(strstr(pt, "abandoned"));
    free(pt);
    phiaudit_sink_close(&mem);
}

/* ---- Failure policy ---------------------------------------------------------------------------- */

static void test_sink_failure_fail_closed_then_recovers(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    c.durability = PHIAUDIT_DURABILITY_GROUP;
    c.flush_interval_ms = 1;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);

    phiaudit_event ev = canary_event("c");
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    assert_int_equal(phiaudit_logger_flush(lg), 0);
    assert_true(atomic_load(&p->syncs) >= 1); /* group durability syncs */

    atomic_store(&p->fail, 1);
    assert_int_equal(phiaudit_log_event(lg, &ev), 0); /* queued before the failure is known */
    assert_int_equal(phiaudit_logger_flush(lg), PHIAUDIT_E_SINK);
    /* Fail closed: the caller is told, nothing is sealed, no sequence number is burnt. */
    assert_int_equal(phiaudit_log_event(lg, &ev), PHIAUDIT_E_SINK_DOWN);
    phiaudit_stats st = {.version = PHIAUDIT_STATS_VERSION};
    assert_int_equal(phiaudit_logger_stats(lg, &st), 0);
    assert_int_equal(st.sink_failing, 1);
    assert_true(st.sink_errors >= 1);
    assert_true(st.queued_bytes > 0);
    assert_non_null(strstr(phiaudit_logger_errmsg(lg), "sink write failed"));
    assert_null(strstr(phiaudit_logger_errmsg(lg), CANARY_PATIENT));

    atomic_store(&p->fail, 0);
    for (int i = 0; i < 300 && phiaudit_logger_flush(lg) != 0; i++)
        usleep(10000); /* the flusher retries with backoff */
    assert_int_equal(phiaudit_logger_flush(lg), 0);
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_int_equal(p->count, 5); /* open, 3 accepted, close */
    assert_unique_and_gapless(p->t, p->count, NULL);
    phiaudit_sink_close(&sink);
}

static int diag_errors;
static void count_diag(void *ctx, int level, const char *msg)
{
    (void)ctx;
    assert_null(strstr(msg, CANARY_PATIENT));
    if (level == PHIAUDIT_DIAG_ERROR)
        diag_errors++;
}

static void test_close_with_dead_sink_is_loud(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    c.diag = count_diag;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    atomic_store(&p->fail, 1);
    phiaudit_event ev = canary_event("c");
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    diag_errors = 0;
    assert_int_equal(phiaudit_logger_close(&lg), PHIAUDIT_E_SINK);
    assert_true(diag_errors >= 2); /* the failure, and the undelivered count at close */
    phiaudit_sink_close(&sink);

    /* A sink that fails from the start makes open fail, loudly. */
    sink = probe_open(&p);
    atomic_store(&p->fail, 1);
    test_config(&c, &sink);
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_IO);
    assert_null(lg);
    phiaudit_sink_close(&sink);
}

static void test_sync_and_queue_full(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    c.durability = PHIAUDIT_DURABILITY_SYNC;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_event ev = canary_event("c");
    for (int i = 0; i < 20; i++) {
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
        assert_int_equal(p->count, (size_t)i + 2); /* delivered before returning */
    }
    assert_true(atomic_load(&p->syncs) >= 20);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    phiaudit_sink_close(&sink);

    /* A stalled sink and a small queue: end() waits at most max_block_ms, then says so. */
    sink = probe_open(&p);
    test_config(&c, &sink);
    c.max_queue_bytes = 4096;
    c.max_block_ms = 20;
    c.flush_interval_ms = 1;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    atomic_store(&p->sleep_ms, 300);
    int full = 0, ok = 0;
    for (int i = 0; i < 40 && !full; i++) {
        int rc = phiaudit_log_event(lg, &ev);
        if (rc == PHIAUDIT_E_QUEUE_FULL)
            full++;
        else {
            assert_int_equal(rc, 0);
            ok++;
        }
    }
    assert_int_equal(full, 1);
    atomic_store(&p->sleep_ms, 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_int_equal(p->count, (size_t)ok + 2);
    assert_unique_and_gapless(p->t, p->count, NULL);
    phiaudit_sink_close(&sink);
}

/* A write that succeeded is never repeated because its sync failed: a retry only syncs
 * (repeated frames would look like replayed records to a verifier). */
static void test_sync_failure_does_not_rewrite(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    c.durability = PHIAUDIT_DURABILITY_GROUP;
    c.flush_interval_ms = 1;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    atomic_store(&p->fail_syncs, 3);
    phiaudit_event ev = canary_event("c");
    for (int i = 0; i < 40; i++)
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    for (int i = 0; i < 500 && phiaudit_logger_flush(lg) != 0; i++)
        usleep(10000);
    assert_int_equal(phiaudit_logger_flush(lg), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_int_equal(p->count, 42); /* each frame exactly once */
    assert_unique_and_gapless(p->t, p->count, NULL);
    phiaudit_sink_close(&sink);
}

/* SYNC mode: E_SINK means "queued, not yet durable" (delivered later, exactly once), and
 * E_SINK_DOWN means "not sealed" (never delivered): the two must not be confused. */
static void test_sync_mode_error_meanings(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    c.durability = PHIAUDIT_DURABILITY_SYNC;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_event ev = canary_event("c");
    atomic_store(&p->fail, 1);
    assert_int_equal(phiaudit_log_event(lg, &ev), PHIAUDIT_E_SINK);      /* queued */
    assert_int_equal(phiaudit_log_event(lg, &ev), PHIAUDIT_E_SINK_DOWN); /* not sealed */
    atomic_store(&p->fail, 0);
    for (int i = 0; i < 300 && phiaudit_logger_flush(lg) != 0; i++)
        usleep(10000);
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_int_equal(p->count, 4); /* open, the queued one, the last one, close */
    assert_unique_and_gapless(p->t, p->count, NULL);
    phiaudit_sink_close(&sink);
}

/* close() while the sink is failing still queues the abandoned scopes; if the sink
 * recovers within close's retry window they are delivered and close succeeds. */
static void *recover_later(void *arg)
{
    usleep(100000);
    atomic_store(&((probe_sink *)arg)->fail, 0);
    return NULL;
}

static void test_close_records_abandoned_while_failing(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_scope *open_scope = NULL;
    assert_int_equal(phiaudit_scope_begin(&open_scope, lg, "c", CANARY_PATIENT, 'R'), 0);
    atomic_store(&p->fail, 1);
    phiaudit_event ev = canary_event("c");
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    assert_int_equal(phiaudit_logger_flush(lg), PHIAUDIT_E_SINK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, recover_later, p), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    pthread_join(t, NULL);
    assert_int_equal(p->count, 4); /* open, event, abandoned scope, close */
    assert_unique_and_gapless(p->t, p->count, NULL);
    assert_int_equal(phiaudit_scope_end(&open_scope, 0), PHIAUDIT_E_CLOSED);
    phiaudit_sink_close(&sink);
}

/* ---- Threads and fork: nonce uniqueness ------------------------------------------------------------ */

#define THREADS 8
#define PER_THREAD 125000 /* 1,000,000 records in all */

static void *hammer(void *arg)
{
    phiaudit_logger *lg = arg;
    char clin[32];
    snprintf(clin, sizeof clin, "dr-%lu", (unsigned long)pthread_self() % 1000);
    for (int i = 0; i < PER_THREAD; i++) {
        phiaudit_scope *s = NULL;
        assert_int_equal(phiaudit_scope_begin(&s, lg, clin, CANARY_PATIENT, 'R'), 0);
        assert_int_equal(phiaudit_scope_end(&s, 0), 0);
    }
    return NULL;
}

static void test_million_records_threads_unique_nonces(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    c.max_queue_bytes = 256u << 20;
    c.max_block_ms = 60000;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, lg), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    size_t streams;
    assert_int_equal(assert_unique_and_gapless(p->t, p->count, &streams),
                     (size_t)THREADS * PER_THREAD + 2);
    assert_int_equal(streams, 1);
    phiaudit_sink_close(&sink);
}

static void *fork_hammer(void *arg)
{
    phiaudit_logger *lg = arg;
    phiaudit_event ev = canary_event("bg");
    for (int i = 0; i < 20000; i++)
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    return NULL;
}

/* Parent and child both log after fork() — while another parent thread is logging, so the
 * fork lands mid-stream — and no (stream, seq) pair, i.e. no (key, nonce), repeats. */
static void test_fork_both_log(void **state)
{
    (void)state;
    skip_fork_under_tsan();
    char path[] = "/tmp/phiaudit-fork-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    assert_int_equal(fcntl(fd, F_SETFL, O_APPEND), 0); /* both processes append tuples */
    p->fd = fd;
    phiaudit_config c;
    test_config(&c, &sink);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    pthread_t bg;
    assert_int_equal(pthread_create(&bg, NULL, fork_hammer, lg), 0);
    usleep(2000);

    pid_t pid = fork();
    assert_true(pid >= 0);
    phiaudit_event ev = canary_event(pid == 0 ? "child" : "parent");
    for (int i = 0; i < 20000; i++) {
        int rc = phiaudit_log_event(lg, &ev);
        if (pid == 0 && rc != 0)
            _exit(10);
        assert_int_equal(rc, 0);
    }
    if (pid == 0) {
        _exit(phiaudit_logger_close(&lg) == 0 ? 0 : 11);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    pthread_join(bg, NULL);
    assert_int_equal(phiaudit_logger_close(&lg), 0);

    /* The file has the child's tuples and the parent's: read them all back. */
    size_t n;
    tuple *all = read_tuples(fd, &n);
    size_t streams;
    /* parent: open + 40000 + close; child: open + 20000 + close */
    assert_int_equal(n, 40002 + 20002);
    assert_unique_and_gapless(all, n, &streams);
    assert_int_equal(streams, 2);
    free(all);
    phiaudit_sink_close(&sink);
}

/* In a child: flush() before the first record must not start a second flusher (no hang),
 * and scopes that other parent threads had open are not the child's accesses. */
typedef struct held_scope {
    phiaudit_logger *lg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 1: scope begun; 2: told to end it */
} held_scope;

static void *hold_scope(void *arg)
{
    held_scope *h = arg;
    phiaudit_scope *s = NULL;
    assert_int_equal(phiaudit_scope_begin(&s, h->lg, "other-thread", CANARY_PATIENT, 'R'), 0);
    pthread_mutex_lock(&h->mu);
    h->state = 1;
    pthread_cond_broadcast(&h->cv);
    while (h->state != 2)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(phiaudit_scope_end(&s, 0), 0);
    return NULL;
}

static void test_fork_child_flush_and_foreign_scopes(void **state)
{
    (void)state;
    skip_fork_under_tsan();
    char path[] = "/tmp/phiaudit-fork2-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(fcntl(fd, F_SETFL, O_APPEND), 0);
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    p->fd = fd;
    phiaudit_config c;
    test_config(&c, &sink);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    held_scope h = {.lg = lg, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_scope, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (h.state != 1)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    phiaudit_scope *mine = NULL;
    assert_int_equal(phiaudit_scope_begin(&mine, lg, "forking-thread", CANARY_PATIENT, 'U'), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        phiaudit_event ev = canary_event("child");
        int ok = phiaudit_logger_flush(lg) == 0 && phiaudit_log_event(lg, &ev) == 0 &&
                 phiaudit_logger_close(&lg) == 0; /* records `mine` as abandoned */
        _exit(ok ? 0 : 12);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    pthread_mutex_lock(&h.mu);
    h.state = 2;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(t, NULL);
    assert_int_equal(phiaudit_scope_end(&mine, 0), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);

    size_t n;
    tuple *all = read_tuples(fd, &n);
    size_t streams;
    /* parent: open, 2 scopes, close; child: open, event, its own abandoned scope, close */
    assert_int_equal(n, 4 + 4);
    assert_unique_and_gapless(all, n, &streams);
    assert_int_equal(streams, 2);
    free(all);
    phiaudit_sink_close(&sink);
}

/* A raw fork system call skips pthread_atfork handlers (as clone() users may): the fork
 * guard page must still make the child start its own stream. */
static void test_raw_fork_without_atfork(void **state)
{
    (void)state;
    skip_fork_under_tsan();
    char path[] = "/tmp/phiaudit-rawfork-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(fcntl(fd, F_SETFL, O_APPEND), 0);
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    p->fd = fd;
    phiaudit_config c;
    test_config(&c, &sink);
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_event ev = canary_event("c");
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    assert_int_equal(phiaudit_logger_flush(lg), 0); /* flusher idle: holds no lock */

    pid_t pid = (pid_t)syscall(SYS_fork);
    assert_true(pid >= 0);
    for (int i = 0; i < 100; i++) {
        int rc = phiaudit_log_event(lg, &ev);
        if (pid == 0 && rc != 0)
            _exit(10);
        assert_int_equal(rc, 0);
    }
    if (pid == 0)
        _exit(phiaudit_logger_close(&lg) == 0 ? 0 : 11);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);

    size_t n;
    tuple *all = read_tuples(fd, &n);
    size_t streams;
    assert_int_equal(n, 103 + 102); /* parent: open, 101, close; child: open, 100, close */
    assert_unique_and_gapless(all, n, &streams);
    assert_int_equal(streams, 2);
    free(all);
    phiaudit_sink_close(&sink);
}

/* ---- Allocation failures: every failure is an error, leaks nothing, loses nothing ------------ */

static void test_alloc_failure_sweep(void **state)
{
    (void)state;
    probe_sink *p;
    phiaudit_sink *sink = probe_open(&p);
    phiaudit_config c;
    test_config(&c, &sink);
    phiaudit_logger *lg = NULL;
    int rc = -1;
    long n;
    for (n = 0; n < 1000; n++) {
        phiaudit_test_fail_alloc_after(n);
        rc = phiaudit_logger_open(&lg, &c);
        phiaudit_test_fail_alloc_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, PHIAUDIT_E_NOMEM);
        assert_null(lg);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 3);
    size_t written_before = p->count;

    int ok = 0;
    for (n = 0; n < 200; n++) {
        assert_int_equal(phiaudit_logger_flush(lg), 0); /* flusher idle during the sweep */
        phiaudit_test_fail_alloc_after(n);
        phiaudit_scope *s = NULL;
        rc = phiaudit_scope_begin(&s, lg, "c", CANARY_PATIENT, 'R');
        if (rc == 0) {
            rc = phiaudit_scope_set_detail(s, "detail text");
            int end_rc = phiaudit_scope_end(&s, 0);
            assert_null(s);
            if (end_rc == 0)
                ok++;
            else
                assert_int_equal(end_rc, PHIAUDIT_E_NOMEM);
            if (rc != 0)
                assert_int_equal(rc, PHIAUDIT_E_NOMEM);
        } else {
            assert_int_equal(rc, PHIAUDIT_E_NOMEM);
            assert_null(s);
        }
        phiaudit_test_fail_alloc_after(-1);
    }
    assert_true(ok > 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    /* exactly the records whose end() succeeded, plus the close record; no gaps */
    assert_int_equal(p->count - written_before, (size_t)ok + 1);
    assert_unique_and_gapless(p->t, p->count, NULL);
    phiaudit_sink_close(&sink);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scope_round_trip),
        cmocka_unit_test(test_chain_links),
        cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_abandoned_scopes),
        cmocka_unit_test(test_cleanup_macro),
        cmocka_unit_test(test_sink_failure_fail_closed_then_recovers),
        cmocka_unit_test(test_close_with_dead_sink_is_loud),
        cmocka_unit_test(test_sync_and_queue_full),
        cmocka_unit_test(test_sync_failure_does_not_rewrite),
        cmocka_unit_test(test_sync_mode_error_meanings),
        cmocka_unit_test(test_close_records_abandoned_while_failing),
        cmocka_unit_test(test_million_records_threads_unique_nonces),
        cmocka_unit_test(test_fork_both_log),
        cmocka_unit_test(test_raw_fork_without_atfork),
        cmocka_unit_test(test_fork_child_flush_and_foreign_scopes),
        cmocka_unit_test(test_alloc_failure_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
