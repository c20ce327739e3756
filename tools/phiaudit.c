/*
 * phiaudit — command-line tool for the phiaudit library.
 *
 *   phiaudit keygen FILE          create a key file, print its key ID
 *   phiaudit log --key ... ...    seal events (from options or JSON Lines on stdin)
 *
 * Uses only the public API (<phiaudit.h>). Rules this file keeps everywhere:
 *  - Never print PHI (field values) or key bytes. Error messages name the line, the column
 *    and the key ("clinician"), never a value; they may contain paths the user typed, which
 *    are printed with control characters escaped, and sink URIs with credentials masked.
 *  - Buffers that held PHI (input lines, decoded strings, the read buffer) and the key are
 *    wiped with phiaudit_wipe() before reuse or exit.
 *  - Exit status: 0 success, 1 bad input, 3 usage/key/sink/other errors, 128+N on signal N
 *    (after closing the log stream cleanly).
 *
 * Adding a command: write `static int cmd_NAME(int argc, char **argv)` (argv[0] is the
 * command name; parse with cli_next(); print with cli_error()/cli_usage_error(); return a
 * CLI_EXIT_* code) and add a row to cli_commands[] at the end of this file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "phiaudit.h"
#include "commands.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#if defined(__GNUC__)
#define CLI_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CLI_PRINTF(fmt, args)
#endif

#define CLI_EXIT_OK 0
#define CLI_EXIT_BAD_INPUT 1
#define CLI_EXIT_ERROR 3

#define CLI_MAX_LINE (1024u * 1024u) /* bytes per JSON line, newline excluded */
#define CLI_READ_CHUNK 65536u
#define CLI_MAX_SINKS 32
#define CLI_DEFAULT_APP "phiaudit-cli"

/* Latest representable start time: 9999-12-31T23:59:59.999999Z. */
#define CLI_MAX_START_US INT64_C(253402300799999999)

/* ============================================================================================
 * Output helpers
 * ========================================================================================== */

/* Print n bytes of a user-supplied string (a path, a URI) with C0 controls and DEL escaped,
 * so that a hostile file name cannot forge lines or drive the terminal. */
static void put_sanitized_n(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", (unsigned)c);
        else
            fputc(c, f);
    }
}

static void put_sanitized(FILE *f, const char *s)
{
    put_sanitized_n(f, s, strlen(s));
}

/* 1 if a query parameter name suggests a secret (password=, sslkey=, token=...). */
static int uri_param_is_secret(const char *name, size_t n)
{
    static const char *const words[] = {"pass", "secret", "token", "key", "auth", "cred"};
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= n; i++) {
            if (strncasecmp(name + i, words[w], wl) == 0)
                return 1;
        }
    }
    return 0;
}

/* Print a sink URI with credentials masked: the password of scheme://user:PASSWORD@host and
 * the values of secret-looking query parameters become "***". Future database and syslog
 * sinks take such URIs, and stderr often ends up in a shared journal. */
static void put_uri_redacted(FILE *f, const char *uri)
{
    const char *p = uri;
    const char *sep = strstr(uri, "://");
    if (sep) {
        const char *auth = sep + 3;
        size_t auth_len = strcspn(auth, "/?#");
        const char *at = NULL;
        for (size_t i = 0; i < auth_len; i++) {
            if (auth[i] == '@')
                at = auth + i;
        }
        if (at) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon) {
                put_sanitized_n(f, uri, (size_t)(colon + 1 - uri));
                fputs("***", f);
                p = at;
            }
        }
    }
    const char *q = strchr(p, '?');
    if (!q) {
        put_sanitized(f, p);
        return;
    }
    put_sanitized_n(f, p, (size_t)(q + 1 - p));
    q++;
    while (*q) {
        size_t plen = strcspn(q, "&#");
        const char *eq = memchr(q, '=', plen);
        if (eq && uri_param_is_secret(q, (size_t)(eq - q))) {
            put_sanitized_n(f, q, (size_t)(eq + 1 - q));
            fputs("***", f);
        } else {
            put_sanitized_n(f, q, plen);
        }
        q += plen;
        if (*q == '#') {
            put_sanitized(f, q);
            return;
        }
        if (*q == '&') {
            fputc('&', f);
            q++;
        }
    }
}

/* A message is built in pieces; the stream lock keeps it on one line even when the logger's
 * flusher thread reports a diagnostic at the same time. */
static void cli_msg_begin(const char *cmd)
{
    flockfile(stderr);
    fputs("phiaudit", stderr);
    if (cmd)
        fprintf(stderr, " %s", cmd);
    fputs(": ", stderr);
}

static void cli_msg_end(void)
{
    fputc('\n', stderr);
    funlockfile(stderr);
}

static void cli_error(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);
static void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    cli_msg_begin(cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    cli_msg_end();
}

static int cli_usage_error(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);
static int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    cli_msg_begin(cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    cli_msg_end();
    if (cmd)
        fprintf(stderr, "Try 'phiaudit %s --help' for more information.\n", cmd);
    else
        fputs("Try 'phiaudit --help' for more information.\n", stderr);
    return CLI_EXIT_ERROR;
}

