/*
 * The reader: sources → frames → per-stream sequence/chain checks → authentication →
 * query matching → report. docs/FORMAT.md §9 and §9.1 specify what is checked and how
 * each finding is classified.
 *
 * Memory is bounded by the number of streams and files, never by the number of records:
 * files are read through one 1 MiB window; per stream we keep counters, the link of the
 * highest record, a ring of the last PHIAUDIT_READER_DUP_WINDOW (seq, link) pairs and at
 * most PHIAUDIT_REPORT_MAX_RANGES gaps.
 *
 * Gaps are kept with the chain links at their edges, so a record arriving late (two
 * records swapped) is classified as reordered and still chain-checked against both
 * neighbours; the "missing predecessor" of a stream first seen at seq > 0 is the gap
 * [0, first - 1], so it shrinks the same way.
 */
#include "internal.h"
#include "phiaudit_reader.h"

#include <openssl/evp.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RD_CHUNK (1u << 20)          /* read window; > PHIAUDIT_MAX_FRAME_LEN */
#define RD_PEEK (128u << 10)         /* bytes read at open to find a file's first frame */
#define RD_MAX_INDEX_KEYS 16         /* blind-index tag cache (distinct key IDs) */

/* ---- Small helpers ----------------------------------------------------------------------- */

static const uint8_t ZERO_LINK[PHIAUDIT_LINK_LEN];

const char *phiaudit_verdict_name(int verdict)
{
    switch (verdict) {
    case PHIAUDIT_VERDICT_INTACT: return "intact";
    case PHIAUDIT_VERDICT_TAMPERED: return "tampered";
    case PHIAUDIT_VERDICT_INCOMPLETE: return "incomplete";
    case PHIAUDIT_VERDICT_ERROR: return "error";
    default: return "unknown";
    }
}

/* Severity order for combining verdicts: TAMPERED > ERROR > INCOMPLETE > INTACT. */
static int severity(int v)
{
    switch (v) {
    case PHIAUDIT_VERDICT_TAMPERED: return 3;
    case PHIAUDIT_VERDICT_ERROR: return 2;
    case PHIAUDIT_VERDICT_INCOMPLETE: return 1;
    default: return 0;
    }
}

static int worse(int a, int b)
{
    return severity(a) >= severity(b) ? a : b;
}

/* ---- Time parsing ------------------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, int n, unsigned *v)
{
    unsigned x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (unsigned)(s[i] - '0');
    }
    *v = x;
    return 0;
}

/* Parse the time at s[0..n); 0 or PHIAUDIT_E_FORMAT. */
static int time_parse_n(const char *s, size_t n, int64_t *us)
{
    unsigned y, mo, d, h = 0, mi = 0, se = 0;
    int64_t frac_us = 0;
    size_t i = 0;
    if (n < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d))
        return PHIAUDIT_E_FORMAT;
    static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
        return PHIAUDIT_E_FORMAT;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return PHIAUDIT_E_FORMAT;
    i = 10;
    int64_t offset_s = 0;
    if (i < n) {
        if ((s[i] != 'T' && s[i] != 't' && s[i] != ' ') || n - i < 6)
            return PHIAUDIT_E_FORMAT;
        if (digits(s + i + 1, 2, &h) || s[i + 3] != ':' || digits(s + i + 4, 2, &mi))
            return PHIAUDIT_E_FORMAT;
        i += 6;
        if (i < n && s[i] == ':') {
            if (n - i < 3 || digits(s + i + 1, 2, &se))
                return PHIAUDIT_E_FORMAT;
            i += 3;
            if (i < n && s[i] == '.') {
                i++;
                int nd = 0;
                int64_t scale = 100000;
                while (i < n && s[i] >= '0' && s[i] <= '9') {
                    if (++nd > 9)
                        return PHIAUDIT_E_FORMAT;
                    frac_us += (s[i] - '0') * scale;
                    scale /= 10;
                    i++;
                }
                if (nd == 0)
                    return PHIAUDIT_E_FORMAT;
            }
        }
        if (h > 23 || mi > 59 || se > 60)
            return PHIAUDIT_E_FORMAT;
        if (i < n && (s[i] == 'Z' || s[i] == 'z') && i + 1 == n) {
            i++;
        } else if (i < n && (s[i] == '+' || s[i] == '-') && n - i == 6) {
            unsigned oh, om;
            if (digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || digits(s + i + 4, 2, &om) ||
                oh > 23 || om > 59)
                return PHIAUDIT_E_FORMAT;
            offset_s = (int64_t)(oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
            i = n;
        } else {
            return PHIAUDIT_E_FORMAT;
        }
    }
    if (i != n)
        return PHIAUDIT_E_FORMAT;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 +
                   (int64_t)se - offset_s;
    *us = secs * 1000000 + frac_us;
    return 0;
}

int phiaudit_time_parse(const char *text, int64_t *us)
{
    if (!text || !us)
        return PHIAUDIT_E_INVALID;
    return time_parse_n(text, strlen(text), us);
}

/* ---- Minimal JSON reading for the flat payload object (FORMAT.md §6) --------------------- */

typedef struct jspan {
    const uint8_t *p; /* raw string contents between the quotes (escapes not decoded) */
    size_t n;
    int set;
} jspan;

static size_t json_ws(const uint8_t *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Scan a string starting at the opening quote s[i]; *end = index after the closing quote.
 * Rejects raw control characters and malformed escapes. 0 or -1. */
static int json_skip_string(const uint8_t *s, size_t n, size_t i, size_t *end)
{
    if (i >= n || s[i] != '"')
        return -1;
    for (i++; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"') {
            *end = i + 1;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (++i >= n)
                return -1;
            switch (s[i]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                break;
            case 'u':
                if (n - i < 5)
                    return -1;
                for (int k = 1; k <= 4; k++) {
                    uint8_t h = s[i + (size_t)k];
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F')))
                        return -1;
                }
                i += 4;
                break;
            default:
                return -1;
            }
        }
    }
    return -1;
}

static unsigned hex4(const uint8_t *p)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t h = p[k];
        v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return v;
}

/* Decode the raw contents of a validated JSON string into out (cap >= n bytes suffices:
 * every escape is at least as long as its UTF-8). 0 or -1 (lone surrogate). */
