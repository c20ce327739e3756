/* Tests for the append-only file sink (src/sink_file.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct fx {
    char dir[64];
    char path[128];
} fx;

/* ---- Helpers ------------------------------------------------------------------------------ */

/* A structurally valid frame of `len` bytes (>= 128) whose body starts with `id` (BE u32);
 * the parser checks structure only, so no real sealing is needed. */
static void make_frame(uint8_t *buf, uint32_t len, uint32_t id)
{
    memset(buf, 0, len);
    memcpy(buf, "PHA1", 4);
    buf[4] = PHIAUDIT_FORMAT_VERSION;
    buf[5] = PHIAUDIT_SUITE_AES256GCM_HKDF_SHA256;
    buf[6] = PHIAUDIT_RECORD_DATA;
    buf[7] = 0;
    phiaudit_put_u32(buf + 8, len);
    phiaudit_put_u64(buf + 44, id); /* seq */
    phiaudit_put_u32(buf + PHIAUDIT_HEADER_LEN, id);
    for (uint32_t i = PHIAUDIT_HEADER_LEN + 4; i < len; i++) {
        buf[i] = (uint8_t)(id * 31u + i);
    }
}

/* Append frames of the given sizes (ids id0, id0+1, ...) to a growable buffer. */
typedef struct bytes {
    uint8_t *p;
    size_t len;
} bytes;

static void bytes_add_frame(bytes *b, uint32_t len, uint32_t id)
{
    b->p = realloc(b->p, b->len + len);
    assert_non_null(b->p);
    make_frame(b->p + b->len, len, id);
    b->len += len;
}

static void bytes_add_raw(bytes *b, const void *p, size_t n)
{
    b->p = realloc(b->p, b->len + n + 1);
    assert_non_null(b->p);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static int sink_write(phiaudit_sink *s, const uint8_t *data, size_t len)
{
    phiaudit_batch batch;
    memset(&batch, 0, sizeof batch);
    batch.data = data;
    batch.len = len;
    return s->ops->write(s->state, &batch);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    uint8_t *p = malloc(cap);
    size_t r;
    while (p != NULL && (r = fread(p + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            p = realloc(p, cap);
        }
    }
    fclose(f);
    *len = n;
    return p;
}

static void write_raw(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
}

static void append_raw(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
}

static void assert_file_equals(const char *path, const uint8_t *want, size_t want_len)
{
    size_t n = 0;
    uint8_t *got = read_all(path, &n);
    assert_non_null(got);
    assert_int_equal(n, want_len);
    if (want_len > 0) {
        assert_memory_equal(got, want, want_len);
    }
    free(got);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted full paths of files in fx->dir named "<basename(path)>.*" (rotated files). */
static size_t list_rotated(const fx *f, char ***out)
{
    const char *base = strrchr(f->path, '/') + 1;
    size_t blen = strlen(base);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, base, blen) == 0 && e->d_name[blen] == '.') {
            names = realloc(names, (n + 1) * sizeof *names);
            assert_non_null(names);
            size_t sz = strlen(f->dir) + strlen(e->d_name) + 2;
            names[n] = malloc(sz);
            assert_non_null(names[n]);
            snprintf(names[n], sz, "%s/%s", f->dir, e->d_name);
            n++;
        }
    }
    closedir(d);
    if (n > 1) {
        qsort(names, n, sizeof *names, cmp_str);
    }
    *out = names;
    return n;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

/* Rotated-name shape: PATH.YYYYMMDDTHHMMSS.ffffffZ optionally followed by -N. */
static int rotated_name_ok(const fx *f, const char *full)
{
    size_t plen = strlen(f->path);
    const char *s = full + plen;
    if (strncmp(full, f->path, plen) != 0 || s[0] != '.') {
        return 0;
    }
    s++;
    /* YYYYMMDD T HHMMSS . ffffff Z */
    const char *want = "ddddddddTdddddd.ddddddZ";
    for (size_t i = 0; want[i] != '\0'; i++) {
        if (want[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != want[i]) {
            return 0;
        }
    }
    s += strlen(want);
    if (*s == '\0') {
        return 1;
    }
    if (*s != '-' || s[1] < '1' || s[1] > '9') {
        return 0;
    }
    for (s++; *s; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
    }
    return 1;
}

/* Walk whole frames; return the count, or -1 if the bytes are not exactly whole frames.
 * If ids != NULL, records each frame's id (up to cap). */
static long count_frames(const uint8_t *p, size_t n, uint32_t *ids, size_t cap)
{
    size_t off = 0;
    long count = 0;
    while (off < n) {
        phiaudit_header h;
        if (phiaudit_frame_parse(p + off, n - off, &h) != 0) {
            return -1;
        }
        if (ids != NULL && (size_t)count < cap) {
            ids[count] = phiaudit_get_u32(p + off + PHIAUDIT_HEADER_LEN);
        }
        off += h.frame_len;
        count++;
    }
    return count;
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (d == NULL) {
        return -1;
    }
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

/* ---- Fixture ------------------------------------------------------------------------------- */

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/phiaudit-fs-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/audit.log", f->dir);
    *state = f;
    return 0;
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            rm_tree(p);
        } else {
            (void)unlink(p);
        }
    }
    closedir(d);
    (void)rmdir(dir);
}

