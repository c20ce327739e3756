/*
 * Tamper suite: write real logs with the logger and the file sink, damage copies of them,
 * and assert the exact verdict and exit status of `phiaudit verify` (and of decrypt), by
 * calling the CLI's command functions from tools/cmd_read.c with stdout/stderr captured.
 *
 * Every damaged record that carries the canary patient ID must never show up in decrypt's
 * output, and no command may ever print it on stderr.
 */
#include "testutil.h"
#include "internal.h"
#include "phiaudit_reader.h"

#include "commands.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define NDATA 20
#define CANARY_DATA_INDEX 6 /* the DATA record with the canary patient: seq 7 */
#define CANARY_SEQ 7

static char g_dir[64];
static char g_key[128], g_key2[128], g_badkey[128], g_keyring_other[128];
static char g_log[128], g_log2[128], g_rotdir[128];

typedef struct blob {
    uint8_t *p;
    size_t n;
} blob;

typedef struct fr {
    size_t off, len;
} fr;

/* ---- Helpers ------------------------------------------------------------------------------ */

static blob read_file(const char *path)
{
    blob b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc((size_t)n + 1);
    assert_non_null(b.p);
    b.n = fread(b.p, 1, (size_t)n, f);
    assert_int_equal(b.n, (size_t)n);
    fclose(f);
    return b;
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static size_t frames_of(const blob *b, fr *out, size_t cap)
{
    size_t n = 0, off = 0;
    while (off < b->n && n < cap) {
        phiaudit_header h;
        assert_int_equal(phiaudit_frame_parse(b->p + off, b->n - off, &h), 0);
        out[n].off = off;
        out[n].len = h.frame_len;
        n++;
        off += h.frame_len;
    }
    return n;
}

/* Write a log: OPEN, ndata DATA records (the CANARY_DATA_INDEX-th with the canary patient),
 * CLOSE. flush_each forces one write per record (rotation tests). */
static void write_log(const char *uri, const char *key, int ndata, int flush_each)
{
    phiaudit_config c;
    phiaudit_config_init(&c);
    c.app_name = "tamper-test";
    c.host_name = "test-host";
    c.key_file = key;
    const char *uris[1] = {uri};
    c.sink_uris = uris;
    c.sink_uri_count = 1;
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    for (int i = 0; i < ndata; i++) {
        phiaudit_event ev;
        phiaudit_event_init(&ev);
        char pat[32], cli[32];
        snprintf(pat, sizeof pat, "P-%04d", i);
        snprintf(cli, sizeof cli, "dr-%d", i % 3);
        ev.action = "CRUDE"[i % 5];
        ev.clinician_id = cli;
        ev.patient_id = i == CANARY_DATA_INDEX ? CANARY_PATIENT : pat;
        ev.duration_us = 1000;
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
        if (flush_each)
            assert_int_equal(phiaudit_logger_flush(lg), 0);
    }
    assert_int_equal(phiaudit_logger_close(&lg), 0);
}

static char *capture_path(const char *what)
{
    static char p[2][160];
    static int k;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s.out", g_dir, what);
    return p[k];
}

static char *slurp_text(const char *path)
{
    blob b = read_file(path);
    b.p[b.n] = 0;
    unlink(path);
    return (char *)b.p;
}

typedef int (*cmd_fn)(int, char **);

/* Run a command with the given NULL-terminated arguments; returns its exit status and the
 * captured stdout/stderr (malloc'd, NUL-terminated). */
static int run(cmd_fn fn, char **out, char **err, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, err);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;

    char opath[160], epath[160];
    snprintf(opath, sizeof opath, "%s", capture_path("stdout"));
    snprintf(epath, sizeof epath, "%s", capture_path("stderr"));
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(so >= 0 && se >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    int st = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    close(fo);
    close(fe);
    char *o = slurp_text(opath), *e = slurp_text(epath);
    /* Nothing that could be PHI on stderr, ever. */
    assert_null(strstr(e, CANARY_PATIENT));
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    return st;
}

/* verify with --json; returns the exit status, *json the report. */
static int verify_json(const char *key, const char *src, char **json)
{
    if (key)
        return run(phiaudit_cmd_verify, json, NULL, "verify", "--json", "--key", key, src, NULL);
    return run(phiaudit_cmd_verify, json, NULL, "verify", "--json", src, NULL);
}

static void expect_verify(const char *key, const char *src, int want, const char *needle)
{
    char *json = NULL;
    int st = verify_json(key, src, &json);
    if (st != want || (needle && !strstr(json, needle)))
        fprintf(stderr, "verify %s %s: status %d (want %d), looking for %s in:\n%s\n",
                key ? "keyed" : "keyless", src, st, want, needle ? needle : "-", json);
    assert_int_equal(st, want);
    if (needle)
        assert_non_null(strstr(json, needle));
    free(json);
}

/* decrypt must exit `want` and never print the canary. */
static void expect_no_canary(const char *src, int want)
{
    char *out = NULL;
    int st = run(phiaudit_cmd_decrypt, &out, NULL, "decrypt", "--key", g_key, src, NULL);
    assert_int_equal(st, want);
    assert_null(strstr(out, CANARY_PATIENT));
    free(out);
}

static const char *case_path(const char *name)
{
    static char p[160];
    snprintf(p, sizeof p, "%s/%s.pha", g_dir, name);
    return p;
}

/* Copy of g_log with the frames rebuilt by `edit`. */
static blob g_orig;
static fr g_fr[64];
static size_t g_nfr;

static void cat_frames(blob *out, const size_t *order, size_t n)
{
    out->n = 0;
    out->p = malloc(g_orig.n * 2 + 1024);
    for (size_t i = 0; i < n; i++) {
        memcpy(out->p + out->n, g_orig.p + g_fr[order[i]].off, g_fr[order[i]].len);
        out->n += g_fr[order[i]].len;
    }
}

/* ---- Fixtures ----------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/phiaudit-tamper-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_key, sizeof g_key, "%s/a.key", g_dir);
    snprintf(g_key2, sizeof g_key2, "%s/b.key", g_dir);
    snprintf(g_badkey, sizeof g_badkey, "%s/bad.key", g_dir);
    snprintf(g_keyring_other, sizeof g_keyring_other, "%s/ring-other", g_dir);
    snprintf(g_log, sizeof g_log, "%s/a.log", g_dir);
    snprintf(g_log2, sizeof g_log2, "%s/b.log", g_dir);
    snprintf(g_rotdir, sizeof g_rotdir, "%s/rot", g_dir);
    uint8_t id[16];
    if (phiaudit_key_generate_file(g_key, id) || phiaudit_key_generate_file(g_key2, NULL))
        return -1;
    /* Same key ID as a.key, different key bytes: a forged or corrupted key file. */
    char line[160], hex[33];
    phiaudit_hex(id, 16, hex);
    hex[32] = 0;
    snprintf(line, sizeof line, "PHIAUDIT-KEY-1 %s %s\n", hex,
             "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    int fd = open(g_badkey, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line))
        return -1;
    close(fd);
    /* A keyring directory holding only the other key. */
    if (mkdir(g_keyring_other, 0700))
        return -1;
    char p[200];
    snprintf(p, sizeof p, "%s/b.key", g_keyring_other);
    if (phiaudit_key_generate_file(p, NULL))
        return -1;

    char uri[200];
    snprintf(uri, sizeof uri, "file:%s", g_log);
    write_log(uri, g_key, NDATA, 0);
    snprintf(uri, sizeof uri, "file:%s", g_log2);
    write_log(uri, g_key, 5, 0);
    g_orig = read_file(g_log);
    g_nfr = frames_of(&g_orig, g_fr, 64);
    if (g_nfr != NDATA + 2)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(g_orig.p);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- Cases -------------------------------------------------------------------------------- */

static void test_intact(void **state)
{
    (void)state;
    expect_verify(NULL, g_log, 0, "\"verdict\":\"intact\"");
    expect_verify(g_key, g_log, 0, "\"authenticated\":22");
    /* Sanity for the canary checks below: decrypt of the intact log does print it. */
    char *out = NULL;
    assert_int_equal(run(phiaudit_cmd_decrypt, &out, NULL, "decrypt", "--key", g_key, g_log, NULL), 0);
    assert_non_null(strstr(out, CANARY_PATIENT));
    size_t lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, NDATA + 2);
    free(out);
    /* Human summary too. */
    assert_int_equal(run(phiaudit_cmd_verify, &out, NULL, "verify", g_log, NULL), 0);
    assert_non_null(strstr(out, "intact"));
    free(out);
}

static blob flipped(size_t frame, size_t byte_in_frame, uint8_t mask)
{
    blob b;
    b.p = malloc(g_orig.n);
    memcpy(b.p, g_orig.p, g_orig.n);
    b.n = g_orig.n;
    b.p[g_fr[frame].off + byte_in_frame] ^= mask;
    return b;
}

static void test_flip_ciphertext(void **state)
{
    (void)state;
    blob b = flipped(CANARY_SEQ, PHIAUDIT_HEADER_LEN + 40, 0x04);
    write_file(case_path("flip-ct"), b.p, b.n);
    /* The link covers header and tag only (FORMAT.md §5): keyless cannot see it. */
    expect_verify(NULL, case_path("flip-ct"), 0, NULL);
    expect_verify(g_key, case_path("flip-ct"), 1, "\"modified\":1");
    expect_no_canary(case_path("flip-ct"), 1);
    free(b.p);
}

static void test_flip_tag(void **state)
{
    (void)state;
    blob b = flipped(CANARY_SEQ, g_fr[CANARY_SEQ].len - 3, 0x80);
    write_file(case_path("flip-tag"), b.p, b.n);
    expect_verify(NULL, case_path("flip-tag"), 1, "\"chain_breaks\":1");
    expect_verify(g_key, case_path("flip-tag"), 1, "\"modified\":1");
    expect_no_canary(case_path("flip-tag"), 1);
    free(b.p);
}

static void test_flip_header(void **state)
{
    (void)state;
    /* time field (offset 52..59) of the canary record */
    blob b = flipped(CANARY_SEQ, 58, 0x01);
    write_file(case_path("flip-time"), b.p, b.n);
    expect_verify(NULL, case_path("flip-time"), 1, "\"chain_breaks\":1");
    expect_verify(g_key, case_path("flip-time"), 1, "\"modified\":1");
    expect_no_canary(case_path("flip-time"), 1);
    free(b.p);
    /* sequence number (offset 44..51) */
    b = flipped(CANARY_SEQ, 51, 0x10);
    write_file(case_path("flip-seq"), b.p, b.n);
    expect_verify(NULL, case_path("flip-seq"), 1, NULL);
    expect_verify(g_key, case_path("flip-seq"), 1, NULL);
    expect_no_canary(case_path("flip-seq"), 1);
    free(b.p);
    /* stream ID (offset 28..43): the record leaves its stream */
    b = flipped(CANARY_SEQ, 30, 0x01);
    write_file(case_path("flip-stream"), b.p, b.n);
    expect_verify(NULL, case_path("flip-stream"), 1, "\"missing_ranges\":[[7,7]]");
    expect_verify(g_key, case_path("flip-stream"), 1, "\"modified\":1");
    free(b.p);
    /* record type DATA -> CLOSE (byte 6) */
    b = flipped(CANARY_SEQ, 6, 0x01);
    write_file(case_path("flip-type"), b.p, b.n);
    expect_verify(NULL, case_path("flip-type"), 1, NULL);
    expect_no_canary(case_path("flip-type"), 1);
    free(b.p);
    /* length field (byte 11): the frame no longer lines up with its neighbours */
    b = flipped(CANARY_SEQ, 11, 0x08);
    write_file(case_path("flip-len"), b.p, b.n);
    expect_verify(NULL, case_path("flip-len"), 1, NULL);
    expect_verify(g_key, case_path("flip-len"), 1, NULL);
    expect_no_canary(case_path("flip-len"), 1);
    free(b.p);
    /* magic (byte 0): damaged bytes in the middle of the file */
    b = flipped(CANARY_SEQ, 0, 0x20);
    write_file(case_path("flip-magic"), b.p, b.n);
    expect_verify(NULL, case_path("flip-magic"), 1, "\"damaged_range_count\":1");
    expect_no_canary(case_path("flip-magic"), 1);
    free(b.p);
}

static void test_delete_middle(void **state)
{
    (void)state;
    size_t order[64], n = 0;
    for (size_t i = 0; i < g_nfr; i++)
        if (i != 10)
            order[n++] = i;
    blob b;
    cat_frames(&b, order, n);
    write_file(case_path("delete"), b.p, b.n);
    expect_verify(NULL, case_path("delete"), 1, "\"missing_ranges\":[[10,10]]");
    expect_verify(g_key, case_path("delete"), 1, "\"missing_records\":1");
    free(b.p);
    /* a range of records */
    n = 0;
    for (size_t i = 0; i < g_nfr; i++)
        if (i < 4 || i > 12)
            order[n++] = i;
    cat_frames(&b, order, n);
    write_file(case_path("delete-range"), b.p, b.n);
    expect_verify(NULL, case_path("delete-range"), 1, "\"missing_ranges\":[[4,12]]");
    free(b.p);
}

static void test_swap(void **state)
{
    (void)state;
    size_t order[64];
    for (size_t i = 0; i < g_nfr; i++)
        order[i] = i;
    order[8] = 9;
    order[9] = 8;
    blob b;
    cat_frames(&b, order, g_nfr);
    write_file(case_path("swap"), b.p, b.n);
    /* The late record fills the gap (so nothing is missing) but is out of order. */
    expect_verify(NULL, case_path("swap"), 1, "\"reordered\":1,\"chain_breaks\":0");
    expect_verify(g_key, case_path("swap"), 1, "\"missing_records\":0");
    free(b.p);
}

static void test_cut_tail(void **state)
{
    (void)state;
    size_t order[64];
    for (size_t i = 0; i < g_nfr; i++)
        order[i] = i;
    blob b;
    cat_frames(&b, order, g_nfr - 3);
    write_file(case_path("cut"), b.p, b.n);
    expect_verify(NULL, case_path("cut"), 2, "\"missing_close\":true");
    expect_verify(g_key, case_path("cut"), 2, "\"verdict\":\"incomplete\"");
    free(b.p);
}

static void test_duplicate(void **state)
{
    (void)state;
    size_t order[64], n = 0;
    for (size_t i = 0; i < g_nfr; i++) {
        order[n++] = i;
        if (i == 5)
            order[n++] = i;
    }
    blob b;
    cat_frames(&b, order, n);
    write_file(case_path("dup"), b.p, b.n);
    expect_verify(NULL, case_path("dup"), 0, "\"duplicates\":1");
    expect_verify(g_key, case_path("dup"), 0, "\"duplicates\":1");
    /* printed once */
    char *out = NULL;
    assert_int_equal(run(phiaudit_cmd_decrypt, &out, NULL, "decrypt", "--key", g_key,
                         case_path("dup"), NULL), 0);
    size_t lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, g_nfr);
    free(out);
    free(b.p);
    /* A copy of an old record far from its place is out of order: tampered. */
    n = 0;
    for (size_t i = 0; i < g_nfr; i++)
        order[n++] = i;
    order[n - 1] = 1;
    order[n++] = g_nfr - 1;
    cat_frames(&b, order, n);
    write_file(case_path("replay"), b.p, b.n);
    expect_verify(NULL, case_path("replay"), 1, "\"reordered\":1");
    free(b.p);
}