static int json_unescape(const uint8_t *p, size_t n, uint8_t *out, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\') {
            out[o++] = p[i];
            continue;
        }
        i++;
        uint8_t c = p[i];
        switch (c) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            uint32_t cp = hex4(p + i + 1);
            i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (n - i < 7 || p[i + 1] != '\\' || p[i + 2] != 'u')
                    return -1;
                uint32_t lo = hex4(p + i + 3);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            if (cp < 0x80) {
                out[o++] = (uint8_t)cp;
            } else if (cp < 0x800) {
                out[o++] = (uint8_t)(0xC0 | (cp >> 6));
                out[o++] = (uint8_t)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (uint8_t)(0xE0 | (cp >> 12));
                out[o++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (uint8_t)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (uint8_t)(0xF0 | (cp >> 18));
                out[o++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
                out[o++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (uint8_t)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: out[o++] = c; break; /* " \ / */
        }
    }
    *out_len = o;
    return 0;
}

/* Skip any JSON value at s[i]; nested containers up to depth 32. 0 or -1. */
static int json_skip_value(const uint8_t *s, size_t n, size_t i, size_t *end, int depth)
{
    if (i >= n || depth > 32)
        return -1;
    if (s[i] == '"')
        return json_skip_string(s, n, i, end);
    if (s[i] == '{' || s[i] == '[') {
        uint8_t close = s[i] == '{' ? '}' : ']';
        int obj = s[i] == '{';
        i = json_ws(s, n, i + 1);
        if (i < n && s[i] == close) {
            *end = i + 1;
            return 0;
        }
        for (;;) {
            if (obj) {
                if (json_skip_string(s, n, i, &i))
                    return -1;
                i = json_ws(s, n, i);
                if (i >= n || s[i] != ':')
                    return -1;
                i = json_ws(s, n, i + 1);
            }
            if (json_skip_value(s, n, i, &i, depth + 1))
                return -1;
            i = json_ws(s, n, i);
            if (i < n && s[i] == ',') {
                i = json_ws(s, n, i + 1);
                continue;
            }
            if (i < n && s[i] == close) {
                *end = i + 1;
                return 0;
            }
            return -1;
        }
    }
    /* number, true, false, null: a run of token characters */
    size_t j = i;
    while (j < n && ((s[j] >= '0' && s[j] <= '9') || (s[j] >= 'a' && s[j] <= 'z') ||
                     s[j] == '-' || s[j] == '+' || s[j] == '.' || s[j] == 'E'))
        j++;
    if (j == i)
        return -1;
    size_t len = j - i;
    const char *t = (const char *)s + i;
    if (s[i] >= 'a' && s[i] <= 'z') {
        if (!((len == 4 && memcmp(t, "true", 4) == 0) || (len == 5 && memcmp(t, "false", 5) == 0) ||
              (len == 4 && memcmp(t, "null", 4) == 0)))
            return -1;
    }
    *end = j;
    return 0;
}

enum { JF_PATIENT, JF_CLINICIAN, JF_ACTION, JF_START, JF_COUNT };
static const char *const JF_NAMES[JF_COUNT] = {"patient", "clinician", "action", "start"};

/* Parse one flat JSON object and collect the string fields we filter on. A wanted key that
 * appears twice, or with a non-string value, makes the payload unmatchable (-1). */
static int json_collect(const uint8_t *s, size_t n, jspan f[JF_COUNT])
{
    memset(f, 0, sizeof(jspan) * JF_COUNT);
    size_t i = json_ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return -1;
    i = json_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return json_ws(s, n, i + 1) == n ? 0 : -1;
    for (;;) {
        size_t kend;
        if (json_skip_string(s, n, i, &kend))
            return -1;
        uint8_t key[16];
        size_t klen = 0;
        int which = -1;
        if (kend - i - 2 <= sizeof key && json_unescape(s + i + 1, kend - i - 2, key, &klen) == 0) {
            for (int k = 0; k < JF_COUNT; k++)
                if (strlen(JF_NAMES[k]) == klen && memcmp(JF_NAMES[k], key, klen) == 0)
                    which = k;
        }
        i = json_ws(s, n, kend);
        if (i >= n || s[i] != ':')
            return -1;
        i = json_ws(s, n, i + 1);
        size_t vend;
        if (json_skip_value(s, n, i, &vend, 0))
            return -1;
        if (which >= 0) {
            if (f[which].set || s[i] != '"')
                return -1;
            f[which].p = s + i + 1;
            f[which].n = vend - i - 2;
            f[which].set = 1;
        }
        i = json_ws(s, n, vend);
        if (i < n && s[i] == ',') {
            i = json_ws(s, n, i + 1);
            continue;
        }
        if (i < n && s[i] == '}')
            return json_ws(s, n, i + 1) == n ? 0 : -1;
        return -1;
    }
}

/* ---- Reader state ------------------------------------------------------------------------- */

typedef struct rd_gap {
    uint64_t lo, hi;          /* missing seqs, inclusive */
    uint8_t has_before;       /* before = link of record lo - 1 is known */
    uint8_t has_after;        /* after_prev = prev link carried by record hi + 1 is known */
    uint8_t before[PHIAUDIT_LINK_LEN];
    uint8_t after_prev[PHIAUDIT_LINK_LEN];
} rd_gap;

typedef struct rd_win {
    uint64_t seq;
    uint8_t link[PHIAUDIT_LINK_LEN];
} rd_win;

typedef struct rd_stream {
    uint8_t id[16];
    uint8_t key_id[16];
    uint64_t max_seq;                   /* highest seq seen */
    uint8_t last_link[PHIAUDIT_LINK_LEN]; /* link of the highest record */
    uint64_t min_seq;
    int64_t min_time, max_time;
    uint64_t close_seq;
    uint32_t flags;                     /* PHIAUDIT_SR_HAS_OPEN / HAS_CLOSE */
    uint64_t records, authenticated, known_key, modified, unknown_key, duplicates, conflicts,
        reordered, chain_breaks, misplaced;
    uint64_t lost_missing, lost_ranges; /* gaps that did not fit in `gaps` */
    rd_win win[PHIAUDIT_READER_DUP_WINDOW];
    uint32_t win_n, win_pos;
    rd_gap *gaps;                       /* ascending, at most PHIAUDIT_REPORT_MAX_RANGES */
    size_t ngaps;
    phiaudit_range *rep;                /* report scratch */
} rd_stream;

typedef struct rd_src {
    char *path;
    int error;
    int has_time;
    int64_t first_time;
    uint8_t first_stream[16]; /* stream and seq of the first frame (valid with has_time) */
    uint64_t first_seq;
    dev_t dev;
    ino_t ino;
    uint64_t bytes, frames, torn_off, torn_bytes, damaged_bytes, damaged_count;
    phiaudit_range *dmg;
    size_t ndmg;
} rd_src;

typedef struct rd_tagcache {
    uint8_t key_id[16];
    int ok_p, ok_c;
    uint8_t p[PHIAUDIT_BLIND_INDEX_LEN];
    uint8_t c[PHIAUDIT_BLIND_INDEX_LEN];
} rd_tagcache;

struct phiaudit_reader {
    phiaudit_keyring *kr;
    rd_src *src;
    size_t nsrc;
    const uint8_t *mem; /* buffer source */
    size_t memlen;
    int is_mem;

    /* Current file. */
    size_t cur;
    int fd;
    int open;
    uint8_t *buf;
    const uint8_t *data; /* buf or mem */
    size_t start, end;
    uint64_t base;       /* file offset of data[0] */
    int eof;
    int in_damage;
    uint64_t damage_start;

    /* Streams. */
    rd_stream *st;
    size_t nst, stcap;
    uint32_t *tab; /* open addressing: index + 1, 0 = empty */
    size_t tabcap;

    uint8_t *pt;   /* plaintext of the last record */
    size_t pt_len;

    int has_query;
    phiaudit_query q;
    char *q_patient, *q_clinician;
    size_t q_patient_len, q_clinician_len;
    rd_tagcache tags[RD_MAX_INDEX_KEYS];
    size_t ntags;
    uint8_t *scratch; /* unescaped field values */

    uint64_t total_frames;
    int fatal;
    char err[256];
};

static int rd_fail(phiaudit_reader *r, int rc, const char *what)
{
    r->fatal = rc;
    snprintf(r->err, sizeof r->err, "%s: %s", what, phiaudit_strerror(rc));
    return rc;
}

/* ---- Construction ------------------------------------------------------------------------- */

static int rd_alloc(phiaudit_reader **out, phiaudit_keyring *kr)
{
    phiaudit_reader *r = phiaudit_calloc(1, sizeof *r);
    if (!r)
        return PHIAUDIT_E_NOMEM;
    r->fd = -1;
    r->kr = kr;
    r->pt = phiaudit_malloc(PHIAUDIT_MAX_FRAME_LEN);
    r->scratch = phiaudit_malloc(PHIAUDIT_MAX_FRAME_LEN);
    r->tabcap = 64;
    r->tab = phiaudit_calloc(r->tabcap, sizeof *r->tab);
    if (!r->pt || !r->scratch || !r->tab) {
        phiaudit_reader_free(&r);
        return PHIAUDIT_E_NOMEM;
    }
    *out = r;
    return 0;
}

static void clear_query(phiaudit_reader *r);

void phiaudit_reader_free(phiaudit_reader **rp)
{
    phiaudit_reader *r = rp ? *rp : NULL;
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->nsrc; i++) {
        phiaudit_free(r->src[i].path);
        phiaudit_free(r->src[i].dmg);
    }
    phiaudit_free(r->src);
    for (size_t i = 0; i < r->nst; i++) {
        phiaudit_free(r->st[i].gaps);
        phiaudit_free(r->st[i].rep);
    }
    phiaudit_free(r->st);
    phiaudit_free(r->tab);
    phiaudit_free(r->buf);
    if (r->pt) {
        phiaudit_wipe(r->pt, PHIAUDIT_MAX_FRAME_LEN);
        phiaudit_free(r->pt);
    }
    if (r->scratch) {
        phiaudit_wipe(r->scratch, PHIAUDIT_MAX_FRAME_LEN);
        phiaudit_free(r->scratch);
    }
    clear_query(r);
    phiaudit_free(r);
    *rp = NULL;
}