static int teardown(void **state)
{
    fx *f = *state;
    rm_tree(f->dir);
    free(f);
    return 0;
}

static phiaudit_file_options opts_max(uint64_t max_bytes)
{
    phiaudit_file_options o;
    memset(&o, 0, sizeof o);
    o.version = PHIAUDIT_FILE_OPTIONS_VERSION;
    o.max_bytes = max_bytes;
    return o;
}

/* ---- Tests ------------------------------------------------------------------------------------ */

static void test_create_mode_0600(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = NULL;
    mode_t old = umask(022);

    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    umask(old);
    assert_non_null(s);
    assert_int_equal(phiaudit_sink_file_torn_bytes(s), 0);
    struct stat st;
    assert_int_equal(lstat(f->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(s->ops->sync(s->state), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);
    assert_null(s);
}

static void test_bad_args(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = (phiaudit_sink *)(uintptr_t)1;
    phiaudit_file_options o = opts_max(0);

    assert_int_equal(phiaudit_sink_file_open(NULL, f->path, NULL), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_sink_file_open(&s, NULL, NULL), PHIAUDIT_E_INVALID);
    assert_null(s);
    assert_int_equal(phiaudit_sink_file_open(&s, "", NULL), PHIAUDIT_E_INVALID);
    o.version = PHIAUDIT_FILE_OPTIONS_VERSION + 1;
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, &o), PHIAUDIT_E_VERSION);
    o.version = 0;
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, &o), PHIAUDIT_E_VERSION);
    assert_null(s);
    assert_int_equal(phiaudit_sink_file_torn_bytes(NULL), 0);
    assert_int_equal(access(f->path, F_OK), -1); /* nothing created on refusal */

    /* Missing directory. */
    char p[256];
    snprintf(p, sizeof p, "%s/nope/audit.log", f->dir);
    assert_int_equal(phiaudit_sink_file_open(&s, p, NULL), PHIAUDIT_E_IO);

    /* The sink never writes bytes that are not whole frames. */
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    uint8_t junk[200];
    memset(junk, 'x', sizeof junk);
    assert_int_equal(sink_write(s, junk, sizeof junk), PHIAUDIT_E_INVALID);
    uint8_t fr[300];
    make_frame(fr, 300, 1);
    assert_int_equal(sink_write(s, fr, 299), PHIAUDIT_E_INVALID); /* cut frame */
    assert_int_equal(sink_write(s, fr, 0), 0);
    assert_int_equal(s->ops->write(s->state, NULL), PHIAUDIT_E_INVALID);
    assert_int_equal(file_size(f->path), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);
}

static void test_refuses_symlink(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = NULL;
    char target[256];
    bytes b = {0};

    snprintf(target, sizeof target, "%s/target", f->dir);
    bytes_add_frame(&b, 200, 1);
    write_raw(target, b.p, b.len);
    assert_int_equal(symlink(target, f->path), 0);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), PHIAUDIT_E_IO);
    assert_null(s);
    assert_file_equals(target, b.p, b.len);

    /* Dangling symlink: the target must not be created through it. */
    char dangling[256];
    assert_int_equal(unlink(f->path), 0);
    snprintf(dangling, sizeof dangling, "%s/created-through-link", f->dir);
    assert_int_equal(symlink(dangling, f->path), 0);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), PHIAUDIT_E_IO);
    assert_int_equal(access(dangling, F_OK), -1);
    free(b.p);
}