static void test_splice(void **state)
{
    (void)state;
    /* A record of another stream (b.log: same key, other logger) replacing one of ours. */
    blob other = read_file(g_log2);
    fr ofr[16];
    size_t on = frames_of(&other, ofr, 16);
    assert_true(on >= 4);
    blob b;
    b.p = malloc(g_orig.n + other.n);
    b.n = 0;
    for (size_t i = 0; i < g_nfr; i++) {
        if (i == 10) { /* our seq 10 replaced by the other stream's seq 3 */
            memcpy(b.p + b.n, other.p + ofr[3].off, ofr[3].len);
            b.n += ofr[3].len;
            continue;
        }
        memcpy(b.p + b.n, g_orig.p + g_fr[i].off, g_fr[i].len);
        b.n += g_fr[i].len;
    }
    write_file(case_path("splice-replace"), b.p, b.n);
    expect_verify(NULL, case_path("splice-replace"), 1, "\"missing_ranges\":[[10,10]]");
    expect_verify(g_key, case_path("splice-replace"), 1, NULL);
    free(b.p);

    /* The other stream's record with its stream ID rewritten to ours: a conflict keyless
     * (same seq, other bytes), an authentication failure with the key. */
    b.p = malloc(g_orig.n + other.n);
    b.n = 0;
    for (size_t i = 0; i < g_nfr; i++) {
        memcpy(b.p + b.n, g_orig.p + g_fr[i].off, g_fr[i].len);
        b.n += g_fr[i].len;
        if (i == 3) {
            memcpy(b.p + b.n, other.p + ofr[3].off, ofr[3].len);
            memcpy(b.p + b.n + 28, g_orig.p + 28, 16); /* our stream ID */
            b.n += ofr[3].len;
        }
    }
    write_file(case_path("splice-restream"), b.p, b.n);
    expect_verify(NULL, case_path("splice-restream"), 1, "\"conflicts\":1");
    expect_verify(g_key, case_path("splice-restream"), 1, "\"modified\":1");
    free(b.p);

    /* A record from another file of the same log set, inserted later: its seq goes back. */
    size_t order[64], n = 0;
    for (size_t i = 0; i < g_nfr; i++) {
        order[n++] = i;
        if (i == 19)
            order[n++] = 2;
    }
    cat_frames(&b, order, n);
    write_file(case_path("splice-old"), b.p, b.n);
    expect_verify(NULL, case_path("splice-old"), 1, "\"reordered\":1");
    free(b.p);

    /* A genuine record of an unrelated log appended in the middle, same key: it forms a
     * stream fragment whose beginning and end are not in the input. That is what a stream
     * whose older file was not supplied and which crashed looks like, so the verdict is
     * incomplete (FORMAT.md §9.1, known limitation); with a keyring that lacks its key,
     * an error. */
    b.p = malloc(g_orig.n + other.n);
    b.n = 0;
    for (size_t i = 0; i < g_nfr; i++) {
        memcpy(b.p + b.n, g_orig.p + g_fr[i].off, g_fr[i].len);
        b.n += g_fr[i].len;
        if (i == 10) {
            memcpy(b.p + b.n, other.p + ofr[3].off, ofr[3].len);
            b.n += ofr[3].len;
        }
    }
    write_file(case_path("splice-foreign"), b.p, b.n);
    expect_verify(NULL, case_path("splice-foreign"), 2, "\"missing_predecessor\":true");
    free(b.p);
    free(other.p);
}