static int add_src(phiaudit_reader *r, size_t *cap, const char *path)
{
    if (r->nsrc == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        rd_src *n = phiaudit_realloc(r->src, ncap * sizeof *n);
        if (!n)
            return PHIAUDIT_E_NOMEM;
        r->src = n;
        *cap = ncap;
    }
    rd_src *s = &r->src[r->nsrc];
    memset(s, 0, sizeof *s);
    s->path = phiaudit_strdup(path);
    if (!s->path)
        return PHIAUDIT_E_NOMEM;
    r->nsrc++;
    return 0;
}

static int errno_rc(int e)
{
    return e == ENOENT || e == ENOTDIR ? PHIAUDIT_E_NOT_FOUND : PHIAUDIT_E_IO;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* List the non-dot names of a directory, sorted. *names is a malloc'd array of malloc'd
 * strings. */
static int list_dir(const char *dir, char ***names_out, size_t *n_out)
{
    *names_out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno_rc(errno);
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nn = phiaudit_realloc(names, ncap * sizeof *nn);
            if (!nn) {
                rc = PHIAUDIT_E_NOMEM;
                break;
            }
            names = nn;
            cap = ncap;
        }
        names[n] = phiaudit_strdup(e->d_name);
        if (!names[n]) {
            rc = PHIAUDIT_E_NOMEM;
            break;
        }
        n++;
        errno = 0;
    }
    if (!rc && errno)
        rc = PHIAUDIT_E_IO;
    closedir(d);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            phiaudit_free(names[i]);
        phiaudit_free(names);
        return rc;
    }
    if (n)
        qsort(names, n, sizeof *names, name_cmp);
    *names_out = names;
    *n_out = n;
    return 0;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        phiaudit_free(names[i]);
    phiaudit_free(names);
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = phiaudit_malloc(a + (size_t)slash + b + 1);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    if (slash)
        p[a] = '/';
    memcpy(p + a + (size_t)slash, name, b + 1);
    return p;
}

/* Offset of the first complete frame (or, with allow_torn, of a torn one reaching the end)
 * in p[0..n), or SIZE_MAX. */
static size_t find_frame(const uint8_t *p, size_t n, int allow_torn, phiaudit_header *h)
{
    for (size_t i = 0; i + 4 <= n || (allow_torn && i < n);) {
        const uint8_t *q = memchr(p + i, 'P', n - i);
        if (!q)
            return SIZE_MAX;
        i = (size_t)(q - p);
        int rc = phiaudit_frame_parse(p + i, n - i, h);
        if (rc == 0 || (allow_torn && rc == PHIAUDIT_E_TRUNCATED))
            return i;
        i++;
    }
    return SIZE_MAX;
}

/* Time of a file's first frame (for ordering), from its first RD_PEEK bytes. */
static void peek_first_time(rd_src *s, uint8_t *tmp)
{
    int fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return; /* reported when the file is read */
    size_t got = 0;
    while (got < RD_PEEK) {
        ssize_t k = read(fd, tmp + got, RD_PEEK - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    phiaudit_header h;
    size_t i = find_frame(tmp, got, 1, &h);
    if (i != SIZE_MAX && h.frame_len && got - i >= PHIAUDIT_HEADER_LEN) {
        s->has_time = 1;
        s->first_time = h.time_us;
        memcpy(s->first_stream, h.stream_id, 16);
        s->first_seq = h.seq;
    }
}

/* Files are ordered by the time of their first frame, but a wall clock that stepped back
 * (NTP, VM resume) would then put a newer rotated file first and make an untouched stream
 * look reordered. Sequence numbers do not lie: among the files that begin with the same
 * stream, put them in sequence order, keeping the positions the time order gave them. */
static void order_by_stream_seq(rd_src *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!src[i].has_time)
            continue;
        for (size_t j = i + 1; j < n; j++) {
            if (src[j].has_time && memcmp(src[j].first_stream, src[i].first_stream, 16) == 0 &&
                src[j].first_seq < src[i].first_seq) {
                rd_src t = src[i];
                src[i] = src[j];
                src[j] = t;
            }
        }
    }
}

static int src_cmp(const void *a, const void *b)
{
    const rd_src *x = a, *y = b;
    if (x->has_time != y->has_time)
        return x->has_time ? -1 : 1;
    if (x->has_time && x->first_time != y->first_time)
        return x->first_time < y->first_time ? -1 : 1;
    return strcmp(x->path, y->path);
}