static void test_refuses_fifo_and_dir(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = NULL;

    /* A FIFO must be refused without blocking in open(). */
    assert_int_equal(mkfifo(f->path, 0600), 0);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), PHIAUDIT_E_IO);
    assert_null(s);
    assert_int_equal(unlink(f->path), 0);

    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), PHIAUDIT_E_IO);
    assert_null(s);
    assert_int_equal(rmdir(f->path), 0);

    char **names;
    assert_int_equal(list_rotated(f, &names), 0);
    free(names);
}

static void test_refuses_foreign_file(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = NULL;
    static const char text[] = "Mar 14 10:00:01 host sshd[1]: not an audit log\n";

    write_raw(f->path, text, sizeof text - 1);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), PHIAUDIT_E_FORMAT);
    assert_null(s);
    assert_file_equals(f->path, (const uint8_t *)text, sizeof text - 1);

    /* Short garbage (less than a header) is still garbage, not a torn header. */
    write_raw(f->path, "xyz", 3);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), PHIAUDIT_E_FORMAT);
    assert_file_equals(f->path, (const uint8_t *)"xyz", 3);

    /* A frame of an unknown version is not ours to append to. */
    uint8_t fr[200];
    make_frame(fr, sizeof fr, 1);
    fr[4] = 2;
    write_raw(f->path, fr, sizeof fr);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), PHIAUDIT_E_FORMAT);
    assert_file_equals(f->path, fr, sizeof fr);

    char **names;
    assert_int_equal(list_rotated(f, &names), 0); /* never rotated away either */
    free(names);
}

static void test_append_two_batches(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = NULL;
    bytes b1 = {0}, b2 = {0}, all = {0};

    bytes_add_frame(&b1, 200, 1);
    bytes_add_frame(&b1, 300, 2);
    bytes_add_frame(&b2, PHIAUDIT_MIN_FRAME_LEN, 3);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    assert_int_equal(sink_write(s, b1.p, b1.len), 0);
    assert_int_equal(sink_write(s, b2.p, b2.len), 0);
    assert_int_equal(s->ops->sync(s->state), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);
    bytes_add_raw(&all, b1.p, b1.len);
    bytes_add_raw(&all, b2.p, b2.len);
    assert_file_equals(f->path, all.p, all.len);

    /* Reopening a clean log continues it: no rotation, nothing torn. */
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    assert_int_equal(phiaudit_sink_file_torn_bytes(s), 0);
    assert_int_equal(sink_write(s, b2.p, b2.len), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);
    bytes_add_raw(&all, b2.p, b2.len);
    assert_file_equals(f->path, all.p, all.len);
    char **names;
    assert_int_equal(list_rotated(f, &names), 0);
    free(names);
    free(b1.p);
    free(b2.p);
    free(all.p);
}

/* Write `prefix`, open the sink, expect `torn` torn bytes, the old content rotated intact and
 * a clean PATH that receives the next batch. */
static void check_torn(fx *f, const uint8_t *prefix, size_t len, uint64_t torn)
{
    phiaudit_sink *s = NULL;
    char **names;
    bytes nb = {0};

    write_raw(f->path, prefix, len);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    assert_int_equal(phiaudit_sink_file_torn_bytes(s), torn);
    assert_int_equal(list_rotated(f, &names), 1);
    assert_true(rotated_name_ok(f, names[0]));
    assert_file_equals(names[0], prefix, len);
    assert_int_equal(file_size(f->path), 0);

    bytes_add_frame(&nb, 256, 99);
    assert_int_equal(sink_write(s, nb.p, nb.len), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);
    assert_file_equals(f->path, nb.p, nb.len);
    assert_file_equals(names[0], prefix, len); /* untouched */
    assert_int_equal(unlink(names[0]), 0);
    assert_int_equal(unlink(f->path), 0);
    free_names(names, 1);
    free(nb.p);
}

static void test_torn_tail(void **state)
{
    fx *f = *state;
    bytes b = {0};

    /* One and a half frames. */
    bytes_add_frame(&b, 300, 1);
    bytes_add_frame(&b, 400, 2);
    check_torn(f, b.p, 300 + 200, 200);
    /* Torn first frame: a phiaudit log that died during its first write. */
    check_torn(f, b.p, 150, 150);
    /* Torn after several whole frames spanning more than one scan chunk. */
    bytes big = {0};
    for (uint32_t i = 0; i < 40; i++) {
        bytes_add_frame(&big, PHIAUDIT_MAX_FRAME_LEN - i, 100 + i); /* > 2 MiB */
    }
    size_t whole = big.len;
    bytes_add_frame(&big, 5000, 200);
    check_torn(f, big.p, whole + 4321, 4321);
    free(big.p);
    free(b.p);
}

