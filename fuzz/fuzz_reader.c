/*
 * libFuzzer target for the reader (src/reader.c) and the frame parser under it.
 *
 * The first input byte picks a mode:
 *   0  the rest is a log file: read keyless and with the key (framing, resync, torn
 *      tails, damaged ranges, stream state for arbitrary headers);
 *   1  the rest is a payload, sealed with the test key as DATA seq 1 after an OPEN, then
 *      read with a query set (JSON field extraction, unescaping, time and TEXT parsing
 *      run only on authenticated payloads, so they need this mode to be reached);
 *   2  the rest is a list of edits (flip, delete, duplicate, move, truncate) applied to a
 *      valid two-stream log, read with the key (sequence, gap, window, chain logic).
 * Every mode also walks the whole report. Built with -fsanitize=fuzzer,address,undefined;
 * the library sources are compiled into this executable so they are instrumented too.
 */
#include "internal.h"
#include "phiaudit_reader.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t KEY[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t KEY_ID[16] = {'f', 'u', 'z', 'z', '-', 'k', 'e', 'y', 0, 0, 0, 0, 0, 0, 0, 1};

static phiaudit_keyring *g_kr;
static uint8_t *g_log;      /* valid log: two interleaved streams */
static size_t g_log_len;
static size_t g_off[64], g_len[64], g_nfr;

static void append_sink(phiaudit_sink *mem)
{
    size_t n = phiaudit_sink_memory_count(mem);
    for (size_t i = 0; i < n && g_nfr < 64; i++) {
        uint8_t f[PHIAUDIT_MAX_FRAME_LEN];
        size_t len = sizeof f;
        if (phiaudit_sink_memory_get(mem, i, f, &len) != 0)
            abort();
        g_log = realloc(g_log, g_log_len + len);
        memcpy(g_log + g_log_len, f, len);
        g_off[g_nfr] = g_log_len;
        g_len[g_nfr++] = len;
        g_log_len += len;
    }
}