/* Help texts are arrays of pieces: ISO C only guarantees 4095-byte string literals. */
static int print_help(const char *const *text)
{
    for (size_t i = 0; text[i]; i++)
        fputs(text[i], stdout);
    return CLI_EXIT_OK;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

/* ============================================================================================
 * Command-line parsing
 *
 * A small parser instead of getopt_long(): getopt prints its own messages, which echo the
 * whole offending argument ("--patinet=<a patient ID>"), and accepts abbreviations. Here
 * long options take their value as the next argument or after '='; "--" ends options.
 * ========================================================================================== */

typedef struct cli_option {
    const char *name; /* long name without "--" */
    char short_name;  /* 0 = none */
    int has_arg;
    int id; /* > 0 */
} cli_option;

typedef struct cli_args {
    const char *cmd;
    int argc;
    char **argv;
    int next;            /* index of the next argument */
    int only_positional; /* after "--" */
    const char *value;   /* value of the option, or the positional argument */
    const char *name;    /* the option's long name, for messages */
} cli_args;

#define CLI_ARG_END 0
#define CLI_ARG_POSITIONAL (-1)
#define CLI_ARG_ERROR (-2)

static void cli_args_init(cli_args *a, const char *cmd, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->argc = argc;
    a->argv = argv;
    a->next = 1;
}

/* An unknown option is named in the error only if it looks like an option name; a stray
 * value (say, the second word of an unquoted name) is referred to by position instead. */
static int looks_like_option_name(const char *s, size_t n)
{
    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* Returns an option id, CLI_ARG_POSITIONAL (a->value set), CLI_ARG_END, or CLI_ARG_ERROR
 * (message printed). */
static int cli_next(cli_args *a, const cli_option *opts, size_t nopts)
{
    for (;;) {
        if (a->next >= a->argc)
            return CLI_ARG_END;
        int index = a->next++;
        const char *arg = a->argv[index];
        a->value = NULL;
        a->name = NULL;
        if (a->only_positional || arg[0] != '-' || arg[1] == '\0') {
            a->value = arg;
            return CLI_ARG_POSITIONAL;
        }
        if (strcmp(arg, "--") == 0) {
            a->only_positional = 1;
            continue;
        }
        const cli_option *opt = NULL;
        const char *inline_value = NULL;
        if (arg[1] != '-') {
            if (arg[2] == '\0') {
                for (size_t i = 0; i < nopts; i++) {
                    if (opts[i].short_name && opts[i].short_name == arg[1])
                        opt = &opts[i];
                }
            }
            if (!opt) {
                if (arg[2] == '\0' && looks_like_option_name(arg + 1, 1))
                    return cli_usage_error(a->cmd, "unknown option '-%c'", arg[1]), CLI_ARG_ERROR;
                return cli_usage_error(a->cmd, "argument %d: unrecognized option", index),
                       CLI_ARG_ERROR;
            }
        } else {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            for (size_t i = 0; i < nopts; i++) {
                if (strlen(opts[i].name) == nlen && memcmp(opts[i].name, name, nlen) == 0)
                    opt = &opts[i];
            }
            if (!opt) {
                if (looks_like_option_name(name, nlen))
                    return cli_usage_error(a->cmd, "unknown option '--%.*s'", (int)nlen, name),
                           CLI_ARG_ERROR;
                return cli_usage_error(a->cmd, "argument %d: unrecognized option", index),
                       CLI_ARG_ERROR;
            }
            if (eq)
                inline_value = eq + 1;
        }
        a->name = opt->name;
        if (opt->has_arg) {
            if (inline_value) {
                a->value = inline_value;
            } else if (a->next < a->argc) {
                a->value = a->argv[a->next++];
            } else {
                return cli_usage_error(a->cmd, "option '--%s' requires an argument", opt->name),
                       CLI_ARG_ERROR;
            }
        } else if (inline_value) {
            return cli_usage_error(a->cmd, "option '--%s' does not take an argument", opt->name),
                   CLI_ARG_ERROR;
        }
        return opt->id;
    }
}

/* ============================================================================================
 * Event field values (shared by the options and the JSON Lines input)
 * ========================================================================================== */

enum event_field {
    F_CLINICIAN,
    F_PATIENT,
    F_ACTION,
    F_OUTCOME,
    F_TYPE,
    F_SUBTYPE,
    F_PURPOSE,
    F_DETAIL,
    F_BREAK_GLASS,
    F_START,
    F_DURATION_US,
    F_COUNT
};

/* JSON key names; the option names are the same with '_' replaced by '-'. */
static const char *const field_json_names[F_COUNT] = {
    "clinician", "patient", "action",      "outcome", "type",        "subtype",
    "purpose",   "detail",  "break_glass", "start",   "duration_us",
};
static const char *const field_option_names[F_COUNT] = {
    "clinician", "patient", "action",      "outcome", "type",        "subtype",
    "purpose",   "detail",  "break-glass", "start",   "duration-us",
};

#define CLI_ALLOWED_KEYS                                                                           \
    "clinician, patient, action, outcome, type, subtype, purpose, detail, break_glass, "           \
    "start, duration_us"
#define CLI_ACTION_VALUES "C, R, U, D, E, create, read, update, delete or execute"
#define CLI_OUTCOME_VALUES "0, 4, 8, 12, success, minor, serious or major"
#define CLI_START_FORMS "YYYY-MM-DDTHH:MM:SS[.ffffff]Z or microseconds since the epoch"

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Returns the PHIAUDIT_ACTION_* value, or -1. */
static int parse_action(const char *s)
{
    static const struct {
        const char *name;
        int action;
    } table[] = {
        {"C", PHIAUDIT_ACTION_CREATE},  {"create", PHIAUDIT_ACTION_CREATE},
        {"R", PHIAUDIT_ACTION_READ},    {"read", PHIAUDIT_ACTION_READ},
        {"U", PHIAUDIT_ACTION_UPDATE},  {"update", PHIAUDIT_ACTION_UPDATE},
        {"D", PHIAUDIT_ACTION_DELETE},  {"delete", PHIAUDIT_ACTION_DELETE},
        {"E", PHIAUDIT_ACTION_EXECUTE}, {"execute", PHIAUDIT_ACTION_EXECUTE},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(s, table[i].name) == 0)
            return table[i].action;
    }
    return -1;
}

/* Returns the PHIAUDIT_OUTCOME_* value, or -1. */
static int parse_outcome(const char *s)
{
    static const struct {
        const char *name;
        int outcome;
    } table[] = {
        {"0", PHIAUDIT_OUTCOME_SUCCESS},         {"success", PHIAUDIT_OUTCOME_SUCCESS},
        {"4", PHIAUDIT_OUTCOME_MINOR_FAILURE},   {"minor", PHIAUDIT_OUTCOME_MINOR_FAILURE},
        {"8", PHIAUDIT_OUTCOME_SERIOUS_FAILURE}, {"serious", PHIAUDIT_OUTCOME_SERIOUS_FAILURE},
        {"12", PHIAUDIT_OUTCOME_MAJOR_FAILURE},  {"major", PHIAUDIT_OUTCOME_MAJOR_FAILURE},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(s, table[i].name) == 0)
            return table[i].outcome;
    }
    return -1;
}

static int outcome_valid(int64_t v)
{
    return v == PHIAUDIT_OUTCOME_SUCCESS || v == PHIAUDIT_OUTCOME_MINOR_FAILURE ||
           v == PHIAUDIT_OUTCOME_SERIOUS_FAILURE || v == PHIAUDIT_OUTCOME_MAJOR_FAILURE;
}

/* Non-empty decimal digits, no sign, fitting in int64_t. 0 or -1. */
static int parse_nonneg_i64(const char *s, int64_t *out)
{
    uint64_t v = 0;
    if (s[0] == '\0')
        return -1;
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_digit(c))
            return -1;
        unsigned d = (unsigned)(c - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = (int64_t)v;
    return 0;
}

/* Exactly n digits. */
static int parse_fixed_digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_digit(c))
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H. Hinnant's
 * days_from_civil), so no time zone or timegm() is involved. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z, UTC only, 1970..9999, no leap second. 0 or -1. */
static int parse_iso8601_utc(const char *s, int64_t *out_us)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, se;
    if (strlen(s) < 20)
        return -1;
    if (parse_fixed_digits(s, 4, &y) || s[4] != '-' || parse_fixed_digits(s + 5, 2, &mo) ||
        s[7] != '-' || parse_fixed_digits(s + 8, 2, &d) || s[10] != 'T' ||
        parse_fixed_digits(s + 11, 2, &h) || s[13] != ':' || parse_fixed_digits(s + 14, 2, &mi) ||
        s[16] != ':' || parse_fixed_digits(s + 17, 2, &se))
        return -1;
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        p++;
        while (is_digit((unsigned char)*p)) {
            if (digits == 6)
                return -1;
            frac = frac * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 6; digits++)
            frac *= 10;
    }
    if (p[0] != 'Z' || p[1] != '\0')
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59)
        return -1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 ? leap : 0))
        return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    *out_us = secs * 1000000 + frac;
    return 0;
}

static int start_valid(int64_t us)
{
    return us > 0 && us <= CLI_MAX_START_US;
}

/* Option form of a start time: ISO-8601 UTC, or digits = µs since the epoch. */
static int parse_start_text(const char *s, int64_t *out_us)
{
    int64_t v;
    if (parse_nonneg_i64(s, &v) != 0 && parse_iso8601_utc(s, &v) != 0)
        return -1;
    if (!start_valid(v))
        return -1;
    *out_us = v;
    return 0;
}

/* Library errors caused by the event's content (exit 1) rather than by the log (exit 3). */
static int rc_is_input_error(int rc)
{
    return rc == PHIAUDIT_E_INVALID || rc == PHIAUDIT_E_TOO_LONG || rc == PHIAUDIT_E_UTF8 ||
           rc == PHIAUDIT_E_EMPTY || rc == PHIAUDIT_E_BAD_CHAR;
}

/* ============================================================================================
 * Strict JSON object parser for one line
 *
 * Accepts exactly one flat object: {"key": value, ...} whose values are strings, integers,
 * true, false or null. Strings must be valid UTF-8 (RFC 8259 §8.1); escapes are decoded,
 * including surrogate pairs; lone surrogates and \u0000 are errors. Numbers must be
 * integers within int64. Duplicate keys and anything after the object are errors.
 *
 * Decoded strings are written NUL-terminated into a caller-provided buffer. Decoding never
 * grows the text (an escape is never shorter than what it decodes to, and each string's two
 * quotes pay for its NUL), so a buffer of line length + 1 always suffices; the bounds are
 * checked anyway. Error messages are static text plus a column: never the input.
 * ========================================================================================== */

#define JSON_MAX_MEMBERS 32

typedef enum json_type { JSON_NULL, JSON_BOOL, JSON_INT, JSON_STRING } json_type;

typedef struct json_member {
    const char *key; /* decoded, NUL-terminated */
    size_t key_len;
    json_type type;
    const char *str; /* JSON_STRING: decoded, NUL-terminated, no embedded NUL */
    size_t str_len;
    int64_t num; /* JSON_INT */
    int boolean; /* JSON_BOOL */
} json_member;

typedef struct json_parser {
    const unsigned char *begin, *cur, *end;
    char *out;
    size_t out_len, out_cap;
    const char *err; /* static text */
    size_t err_col;  /* 1-based byte column */
    json_member members[JSON_MAX_MEMBERS];
    size_t count;
} json_parser;

static void json_init(json_parser *jp, const unsigned char *text, size_t len, char *out,
                      size_t out_cap)
{
    memset(jp, 0, sizeof *jp);
    jp->begin = text;
    jp->cur = text;
    jp->end = text + len;
    jp->out = out;
    jp->out_cap = out_cap;
}