int phiaudit_reader_open(phiaudit_reader **out, const char *const *sources, size_t n,
                         phiaudit_keyring *keyring)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    if (!sources || n == 0)
        return PHIAUDIT_E_INVALID;
    for (size_t i = 0; i < n; i++)
        if (!sources[i])
            return PHIAUDIT_E_INVALID;
    phiaudit_reader *r = NULL;
    int rc = rd_alloc(&r, keyring);
    if (rc)
        return rc;
    size_t cap = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct stat st;
        if (stat(sources[i], &st) != 0) {
            rc = errno_rc(errno);
            snprintf(r->err, sizeof r->err, "cannot access source %zu", i + 1);
        } else if (S_ISDIR(st.st_mode)) {
            char **names;
            size_t nn;
            rc = list_dir(sources[i], &names, &nn);
            for (size_t k = 0; k < nn && rc == 0; k++) {
                char *p = join_path(sources[i], names[k]);
                struct stat fs;
                if (!p)
                    rc = PHIAUDIT_E_NOMEM;
                else if (stat(p, &fs) == 0 && S_ISREG(fs.st_mode))
                    rc = add_src(r, &cap, p);
                phiaudit_free(p);
            }
            free_names(names, nn);
        } else if (S_ISREG(st.st_mode)) {
            rc = add_src(r, &cap, sources[i]);
        } else {
            rc = PHIAUDIT_E_IO;
            snprintf(r->err, sizeof r->err, "source %zu is not a file or directory", i + 1);
        }
    }
    if (rc == 0 && r->nsrc) {
        uint8_t *tmp = phiaudit_malloc(RD_PEEK);
        if (!tmp)
            rc = PHIAUDIT_E_NOMEM;
        for (size_t i = 0; rc == 0 && i < r->nsrc; i++) {
            struct stat st;
            if (stat(r->src[i].path, &st) == 0) {
                r->src[i].dev = st.st_dev;
                r->src[i].ino = st.st_ino;
            }
            peek_first_time(&r->src[i], tmp);
        }
        phiaudit_free(tmp);
        /* Drop files named twice (same inode). */
        for (size_t i = 0; rc == 0 && i < r->nsrc; i++) {
            for (size_t j = 0; j < i; j++) {
                if (r->src[j].ino && r->src[j].dev == r->src[i].dev &&
                    r->src[j].ino == r->src[i].ino) {
                    phiaudit_free(r->src[i].path);
                    memmove(&r->src[i], &r->src[i + 1], (r->nsrc - i - 1) * sizeof *r->src);
                    r->nsrc--;
                    i--;
                    break;
                }
            }
        }
        if (rc == 0) {
            qsort(r->src, r->nsrc, sizeof *r->src, src_cmp);
            order_by_stream_seq(r->src, r->nsrc);
        }
    }
    if (rc == 0) {
        r->buf = phiaudit_malloc(RD_CHUNK);
        if (!r->buf)
            rc = PHIAUDIT_E_NOMEM;
    }
    if (rc) {
        phiaudit_reader_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}

int phiaudit_reader_open_buffer(phiaudit_reader **out, const uint8_t *buf, size_t len,
                                const char *name, phiaudit_keyring *keyring)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    if (!buf && len)
        return PHIAUDIT_E_INVALID;
    phiaudit_reader *r = NULL;
    int rc = rd_alloc(&r, keyring);
    size_t cap = 0;
    if (rc == 0)
        rc = add_src(r, &cap, name ? name : "<buffer>");
    if (rc) {
        phiaudit_reader_free(&r);
        return rc;
    }
    r->is_mem = 1;
    r->mem = buf ? buf : (const uint8_t *)"";
    r->memlen = len;
    *out = r;
    return 0;
}

const char *phiaudit_reader_errmsg(const phiaudit_reader *r)
{
    return r ? r->err : "";
}

/* ---- Streams ------------------------------------------------------------------------------ */

static size_t hash_id(const uint8_t id[16])
{
    uint64_t a, b;
    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    return (size_t)(h ^ (h >> 31));
}

static int tab_grow(phiaudit_reader *r)
{
    size_t ncap = r->tabcap * 2;
    uint32_t *t = phiaudit_calloc(ncap, sizeof *t);
    if (!t)
        return PHIAUDIT_E_NOMEM;
    for (size_t i = 0; i < r->nst; i++) {
        size_t h = hash_id(r->st[i].id) & (ncap - 1);
        while (t[h])
            h = (h + 1) & (ncap - 1);
        t[h] = (uint32_t)(i + 1);
    }
    phiaudit_free(r->tab);
    r->tab = t;
    r->tabcap = ncap;
    return 0;
}

/* Find or create the stream; *created = 1 if new. NULL on NOMEM. */
static rd_stream *stream_get(phiaudit_reader *r, const uint8_t id[16], int *created)
{
    size_t mask = r->tabcap - 1;
    size_t h = hash_id(id) & mask;
    while (r->tab[h]) {
        rd_stream *s = &r->st[r->tab[h] - 1];
        if (memcmp(s->id, id, 16) == 0) {
            *created = 0;
            return s;
        }
        h = (h + 1) & mask;
    }
    if (r->nst >= UINT32_MAX - 1)
        return NULL;
    if ((r->nst + 1) * 2 > r->tabcap) {
        if (tab_grow(r))
            return NULL;
        return stream_get(r, id, created);
    }
    if (r->nst == r->stcap) {
        size_t ncap = r->stcap ? r->stcap * 2 : 8;
        rd_stream *n = phiaudit_realloc(r->st, ncap * sizeof *n);
        if (!n)
            return NULL;
        r->st = n;
        r->stcap = ncap;
    }
    rd_stream *s = &r->st[r->nst];
    memset(s, 0, sizeof *s);
    memcpy(s->id, id, 16);
    r->tab[h] = (uint32_t)(r->nst + 1);
    r->nst++;
    *created = 1;
    return s;
}

static void win_add(rd_stream *s, uint64_t seq, const uint8_t link[32])
{
    rd_win *w = &s->win[s->win_pos];
    w->seq = seq;
    memcpy(w->link, link, 32);
    s->win_pos = (s->win_pos + 1) % PHIAUDIT_READER_DUP_WINDOW;
    if (s->win_n < PHIAUDIT_READER_DUP_WINDOW)
        s->win_n++;
}

static const rd_win *win_find(const rd_stream *s, uint64_t seq)
{
    for (uint32_t i = 0; i < s->win_n; i++)
        if (s->win[i].seq == seq)
            return &s->win[i];
    return NULL;
}

/* Insert a gap at position pos (keeps the array sorted); 0, or 1 if it did not fit. */
static int gap_insert(rd_stream *s, size_t pos, const rd_gap *g)
{
    if (s->ngaps >= PHIAUDIT_REPORT_MAX_RANGES)
        return 1;
    if (!s->gaps) {
        s->gaps = phiaudit_malloc(PHIAUDIT_REPORT_MAX_RANGES * sizeof *s->gaps);
        if (!s->gaps)
            return -1;
    }
    memmove(&s->gaps[pos + 1], &s->gaps[pos], (s->ngaps - pos) * sizeof *s->gaps);
    s->gaps[pos] = *g;
    s->ngaps++;
    return 0;
}

/* Record a new gap [lo, hi] above every existing one. -1 on NOMEM. */
static int gap_add(rd_stream *s, uint64_t lo, uint64_t hi, const uint8_t *before,
                   const uint8_t *after_prev)
{
    rd_gap g;
    memset(&g, 0, sizeof g);
    g.lo = lo;
    g.hi = hi;
    if (before) {
        g.has_before = 1;
        memcpy(g.before, before, 32);
    }
    if (after_prev) {
        g.has_after = 1;
        memcpy(g.after_prev, after_prev, 32);
    }
    int rc = gap_insert(s, s->ngaps, &g);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        s->lost_missing += hi - lo + 1;
        s->lost_ranges++;
    }
    return 0;
}

/* A late record with `seq` inside a stored gap: chain-check it against the gap's edges and
 * remove it from the gap. Returns 1 if found (status bits added), 0 if not, -1 NOMEM. */