static void test_torn_header(void **state)
{
    fx *f = *state;
    bytes b = {0};

    bytes_add_frame(&b, 300, 1);
    bytes_add_frame(&b, 400, 2);
    check_torn(f, b.p, 300 + 7, 7);   /* < 12 bytes: no length yet */
    check_torn(f, b.p, 300 + 1, 1);
    check_torn(f, b.p, 300 + 12, 12); /* exactly the length, nothing more */
    check_torn(f, b.p, 300 + 50, 50); /* inside the rest of the header */
    check_torn(f, b.p, 3, 3);         /* "PHA" at offset 0 */
    free(b.p);
}

static void test_garbage_after_frames(void **state)
{
    fx *f = *state;
    bytes b = {0};

    /* E.g. zero-filled blocks after a power loss: a phiaudit log with a bad tail. It is
     * rotated away intact like a torn tail, never appended after. */
    bytes_add_frame(&b, 300, 1);
    uint8_t zeros[4096] = {0};
    bytes_add_raw(&b, zeros, sizeof zeros);
    check_torn(f, b.p, b.len, sizeof zeros);
    free(b.p);
}

static void test_rotation_chain(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = NULL;
    phiaudit_file_options o = opts_max(1000);
    bytes all = {0};

    assert_int_equal(phiaudit_sink_file_open(&s, f->path, &o), 0);
    for (uint32_t i = 0; i < 20; i++) {
        bytes one = {0};
        bytes_add_frame(&one, 300, i);
        assert_int_equal(sink_write(s, one.p, one.len), 0);
        bytes_add_raw(&all, one.p, one.len);
        free(one.p);
    }
    /* A batch that overshoots the limit is never split. */
    bytes two = {0};
    bytes_add_frame(&two, 900, 20);
    bytes_add_frame(&two, 900, 21);
    assert_int_equal(sink_write(s, two.p, two.len), 0);
    bytes_add_raw(&all, two.p, two.len);
    assert_int_equal(s->ops->sync(s->state), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);

    char **names;
    size_t n = list_rotated(f, &names);
    assert_int_equal(n, 6); /* 5 x (4 x 300) + 1 x 1800 */
    bytes cat = {0};
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *p = read_all(names[i], &len);
        assert_non_null(p);
        assert_true(rotated_name_ok(f, names[i]));
        assert_true(len >= 1000);
        assert_true(count_frames(p, len, NULL, 0) > 0);
        struct stat st;
        assert_int_equal(stat(names[i], &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        bytes_add_raw(&cat, p, len);
        free(p);
    }
    assert_int_equal(file_size(f->path), 0);
    /* Sorted by name, the rotated files are the written stream in order: nothing lost,
     * nothing duplicated, nothing deleted. */
    assert_int_equal(cat.len, all.len);
    assert_memory_equal(cat.p, all.p, all.len);
    free_names(names, n);
    free(cat.p);
    free(two.p);
    free(all.p);
}

/* Exit codes of the child in test_failed_write_truncates. */
static int failing_write_child(const char *path)
{
    phiaudit_sink *s = NULL;
    bytes b1 = {0}, b2 = {0};
    struct rlimit old, lim;

    signal(SIGXFSZ, SIG_IGN);
    if (phiaudit_sink_file_open(&s, path, NULL) != 0) {
        return 10;
    }
    for (uint32_t i = 0; i < 2; i++) {
        b1.p = realloc(b1.p, b1.len + 500);
        make_frame(b1.p + b1.len, 500, i);
        b1.len += 500;
        b2.p = realloc(b2.p, b2.len + 500);
        make_frame(b2.p + b2.len, 500, 10 + i);
        b2.len += 500;
    }
    if (sink_write(s, b1.p, b1.len) != 0) {
        return 11;
    }
    if (getrlimit(RLIMIT_FSIZE, &old) != 0) {
        return 12;
    }
    lim = old;
    lim.rlim_cur = 1500; /* the second batch fails after 500 of its 1000 bytes */
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
        return 13;
    }
    if (sink_write(s, b2.p, b2.len) != PHIAUDIT_E_IO) {
        return 14;
    }
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size != 1000) {
        return 15; /* partial bytes left behind */
    }
    /* Still failing: a write that cannot even start leaves the file alone too. */
    lim.rlim_cur = 1000;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0 || sink_write(s, b2.p, b2.len) != PHIAUDIT_E_IO) {
        return 16;
    }
    if (stat(path, &st) != 0 || st.st_size != 1000) {
        return 17;
    }
    if (setrlimit(RLIMIT_FSIZE, &old) != 0) {
        return 18;
    }
    if (sink_write(s, b2.p, b2.len) != 0) {
        return 19; /* the logger's retry */
    }
    if (s->ops->sync(s->state) != 0 || phiaudit_sink_close(&s) != 0) {
        return 20;
    }
    free(b1.p);
    free(b2.p);
    return 0;
}