static int json_fail(json_parser *jp, const unsigned char *at, const char *msg)
{
    jp->err = msg;
    jp->err_col = (size_t)(at - jp->begin) + 1;
    return -1;
}

static int json_put(json_parser *jp, unsigned char c)
{
    if (jp->out_len >= jp->out_cap)
        return json_fail(jp, jp->cur, "internal error: decode buffer too small");
    jp->out[jp->out_len++] = (char)c;
    return 0;
}

static void json_skip_ws(json_parser *jp)
{
    while (jp->cur < jp->end &&
           (*jp->cur == ' ' || *jp->cur == '\t' || *jp->cur == '\r' || *jp->cur == '\n'))
        jp->cur++;
}

/* Length (2..4) of the well-formed UTF-8 sequence at p, or 0 (Unicode Table 3-7: no
 * overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *p, const unsigned char *end)
{
    size_t avail = (size_t)(end - p);
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    }
    return n;
}

/* Four hex digits at jp->cur (advanced past them). Returns 0..0xFFFF or -1. */
static int32_t json_hex4(json_parser *jp)
{
    int32_t v = 0;
    if (jp->end - jp->cur < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned char c = jp->cur[i];
        int32_t d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    jp->cur += 4;
    return v;
}

static int json_put_utf8(json_parser *jp, uint32_t cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    for (size_t i = 0; i < n; i++) {
        if (json_put(jp, b[i]) != 0)
            return -1;
    }
    return 0;
}

/* jp->cur is at the opening quote. */
static int json_parse_string(json_parser *jp, const char **s, size_t *n)
{
    const unsigned char *open = jp->cur;
    size_t start = jp->out_len;
    jp->cur++;
    for (;;) {
        if (jp->cur >= jp->end)
            return json_fail(jp, open, "unterminated string");
        unsigned char c = *jp->cur;
        if (c == '"') {
            jp->cur++;
            break;
        }
        if (c == '\\') {
            const unsigned char *esc = jp->cur;
            if (jp->end - jp->cur < 2)
                return json_fail(jp, open, "unterminated string");
            c = jp->cur[1];
            jp->cur += 2;
            unsigned char plain;
            switch (c) {
            case '"':
                plain = '"';
                break;
            case '\\':
                plain = '\\';
                break;
            case '/':
                plain = '/';
                break;
            case 'b':
                plain = '\b';
                break;
            case 'f':
                plain = '\f';
                break;
            case 'n':
                plain = '\n';
                break;
            case 'r':
                plain = '\r';
                break;
            case 't':
                plain = '\t';
                break;
            case 'u': {
                int32_t hi = json_hex4(jp);
                if (hi < 0)
                    return json_fail(jp, esc, "invalid \\u escape");
                if (hi == 0)
                    return json_fail(jp, esc, "embedded NUL (\\u0000) in string");
                if (hi >= 0xDC00 && hi <= 0xDFFF)
                    return json_fail(jp, esc, "unpaired surrogate in \\u escape");
                uint32_t cp = (uint32_t)hi;
                if (hi >= 0xD800 && hi <= 0xDBFF) {
                    if (jp->end - jp->cur < 2 || jp->cur[0] != '\\' || jp->cur[1] != 'u')
                        return json_fail(jp, esc, "unpaired surrogate in \\u escape");
                    jp->cur += 2;
                    int32_t lo = json_hex4(jp);
                    if (lo < 0)
                        return json_fail(jp, jp->cur - 2, "invalid \\u escape");
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return json_fail(jp, esc, "unpaired surrogate in \\u escape");
                    cp = 0x10000u + (((uint32_t)hi - 0xD800u) << 10) + ((uint32_t)lo - 0xDC00u);
                }
                if (json_put_utf8(jp, cp) != 0)
                    return -1;
                continue;
            }
            default:
                return json_fail(jp, esc, "invalid escape sequence in string");
            }
            if (json_put(jp, plain) != 0)
                return -1;
            continue;
        }
        if (c < 0x20)
            return json_fail(jp, jp->cur,
                             c == 0 ? "NUL byte in string"
                                    : "unescaped control character in string");
        if (c < 0x80) {
            if (json_put(jp, c) != 0)
                return -1;
            jp->cur++;
            continue;
        }
        size_t sl = utf8_seq_len(jp->cur, jp->end);
        if (sl == 0)
            return json_fail(jp, jp->cur, "invalid UTF-8 in string");
        for (size_t i = 0; i < sl; i++) {
            if (json_put(jp, jp->cur[i]) != 0)
                return -1;
        }
        jp->cur += sl;
    }
    if (json_put(jp, '\0') != 0)
        return -1;
    *s = jp->out + start;
    *n = jp->out_len - start - 1;
    return 0;
}

/* -?(0|[1-9][0-9]*) within int64; fractions and exponents are rejected. */
static int json_parse_int(json_parser *jp, int64_t *out)
{
    const unsigned char *start = jp->cur;
    int neg = 0;
    if (*jp->cur == '-') {
        neg = 1;
        jp->cur++;
    }
    if (jp->cur >= jp->end || !is_digit(*jp->cur))
        return json_fail(jp, start, "invalid number");
    if (*jp->cur == '0' && jp->cur + 1 < jp->end && is_digit(jp->cur[1]))
        return json_fail(jp, start, "invalid number (leading zero)");
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    while (jp->cur < jp->end && is_digit(*jp->cur)) {
        unsigned d = (unsigned)(*jp->cur - '0');
        if (v > (limit - d) / 10)
            return json_fail(jp, start, "integer out of range");
        v = v * 10 + d;
        jp->cur++;
    }
    if (jp->cur < jp->end && (*jp->cur == '.' || *jp->cur == 'e' || *jp->cur == 'E'))
        return json_fail(jp, start, "numbers must be integers");
    if (!neg)
        *out = (int64_t)v;
    else if (v == (uint64_t)INT64_MAX + 1u)
        *out = INT64_MIN;
    else
        *out = -(int64_t)v;
    return 0;
}

static int json_literal(json_parser *jp, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(jp->end - jp->cur) < n || memcmp(jp->cur, word, n) != 0)
        return json_fail(jp, jp->cur, "invalid value");
    jp->cur += n;
    return 0;
}

static int json_parse_value(json_parser *jp, json_member *m)
{
    if (jp->cur >= jp->end)
        return json_fail(jp, jp->cur, "unexpected end of line, expected a value");
    unsigned char c = *jp->cur;
    switch (c) {
    case '"':
        m->type = JSON_STRING;
        return json_parse_string(jp, &m->str, &m->str_len);
    case 't':
        m->type = JSON_BOOL;
        m->boolean = 1;
        return json_literal(jp, "true");
    case 'f':
        m->type = JSON_BOOL;
        m->boolean = 0;
        return json_literal(jp, "false");
    case 'n':
        m->type = JSON_NULL;
        return json_literal(jp, "null");
    case '{':
    case '[':
        return json_fail(jp, jp->cur, "nested objects and arrays are not allowed");
    default:
        if (c == '-' || is_digit(c)) {
            m->type = JSON_INT;
            return json_parse_int(jp, &m->num);
        }
        return json_fail(jp, jp->cur, "invalid value");
    }
}

/* Parse the whole line as one object. 0 or -1 (jp->err, jp->err_col set). */
static int json_parse_object(json_parser *jp)
{
    json_skip_ws(jp);
    if (jp->cur >= jp->end || *jp->cur != '{')
        return json_fail(jp, jp->cur, "expected a JSON object");
    jp->cur++;
    json_skip_ws(jp);
    if (jp->cur < jp->end && *jp->cur == '}') {
        jp->cur++;
    } else {
        for (;;) {
            json_skip_ws(jp);
            if (jp->cur >= jp->end || *jp->cur != '"')
                return json_fail(jp, jp->cur, "expected a string key");
            const unsigned char *key_at = jp->cur;
            json_member m;
            memset(&m, 0, sizeof m);
            if (json_parse_string(jp, &m.key, &m.key_len) != 0)
                return -1;
            for (size_t i = 0; i < jp->count; i++) {
                if (jp->members[i].key_len == m.key_len &&
                    memcmp(jp->members[i].key, m.key, m.key_len) == 0)
                    return json_fail(jp, key_at, "duplicate key");
            }
            if (jp->count == JSON_MAX_MEMBERS)
                return json_fail(jp, key_at, "too many keys");
            json_skip_ws(jp);
            if (jp->cur >= jp->end || *jp->cur != ':')
                return json_fail(jp, jp->cur, "expected ':' after key");
            jp->cur++;
            json_skip_ws(jp);
            if (json_parse_value(jp, &m) != 0)
                return -1;
            jp->members[jp->count++] = m;
            json_skip_ws(jp);
            if (jp->cur < jp->end && *jp->cur == ',') {
                jp->cur++;
                continue;
            }
            if (jp->cur < jp->end && *jp->cur == '}') {
                jp->cur++;
                break;
            }
            return json_fail(jp, jp->cur, "expected ',' or '}'");
        }
    }
    json_skip_ws(jp);
    if (jp->cur != jp->end)
        return json_fail(jp, jp->cur, "unexpected characters after the object");
    return 0;
}