static void make_base_log(void)
{
    for (int s = 0; s < 2; s++) {
        phiaudit_sink *mem = NULL;
        if (phiaudit_sink_memory_open(&mem) != 0)
            abort();
        phiaudit_config c;
        phiaudit_config_init(&c);
        c.app_name = "fuzz";
        c.host_name = "fuzz-host";
        c.key = KEY;
        c.key_id = KEY_ID;
        c.sinks = &mem;
        c.sink_count = 1;
        c.flags = s ? PHIAUDIT_FLAG_BLIND_INDEX : 0;
        c.payload_format = s ? PHIAUDIT_FORMAT_TEXT : PHIAUDIT_FORMAT_JSON;
        phiaudit_logger *lg = NULL;
        if (phiaudit_logger_open(&lg, &c) != 0)
            abort();
        for (int i = 0; i < 10; i++) {
            phiaudit_event ev;
            phiaudit_event_init(&ev);
            ev.action = "CRUDE"[i % 5];
            ev.clinician_id = i % 2 ? "dr-a" : "dr-b";
            ev.patient_id = i % 3 ? "P-1" : "P-2";
            if (phiaudit_log_event(lg, &ev) != 0)
                abort();
        }
        if (phiaudit_logger_close(&lg) != 0)
            abort();
        append_sink(mem);
        phiaudit_sink_close(&mem);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (phiaudit_keyring_new(&g_kr) != 0 || phiaudit_keyring_add(g_kr, KEY_ID, KEY) != 0)
        abort();
    make_base_log();
    return 0;
}

static void consume(const uint8_t *buf, size_t len, phiaudit_keyring *kr, int query)
{
    phiaudit_reader *r = NULL;
    if (phiaudit_reader_open_buffer(&r, buf, len, "fuzz", kr) != 0)
        return;
    if (query) {
        phiaudit_query q;
        phiaudit_query_init(&q);
        q.patient_id = "P-1";
        q.clinician_id = (query & 2) ? "dr-a" : NULL;
        q.action = (query & 4) ? 'R' : 0;
        q.since_us = (query & 8) ? 0 : INT64_MIN;
        q.until_us = (query & 8) ? INT64_C(4102444800000000) : INT64_MAX;
        if (phiaudit_reader_set_query(r, &q) != 0)
            abort();
    }
    phiaudit_reader_record rec;
    int rc;
    volatile uint32_t sink = 0;
    while ((rc = phiaudit_reader_next(r, &rec)) == 1) {
        if (rec.frame + rec.frame_len > buf + len || rec.frame < buf)
            abort();
        if (rec.payload) {
            if (!(rec.status & PHIAUDIT_RS_AUTHENTICATED))
                abort(); /* never plaintext of an unauthenticated record */
            for (size_t i = 0; i < rec.payload_len; i++)
                sink += rec.payload[i];
        }
    }
    if (rc != 0 && rc != PHIAUDIT_E_NOMEM)
        abort();
    (void)phiaudit_reader_verdict(r);
    for (size_t i = 0; i < phiaudit_reader_stream_count(r); i++) {
        phiaudit_stream_report s;
        if (phiaudit_reader_stream(r, i, &s) == 0)
            for (size_t k = 0; k < s.missing_ranges_len; k++)
                sink += (uint32_t)(s.missing_ranges[k].last - s.missing_ranges[k].first);
    }
    for (size_t i = 0; i < phiaudit_reader_source_count(r); i++) {
        phiaudit_source_report s;
        if (phiaudit_reader_source(r, i, &s) == 0)
            for (size_t k = 0; k < s.damaged_ranges_len; k++)
                if (s.damaged_ranges[k].last >= len || s.damaged_ranges[k].first > s.damaged_ranges[k].last)
                    abort();
    }
    phiaudit_reader_free(&r);
    (void)sink;
}

/* Mode 1: seal the payload as a DATA record after an OPEN record. */
static void sealed_payload(const uint8_t *pt, size_t n, int flags)
{
    if (n > PHIAUDIT_MAX_FRAME_LEN - PHIAUDIT_MIN_FRAME_LEN)
        n = PHIAUDIT_MAX_FRAME_LEN - PHIAUDIT_MIN_FRAME_LEN;
    phiaudit_sealer *s = NULL;
    static const uint8_t stream[16] = {9, 9, 9};
    if (phiaudit_sealer_new(&s) != 0 || phiaudit_sealer_start(s, KEY, KEY_ID, stream) != 0)
        abort();
    phiaudit_buf out = {0};
    uint8_t zero[32] = {0}, link[32];
    phiaudit_seal_params p = {.type = PHIAUDIT_RECORD_OPEN, .seq = 0, .time_us = 1,
                              .prev_link = zero};
    if (phiaudit_seal(s, &p, (const uint8_t *)"{}", 2, &out, link, NULL, 0) != 0)
        abort();
    uint8_t bi_p[8] = {0}, bi_c[8] = {0};
    if (flags & 16) { /* blind-index tags of the query values, or garbage ones */
        uint8_t ikey[32];
        if (phiaudit_hkdf_index_key(KEY, KEY_ID, ikey) != 0 ||
            phiaudit_blind_tag(ikey, 'P', "P-1", 3, bi_p) != 0 ||
            phiaudit_blind_tag(ikey, 'C', "dr-a", 4, bi_c) != 0)
            abort();
        if (flags & 32)
            bi_p[0] ^= 1;
    }
    phiaudit_seal_params d = {.type = PHIAUDIT_RECORD_DATA, .seq = 1, .time_us = 1000000,
                              .prev_link = link,
                              .flags = (flags & 16) ? PHIAUDIT_HFLAG_BLIND_INDEX : 0,
                              .bi_patient = bi_p, .bi_clinician = bi_c};
    if (phiaudit_seal(s, &d, pt, n, &out, link, NULL, 0) != 0)
        abort();
    consume(out.data, out.len, g_kr, 1 | (flags & 14));
    phiaudit_buf_free(&out);
    phiaudit_sealer_free(&s);
}

/* Mode 2: edits on the valid log. Each edit is 4 bytes: op, a, b, c. */
static void edited_log(const uint8_t *ed, size_t n)
{
    size_t cap = g_log_len * 3 + 16;
    uint8_t *buf = malloc(cap);
    memcpy(buf, g_log, g_log_len);
    size_t len = g_log_len;
    for (size_t i = 0; i + 4 <= n && i < 64; i += 4) {
        uint8_t op = ed[i] % 5;
        size_t fa = ed[i + 1] % g_nfr, fb = ed[i + 2] % g_nfr;
        size_t pos = ((size_t)ed[i + 1] << 8 | ed[i + 2]) % (len ? len : 1);
        switch (op) {
        case 0: /* flip a bit */
            if (len)
                buf[pos] ^= (uint8_t)(1u << (ed[i + 3] & 7));
            break;
        case 1: /* truncate */
            len = pos;
            break;
        case 2: /* append a copy of original frame fa */
        case 3: /* insert a copy of original frame fb at a frame boundary of the original */
            if (len + g_len[fa] <= cap) {
                size_t at = op == 2 ? len : (g_off[fb] < len ? g_off[fb] : len);
                memmove(buf + at + g_len[fa], buf + at, len - at);
                memcpy(buf + at, g_log + g_off[fa], g_len[fa]);
                len += g_len[fa];
            }
            break;
        case 4: /* delete the bytes of original frame position fa (if still in range) */
            if (g_off[fa] + g_len[fa] <= len) {
                memmove(buf + g_off[fa], buf + g_off[fa] + g_len[fa], len - g_off[fa] - g_len[fa]);
                len -= g_len[fa];
            }
            break;
        }
    }
    consume(buf, len, g_kr, (ed && n) ? (ed[0] & 14) | 1 : 0);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0] % 3;
    data++;
    size--;
    if (mode == 0) {
        /* Copy so that reads past the end hit ASan's redzone exactly. */
        uint8_t *copy = malloc(size ? size : 1);
        memcpy(copy, data, size);
        consume(copy, size, NULL, 0);
        consume(copy, size, g_kr, 0);
        free(copy);
    } else if (mode == 1) {
        int flags = size ? data[0] : 0;
        sealed_payload(size ? data + 1 : data, size ? size - 1 : 0, flags);
    } else {
        edited_log(data, size);
    }
    return 0;
}