static void test_torn(void **state)
{
    (void)state;
    /* The file ends inside its last record (a crash during the write). */
    write_file(case_path("torn"), g_orig.p, g_orig.n - 50);
    expect_verify(NULL, case_path("torn"), 2, "\"torn_tail\":{");
    expect_verify(g_key, case_path("torn"), 2, "\"missing_close\":true");
    /* Torn inside the header of the last record. */
    write_file(case_path("torn-hdr"), g_orig.p, g_fr[g_nfr - 1].off + 7);
    expect_verify(g_key, case_path("torn-hdr"), 2, "\"bytes\":7}");
    /* Garbage after the last record is not a torn frame: damage. */
    blob b;
    b.p = malloc(g_orig.n + 16);
    memcpy(b.p, g_orig.p, g_orig.n);
    memcpy(b.p + g_orig.n, "garbage-garbage!", 16);
    b.n = g_orig.n + 16;
    write_file(case_path("trailing-garbage"), b.p, b.n);
    expect_verify(NULL, case_path("trailing-garbage"), 1, "\"damaged_bytes\":16");
    free(b.p);
    /* A torn record in the middle, followed by whole records: damage, not a crash. */
    size_t cut = g_fr[10].off + 60;
    b.p = malloc(g_orig.n);
    memcpy(b.p, g_orig.p, cut);
    memcpy(b.p + cut, g_orig.p + g_fr[11].off, g_orig.n - g_fr[11].off);
    b.n = cut + g_orig.n - g_fr[11].off;
    write_file(case_path("torn-middle"), b.p, b.n);
    expect_verify(NULL, case_path("torn-middle"), 1, "\"damaged_bytes\":60");
    free(b.p);
}