/* Map a parsed object onto an event. 0, or -1 with a message (no values) in msg. */
static int event_from_json(const json_parser *jp, phiaudit_event *ev, char *msg, size_t cap)
{
    int seen[F_COUNT] = {0};
    phiaudit_event_init(ev);
    for (size_t i = 0; i < jp->count; i++) {
        const json_member *m = &jp->members[i];
        int f = -1;
        for (int k = 0; k < F_COUNT; k++) {
            if (strlen(field_json_names[k]) == m->key_len &&
                memcmp(field_json_names[k], m->key, m->key_len) == 0)
                f = k;
        }
        if (f < 0) {
            /* The key itself is not echoed: it could be a value put in the wrong place. */
            snprintf(msg, cap, "unknown key (allowed keys: %s)", CLI_ALLOWED_KEYS);
            return -1;
        }
        const char *name = field_json_names[f];
        if (m->type == JSON_NULL)
            continue; /* null = absent */
        seen[f] = 1;
        switch (f) {
        case F_CLINICIAN:
        case F_PATIENT:
        case F_TYPE:
        case F_SUBTYPE:
        case F_PURPOSE:
        case F_DETAIL:
            if (m->type != JSON_STRING) {
                snprintf(msg, cap, "\"%s\" must be a string", name);
                return -1;
            }
            if (f == F_CLINICIAN)
                ev->clinician_id = m->str;
            else if (f == F_PATIENT)
                ev->patient_id = m->str;
            else if (f == F_TYPE)
                ev->event_type = m->str;
            else if (f == F_SUBTYPE)
                ev->event_subtype = m->str;
            else if (f == F_PURPOSE)
                ev->purpose = m->str;
            else
                ev->detail = m->str;
            break;
        case F_ACTION: {
            int action = m->type == JSON_STRING ? parse_action(m->str) : -1;
            if (action < 0) {
                snprintf(msg, cap, "\"action\" must be one of %s", CLI_ACTION_VALUES);
                return -1;
            }
            ev->action = action;
            break;
        }
        case F_OUTCOME: {
            int outcome = -1;
            if (m->type == JSON_STRING)
                outcome = parse_outcome(m->str);
            else if (m->type == JSON_INT && outcome_valid(m->num))
                outcome = (int)m->num;
            if (outcome < 0) {
                snprintf(msg, cap, "\"outcome\" must be one of %s", CLI_OUTCOME_VALUES);
                return -1;
            }
            ev->outcome = outcome;
            break;
        }
        case F_BREAK_GLASS:
            if (m->type != JSON_BOOL) {
                snprintf(msg, cap, "\"break_glass\" must be true or false");
                return -1;
            }
            ev->break_glass = m->boolean;
            break;
        case F_START: {
            int64_t us = 0;
            int ok = 0;
            if (m->type == JSON_STRING)
                ok = parse_iso8601_utc(m->str, &us) == 0 && start_valid(us);
            else if (m->type == JSON_INT)
                ok = start_valid(m->num), us = m->num;
            if (!ok) {
                snprintf(msg, cap,
                         "\"start\" must be a string YYYY-MM-DDTHH:MM:SS[.ffffff]Z (UTC, "
                         "1970-9999) or an integer of microseconds since the epoch");
                return -1;
            }
            ev->start_us = us;
            break;
        }
        case F_DURATION_US:
            if (m->type != JSON_INT || m->num < 0) {
                snprintf(msg, cap, "\"duration_us\" must be an integer >= 0");
                return -1;
            }
            ev->duration_us = m->num;
            break;
        default:
            break;
        }
    }
    static const int required[] = {F_CLINICIAN, F_PATIENT, F_ACTION, F_OUTCOME};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!seen[required[i]]) {
            snprintf(msg, cap, "missing \"%s\"", field_json_names[required[i]]);
            return -1;
        }
    }
    return 0;
}

/* ============================================================================================
 * Reading standard input line by line, interruptibly
 *
 * SIGINT/SIGTERM/SIGHUP are blocked while the library runs (its threads inherit the mask, so
 * they never see EINTR) and unblocked only while we wait in read(). A signal makes the
 * command stop reading and close the stream cleanly. SA_RESETHAND: a second signal kills.
 * ========================================================================================== */

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig)
{
    g_stop_signal = sig;
}

static void stop_signals_install(sigset_t *set)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    /* No SA_RESTART: read() must return EINTR. (The cast: glibc defines SA_RESETHAND as an
     * unsigned constant that does not fit in int.) */
    sa.sa_flags = (int)SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigemptyset(set);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaddset(set, sigs[i]);
        sigaction(sigs[i], &sa, NULL);
    }
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

typedef struct line_reader {
    int fd;
    unsigned char *chunk; /* CLI_READ_CHUNK bytes */
    size_t pos, len;
    int eof;
    int saved_errno;
    const sigset_t *stop_set; /* unblocked only inside read() */
} line_reader;

#define LR_EOF 0
#define LR_LINE 1
#define LR_TOO_LONG (-1)
#define LR_ERROR (-2)
#define LR_SIGNAL (-3)

static int line_fill(line_reader *lr)
{
    for (;;) {
        ssize_t r = -1;
        int e = 0;
        pthread_sigmask(SIG_UNBLOCK, lr->stop_set, NULL);
        if (!g_stop_signal) {
            r = read(lr->fd, lr->chunk, CLI_READ_CHUNK);
            e = errno;
        }
        pthread_sigmask(SIG_BLOCK, lr->stop_set, NULL);
        if (g_stop_signal)
            return LR_SIGNAL;
        if (r < 0) {
            if (e == EINTR)
                continue;
            lr->saved_errno = e;
            return LR_ERROR;
        }
        if (r == 0)
            lr->eof = 1;
        lr->pos = 0;
        lr->len = (size_t)r;
        return 0;
    }
}

/* Next line (without '\n') into buf. LR_LINE, LR_EOF, LR_TOO_LONG (more than cap bytes;
 * the line is not consumed further), LR_ERROR, LR_SIGNAL. */
static int line_read(line_reader *lr, unsigned char *buf, size_t cap, size_t *out_len)
{
    size_t n = 0;
    int any = 0;
    *out_len = 0;
    for (;;) {
        if (lr->pos == lr->len) {
            if (lr->eof) {
                *out_len = n;
                return any ? LR_LINE : LR_EOF;
            }
            int r = line_fill(lr);
            if (r != 0) {
                *out_len = n; /* so the caller wipes the partial line */
                return r;
            }
            continue;
        }
        any = 1;
        unsigned char *start = lr->chunk + lr->pos;
        size_t avail = lr->len - lr->pos;
        unsigned char *nl = memchr(start, '\n', avail);
        size_t take = nl ? (size_t)(nl - start) : avail;
        if (take > cap - n) {
            *out_len = n;
            return LR_TOO_LONG;
        }
        memcpy(buf + n, start, take);
        n += take;
        lr->pos += take;
        if (nl) {
            lr->pos++;
            *out_len = n;
            return LR_LINE;
        }
    }
}

static int line_is_blank(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    }
    return 1;
}

/* ============================================================================================
 * Help texts
 * ========================================================================================== */