static int gap_fill(rd_stream *s, uint64_t seq, const uint8_t prev[32], const uint8_t link[32],
                    uint32_t *status)
{
    for (size_t i = 0; i < s->ngaps; i++) {
        rd_gap *g = &s->gaps[i];
        if (seq < g->lo || seq > g->hi)
            continue;
        if (seq == 0 && memcmp(prev, ZERO_LINK, 32) != 0)
            *status |= PHIAUDIT_RS_CHAIN_BREAK;
        if (seq == g->lo && g->has_before && memcmp(prev, g->before, 32) != 0)
            *status |= PHIAUDIT_RS_CHAIN_BREAK;
        if (seq == g->hi && g->has_after && memcmp(link, g->after_prev, 32) != 0)
            *status |= PHIAUDIT_RS_CHAIN_BREAK;
        if (g->lo == g->hi) {
            memmove(g, g + 1, (s->ngaps - i - 1) * sizeof *g);
            s->ngaps--;
        } else if (seq == g->lo) {
            g->lo++;
            g->has_before = 1;
            memcpy(g->before, link, 32);
        } else if (seq == g->hi) {
            g->hi--;
            g->has_after = 1;
            memcpy(g->after_prev, prev, 32);
        } else {
            rd_gap upper = *g;
            upper.lo = seq + 1;
            upper.has_before = 1;
            memcpy(upper.before, link, 32);
            g->hi = seq - 1;
            g->has_after = 1;
            memcpy(g->after_prev, prev, 32);
            int rc = gap_insert(s, i + 1, &upper);
            if (rc < 0)
                return -1;
            if (rc > 0) {
                s->lost_missing += upper.hi - upper.lo + 1;
                s->lost_ranges++;
            }
        }
        return 1;
    }
    return 0;
}

/* ---- Per-frame checks --------------------------------------------------------------------- */

/* Sequence, chain and stream-structure checks. Returns 0 or a fatal error. */
static int check_sequence(phiaudit_reader *r, const phiaudit_header *h, const uint8_t link[32],
                          uint32_t *status, rd_stream **sp)
{
    int created = 0;
    rd_stream *s = stream_get(r, h->stream_id, &created);
    if (!s)
        return PHIAUDIT_E_NOMEM;
    *sp = s;
    s->records++;
    uint32_t st = 0;
    if (created) {
        st |= PHIAUDIT_RS_NEW_STREAM;
        memcpy(s->key_id, h->key_id, 16);
    } else if (memcmp(s->key_id, h->key_id, 16) != 0) {
        st |= PHIAUDIT_RS_MISPLACED; /* a stream has one key: spliced or altered */
    }
    if ((h->type == PHIAUDIT_RECORD_OPEN) != (h->seq == 0))
        st |= PHIAUDIT_RS_MISPLACED;
    if ((s->flags & PHIAUDIT_SR_HAS_CLOSE) && h->seq > s->close_seq)
        st |= PHIAUDIT_RS_MISPLACED; /* record after the stream's CLOSE */
    if (h->type == PHIAUDIT_RECORD_CLOSE) {
        if ((s->flags & PHIAUDIT_SR_HAS_CLOSE) && h->seq != s->close_seq)
            st |= PHIAUDIT_RS_MISPLACED;
        else if (!created && h->seq < s->max_seq)
            st |= PHIAUDIT_RS_MISPLACED; /* CLOSE below records already seen */
        if (!(s->flags & PHIAUDIT_SR_HAS_CLOSE)) {
            s->flags |= PHIAUDIT_SR_HAS_CLOSE;
            s->close_seq = h->seq;
        }
    }
    if (h->type == PHIAUDIT_RECORD_OPEN)
        s->flags |= PHIAUDIT_SR_HAS_OPEN;

    int add_window = 1;
    if (created) {
        s->max_seq = h->seq;
        memcpy(s->last_link, link, 32);
        s->min_seq = h->seq;
        s->min_time = s->max_time = h->time_us;
        if (h->seq > 0) {
            if (gap_add(s, 0, h->seq - 1, NULL, h->prev_link))
                return PHIAUDIT_E_NOMEM;
        } else if (memcmp(h->prev_link, ZERO_LINK, 32) != 0) {
            st |= PHIAUDIT_RS_CHAIN_BREAK;
        }
    } else if (h->seq > s->max_seq && h->seq - 1 == s->max_seq) {
        if (memcmp(h->prev_link, s->last_link, 32) != 0)
            st |= PHIAUDIT_RS_CHAIN_BREAK;
        s->max_seq = h->seq;
        memcpy(s->last_link, link, 32);
        s->max_time = h->time_us;
    } else if (h->seq > s->max_seq) {
        st |= PHIAUDIT_RS_GAP_BEFORE;
        if (gap_add(s, s->max_seq + 1, h->seq - 1, s->last_link, h->prev_link))
            return PHIAUDIT_E_NOMEM;
        s->max_seq = h->seq;
        memcpy(s->last_link, link, 32);
        s->max_time = h->time_us;
    } else {
        const rd_win *w = win_find(s, h->seq);
        if (w) {
            st |= memcmp(w->link, link, 32) == 0 ? PHIAUDIT_RS_DUPLICATE : PHIAUDIT_RS_CONFLICT;
            add_window = 0;
        } else {
            int f = gap_fill(s, h->seq, h->prev_link, link, &st);
            if (f < 0)
                return PHIAUDIT_E_NOMEM;
            st |= PHIAUDIT_RS_REORDERED; /* late (f == 1) or an unexplained old seq */
        }
        if (h->seq < s->min_seq) {
            s->min_seq = h->seq;
            s->min_time = h->time_us;
        }
    }
    if (add_window)
        win_add(s, h->seq, link);

    if (st & PHIAUDIT_RS_DUPLICATE)
        s->duplicates++;
    if (st & PHIAUDIT_RS_CONFLICT)
        s->conflicts++;
    if (st & PHIAUDIT_RS_REORDERED)
        s->reordered++;
    if (st & PHIAUDIT_RS_CHAIN_BREAK)
        s->chain_breaks++;
    if (st & PHIAUDIT_RS_MISPLACED)
        s->misplaced++;
    *status |= st;
    return 0;
}

/* ---- Query matching ----------------------------------------------------------------------- */

void phiaudit_query_init(phiaudit_query *q)
{
    if (!q)
        return;
    memset(q, 0, sizeof *q);
    q->version = PHIAUDIT_QUERY_VERSION;
    q->since_us = INT64_MIN;
    q->until_us = INT64_MAX;
}

static void clear_query(phiaudit_reader *r)
{
    if (r->q_patient) {
        phiaudit_wipe(r->q_patient, r->q_patient_len);
        phiaudit_free(r->q_patient);
    }
    if (r->q_clinician) {
        phiaudit_wipe(r->q_clinician, r->q_clinician_len);
        phiaudit_free(r->q_clinician);
    }
    r->q_patient = r->q_clinician = NULL;
    r->q_patient_len = r->q_clinician_len = 0;
    phiaudit_wipe(r->tags, sizeof r->tags);
    r->ntags = 0;
    r->has_query = 0;
}