static void test_failed_write_truncates(void **state)
{
    fx *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(failing_write_child(f->path));
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    bytes want = {0};
    bytes_add_frame(&want, 500, 0);
    bytes_add_frame(&want, 500, 1);
    bytes_add_frame(&want, 500, 10);
    bytes_add_frame(&want, 500, 11);
    assert_file_equals(f->path, want.p, want.len); /* exactly one copy of batch 2 */
    free(want.p);
}

/* Writer used by the concurrency tests: `batches` batches of 1..3 frames with ids
 * (tag << 20) | n, n increasing. Returns 0 or the failing batch number + 1. */
static int writer(phiaudit_sink *s, uint32_t tag, int batches)
{
    uint32_t id = 0;
    for (int i = 0; i < batches; i++) {
        bytes b = {0};
        int nframes = 1 + i % 3;
        for (int k = 0; k < nframes; k++) {
            uint32_t len = PHIAUDIT_MIN_FRAME_LEN + (uint32_t)((i * 37 + k * 101) % 1900);
            b.p = realloc(b.p, b.len + len);
            if (b.p == NULL) {
                return i + 1;
            }
            make_frame(b.p + b.len, len, (tag << 20) | id++);
            b.len += len;
        }
        int rc = sink_write(s, b.p, b.len);
        free(b.p);
        if (rc != 0) {
            return i + 1;
        }
    }
    return 0;
}

static long frames_for(int batches)
{
    long n = 0;
    for (int i = 0; i < batches; i++) {
        n += 1 + i % 3;
    }
    return n;
}

/* Every file (rotated ones by name, then PATH) is whole frames; each writer's ids appear
 * exactly once and in order. */
static void check_concurrent_result(fx *f, int batches, int expect_rotated)
{
    char **names;
    size_t n = list_rotated(f, &names);
    if (expect_rotated) {
        assert_true(n >= 2);
    } else {
        assert_int_equal(n, 0);
    }
    names = realloc(names, (n + 1) * sizeof *names);
    assert_non_null(names);
    names[n] = strdup(f->path);
    long total = 0;
    long per = frames_for(batches);
    uint32_t next[3] = {0, 0, 0};
    for (size_t i = 0; i <= n; i++) {
        size_t len;
        uint8_t *p = read_all(names[i], &len);
        assert_non_null(p);
        uint32_t *ids = malloc((len / PHIAUDIT_MIN_FRAME_LEN + 1) * sizeof *ids);
        assert_non_null(ids);
        long c = count_frames(p, len, ids, len / PHIAUDIT_MIN_FRAME_LEN + 1);
        assert_true(c >= 0);
        for (long k = 0; k < c; k++) {
            uint32_t tag = ids[k] >> 20;
            assert_true(tag == 1 || tag == 2);
            assert_int_equal(ids[k] & 0xFFFFFu, next[tag]); /* no gap, no duplicate */
            next[tag]++;
        }
        total += c;
        free(ids);
        free(p);
    }
    assert_int_equal(next[1], per);
    assert_int_equal(next[2], per);
    assert_int_equal(total, 2 * per);
    free_names(names, n + 1);
}