static const char *const main_help[] = {
    "NAME\n"
    "    phiaudit - encrypted, tamper-evident audit log of access to patient records\n"
    "\n"
    "SYNOPSIS\n"
    "    phiaudit COMMAND [OPTIONS] [ARGUMENTS]\n"
    "    phiaudit help [COMMAND]\n"
    "    phiaudit --help | --version\n"
    "\n"
    "DESCRIPTION\n"
    "    phiaudit records which clinician accessed which patient's record, how, when\n"
    "    and why, as a chain of sealed records: each record is encrypted and\n"
    "    authenticated (AES-256-GCM) and linked to the one before it, so that reading\n"
    "    a log requires the key and any modification, removal or reordering of\n"
    "    records is detected.\n"
    "\n"
    "COMMANDS\n"
    "    keygen FILE   Create a new key file and print its key ID.\n"
    "    log           Seal audit events, given as options or as JSON Lines on\n"
    "                  standard input, into one or more sinks.\n"
    "    verify        Check logs for modification, deletion, reordering and\n"
    "                  truncation (exit 0 intact, 1 tampered, 2 incomplete, 3 error).\n"
    "    decrypt       Print the authenticated records of logs as JSON Lines.\n"
    "    query         Print the records matching a patient, clinician, action or\n"
    "                  time range.\n"
    "    help COMMAND  Show the manual of COMMAND ('phiaudit COMMAND --help').\n"
    "\n"
    "OPTIONS\n"
    "    -h, --help     Show this help and exit.\n"
    "    --version      Show the library version and exit.\n"
    "\n"
    "EXIT STATUS\n"
    "    Each command's manual lists its exit statuses. For all of them 0 means\n"
    "    success and 3 a usage error or a failure to do the work (key, file or sink\n"
    "    problems); 'phiaudit log' exits with 1 when an event is rejected.\n"
    "\n"
    "EXAMPLES\n"
    "    phiaudit keygen /etc/phiaudit/ehr.key\n"
    "    phiaudit log --key /etc/phiaudit/ehr.key \\\n"
    "        --sink file:/var/log/phiaudit/ehr.log \\\n"
    "        --clinician dr-1234 --patient P-0042 --action read --outcome success\n"
    "    phiaudit verify --key /etc/phiaudit/ehr.key /var/log/phiaudit/\n"
    "    phiaudit query --key /etc/phiaudit/ehr.key --patient P-0042 /var/log/phiaudit/\n"
    "    phiaudit log --help\n",
    NULL,
};

static const char *const keygen_help[] = {
    "NAME\n"
    "    phiaudit keygen - create a new phiaudit key file\n"
    "\n"
    "SYNOPSIS\n"
    "    phiaudit keygen [--] FILE\n"
    "    phiaudit keygen --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Generates a new random 256-bit key and writes it to FILE, which is\n"
    "    created with mode 0600 (read and write for its owner only). An existing\n"
    "    FILE is never overwritten, and a symbolic link is never followed.\n"
    "\n"
    "    Prints the key ID, 32 hexadecimal digits, on standard output. Every record\n"
    "    sealed with the key carries this ID so that readers can pick the right key;\n"
    "    the ID reveals nothing about the key. The key itself is never printed.\n"
    "\n"
    "    Anyone holding the key file can read every record sealed with it: keep it\n"
    "    secret. Records sealed with a lost key can be neither decrypted nor\n"
    "    verified: back it up.\n"
    "\n"
    "OPTIONS\n"
    "    -h, --help  Show this help and exit.\n"
    "    --          End of options: the next argument is FILE even if it starts\n"
    "                with '-'.\n"
    "\n"
    "EXIT STATUS\n"
    "    0    The key file was created and its key ID printed.\n"
    "    3    Usage error; FILE already exists; FILE could not be created or written\n"
    "         (a partly written FILE is removed); no randomness available.\n"
    "\n"
    "EXAMPLES\n"
    "    Create the key for an application's audit log:\n"
    "        $ phiaudit keygen /etc/phiaudit/ehr.key\n"
    "        9c1f3e5a0b7d4c2e8f6a1b3c5d7e9f01\n"
    "\n"
    "    A second run refuses to replace it:\n"
    "        $ phiaudit keygen /etc/phiaudit/ehr.key\n"
    "        phiaudit keygen: File exists: /etc/phiaudit/ehr.key\n",
    NULL,
};

static const char *const log_help[] = {
    "NAME\n"
    "    phiaudit log - seal audit events of access to patient records\n"
    "\n"
    "SYNOPSIS\n"
    "    phiaudit log --key FILE --sink URI [--sink URI]... [LOGGER OPTIONS]\n"
    "                 --clinician ID --patient ID --action ACTION --outcome OUTCOME\n"
    "                 [--type CODE] [--subtype CODE] [--purpose CODE] [--detail TEXT]\n"
    "                 [--break-glass] [--start TIME] [--duration-us N]\n"
    "    phiaudit log --key FILE --sink URI [--sink URI]... [LOGGER OPTIONS] < EVENTS\n"
    "    phiaudit log --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Opens a new log stream sealed with the key in FILE, writes each audit event\n"
    "    as one sealed record to every sink, and closes the stream with a final\n"
    "    record, so that a verifier can tell a complete stream from a cut-off one.\n"
    "\n"
    "    With event options (--clinician and those after it below) one event is\n"
    "    written. Without any, events are read from standard input as JSON Lines,\n"
    "    one JSON object per line (see INPUT FORMAT). Each line is checked completely\n"
    "    before it is sealed. The first bad line stops processing: the events before\n"
    "    it are kept, the stream is closed cleanly, and the exit status is 1.\n"
    "\n"
    "    Identifiers, codes and the detail text are encrypted; they never appear in\n"
    "    the sinks in plain text, and phiaudit never prints them, not even in error\n"
    "    messages. A summary ('phiaudit log: N records written') goes to standard\n"
    "    error at the end.\n"
    "\n"
    "LOGGER OPTIONS\n"
    "    --key FILE\n"
    "        Key file made by 'phiaudit keygen' (required). It must be a regular\n"
    "        file, not a symbolic link, and not readable or writable by group or\n"
    "        others (mode 0600 or 0400); otherwise phiaudit refuses to use it.\n"
    "\n"
    "    --sink URI\n"
    "        Where sealed records go (required; repeat to write every record to\n"
    "        several sinks). Built-in schemes:\n"
    "          file:PATH[?max_bytes=N]\n"
    "              Append to PATH, created with mode 0600. With max_bytes, PATH\n"
    "              is renamed to PATH.<UTC time> once it reaches N bytes; nothing\n"
    "              is ever deleted. A record torn by an earlier crash is moved\n"
    "              aside intact.\n"
    "          memory:\n"
    "              Keep records in memory and discard them at exit (testing).\n"
    "        Other schemes are available when compiled into the library. Passwords in\n"
    "        URIs are masked in messages.\n"
    "\n"
    "    --app NAME\n"
    "        Source application recorded in every event (default \"" CLI_DEFAULT_APP "\").\n"
    "        Must not contain patient data.\n"
    "\n"
    "    --durability none|group|sync\n"
    "        When an event counts as written: 'none' (the default) once queued;\n"
    "        'group' once queued, with records written and synced (fdatasync) in\n"
    "        batches; 'sync' only once durable in every sink. Whatever the mode, all\n"
    "        records are written and synced before phiaudit exits.\n"
    "\n"
    "    --blind-index\n"
    "        Store keyed blind-index tags of the patient and clinician IDs in each\n"
    "        record header, so that 'phiaudit query' can skip non-matching records\n"
    "        without decrypting them. Anyone who can read the log then sees which\n"
    "        records concern the same patient or clinician (not who they are).\n"
    "\n"
    "    -q, --quiet\n"
    "        Do not print the summary line.\n"
    "\n"
    "    -v, --verbose\n"
    "        Also print the library's informational diagnostics.\n"
    "\n"
    "    -h, --help\n"
    "        Show this help and exit.\n"
    "\n",
    "EVENT OPTIONS\n"
    "    --clinician ID\n"
    "        Who accessed the record (required). 1 to 256 bytes of UTF-8 without\n"
    "        control characters.\n"
    "\n"
    "    --patient ID\n"
    "        Whose record was accessed (required). Same rules as --clinician.\n"
    "\n"
    "    --action ACTION\n"
    "        What was done (required; FHIR AuditEvent.action): C or create,\n"
    "        R or read, U or update, D or delete, E or execute.\n"
    "\n"
    "    --outcome OUTCOME\n"
    "        How it ended (required; FHIR AuditEvent.outcome): 0 or success, 4 or\n"
    "        minor (minor failure), 8 or serious (serious failure), 12 or major\n"
    "        (major failure).\n"
    "\n"
    "    --type CODE, --subtype CODE\n"
    "        Event type and subtype codes, e.g. 'rest' and 'read'. 1 to 256 bytes,\n"
    "        no control characters.\n"
    "\n"
    "    --purpose CODE\n"
    "        Purpose of use, e.g. 'TREAT' (HL7 v3 PurposeOfUse). Same rules.\n"
    "\n"
    "    --detail TEXT\n"
    "        Free text, 0 to 4096 bytes of UTF-8 without NUL.\n"
    "\n"
    "    --break-glass\n"
    "        Mark an emergency access that bypassed normal authorization.\n"
    "\n"
    "    --start TIME\n"
    "        When the access began: YYYY-MM-DDTHH:MM:SS[.ffffff]Z (UTC, with up to\n"
    "        six fractional digits), or an integer of microseconds since\n"
    "        1970-01-01T00:00:00Z. Default: now.\n"
    "\n"
    "    --duration-us N\n"
    "        How long the access lasted, in microseconds (default 0).\n"
    "\n"
    "    Options take their value as the next argument or after '=' (--app=ehr).\n"
    "    Each option except --sink may be given once.\n"
    "\n"
    "    Command-line arguments can be seen by other users of the machine (ps(1),\n"
    "    /proc) and may be kept in shell history. For real patient data, prefer\n"
    "    JSON Lines on standard input.\n"
    "\n",
    "INPUT FORMAT\n"
    "    Each line of standard input holds one JSON object (RFC 8259). Its keys are\n"
    "    the event option names without the leading dashes and with '-' written as\n"
    "    '_':\n"
    "        clinician, patient      strings (required)\n"
    "        action                  string, as for --action (required)\n"
    "        outcome                 integer 0, 4, 8 or 12, or a string as for\n"
    "                                --outcome (required)\n"
    "        type, subtype, purpose  strings\n"
    "        detail                  string\n"
    "        break_glass             true or false\n"
    "        start                   string YYYY-MM-DDTHH:MM:SS[.ffffff]Z, or integer\n"
    "                                microseconds since the epoch\n"
    "        duration_us             integer >= 0\n"
    "    A null value means the key is absent. Errors: unknown or duplicate keys,\n"
    "    nested objects or arrays, numbers with a fraction or exponent, invalid\n"
    "    UTF-8, \\u0000, unpaired surrogates, and anything after the object. Lines\n"
    "    that are empty or hold only blanks are skipped. A line may hold at most\n"
    "    1048576 bytes (1 MiB), not counting the newline.\n"
    "\n"
    "    Problems are reported as 'phiaudit log: line N: REASON'. Values are never\n"
    "    shown, only line numbers, columns and key names.\n"
    "\n"
    "EXIT STATUS\n"
    "    0      Every event was written.\n"
    "    1      Bad input: an event was rejected (invalid JSON, a missing or invalid\n"
    "           field, or a value refused by the library). Events before it were\n"
    "           written and the stream was closed.\n"
    "    3      Usage error; key file missing, malformed or with unsafe permissions;\n"
    "           sink could not be opened or written; another failure.\n"
    "    128+N  Stopped by signal N (SIGINT, SIGTERM or SIGHUP) while reading\n"
    "           standard input; the events read before it were written and the\n"
    "           stream was closed cleanly. A second signal ends phiaudit at once.\n"
    "\n"
    "EXAMPLES\n"
    "    Record that clinician dr-1234 read the record of patient P-0042:\n"
    "        phiaudit log --key /etc/phiaudit/ehr.key \\\n"
    "            --sink file:/var/log/phiaudit/ehr.log \\\n"
    "            --clinician dr-1234 --patient P-0042 --action read \\\n"
    "            --outcome success --purpose TREAT\n"
    "\n"
    "    Import events exported by another system into two files, syncing in\n"
    "    batches:\n"
    "        phiaudit log --key ehr.key --sink file:/var/log/a.log \\\n"
    "            --sink file:/mnt/replica/a.log --durability group < events.jsonl\n"
    "    where each line of events.jsonl looks like\n"
    "        {\"clinician\":\"dr-1234\",\"patient\":\"P-0042\",\"action\":\"R\",\"outcome\":0,"
    "\"start\":\"2026-12-03T10:00:00.123456Z\",\"duration_us\":2500}\n",
    NULL,
};