int phiaudit_reader_set_query(phiaudit_reader *r, const phiaudit_query *q)
{
    if (!r)
        return PHIAUDIT_E_INVALID;
    if (!q) {
        clear_query(r);
        return 0;
    }
    if (q->version != PHIAUDIT_QUERY_VERSION || !r->kr)
        return PHIAUDIT_E_INVALID;
    if (q->action != 0 && !strchr("CRUDE", q->action))
        return PHIAUDIT_E_INVALID;
    size_t pl = 0, cl = 0;
    int rc;
    if (q->patient_id && (rc = phiaudit_validate_id(q->patient_id, PHIAUDIT_MAX_ID_LEN, &pl)))
        return rc;
    if (q->clinician_id &&
        (rc = phiaudit_validate_id(q->clinician_id, PHIAUDIT_MAX_ID_LEN, &cl)))
        return rc;
    clear_query(r);
    if (q->patient_id && !(r->q_patient = phiaudit_strdup(q->patient_id)))
        return PHIAUDIT_E_NOMEM;
    if (q->clinician_id && !(r->q_clinician = phiaudit_strdup(q->clinician_id))) {
        clear_query(r);
        return PHIAUDIT_E_NOMEM;
    }
    r->q_patient_len = pl;
    r->q_clinician_len = cl;
    r->q = *q;
    r->q.patient_id = r->q.clinician_id = NULL;
    r->has_query = 1;
    return 0;
}

/* Blind-index tags of the query IDs under key_id (cached). NULL if not computable. */
static const rd_tagcache *query_tags(phiaudit_reader *r, const uint8_t key_id[16])
{
    for (size_t i = 0; i < r->ntags; i++)
        if (memcmp(r->tags[i].key_id, key_id, 16) == 0)
            return &r->tags[i];
    if (r->ntags == RD_MAX_INDEX_KEYS)
        return NULL;
    rd_tagcache *t = &r->tags[r->ntags];
    memset(t, 0, sizeof *t);
    memcpy(t->key_id, key_id, 16);
    t->ok_p = r->q_patient && phiaudit_blind_index(r->kr, key_id, 'P', r->q_patient, t->p) == 0;
    t->ok_c = r->q_clinician &&
              phiaudit_blind_index(r->kr, key_id, 'C', r->q_clinician, t->c) == 0;
    r->ntags++;
    return t;
}

/* Compare a raw JSON string (escaped) with want[0..n). */
static int json_eq(phiaudit_reader *r, const jspan *f, const char *want, size_t n)
{
    size_t len;
    if (!f->set || json_unescape(f->p, f->n, r->scratch, &len) != 0)
        return 0;
    int eq = len == n && memcmp(r->scratch, want, n) == 0;
    phiaudit_wipe(r->scratch, len);
    return eq;
}

static const uint8_t *find_bytes(const uint8_t *h, size_t hn, const char *needle, size_t nn)
{
    if (nn > hn)
        return NULL;
    return memmem(h, hn, needle, nn);
}

/* "Clinician C processed action A on Patient P in S.SSSSs" (FORMAT.md §6). Returns 0 and
 * the field spans, or -1 if the sentence is malformed or ambiguous. */
static int text_fields(const uint8_t *s, size_t n, jspan *cli, jspan *pat, char *action)
{
    static const char P1[] = "Clinician ", P2[] = " processed action ", P3[] = " on Patient ",
                      P4[] = " in ";
    if (n < sizeof P1 - 1 || memcmp(s, P1, sizeof P1 - 1) != 0)
        return -1;
    /* Duration: " in " digits "." 4 digits "s" at the very end. */
    if (n < 8 || s[n - 1] != 's')
        return -1;
    size_t e = n - 1;
    if (e < 6 || s[e - 5] != '.')
        return -1;
    for (size_t k = e - 4; k < e; k++)
        if (s[k] < '0' || s[k] > '9')
            return -1;
    size_t d = e - 5;
    while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9')
        d--;
    if (d == e - 5 || d < sizeof P4 - 1 || memcmp(s + d - (sizeof P4 - 1), P4, sizeof P4 - 1) != 0)
        return -1;
    size_t pat_end = d - (sizeof P4 - 1);
    /* The separator " processed action X on Patient " must occur exactly once. */
    const uint8_t *body = s + sizeof P1 - 1;
    size_t body_n = pat_end - (sizeof P1 - 1);
    const uint8_t *m = find_bytes(body, body_n, P2, sizeof P2 - 1);
    if (!m)
        return -1;
    size_t off = (size_t)(m - body);
    if (body_n - off < sizeof P2 - 1 + 1 + sizeof P3 - 1 ||
        memcmp(m + sizeof P2 - 1 + 1, P3, sizeof P3 - 1) != 0)
        return -1;
    if (find_bytes(m + 1, body_n - off - 1, P2, sizeof P2 - 1))
        return -1; /* ambiguous */
    cli->p = body;
    cli->n = off;
    cli->set = 1;
    *action = (char)m[sizeof P2 - 1];
    size_t ps = off + sizeof P2 - 1 + 1 + sizeof P3 - 1;
    pat->p = body + ps;
    pat->n = body_n - ps;
    pat->set = 1;
    return 0;
}

static int raw_eq(const jspan *f, const char *want, size_t n)
{
    return f->set && f->n == n && memcmp(f->p, want, n) == 0;
}

static int query_match(phiaudit_reader *r, const phiaudit_header *h, const uint8_t *pt, size_t n)
{
    if (h->type != PHIAUDIT_RECORD_DATA)
        return 0;
    /* Blind-index pre-filter: the header is authenticated by now, so a mismatching tag
     * proves a mismatch and saves parsing the payload. */
    if ((h->flags & PHIAUDIT_HFLAG_BLIND_INDEX) && (r->q_patient || r->q_clinician)) {
        const rd_tagcache *t = query_tags(r, h->key_id);
        if (t && t->ok_p && memcmp(t->p, h->bi_patient, PHIAUDIT_BLIND_INDEX_LEN) != 0)
            return 0;
        if (t && t->ok_c && memcmp(t->c, h->bi_clinician, PHIAUDIT_BLIND_INDEX_LEN) != 0)
            return 0;
    }
    if (n > 0 && pt[0] == '{') {
        jspan f[JF_COUNT];
        if (json_collect(pt, n, f) != 0)
            return 0;
        if (r->q_patient && !json_eq(r, &f[JF_PATIENT], r->q_patient, r->q_patient_len))
            return 0;
        if (r->q_clinician && !json_eq(r, &f[JF_CLINICIAN], r->q_clinician, r->q_clinician_len))
            return 0;
        if (r->q.action) {
            char a = (char)r->q.action;
            if (!json_eq(r, &f[JF_ACTION], &a, 1))
                return 0;
        }
        if (r->q.since_us != INT64_MIN || r->q.until_us != INT64_MAX) {
            int64_t t;
            size_t len;
            if (!f[JF_START].set || f[JF_START].n > 64 ||
                json_unescape(f[JF_START].p, f[JF_START].n, r->scratch, &len) != 0 ||
                time_parse_n((const char *)r->scratch, len, &t) != 0)
                return 0;
            if (t < r->q.since_us || t >= r->q.until_us)
                return 0;
        }
        return 1;
    }
    jspan cli, pat;
    char action;
    if (text_fields(pt, n, &cli, &pat, &action) != 0)
        return 0;
    if (r->q_patient && !raw_eq(&pat, r->q_patient, r->q_patient_len))
        return 0;
    if (r->q_clinician && !raw_eq(&cli, r->q_clinician, r->q_clinician_len))
        return 0;
    if (r->q.action && action != (char)r->q.action)
        return 0;
    /* TEXT payloads carry no start time: the header's sealing time stands in. */
    if (h->time_us < r->q.since_us || h->time_us >= r->q.until_us)
        return 0;
    return 1;
}