static void test_wrong_key(void **state)
{
    (void)state;
    /* A different key (different key ID): records are under an unknown key -> 3. */
    char *out = NULL;
    int st = run(phiaudit_cmd_verify, &out, NULL, "verify", "--json", "--key", g_key2, g_log,
                 NULL);
    assert_int_equal(st, 3);
    assert_non_null(strstr(out, "\"unknown_key\":22"));
    free(out);
    st = run(phiaudit_cmd_decrypt, &out, NULL, "decrypt", "--key", g_key2, g_log, NULL);
    assert_int_equal(st, 3);
    assert_string_equal(out, "");
    free(out);
    /* The right key ID with the wrong key bytes: every tag fails -> 1, flagged. */
    st = run(phiaudit_cmd_verify, &out, NULL, "verify", "--json", "--key", g_badkey, g_log, NULL);
    assert_int_equal(st, 1);
    assert_non_null(strstr(out, "\"all_auth_failed\":true"));
    free(out);
    st = run(phiaudit_cmd_decrypt, &out, NULL, "decrypt", "--key", g_badkey, g_log, NULL);
    assert_int_equal(st, 1);
    assert_string_equal(out, "");
    free(out);
}

static void test_keyring(void **state)
{
    (void)state;
    /* Keyring without the log's key -> 3. */
    char *out = NULL;
    int st = run(phiaudit_cmd_verify, &out, NULL, "verify", "--json", "--keyring",
                 g_keyring_other, g_log, NULL);
    assert_int_equal(st, 3);
    assert_non_null(strstr(out, "\"unknown_key\":22"));
    free(out);
    /* One log with two keys (two loggers), keyring holding one of them -> 3; both -> 0. */
    char mixed[160], uri[200];
    snprintf(mixed, sizeof mixed, "%s/mixed.log", g_dir);
    snprintf(uri, sizeof uri, "file:%s", mixed);
    write_log(uri, g_key, 3, 0);
    write_log(uri, g_key2, 3, 0);
    st = run(phiaudit_cmd_verify, &out, NULL, "verify", "--json", "--key", g_key, mixed, NULL);
    assert_int_equal(st, 3);
    assert_non_null(strstr(out, "\"unknown_key\":5"));
    free(out);
    st = run(phiaudit_cmd_verify, NULL, NULL, "verify", "--key", g_key, "--key", g_key2, mixed,
             NULL);
    assert_int_equal(st, 0);
    /* With the keyring dir holding both. */
    char ring[160], p[200];
    snprintf(ring, sizeof ring, "%s/ring-both", g_dir);
    assert_int_equal(mkdir(ring, 0700), 0);
    blob k = read_file(g_key);
    snprintf(p, sizeof p, "%s/a.key", ring);
    write_file(p, k.p, k.n);
    free(k.p);
    k = read_file(g_key2);
    snprintf(p, sizeof p, "%s/b.key", ring);
    write_file(p, k.p, k.n);
    free(k.p);
    st = run(phiaudit_cmd_verify, NULL, NULL, "verify", "--keyring", ring, mixed, NULL);
    assert_int_equal(st, 0);
    /* Tampering outranks the key error. */
    blob b = flipped(CANARY_SEQ, g_fr[CANARY_SEQ].len - 1, 1);
    write_file(case_path("tamper-and-unknown"), b.p, b.n);
    free(b.p);
    st = run(phiaudit_cmd_verify, NULL, NULL, "verify", "--key", g_key2,
             case_path("tamper-and-unknown"), NULL);
    assert_int_equal(st, 1);
}