/* ============================================================================================
 * keygen
 * ========================================================================================== */

enum {
    OPT_HELP = 1,
    OPT_KEY,
    OPT_SINK,
    OPT_APP,
    OPT_DURABILITY,
    OPT_BLIND_INDEX,
    OPT_QUIET,
    OPT_VERBOSE,
    OPT_EVENT = 100 /* + enum event_field */
};

static int cmd_keygen(int argc, char **argv)
{
    static const cli_option opts[] = {{"help", 'h', 0, OPT_HELP}};
    cli_args a;
    const char *path = NULL;
    cli_args_init(&a, "keygen", argc, argv);
    for (;;) {
        int id = cli_next(&a, opts, sizeof opts / sizeof opts[0]);
        if (id == CLI_ARG_END)
            break;
        if (id == CLI_ARG_ERROR)
            return CLI_EXIT_ERROR;
        if (id == OPT_HELP)
            return print_help(keygen_help);
        if (path)
            return cli_usage_error("keygen", "too many arguments (expected one FILE)");
        path = a.value;
    }
    if (!path)
        return cli_usage_error("keygen", "missing FILE");
    if (path[0] == '\0')
        return cli_usage_error("keygen", "FILE is empty");

    uint8_t key_id[PHIAUDIT_KEY_ID_LEN];
    errno = 0;
    int rc = phiaudit_key_generate_file(path, key_id);
    if (rc != PHIAUDIT_OK) {
        /* The library returns PHIAUDIT_E_IO for every OS failure and leaves errno from the
         * failing call (open: EEXIST, EACCES...), which says far more. */
        int e = errno;
        const char *text = rc == PHIAUDIT_E_IO && e != 0 ? strerror(e) : phiaudit_strerror(rc);
        cli_msg_begin("keygen");
        fprintf(stderr, "%s: ", text);
        put_sanitized(stderr, path);
        cli_msg_end();
        return CLI_EXIT_ERROR;
    }
    char hex[2 * PHIAUDIT_KEY_ID_LEN + 1];
    hex_encode(key_id, sizeof key_id, hex);
    if (printf("%s\n", hex) < 0 || fflush(stdout) != 0) {
        int e = errno;
        cli_msg_begin("keygen");
        fprintf(stderr, "key file created, but its key ID could not be printed: %s: ", strerror(e));
        put_sanitized(stderr, path);
        cli_msg_end();
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

/* ============================================================================================
 * log
 * ========================================================================================== */

typedef struct log_settings {
    const char *key_path;
    const char *sink_uris[CLI_MAX_SINKS];
    size_t sink_count;
    const char *app;
    int durability_given;
    uint32_t durability;
    int blind_index;
    int quiet;
    int verbose;
    const char *event_args[F_COUNT]; /* option values; break-glass: "" when given */
    int event_mode;                  /* some event option was given */
} log_settings;

static const cli_option log_options[] = {
    {"help", 'h', 0, OPT_HELP},
    {"key", 0, 1, OPT_KEY},
    {"sink", 0, 1, OPT_SINK},
    {"app", 0, 1, OPT_APP},
    {"durability", 0, 1, OPT_DURABILITY},
    {"blind-index", 0, 0, OPT_BLIND_INDEX},
    {"quiet", 'q', 0, OPT_QUIET},
    {"verbose", 'v', 0, OPT_VERBOSE},
    {"clinician", 0, 1, OPT_EVENT + F_CLINICIAN},
    {"patient", 0, 1, OPT_EVENT + F_PATIENT},
    {"action", 0, 1, OPT_EVENT + F_ACTION},
    {"outcome", 0, 1, OPT_EVENT + F_OUTCOME},
    {"type", 0, 1, OPT_EVENT + F_TYPE},
    {"subtype", 0, 1, OPT_EVENT + F_SUBTYPE},
    {"purpose", 0, 1, OPT_EVENT + F_PURPOSE},
    {"detail", 0, 1, OPT_EVENT + F_DETAIL},
    {"break-glass", 0, 0, OPT_EVENT + F_BREAK_GLASS},
    {"start", 0, 1, OPT_EVENT + F_START},
    {"duration-us", 0, 1, OPT_EVENT + F_DURATION_US},
};

/* 0 = parsed, 1 = --help printed, else an exit code. */
static int log_parse_args(int argc, char **argv, log_settings *s)
{
    cli_args a;
    memset(s, 0, sizeof *s);
    s->app = NULL;
    cli_args_init(&a, "log", argc, argv);
    for (;;) {
        int id = cli_next(&a, log_options, sizeof log_options / sizeof log_options[0]);
        if (id == CLI_ARG_END)
            break;
        if (id == CLI_ARG_ERROR)
            return CLI_EXIT_ERROR;
        if (id == CLI_ARG_POSITIONAL) {
            /* Not echoed: likely a value that lost its quotes, e.g. a patient's name. */
            return cli_usage_error("log", "argument %d: unexpected argument", a.next - 1);
        }
        switch (id) {
        case OPT_HELP:
            print_help(log_help);
            return 1;
        case OPT_KEY:
            if (s->key_path)
                return cli_usage_error("log", "option '--key' given twice");
            s->key_path = a.value;
            break;
        case OPT_SINK:
            if (s->sink_count == CLI_MAX_SINKS)
                return cli_usage_error("log", "too many sinks (at most %d)", CLI_MAX_SINKS);
            s->sink_uris[s->sink_count++] = a.value;
            break;
        case OPT_APP:
            if (s->app)
                return cli_usage_error("log", "option '--app' given twice");
            s->app = a.value;
            break;
        case OPT_DURABILITY:
            if (s->durability_given)
                return cli_usage_error("log", "option '--durability' given twice");
            s->durability_given = 1;
            if (strcmp(a.value, "none") == 0)
                s->durability = PHIAUDIT_DURABILITY_NONE;
            else if (strcmp(a.value, "group") == 0)
                s->durability = PHIAUDIT_DURABILITY_GROUP;
            else if (strcmp(a.value, "sync") == 0)
                s->durability = PHIAUDIT_DURABILITY_SYNC;
            else
                return cli_usage_error("log",
                                       "invalid --durability (expected none, group or sync)");
            break;
        case OPT_BLIND_INDEX:
            s->blind_index = 1;
            break;
        case OPT_QUIET:
            s->quiet = 1;
            break;
        case OPT_VERBOSE:
            s->verbose = 1;
            break;
        default: {
            int f = id - OPT_EVENT;
            if (f < 0 || f >= F_COUNT)
                return cli_usage_error("log", "internal error: option %d", id);
            if (s->event_args[f])
                return cli_usage_error("log", "option '--%s' given twice", field_option_names[f]);
            s->event_args[f] = a.value ? a.value : "";
            s->event_mode = 1;
            break;
        }
        }
    }
    if (!s->key_path)
        return cli_usage_error("log", "missing --key FILE");
    if (s->key_path[0] == '\0')
        return cli_usage_error("log", "--key FILE is empty");
    if (s->sink_count == 0)
        return cli_usage_error("log", "missing --sink URI");
    if (!s->app)
        s->app = CLI_DEFAULT_APP;
    return 0;
}

/* Build the event from the event options. 0 or an exit code (usage error printed). */
static int log_event_from_args(const log_settings *s, phiaudit_event *ev)
{
    const char *const *v = s->event_args;
    static const int required[] = {F_CLINICIAN, F_PATIENT, F_ACTION, F_OUTCOME};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!v[required[i]])
            return cli_usage_error("log", "missing --%s (required with event options)",
                                   field_option_names[required[i]]);
    }
    phiaudit_event_init(ev);
    ev->clinician_id = v[F_CLINICIAN];
    ev->patient_id = v[F_PATIENT];
    ev->event_type = v[F_TYPE];
    ev->event_subtype = v[F_SUBTYPE];
    ev->purpose = v[F_PURPOSE];
    ev->detail = v[F_DETAIL];
    int action = parse_action(v[F_ACTION]);
    if (action < 0)
        return cli_usage_error("log", "invalid --action (expected %s)", CLI_ACTION_VALUES);
    ev->action = action;
    int outcome = parse_outcome(v[F_OUTCOME]);
    if (outcome < 0)
        return cli_usage_error("log", "invalid --outcome (expected %s)", CLI_OUTCOME_VALUES);
    ev->outcome = outcome;
    ev->break_glass = v[F_BREAK_GLASS] ? 1 : 0;
    if (v[F_START] && parse_start_text(v[F_START], &ev->start_us) != 0)
        return cli_usage_error("log", "invalid --start (expected %s, 1970-9999)", CLI_START_FORMS);
    if (v[F_DURATION_US] && parse_nonneg_i64(v[F_DURATION_US], &ev->duration_us) != 0)
        return cli_usage_error("log", "invalid --duration-us (expected an integer >= 0)");
    return 0;
}