static void run_two_writers(fx *f, const phiaudit_file_options *o, int inherit, int batches)
{
    phiaudit_sink *s = NULL;

    assert_int_equal(phiaudit_sink_file_open(&s, f->path, o), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int rc;
        phiaudit_sink *cs = NULL;
        if (inherit) {
            cs = s;
            rc = cs->ops->after_fork_child(cs->state);
        } else {
            rc = phiaudit_sink_file_open(&cs, f->path, o);
        }
        if (rc == 0) {
            rc = writer(cs, 2, batches);
        }
        _exit(rc == 0 ? 0 : 1);
    }
    int rc = writer(s, 1, batches);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(rc, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(phiaudit_sink_file_torn_bytes(s), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);
}

static void test_two_processes_after_fork(void **state)
{
    fx *f = *state;
    run_two_writers(f, NULL, 1, 600);
    check_concurrent_result(f, 600, 0);
}

static void test_two_processes_with_rotation(void **state)
{
    fx *f = *state;
    phiaudit_file_options o = opts_max(64 * 1024);
    run_two_writers(f, &o, 0, 600);
    check_concurrent_result(f, 600, 1);
}

static void test_follows_external_rotation(void **state)
{
    fx *f = *state;
    phiaudit_sink *a = NULL, *b = NULL;
    phiaudit_file_options small = opts_max(100);
    bytes b1 = {0}, b2 = {0}, b3 = {0};
    char moved[256];

    bytes_add_frame(&b1, 200, 1);
    bytes_add_frame(&b2, 200, 2);
    bytes_add_frame(&b3, 200, 3);

    /* Someone moved PATH away: the next write recreates it. */
    assert_int_equal(phiaudit_sink_file_open(&b, f->path, NULL), 0);
    assert_int_equal(sink_write(b, b1.p, b1.len), 0);
    snprintf(moved, sizeof moved, "%s/moved", f->dir);
    assert_int_equal(rename(f->path, moved), 0);
    assert_int_equal(sink_write(b, b2.p, b2.len), 0);
    assert_file_equals(moved, b1.p, b1.len);
    assert_file_equals(f->path, b2.p, b2.len);

    /* Another sink instance rotates PATH; b follows to the new file. */
    assert_int_equal(phiaudit_sink_file_open(&a, f->path, &small), 0);
    assert_int_equal(sink_write(a, b3.p, b3.len), 0); /* 400 >= 100: rotates */
    assert_int_equal(file_size(f->path), 0);
    assert_int_equal(sink_write(b, b1.p, b1.len), 0);
    assert_file_equals(f->path, b1.p, b1.len);
    char **names;
    size_t n = list_rotated(f, &names);
    assert_int_equal(n, 1);
    bytes want = {0};
    bytes_add_raw(&want, b2.p, b2.len);
    bytes_add_raw(&want, b3.p, b3.len);
    assert_file_equals(names[0], want.p, want.len);

    /* A symlink planted at PATH is not followed by a running sink either. */
    char target[256];
    snprintf(target, sizeof target, "%s/target", f->dir);
    write_raw(target, "", 0);
    assert_int_equal(rename(f->path, moved), 0);
    assert_int_equal(symlink(target, f->path), 0);
    assert_int_equal(sink_write(b, b2.p, b2.len), PHIAUDIT_E_IO);
    assert_int_equal(file_size(target), 0);

    assert_int_equal(phiaudit_sink_close(&a), 0);
    assert_int_equal(phiaudit_sink_close(&b), 0);
    free_names(names, n);
    free(want.p);
    free(b1.p);
    free(b2.p);
    free(b3.p);
}

static void test_torn_left_by_other_writer(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = NULL;
    bytes b1 = {0}, b2 = {0}, torn = {0};

    bytes_add_frame(&b1, 300, 1);
    bytes_add_frame(&b2, 300, 2);
    bytes_add_frame(&torn, 500, 3);
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    assert_int_equal(sink_write(s, b1.p, b1.len), 0);
    /* Another process sharing PATH died half-way through a frame. */
    append_raw(f->path, torn.p, 123);
    assert_int_equal(sink_write(s, b2.p, b2.len), 0);
    assert_int_equal(phiaudit_sink_file_torn_bytes(s), 123);
    assert_int_equal(phiaudit_sink_close(&s), 0);

    char **names;
    assert_int_equal(list_rotated(f, &names), 1);
    bytes want = {0};
    bytes_add_raw(&want, b1.p, b1.len);
    bytes_add_raw(&want, torn.p, 123);
    assert_file_equals(names[0], want.p, want.len); /* torn bytes kept, at the end */
    assert_file_equals(f->path, b2.p, b2.len);      /* new records start clean */
    free_names(names, 1);
    free(want.p);
    free(b1.p);
    free(b2.p);
    free(torn.p);
}

static void test_uri(void **state)
{
    fx *f = *state;
    phiaudit_sink *s = (phiaudit_sink *)(uintptr_t)1;
    char uri[512];
    /* {before the path, with the path?, after the path} */
    static const struct {
        const char *pre;
        int path;
        const char *post;
    } bad[] = {
        {"", 0, ""},
        {"", 0, "?max_bytes=5"},
        {"", 1, "?"},
        {"", 1, "?max_bytes="},
        {"", 1, "?max_bytes=abc"},
        {"", 1, "?max_bytes=12x"},
        {"", 1, "?max_bytes=-1"},
        {"", 1, "?max_bytes=+1"},
        {"", 1, "?max_bytes= 1"},
        {"", 1, "?max_bytes=18446744073709551616"}, /* 2^64 */
        {"", 1, "?max_bytes=99999999999999999999999"},
        {"", 1, "?foo=1"},
        {"", 1, "?max_bytes"},
        {"", 1, "?MAX_BYTES=1"},
        {"", 1, "?max_bytes=1&foo=2"},
        {"", 1, "?max_bytes=1&max_bytes=2"},
        {"", 1, "?max_bytes=1&"},
        {"//host", 1, ""},
        {"//", 0, ""},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(uri, sizeof uri, "%s%s%s", bad[i].pre, bad[i].path ? f->path : "",
                 bad[i].post);
        s = (phiaudit_sink *)(uintptr_t)1;
        assert_int_equal(phiaudit_sink_file_open_uri(&s, uri), PHIAUDIT_E_URI);
        assert_null(s);
    }
    /* Through the public dispatcher too. */
    snprintf(uri, sizeof uri, "file:%s?bogus=1", f->path);
    assert_int_equal(phiaudit_sink_open_uri(&s, uri), PHIAUDIT_E_URI);
    assert_int_equal(access(f->path, F_OK), -1); /* nothing created by a rejected URI */
    assert_int_equal(phiaudit_sink_file_open_uri(NULL, f->path), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_sink_file_open_uri(&s, NULL), PHIAUDIT_E_INVALID);

    /* Plain path (through the dispatcher): no rotation. */
    snprintf(uri, sizeof uri, "file:%s", f->path);
    assert_int_equal(phiaudit_sink_open_uri(&s, uri), 0);
    bytes b = {0};
    bytes_add_frame(&b, 300, 1);
    assert_int_equal(sink_write(s, b.p, b.len), 0);
    assert_int_equal(file_size(f->path), 300);
    assert_int_equal(phiaudit_sink_close(&s), 0);

    /* max_bytes=0 means never. */
    snprintf(uri, sizeof uri, "%s?max_bytes=0", f->path);
    assert_int_equal(phiaudit_sink_file_open_uri(&s, uri), 0);
    assert_int_equal(sink_write(s, b.p, b.len), 0);
    assert_int_equal(file_size(f->path), 600);
    assert_int_equal(phiaudit_sink_close(&s), 0);

    /* file:///abs/path form, with a limit that the next write reaches. */
    snprintf(uri, sizeof uri, "//%s?max_bytes=900", f->path);
    assert_int_equal(phiaudit_sink_file_open_uri(&s, uri), 0);
    assert_int_equal(sink_write(s, b.p, b.len), 0);
    assert_int_equal(file_size(f->path), 0); /* 900 >= 900: rotated */
    assert_int_equal(phiaudit_sink_close(&s), 0);
    char **names;
    assert_int_equal(list_rotated(f, &names), 1);
    assert_int_equal(file_size(names[0]), 900);
    free_names(names, 1);

    /* Open errors pass through. */
    snprintf(uri, sizeof uri, "%s/no/such/dir/log?max_bytes=10", f->dir);
    assert_int_equal(phiaudit_sink_file_open_uri(&s, uri), PHIAUDIT_E_IO);
    free(b.p);
}

static void test_alloc_failure_sweep(void **state)
{
    fx *f = *state;
    bytes b = {0};

    /* Exercise the torn-tail path, which allocates the most (scan buffer, rotated name). */
    bytes_add_frame(&b, 300, 1);
    int fds = count_open_fds();
    for (long n = 0;; n++) {
        phiaudit_sink *s = NULL;
        write_raw(f->path, b.p, 200);
        (void)phiaudit_test_fail_alloc_after(n);
        int rc = phiaudit_sink_file_open(&s, f->path, NULL);
        (void)phiaudit_test_fail_alloc_after(-1);
        assert_int_equal(count_open_fds(), fds + (rc == 0 ? 1 : 0)); /* no fd leak */
        if (rc == 0) {
            assert_int_equal(phiaudit_sink_file_torn_bytes(s), 200);
            assert_int_equal(phiaudit_sink_close(&s), 0);
            assert_true(n > 0);
            break;
        }
        assert_int_equal(rc, PHIAUDIT_E_NOMEM);
        assert_null(s);
        assert_true(n < 100);
        /* Whatever happened, no byte was lost: either PATH still holds the torn file or it
         * was rotated away intact. */
        char **names;
        size_t k = list_rotated(f, &names);
        if (k > 0) {
            assert_file_equals(names[k - 1], b.p, 200);
        } else {
            assert_file_equals(f->path, b.p, 200);
        }
        for (size_t i = 0; i < k; i++) {
            unlink(names[i]);
        }
        free_names(names, k);
        unlink(f->path);
    }
    free(b.p);
}

/* End to end: real sealed records from the logger land in the file as whole frames that
 * authenticate, in GROUP durability (write + fdatasync per batch). */
static void test_with_logger(void **state)
{
    fx *f = *state;
    static const uint8_t key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    static const uint8_t key_id[16] = {'s', 'i', 'n', 'k', '-', 'f', 'i', 'l',
                                       'e', '-', 't', 'e', 's', 't', '-', '1'};
    phiaudit_sink *s = NULL;
    phiaudit_logger *lg = NULL;
    phiaudit_config cfg;

    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    phiaudit_config_init(&cfg);
    cfg.app_name = "sink-file-test";
    cfg.host_name = "test-host";
    cfg.key = key;
    cfg.key_id = key_id;
    cfg.durability = PHIAUDIT_DURABILITY_GROUP;
    cfg.sinks = &s;
    cfg.sink_count = 1;
    assert_int_equal(phiaudit_logger_open(&lg, &cfg), 0);
    for (int i = 0; i < 50; i++) {
        phiaudit_event ev;
        phiaudit_event_init(&ev);
        ev.action = PHIAUDIT_ACTION_READ;
        ev.clinician_id = "clinician-1";
        ev.patient_id = "CANARY-PATIENT-7f3a9c";
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    }
    assert_int_equal(phiaudit_logger_flush(lg), 0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);

    size_t len;
    uint8_t *p = read_all(f->path, &len);
    assert_non_null(p);
    assert_null(memmem(p, len, "CANARY-PATIENT", 14)); /* sealed, never plaintext */
    phiaudit_keyring *kr = NULL;
    assert_int_equal(phiaudit_keyring_new(&kr), 0);
    assert_int_equal(phiaudit_keyring_add(kr, key_id, key), 0);
    size_t off = 0;
    long frames = 0;
    static uint8_t pt[PHIAUDIT_MAX_FRAME_LEN];
    while (off < len) {
        phiaudit_header h;
        size_t n = 0;
        assert_int_equal(phiaudit_frame_parse(p + off, len - off, &h), 0);
        assert_int_equal(phiaudit_frame_open(kr, p + off, h.frame_len, pt, sizeof pt, &n), 0);
        off += h.frame_len;
        frames++;
    }
    assert_true(frames >= 50); /* plus the stream open/close records */
    phiaudit_keyring_free(&kr);
    free(p);

    /* Reopening the finished log finds nothing torn and continues it. */
    assert_int_equal(phiaudit_sink_file_open(&s, f->path, NULL), 0);
    assert_int_equal(phiaudit_sink_file_torn_bytes(s), 0);
    assert_int_equal(phiaudit_sink_close(&s), 0);
    char **names;
    assert_int_equal(list_rotated(f, &names), 0);
    free(names);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_mode_0600, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_symlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_fifo_and_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_foreign_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_two_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_after_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_truncates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_processes_after_fork, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_processes_with_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follows_external_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_left_by_other_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uri, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failure_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_with_logger, setup, teardown),
    };
    return cmocka_run_group_tests_name("sink_file", tests, NULL, NULL);
}