/* ---- Reading ------------------------------------------------------------------------------ */

static void src_add_damage(rd_src *s, uint64_t from, uint64_t to)
{
    if (to <= from)
        return;
    s->damaged_bytes += to - from;
    /* Merge with the previous range when adjacent. */
    if (s->ndmg && s->dmg[s->ndmg - 1].last + 1 == from) {
        s->dmg[s->ndmg - 1].last = to - 1;
        return;
    }
    s->damaged_count++;
    if (!s->dmg)
        s->dmg = phiaudit_malloc(PHIAUDIT_REPORT_MAX_RANGES * sizeof *s->dmg);
    if (s->dmg && s->ndmg < PHIAUDIT_REPORT_MAX_RANGES) {
        s->dmg[s->ndmg].first = from;
        s->dmg[s->ndmg].last = to - 1;
        s->ndmg++;
    }
}

static int open_cur(phiaudit_reader *r)
{
    rd_src *s = &r->src[r->cur];
    r->start = r->end = 0;
    r->base = 0;
    r->in_damage = 0;
    if (r->is_mem) {
        r->data = r->mem;
        r->end = r->memlen;
        r->eof = 1;
        r->open = 1;
        s->bytes = r->memlen;
        return 0;
    }
    r->eof = 0;
    r->data = r->buf;
    r->fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (r->fd < 0) {
        s->error = errno_rc(errno);
        return s->error;
    }
#ifdef POSIX_FADV_SEQUENTIAL
    (void)posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    r->open = 1;
    return 0;
}

static void close_cur(phiaudit_reader *r)
{
    rd_src *s = &r->src[r->cur];
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
    /* A non-empty file without a single frame is not a phiaudit log: an error, not damage
     * (a torn-only file — a crash during its first write — stays a torn tail). */
    if (!s->error && s->frames == 0 && s->damaged_bytes && s->damaged_bytes + s->torn_bytes == s->bytes) {
        s->error = PHIAUDIT_E_FORMAT;
        s->damaged_bytes = s->damaged_count = 0;
        s->ndmg = 0;
    }
    r->open = 0;
    r->cur++;
}

/* Read more of the current file. Compacts the window first. */
static void fill(phiaudit_reader *r)
{
    rd_src *s = &r->src[r->cur];
    if (r->start > 0) {
        size_t keep = r->end - r->start;
        memmove(r->buf, r->buf + r->start, keep);
        r->base += r->start;
        r->start = 0;
        r->end = keep;
    }
    for (;;) {
        ssize_t k = read(r->fd, r->buf + r->end, RD_CHUNK - r->end);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            s->error = PHIAUDIT_E_IO;
            r->eof = 1;
            return;
        }
        if (k == 0)
            r->eof = 1;
        r->end += (size_t)k;
        s->bytes += (uint64_t)k;
        return;
    }
}

/* Scan forward in damaged bytes for the next frame; returns 1 when resynchronised or the
 * file is exhausted, 0 when more data is needed. */
static int resync(phiaudit_reader *r)
{
    rd_src *s = &r->src[r->cur];
    const uint8_t *p = r->data + r->start;
    size_t avail = r->end - r->start;
    phiaudit_header h;
    for (size_t i = 0; i < avail;) {
        const uint8_t *q = memchr(p + i, 'P', avail - i);
        if (!q)
            break;
        i = (size_t)(q - p);
        int rc = phiaudit_frame_parse(p + i, avail - i, &h);
        if (rc == 0 || (rc == PHIAUDIT_E_TRUNCATED && r->eof)) {
            src_add_damage(s, r->damage_start, r->base + r->start + i);
            r->start += i;
            r->in_damage = 0;
            return 1;
        }
        if (rc == PHIAUDIT_E_TRUNCATED) {
            /* Maybe a frame: keep it and read more. */
            r->start += i;
            return 0;
        }
        i++;
    }
    if (r->eof) {
        src_add_damage(s, r->damage_start, r->base + r->end);
        r->start = r->end;
        r->in_damage = 0;
        return 1;
    }
    /* Keep the last 3 bytes: a magic may straddle the window edge. */
    if (avail > 3)
        r->start = r->end - 3;
    return 0;
}

static int process_frame(phiaudit_reader *r, const uint8_t *f, const phiaudit_header *h,
                         phiaudit_reader_record *rec)
{
    rd_src *src = &r->src[r->cur];
    memset(rec, 0, sizeof *rec);
    rec->header = *h;
    rec->frame = f;
    rec->frame_len = h->frame_len;
    rec->source_index = r->cur;
    rec->offset = r->base + r->start;
    src->frames++;
    r->total_frames++;

    uint8_t link[32];
    int rc = phiaudit_chain_link(f, h->frame_len, link);
    if (rc)
        return rd_fail(r, rc, "chain link");
    rd_stream *s = NULL;
    uint32_t st = 0;
    rc = check_sequence(r, h, link, &st, &s);
    if (rc)
        return rd_fail(r, rc, "stream state");

    if (r->kr) {
        size_t n = 0;
        size_t cap = h->frame_len - PHIAUDIT_MIN_FRAME_LEN;
        rc = phiaudit_frame_open_parsed(r->kr, f, h, r->pt, cap, &n);
        if (rc == 0) {
            st |= PHIAUDIT_RS_AUTHENTICATED;
            s->authenticated++;
            s->known_key++;
            r->pt_len = n;
            rec->payload = r->pt;
            rec->payload_len = n;
            if (r->has_query && query_match(r, h, r->pt, n))
                st |= PHIAUDIT_RS_MATCH;
        } else if (rc == PHIAUDIT_E_AUTH) {
            st |= PHIAUDIT_RS_AUTH_FAILED;
            s->modified++;
            s->known_key++;
        } else if (rc == PHIAUDIT_E_UNKNOWN_KEY) {
            st |= PHIAUDIT_RS_UNKNOWN_KEY;
            s->unknown_key++;
        } else {
            return rd_fail(r, rc, "decryption");
        }
    }
    rec->status = st;
    r->start += h->frame_len;
    return 1;
}

int phiaudit_reader_next(phiaudit_reader *r, phiaudit_reader_record *rec)
{
    if (!r || !rec)
        return PHIAUDIT_E_INVALID;
    if (r->fatal)
        return r->fatal;
    if (r->pt_len) {
        phiaudit_wipe(r->pt, r->pt_len);
        r->pt_len = 0;
    }
    for (;;) {
        if (!r->open) {
            if (r->cur >= r->nsrc)
                return 0;
            if (open_cur(r) != 0)
                r->cur++;
            continue;
        }
        rd_src *s = &r->src[r->cur];
        if (r->in_damage) {
            if (!resync(r))
                fill(r);
            continue;
        }
        size_t avail = r->end - r->start;
        if (avail == 0) {
            if (r->eof)
                close_cur(r);
            else
                fill(r);
            continue;
        }
        const uint8_t *p = r->data + r->start;
        phiaudit_header h;
        int rc = phiaudit_frame_parse(p, avail, &h);
        if (rc == 0)
            return process_frame(r, p, &h, rec);
        if (rc == PHIAUDIT_E_TRUNCATED && !r->eof) {
            fill(r);
            continue;
        }
        if (rc == PHIAUDIT_E_TRUNCATED) {
            /* The file ends inside this frame. Only a torn tail if no whole frame follows
             * (a crash leaves a prefix of one frame, nothing after it). */
            phiaudit_header h2;
            size_t next = avail > 1 ? find_frame(p + 1, avail - 1, 0, &h2) : SIZE_MAX;
            if (next == SIZE_MAX) {
                s->torn_off = r->base + r->start;
                s->torn_bytes = avail;
                r->start = r->end;
                continue;
            }
        }
        r->in_damage = 1;
        r->damage_start = r->base + r->start;
        r->start++;
    }
}