static void log_diag(void *ctx, int level, const char *message)
{
    const int *verbose = ctx;
    if (level < PHIAUDIT_DIAG_WARN && !*verbose)
        return;
    cli_msg_begin("log");
    if (level >= PHIAUDIT_DIAG_ERROR)
        fputs("error: ", stderr);
    else if (level == PHIAUDIT_DIAG_WARN)
        fputs("warning: ", stderr);
    put_sanitized(stderr, message ? message : "(no message)");
    cli_msg_end();
}

/* Report a failure of phiaudit_log_event(); returns the exit code. */
static int log_report_event_error(phiaudit_logger *lg, int rc, unsigned long lineno)
{
    const char *detail = rc_is_input_error(rc) ? NULL : phiaudit_logger_errmsg(lg);
    cli_msg_begin("log");
    if (lineno)
        fprintf(stderr, "line %lu: ", lineno);
    fputs(phiaudit_strerror(rc), stderr);
    if (detail && detail[0]) {
        fputs(" (", stderr);
        put_sanitized(stderr, detail);
        fputc(')', stderr);
    }
    cli_msg_end();
    return rc_is_input_error(rc) ? CLI_EXIT_BAD_INPUT : CLI_EXIT_ERROR;
}

typedef struct jsonl_buffers {
    unsigned char *line;  /* CLI_MAX_LINE */
    char *decoded;        /* CLI_MAX_LINE + 1 */
    unsigned char *chunk; /* CLI_READ_CHUNK */
} jsonl_buffers;

static void jsonl_buffers_free(jsonl_buffers *b)
{
    if (b->line) {
        phiaudit_wipe(b->line, CLI_MAX_LINE);
        free(b->line);
    }
    if (b->decoded) {
        phiaudit_wipe(b->decoded, CLI_MAX_LINE + 1);
        free(b->decoded);
    }
    if (b->chunk) {
        phiaudit_wipe(b->chunk, CLI_READ_CHUNK);
        free(b->chunk);
    }
    memset(b, 0, sizeof *b);
}

/* The JSON Lines loop. Returns an exit code; *written counts accepted events. */
static int log_jsonl(phiaudit_logger *lg, line_reader *lr, jsonl_buffers *b, unsigned long *written)
{
    unsigned long lineno = 0;
    for (;;) {
        size_t len = 0;
        int r = line_read(lr, b->line, CLI_MAX_LINE, &len);
        if (r == LR_EOF)
            return CLI_EXIT_OK;
        if (r == LR_SIGNAL) {
            phiaudit_wipe(b->line, len);
            cli_error("log", "interrupted by signal %d; closing the stream", (int)g_stop_signal);
            return 128 + (int)g_stop_signal;
        }
        lineno++;
        if (r == LR_ERROR) {
            phiaudit_wipe(b->line, len);
            cli_error("log", "line %lu: error reading standard input: %s", lineno,
                      strerror(lr->saved_errno));
            return CLI_EXIT_ERROR;
        }
        if (r == LR_TOO_LONG) {
            phiaudit_wipe(b->line, CLI_MAX_LINE);
            cli_error("log", "line %lu: line too long (more than %u bytes)", lineno, CLI_MAX_LINE);
            return CLI_EXIT_BAD_INPUT;
        }
        if (line_is_blank(b->line, len)) {
            phiaudit_wipe(b->line, len);
            continue;
        }

        json_parser jp;
        phiaudit_event ev;
        char msg[256];
        int status = CLI_EXIT_OK;
        json_init(&jp, b->line, len, b->decoded, CLI_MAX_LINE + 1);
        if (json_parse_object(&jp) != 0) {
            cli_error("log", "line %lu: %s (column %zu)", lineno, jp.err, jp.err_col);
            status = CLI_EXIT_BAD_INPUT;
        } else if (event_from_json(&jp, &ev, msg, sizeof msg) != 0) {
            cli_error("log", "line %lu: %s", lineno, msg);
            status = CLI_EXIT_BAD_INPUT;
        } else {
            int rc = phiaudit_log_event(lg, &ev);
            if (rc != PHIAUDIT_OK)
                status = log_report_event_error(lg, rc, lineno);
            else
                (*written)++;
        }
        phiaudit_wipe(b->line, len);
        phiaudit_wipe(b->decoded, jp.out_len);
        if (status != CLI_EXIT_OK)
            return status;
    }
}