static void test_rotation(void **state)
{
    (void)state;
    assert_int_equal(mkdir(g_rotdir, 0700), 0);
    char uri[200];
    snprintf(uri, sizeof uri, "file:%s/app.log?max_bytes=2000", g_rotdir);
    write_log(uri, g_key, 24, 1);
    char **names = NULL;
    size_t n = 0;
    /* List the directory: rotated files sort by time; app.log is the newest. */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "ls '%s' | sort > '%s/ls.txt'", g_rotdir, g_dir);
    assert_int_equal(system(cmd), 0);
    char lsf[200];
    snprintf(lsf, sizeof lsf, "%s/ls.txt", g_dir);
    char *txt = slurp_text(lsf);
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        names = realloc(names, (n + 1) * sizeof *names);
        names[n++] = line;
    }
    assert_true(n >= 4); /* app.log + at least 3 rotated files */
    expect_verify(NULL, g_rotdir, 0, NULL);
    expect_verify(g_key, g_rotdir, 0, "\"authenticated\":26");
    /* Files given one by one, in an odd order: same result. */
    char a0[300], a1[300];
    snprintf(a0, sizeof a0, "%s/%s", g_rotdir, names[0]); /* "app.log" sorts first */
    snprintf(a1, sizeof a1, "%s/%s", g_rotdir, names[1]);
    assert_int_equal(run(phiaudit_cmd_verify, NULL, NULL, "verify", a0, g_rotdir, a1, NULL), 0);

    /* The oldest rotated file missing: the stream's first records are not there -> 2. */
    char moved[300];
    snprintf(moved, sizeof moved, "%s/oldest.moved", g_dir);
    assert_int_equal(rename(a1, moved), 0);
    expect_verify(NULL, g_rotdir, 2, "\"missing_predecessor\":true");
    assert_int_equal(rename(moved, a1), 0);

    /* A middle rotated file missing -> records missing between present ones -> 1. */
    char mid[300];
    snprintf(mid, sizeof mid, "%s/%s", g_rotdir, names[2]);
    assert_int_equal(rename(mid, moved), 0);
    expect_verify(NULL, g_rotdir, 1, "\"missing_range_count\":1");
    expect_verify(g_key, g_rotdir, 1, "\"verdict\":\"tampered\"");
    assert_int_equal(rename(moved, mid), 0);

    /* A stray non-log file in the directory -> 3. */
    char stray[300];
    snprintf(stray, sizeof stray, "%s/notes.txt", g_rotdir);
    write_file(stray, "hello\n", 6);
    expect_verify(NULL, g_rotdir, 3, "\"error\":\"not a phiaudit log\"");
    unlink(stray);
    /* dotfiles are skipped */
    snprintf(stray, sizeof stray, "%s/.lock", g_rotdir);
    write_file(stray, "x", 1);
    expect_verify(NULL, g_rotdir, 0, NULL);
    unlink(stray);
    free(names);
    free(txt);
}