int phiaudit_reader_run(phiaudit_reader *r)
{
    phiaudit_reader_record rec;
    int rc;
    while ((rc = phiaudit_reader_next(r, &rec)) == 1) {
    }
    return rc;
}

/* ---- Reports ------------------------------------------------------------------------------ */

static int stream_verdict(const rd_stream *s, uint64_t missing, int pred)
{
    if (s->modified || s->conflicts || s->reordered || s->chain_breaks || s->misplaced || missing)
        return PHIAUDIT_VERDICT_TAMPERED;
    if (s->unknown_key)
        return PHIAUDIT_VERDICT_ERROR;
    if (pred || !(s->flags & PHIAUDIT_SR_HAS_CLOSE))
        return PHIAUDIT_VERDICT_INCOMPLETE;
    return PHIAUDIT_VERDICT_INTACT;
}

/* Missing-record totals of a stream; *pred = 1 if its predecessor is missing. */
static uint64_t stream_missing(const rd_stream *s, uint64_t *ranges, int *pred)
{
    uint64_t m = s->lost_missing, nr = s->lost_ranges;
    *pred = 0;
    for (size_t i = 0; i < s->ngaps; i++) {
        if (s->gaps[i].lo == 0) {
            *pred = 1;
            continue;
        }
        m += s->gaps[i].hi - s->gaps[i].lo + 1;
        nr++;
    }
    if (ranges)
        *ranges = nr;
    return m;
}

static int source_verdict(const rd_src *s)
{
    if (s->damaged_bytes)
        return PHIAUDIT_VERDICT_TAMPERED;
    if (s->error)
        return PHIAUDIT_VERDICT_ERROR;
    if (s->torn_bytes)
        return PHIAUDIT_VERDICT_INCOMPLETE;
    return PHIAUDIT_VERDICT_INTACT;
}

int phiaudit_reader_verdict(const phiaudit_reader *r)
{
    if (!r)
        return PHIAUDIT_VERDICT_ERROR;
    int v = PHIAUDIT_VERDICT_INTACT;
    for (size_t i = 0; i < r->nst; i++) {
        int pred;
        uint64_t missing = stream_missing(&r->st[i], NULL, &pred);
        v = worse(v, stream_verdict(&r->st[i], missing, pred));
    }
    for (size_t i = 0; i < r->nsrc; i++)
        v = worse(v, source_verdict(&r->src[i]));
    if (r->total_frames == 0)
        v = worse(v, PHIAUDIT_VERDICT_ERROR);
    if (r->fatal)
        v = worse(v, PHIAUDIT_VERDICT_ERROR);
    return v;
}

size_t phiaudit_reader_stream_count(const phiaudit_reader *r)
{
    return r ? r->nst : 0;
}

int phiaudit_reader_stream(phiaudit_reader *r, size_t index, phiaudit_stream_report *out)
{
    if (!r || !out)
        return PHIAUDIT_E_INVALID;
    if (index >= r->nst)
        return PHIAUDIT_E_NOT_FOUND;
    rd_stream *s = &r->st[index];
    memset(out, 0, sizeof *out);
    memcpy(out->stream_id, s->id, 16);
    memcpy(out->key_id, s->key_id, 16);
    int pred;
    out->missing_records = stream_missing(s, &out->missing_range_count, &pred);
    out->verdict = (uint32_t)stream_verdict(s, out->missing_records, pred);
    out->flags = s->flags;
    if (pred)
        out->flags |= PHIAUDIT_SR_MISSING_PREDECESSOR;
    if (!(s->flags & PHIAUDIT_SR_HAS_CLOSE))
        out->flags |= PHIAUDIT_SR_MISSING_CLOSE;
    if (s->known_key > 0 && s->modified == s->known_key)
        out->flags |= PHIAUDIT_SR_ALL_AUTH_FAILED;
    out->records = s->records;
    out->authenticated = s->authenticated;
    out->first_seq = s->min_seq;
    out->last_seq = s->max_seq;
    out->first_time_us = s->min_time;
    out->last_time_us = s->max_time;
    out->modified = s->modified;
    out->unknown_key = s->unknown_key;
    out->duplicates = s->duplicates;
    out->conflicts = s->conflicts;
    out->reordered = s->reordered;
    out->chain_breaks = s->chain_breaks;
    out->misplaced = s->misplaced;
    if (s->ngaps) {
        if (!s->rep) {
            s->rep = phiaudit_malloc(PHIAUDIT_REPORT_MAX_RANGES * sizeof *s->rep);
            if (!s->rep)
                return PHIAUDIT_E_NOMEM;
        }
        size_t k = 0;
        for (size_t i = 0; i < s->ngaps; i++) {
            if (s->gaps[i].lo == 0)
                continue;
            s->rep[k].first = s->gaps[i].lo;
            s->rep[k].last = s->gaps[i].hi;
            k++;
        }
        out->missing_ranges = k ? s->rep : NULL;
        out->missing_ranges_len = k;
    }
    return 0;
}

size_t phiaudit_reader_source_count(const phiaudit_reader *r)
{
    return r ? r->nsrc : 0;
}

int phiaudit_reader_source(const phiaudit_reader *r, size_t index, phiaudit_source_report *out)
{
    if (!r || !out)
        return PHIAUDIT_E_INVALID;
    if (index >= r->nsrc)
        return PHIAUDIT_E_NOT_FOUND;
    const rd_src *s = &r->src[index];
    memset(out, 0, sizeof *out);
    out->path = s->path;
    out->error = s->error;
    out->verdict = (uint32_t)source_verdict(s);
    out->bytes = s->bytes;
    out->frames = s->frames;
    out->torn_tail_offset = s->torn_off;
    out->torn_tail_bytes = s->torn_bytes;
    out->damaged_bytes = s->damaged_bytes;
    out->damaged_range_count = s->damaged_count;
    out->damaged_ranges = s->ndmg ? s->dmg : NULL;
    out->damaged_ranges_len = s->ndmg;
    return 0;
}

/* ---- Keyring directory -------------------------------------------------------------------- */

int phiaudit_keyring_add_dir(phiaudit_keyring *kr, const char *dir, size_t *added)
{
    if (added)
        *added = 0;
    if (!kr || !dir)
        return PHIAUDIT_E_INVALID;
    char **names;
    size_t n;
    int rc = list_dir(dir, &names, &n);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *p = join_path(dir, names[i]);
        struct stat st;
        if (!p) {
            rc = PHIAUDIT_E_NOMEM;
        } else if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            /* subdirectories are not descended into */
        } else {
            rc = phiaudit_keyring_add_file(kr, p);
            if (rc == 0 && added)
                (*added)++;
        }
        phiaudit_free(p);
    }
    free_names(names, n);
    return rc;
}
