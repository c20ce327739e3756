/* Allocation wrappers, byte buffers, clocks, hex and randomness. */
#include "internal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Allocation-failure injection for the test suite's sweep. Relaxed atomics: the sweep is
 * single-threaded; the counter only has to be race-free, not ordered. */
static atomic_long fail_after = -1;
static atomic_long alloc_count = 0;

long phiaudit_test_fail_alloc_after(long n)
{
    long count = atomic_exchange(&alloc_count, 0);
    atomic_store(&fail_after, n);
    return count;
}

static int alloc_should_fail(void)
{
    long n = atomic_fetch_add(&alloc_count, 1);
    long limit = atomic_load_explicit(&fail_after, memory_order_relaxed);
    return limit >= 0 && n >= limit;
}

void *phiaudit_malloc(size_t n)
{
    return alloc_should_fail() ? NULL : malloc(n ? n : 1);
}

void *phiaudit_calloc(size_t n, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1);
}

void *phiaudit_realloc(void *p, size_t n)
{
    return alloc_should_fail() ? NULL : realloc(p, n ? n : 1);
}

void phiaudit_free(void *p)
{
    free(p);
}

char *phiaudit_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = phiaudit_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void phiaudit_wipe(void *p, size_t len)
{
    /* explicit_bzero: a plain memset the compiler must keep; much faster than
     * OPENSSL_cleanse's byte loop through a volatile function pointer. */
    if (p && len)
        explicit_bzero(p, len);
}

int phiaudit_buf_reserve(phiaudit_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return PHIAUDIT_E_NOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    /* Buffers hold plaintext or key-derived data: never realloc in place and leave a stale
     * copy behind; allocate, copy, wipe, free. */
    uint8_t *d = phiaudit_malloc(cap);
    if (!d)
        return PHIAUDIT_E_NOMEM;
    if (b->data) {
        memcpy(d, b->data, b->len);
        phiaudit_wipe(b->data, b->cap);
        free(b->data);
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

int phiaudit_buf_append(phiaudit_buf *b, const void *p, size_t n)
{
    int rc = phiaudit_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void phiaudit_buf_free(phiaudit_buf *b)
{
    if (b->data) {
        phiaudit_wipe(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = b->cap = 0;
}

int64_t phiaudit_now_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t phiaudit_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Days-from-civil (Howard Hinnant's algorithm), inverted: avoids gmtime_r's locale and
 * timezone locking on the hot path. */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

static void put_digits(char *p, unsigned long v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

void phiaudit_format_time_us(int64_t us, char out[28])
{
    /* Each record formats three timestamps, nearly always within the same second: keep
     * that second's "YYYY-MM-DDTHH:MM:SS" per thread and only redo the fraction. */
    static _Thread_local int64_t cached_secs = INT64_MIN;
    static _Thread_local char cached[19];
    int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    int64_t frac = us - secs * 1000000;
    if (secs != cached_secs) {
        int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
        int64_t sod = secs - days * 86400;
        int y;
        unsigned m, d;
        civil_from_days(days, &y, &m, &d);
        if (y < 0 || y > 9999)
            y = y < 0 ? 0 : 9999;
        char *o = cached;
        put_digits(o, (unsigned long)y, 4);
        o[4] = '-';
        put_digits(o + 5, m, 2);
        o[7] = '-';
        put_digits(o + 8, d, 2);
        o[10] = 'T';
        put_digits(o + 11, (unsigned long)(sod / 3600), 2);
        o[13] = ':';
        put_digits(o + 14, (unsigned long)(sod / 60 % 60), 2);
        o[16] = ':';
        put_digits(o + 17, (unsigned long)(sod % 60), 2);
        cached_secs = secs;
    }
    memcpy(out, cached, 19);
    out[19] = '.';
    put_digits(out + 20, (unsigned long)frac, 6);
    out[26] = 'Z';
    out[27] = '\0';
}

void phiaudit_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int phiaudit_unhex(const char *in, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return PHIAUDIT_E_FORMAT;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int phiaudit_random(uint8_t *out, size_t n)
{
    if (RAND_bytes(out, (int)n) != 1) {
        ERR_clear_error();
        return PHIAUDIT_E_CRYPTO;
    }
    return 0;
}

int phiaudit_crypto_error(char *msg, size_t cap, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    if (msg && cap) {
        char reason[160];
        ERR_error_string_n(e, reason, sizeof reason);
        snprintf(msg, cap, "%s: %s", what, e ? reason : "unknown OpenSSL error");
    }
    ERR_clear_error();
    return PHIAUDIT_E_CRYPTO;
}