static void test_usage(void **state)
{
    (void)state;
    char *err = NULL;
    assert_int_equal(run(phiaudit_cmd_verify, NULL, &err, "verify", NULL), 3);
    assert_non_null(strstr(err, "missing SOURCE"));
    free(err);
    assert_int_equal(run(phiaudit_cmd_verify, NULL, &err, "verify", "/nonexistent/x", NULL), 3);
    assert_non_null(strstr(err, "no such file"));
    free(err);
    assert_int_equal(run(phiaudit_cmd_decrypt, NULL, &err, "decrypt", g_log, NULL), 3);
    assert_non_null(strstr(err, "--key"));
    free(err);
    /* Query values are never echoed, even when invalid. */
    assert_int_equal(run(phiaudit_cmd_query, NULL, &err, "query", "--key", g_key, "--patient",
                         "BAD\001" CANARY_PATIENT, g_log, NULL), 3);
    free(err);
    assert_int_equal(run(phiaudit_cmd_query, NULL, &err, "query", "--key", g_key, "--since",
                         CANARY_PATIENT, g_log, NULL), 3);
    free(err);
    char *out = NULL;
    assert_int_equal(run(phiaudit_cmd_verify, &out, NULL, "verify", "--help", NULL), 0);
    assert_non_null(strstr(out, "EXIT STATUS"));
    free(out);
    assert_int_equal(run(phiaudit_cmd_query, &out, NULL, "query", "--help", NULL), 0);
    assert_non_null(strstr(out, "--patient"));
    free(out);
    /* Empty input: no records -> 3. */
    write_file(case_path("empty"), "", 0);
    assert_int_equal(run(phiaudit_cmd_verify, NULL, NULL, "verify", case_path("empty"), NULL), 3);
}

