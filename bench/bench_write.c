/*
 * bench_write — end-to-end write-path throughput, with baselines measured in the same run.
 *
 *   bench_write [RECORDS] [DIR] [ONLY]   (defaults: 1000000, /tmp, all benchmarks)
 *
 * Each benchmark runs BENCH_REPS times (environment, default 3) and the fastest run is
 * reported: the machine is shared, and the minimum is the least disturbed measurement.
 *
 * Prints one JSON object per line:
 *   raw_format_seal   the floor: format the same payload + AES-256-GCM seal with a reused
 *                     cipher context, into a buffer (no header, chain, lock, queue or I/O)
 *   plain_text_file   unencrypted logging: the classic one-line message via stdio to a file
 *   discard           public API (scope begin/end) to a user sink that discards: the
 *                     library's own cost, without any sink work
 *   memory            public API to the memory sink (copies every frame)
 *   file_buffered     public API to a file sink, durability NONE
 *   file_group        public API to a file sink, durability GROUP (fdatasync per batch)
 *   file_sync         public API to a file sink, durability SYNC (fdatasync per record;
 *                     RECORDS/200 records)
 * and a final "summary" line with the ratios to raw_format_seal.
 * Linked statically against the library so the raw loop can use its payload formatter.
 */
#include "internal.h"

#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint8_t key[32] = {1, 2, 3};
static const uint8_t key_id[16] = {'b', 'e', 'n', 'c', 'h'};

static double now_s(void)
{
    return (double)phiaudit_now_mono_ns() / 1e9;
}

static void report(const char *name, long n, double secs)
{
    printf("{\"bench\":\"%s\",\"records\":%ld,\"seconds\":%.4f,\"records_per_s\":%.0f,"
           "\"ns_per_record\":%.1f}\n",
           name, n, secs, (double)n / secs, secs * 1e9 / (double)n);
    fflush(stdout);
}

static void ids(long i, char clin[32], char pat[32])
{
    snprintf(clin, 32, "dr-%03ld", i % 97);
    snprintf(pat, 32, "MRN-%06ld", i % 100003);
}

/* The floor: what any AES-GCM audit logger must at least do per record. */
static double bench_raw(long n)
{
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    EVP_EncryptInit_ex(ctx, cipher, NULL, key, NULL);
    phiaudit_buf pt = {0}, out = {0};
    phiaudit_buf_reserve(&out, 1 << 16);
    uint8_t iv[12] = {0}, aad[112] = {0};
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        char clin[32], pat[32];
        ids(i, clin, pat);
        phiaudit_payload_fields f = {.clinician = clin, .clinician_len = strlen(clin),
                                     .patient = pat, .patient_len = strlen(pat),
                                     .app = "bench", .app_len = 5, .host = "host", .host_len = 4,
                                     .pid = 1, .action = 'R', .outcome = 0,
                                     .recorded_us = phiaudit_now_wall_us(),
                                     .start_us = phiaudit_now_wall_us(), .duration_us = 1};
        size_t id_off;
        pt.len = 0;
        phiaudit_payload_format(&pt, PHIAUDIT_FORMAT_JSON, &f, &id_off);
        memcpy(iv + 4, &i, sizeof i);
        int len, fin;
        out.len = 0;
        EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv);
        EVP_EncryptUpdate(ctx, NULL, &len, aad, sizeof aad);
        EVP_EncryptUpdate(ctx, out.data, &len, pt.data, (int)pt.len);
        EVP_EncryptFinal_ex(ctx, out.data + len, &fin);
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out.data + pt.len);
    }
    double secs = now_s() - t0;
    phiaudit_buf_free(&pt);
    phiaudit_buf_free(&out);
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
    return secs;
}

static double bench_plain(long n, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        char clin[32], pat[32];
        ids(i, clin, pat);
        fprintf(f, "Clinician %s processed action R on Patient %s in %.4fs\n", clin, pat, 0.0001);
    }
    fclose(f);
    double secs = now_s() - t0;
    unlink(path);
    return secs;
}