static int cmd_log(int argc, char **argv)
{
    log_settings s;
    int status = log_parse_args(argc, argv, &s);
    if (status == 1)
        return CLI_EXIT_OK; /* --help */
    if (status != 0)
        return status;

    phiaudit_event single;
    if (s.event_mode) {
        status = log_event_from_args(&s, &single);
        if (status != 0)
            return status;
    }

    jsonl_buffers bufs;
    memset(&bufs, 0, sizeof bufs);
    phiaudit_sink *sinks[CLI_MAX_SINKS] = {NULL};
    phiaudit_logger *lg = NULL;
    uint8_t key[PHIAUDIT_KEY_LEN];
    uint8_t key_id[PHIAUDIT_KEY_ID_LEN];
    unsigned long written = 0;
    int rc;

    if (!s.event_mode) {
        bufs.line = malloc(CLI_MAX_LINE);
        bufs.decoded = malloc(CLI_MAX_LINE + 1);
        bufs.chunk = malloc(CLI_READ_CHUNK);
        if (!bufs.line || !bufs.decoded || !bufs.chunk) {
            cli_error("log", "%s", phiaudit_strerror(PHIAUDIT_E_NOMEM));
            jsonl_buffers_free(&bufs);
            return CLI_EXIT_ERROR;
        }
    }

    /* The key is loaded here rather than through cfg.key_file so that a key problem is
     * reported with its path, and before any sink creates a file. The logger copies it;
     * our copy is wiped right after phiaudit_logger_open(). */
    rc = phiaudit_key_load_file(s.key_path, key_id, key);
    if (rc != PHIAUDIT_OK) {
        cli_msg_begin("log");
        if (rc == PHIAUDIT_E_KEY_PERMS)
            fputs("unsafe key file permissions (group or others have access; chmod 600): ", stderr);
        else
            fprintf(stderr, "%s: ", phiaudit_strerror(rc));
        put_sanitized(stderr, s.key_path);
        cli_msg_end();
        phiaudit_wipe(key, sizeof key);
        jsonl_buffers_free(&bufs);
        return CLI_EXIT_ERROR;
    }

    /* Sinks are opened here (and lent to the logger) so that a failure names its URI. */
    status = CLI_EXIT_OK;
    for (size_t i = 0; i < s.sink_count; i++) {
        rc = phiaudit_sink_open_uri(&sinks[i], s.sink_uris[i]);
        if (rc != PHIAUDIT_OK) {
            cli_msg_begin("log");
            fprintf(stderr, "cannot open sink: %s: ", phiaudit_strerror(rc));
            put_uri_redacted(stderr, s.sink_uris[i]);
            cli_msg_end();
            status = CLI_EXIT_ERROR;
            break;
        }
        uint64_t torn = phiaudit_sink_file_torn_bytes(sinks[i]);
        if (torn) {
            cli_msg_begin("log");
            fprintf(stderr,
                    "warning: %llu bytes of a torn record (interrupted write) at the end of ",
                    (unsigned long long)torn);
            put_uri_redacted(stderr, s.sink_uris[i]);
            fputs("; the file was rotated aside intact", stderr);
            cli_msg_end();
        }
    }

    sigset_t stop_set;
    sigemptyset(&stop_set);
    if (status == CLI_EXIT_OK) {
        if (!s.event_mode)
            stop_signals_install(&stop_set); /* before the logger starts its threads */
        phiaudit_config cfg;
        phiaudit_config_init(&cfg);
        cfg.app_name = s.app;
        if (s.durability_given)
            cfg.durability = s.durability;
        if (s.blind_index)
            cfg.flags |= PHIAUDIT_FLAG_BLIND_INDEX;
        cfg.key = key;
        cfg.key_id = key_id;
        cfg.sinks = sinks;
        cfg.sink_count = s.sink_count;
        cfg.diag = log_diag;
        cfg.diag_ctx = &s.verbose;
        rc = phiaudit_logger_open(&lg, &cfg);
        if (rc != PHIAUDIT_OK) {
            cli_error("log", "cannot open the log: %s", phiaudit_strerror(rc));
            status = CLI_EXIT_ERROR;
        }
    }
    phiaudit_wipe(key, sizeof key);

    if (status == CLI_EXIT_OK) {
        if (s.event_mode) {
            rc = phiaudit_log_event(lg, &single);
            if (rc != PHIAUDIT_OK)
                status = log_report_event_error(lg, rc, 0);
            else
                written++;
        } else {
            line_reader lr;
            memset(&lr, 0, sizeof lr);
            lr.fd = STDIN_FILENO;
            lr.chunk = bufs.chunk;
            lr.stop_set = &stop_set;
            if (!s.quiet && isatty(STDIN_FILENO))
                cli_error("log", "reading JSON Lines from standard input (Ctrl-D to end)");
            status = log_jsonl(lg, &lr, &bufs, &written);
        }
    }

    int delivered = 1;
    if (lg) {
        rc = phiaudit_logger_close(&lg);
        if (rc != PHIAUDIT_OK) {
            cli_error("log", "closing the log: %s", phiaudit_strerror(rc));
            delivered = 0;
            status = CLI_EXIT_ERROR;
        }
        if (!s.quiet) {
            if (delivered)
                cli_error("log", "%lu record%s written", written, written == 1 ? "" : "s");
            else
                cli_error("log", "%lu record%s accepted, but not all could be delivered", written,
                          written == 1 ? "" : "s");
        }
    }
    for (size_t i = 0; i < s.sink_count; i++) {
        if (!sinks[i])
            continue;
        rc = phiaudit_sink_close(&sinks[i]);
        if (rc != PHIAUDIT_OK) {
            cli_msg_begin("log");
            fprintf(stderr, "closing sink: %s: ", phiaudit_strerror(rc));
            put_uri_redacted(stderr, s.sink_uris[i]);
            cli_msg_end();
            status = CLI_EXIT_ERROR;
        }
    }
    jsonl_buffers_free(&bufs);
    return status;
}

/* ============================================================================================
 * main
 * ========================================================================================== */

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    const char *const *help;
} cli_command;

static const cli_command cli_commands[] = {
    {"keygen", cmd_keygen, keygen_help},
    {"log", cmd_log, log_help},
    /* the read side lives in tools/cmd_read.c */
    {"verify", phiaudit_cmd_verify, phiaudit_cmd_verify_help},
    {"decrypt", phiaudit_cmd_decrypt, phiaudit_cmd_decrypt_help},
    {"query", phiaudit_cmd_query, phiaudit_cmd_query_help},
};

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++) {
        if (strcmp(cli_commands[i].name, name) == 0)
            return &cli_commands[i];
    }
    return NULL;
}

static int unknown_command(const char *name)
{
    if (looks_like_option_name(name, strlen(name)))
        return cli_usage_error(NULL, "unknown command '%s'", name);
    return cli_usage_error(NULL, "unknown command");
}

/* The process holds key bytes and patient data: keep them out of core dumps and away from
 * same-user debuggers. */
static void harden_process(void)
{
    struct rlimit rl = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &rl);
#if defined(__linux__)
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error(NULL, "missing command (keygen, log)");
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0)
        return print_help(main_help);
    if (strcmp(name, "--version") == 0) {
        printf("phiaudit %s\n", phiaudit_version());
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) {
        if (argc == 2)
            return print_help(main_help);
        const cli_command *c = find_command(argv[2]);
        if (!c)
            return unknown_command(argv[2]);
        return print_help(c->help);
    }
    if (name[0] == '-') {
        if (looks_like_option_name(name + 1 + (name[1] == '-'),
                                   strlen(name + 1 + (name[1] == '-'))))
            return cli_usage_error(NULL, "unknown option '%s'", name);
        return cli_usage_error(NULL, "unrecognized option");
    }
    const cli_command *c = find_command(name);
    if (!c)
        return unknown_command(name);
    return c->run(argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
    harden_process();
    int status = dispatch(argc, argv);
    /* Catch failed writes of help texts and key IDs (e.g. stdout is a full disk). */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (status == CLI_EXIT_OK) {
            cli_error(NULL, "error writing to standard output: %s", strerror(errno));
            status = CLI_EXIT_ERROR;
        }
    }
    return status;
}