static void test_query(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(run(phiaudit_cmd_query, &out, NULL, "query", "--key", g_key, "--patient",
                         CANARY_PATIENT, g_log, NULL), 0);
    size_t lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 1);
    assert_non_null(strstr(out, "\"seq\":7,"));
    free(out);
    /* dr-0 did i = 0, 3, 6, ..., 18: 7 records; of those action R (i % 5 == 1): i = 6 */
    assert_int_equal(run(phiaudit_cmd_query, &out, NULL, "query", "--key", g_key, "--clinician",
                         "dr-0", g_log, NULL), 0);
    lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 7);
    free(out);
    assert_int_equal(run(phiaudit_cmd_query, &out, NULL, "query", "--key", g_key, "--clinician",
                         "dr-0", "--action", "R", g_log, NULL), 0);
    assert_non_null(strstr(out, "\"seq\":7,"));
    lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 1);
    free(out);
    /* Time window that excludes everything / includes everything. */
    assert_int_equal(run(phiaudit_cmd_query, &out, NULL, "query", "--key", g_key, "--until",
                         "2000-01-01", g_log, NULL), 0);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(run(phiaudit_cmd_query, &out, NULL, "query", "--key", g_key, "--since",
                         "2000-01-01T00:00:00Z", g_log, NULL), 0);
    lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, NDATA);
    free(out);
    /* A damaged canary record is never returned by a query either. */
    blob b = flipped(CANARY_SEQ, PHIAUDIT_HEADER_LEN + 3, 0x01);
    write_file(case_path("query-damaged"), b.p, b.n);
    free(b.p);
    assert_int_equal(run(phiaudit_cmd_query, &out, NULL, "query", "--key", g_key, "--patient",
                         CANARY_PATIENT, case_path("query-damaged"), NULL), 1);
    assert_string_equal(out, "");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intact),      cmocka_unit_test(test_flip_ciphertext),
        cmocka_unit_test(test_flip_tag),    cmocka_unit_test(test_flip_header),
        cmocka_unit_test(test_delete_middle), cmocka_unit_test(test_swap),
        cmocka_unit_test(test_cut_tail),    cmocka_unit_test(test_duplicate),
        cmocka_unit_test(test_splice),      cmocka_unit_test(test_torn),
        cmocka_unit_test(test_wrong_key),   cmocka_unit_test(test_keyring),
        cmocka_unit_test(test_rotation),    cmocka_unit_test(test_usage),
        cmocka_unit_test(test_query),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