static double bench_api(long n, phiaudit_sink *sink, const char *uri, uint32_t durability)
{
    phiaudit_config c;
    phiaudit_config_init(&c);
    c.app_name = "bench";
    c.key = key;
    c.key_id = key_id;
    c.durability = durability;
    c.max_queue_bytes = 1u << 30;
    if (sink) {
        c.sinks = &sink;
        c.sink_count = 1;
    } else {
        c.sink_uris = &uri;
        c.sink_uri_count = 1;
    }
    phiaudit_logger *lg = NULL;
    if (phiaudit_logger_open(&lg, &c) != 0) {
        fprintf(stderr, "bench: cannot open logger\n");
        exit(1);
    }
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        char clin[32], pat[32];
        ids(i, clin, pat);
        phiaudit_scope *s = NULL;
        if (phiaudit_scope_begin(&s, lg, clin, pat, 'R') != 0 || phiaudit_scope_end(&s, 0) != 0) {
            fprintf(stderr, "bench: record %ld failed\n", i);
            exit(1);
        }
    }
    /* Count the time until everything is written (and synced where the mode says so). */
    int rc = phiaudit_logger_close(&lg);
    double secs = now_s() - t0;
    if (rc != 0) {
        fprintf(stderr, "bench: close failed: %s\n", phiaudit_strerror(rc));
        exit(1);
    }
    return secs;
}

static int reps = 3;

enum { RAW, PLAIN, DISCARD, MEMORY, FILE_NONE, FILE_GROUP, FILE_SYNC };

static int discard_write(void *state, const phiaudit_batch *batch)
{
    (void)state;
    (void)batch;
    return 0;
}

static const phiaudit_sink_ops discard_ops = {
    .version = PHIAUDIT_SINK_OPS_VERSION, .name = "discard", .write = discard_write};

/* One run of benchmark `which`; returns seconds. Files are removed afterwards. */
static double run_once(int which, long n, const char *path, const char *uri)
{
    double secs = 0;
    phiaudit_sink *mem = NULL;
    switch (which) {
    case RAW: return bench_raw(n);
    case PLAIN: return bench_plain(n, path);
    case DISCARD:
        phiaudit_sink_new(&mem, &discard_ops, NULL);
        secs = bench_api(n, mem, NULL, PHIAUDIT_DURABILITY_NONE);
        phiaudit_sink_close(&mem);
        return secs;
    case MEMORY:
        phiaudit_sink_memory_open(&mem);
        secs = bench_api(n, mem, NULL, PHIAUDIT_DURABILITY_NONE);
        phiaudit_sink_close(&mem);
        return secs;
    case FILE_NONE: secs = bench_api(n, NULL, uri, PHIAUDIT_DURABILITY_NONE); break;
    case FILE_GROUP: secs = bench_api(n, NULL, uri, PHIAUDIT_DURABILITY_GROUP); break;
    default: secs = bench_api(n, NULL, uri, PHIAUDIT_DURABILITY_SYNC); break;
    }
    unlink(path);
    return secs;
}

/* Fastest of `reps` runs, reported. */
static double best(const char *name, int which, long n, const char *path, const char *uri)
{
    double b = 1e300;
    for (int r = 0; r < reps; r++) {
        double t = run_once(which, n, path, uri);
        if (t < b)
            b = t;
    }
    report(name, n, b);
    return b;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    const char *only = argc > 3 ? argv[3] : NULL;
    if (getenv("BENCH_REPS") && atoi(getenv("BENCH_REPS")) > 0)
        reps = atoi(getenv("BENCH_REPS"));
    char path[4096], uri[4200];
    snprintf(path, sizeof path, "%s/phiaudit-bench-%ld.log", dir, (long)getpid());
    snprintf(uri, sizeof uri, "file:%s", path);

    static const struct {
        const char *name;
        int which;
    } all[] = {{"raw_format_seal", RAW},     {"plain_text_file", PLAIN},
               {"discard", DISCARD},         {"memory", MEMORY},
               {"file_buffered", FILE_NONE}, {"file_group", FILE_GROUP},
               {"file_sync", FILE_SYNC}};
    double t[7] = {0};
    for (int i = 0; i < 7; i++) {
        if (only && strcmp(only, all[i].name) != 0)
            continue;
        /* per-record fdatasync: a smaller count keeps the run short */
        long count = all[i].which == FILE_SYNC ? (n / 200 > 100 ? n / 200 : 100) : n;
        t[i] = best(all[i].name, all[i].which, count, path, uri);
    }
    if (!only)
        printf("{\"bench\":\"summary\",\"discard_vs_raw\":%.2f,\"memory_vs_raw\":%.2f,"
               "\"file_buffered_vs_raw\":%.2f,\"file_group_vs_raw\":%.2f,"
               "\"plain_text_vs_raw\":%.2f}\n",
               t[2] / t[0], t[3] / t[0], t[4] / t[0], t[5] / t[0], t[1] / t[0]);
    return 0;
}
