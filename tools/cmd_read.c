/*
 * phiaudit verify | decrypt | query — the read half of the command-line tool.
 *
 * Uses only the public API (<phiaudit.h>, <phiaudit_reader.h>). Rules kept everywhere:
 *  - Never print PHI: no payload field on stderr, no query argument anywhere (a patient or
 *    clinician ID given on the command line is PHI too), no plaintext of a record that
 *    failed authentication (the reader never hands one out).
 *  - Paths the user typed or found in a directory are printed with control characters
 *    escaped (human output) or JSON-escaped (JSON output).
 *  - Exit status = the reader's verdict: 0 intact, 1 tampered, 2 incomplete, 3 usage,
 *    key, format or I/O error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "phiaudit.h"
#include "phiaudit_reader.h"

#include "commands.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_USAGE 3
#define MAX_KEYS 64
#define MAX_RECORD_NOTES 100 /* per-record problem lines on stderr before summarising */

/* ---- Help texts ----------------------------------------------------------------------------- */

#define SOURCES_TEXT                                                                          \
    "SOURCES\n"                                                                               \
    "    Each SOURCE is a log file or a directory of rotated log files. A directory\n"        \
    "    contributes every regular file in it whose name does not start with '.'\n"          \
    "    (subdirectories are not searched); a file there that holds no phiaudit record\n"     \
    "    is reported as an error. All files are read in the order of the time of their\n"     \
    "    first record, then by name, so `app.log` and its rotated copies `app.log.<UTC\n"     \
    "    time>` may be given in any order. Streams (one per process start or fork) are\n"     \
    "    told apart by their stream ID and may be interleaved in one file.\n"                 \
    "\n"

#define KEYS_TEXT                                                                             \
    "    --key FILE\n"                                                                        \
    "        A key file (see `phiaudit keygen`). It must be mode 0600 or stricter. May\n"     \
    "        be repeated; all keys form one keyring.\n"                                       \
    "    --keyring DIR\n"                                                                     \
    "        Load every key file in DIR (names starting with '.' are skipped). May be\n"      \
    "        repeated and combined with --key. Records whose key ID is in no loaded key\n"    \
    "        are reported as `unknown key` (exit status 3).\n"

#define EXIT_TEXT                                                                             \
    "EXIT STATUS\n"                                                                           \
    "    0    Intact: every record is present, in order, chained and (with a key)\n"         \
    "         authentic; every stream ends with its CLOSE record. Benign duplicate\n"         \
    "         copies of a record are reported but do not change the status.\n"               \
    "    1    Tampered: a record failed authentication (modified, or the key file has\n"      \
    "         the right key ID but the wrong key), records are missing between\n"             \
    "         records that are present (deleted records, a missing rotated file in\n"         \
    "         the middle), a record is out of order, duplicated with different\n"             \
    "         content, does not fit its stream (spliced), or a file has bytes that are\n"     \
    "         not records in its middle.\n"                                                   \
    "    2    Incomplete (possibly lost records, no proof of tampering): a file ends\n"       \
    "         inside a record (torn tail after a crash), a stream has no CLOSE record\n"      \
    "         (the process crashed or is still running, or its last records were cut\n"       \
    "         off), or a stream's first records are not in the input (an older file\n"        \
    "         was not given).\n"                                                              \
    "    3    Error: bad usage, a key file cannot be loaded, a SOURCE cannot be read\n"       \
    "         or is not a phiaudit log, no record was found, or a record's key ID is\n"       \
    "         not in the keyring.\n"                                                          \
    "    When several apply: 1 before 3 before 2.\n"                                          \
    "\n"

const char *const phiaudit_cmd_verify_help[] = {
    "NAME\n"
    "    phiaudit verify - check audit logs for tampering, deletion and truncation\n"
    "\n"
    "SYNOPSIS\n"
    "    phiaudit verify [--key FILE]... [--keyring DIR]... [--json] [--] SOURCE...\n"
    "    phiaudit verify --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Reads every record of every SOURCE and checks, for each stream:\n"
    "      - framing: every byte belongs to a well-formed record;\n"
    "      - sequence: numbers start at 0 with an OPEN record and grow by exactly one;\n"
    "      - chain: each record carries the SHA-256 link of the one before it;\n"
    "      - closing: the stream ends with a CLOSE record;\n"
    "      - with a key: every record's AES-256-GCM tag, which covers its header and\n"
    "        its encrypted content.\n"
    "    Without a key the first four checks still run (they need no secret), but a\n"
    "    change to a record's encrypted content that leaves its tag alone cannot be\n"
    "    seen: verify with the key to prove content integrity.\n"
    "\n"
    "    The report gives, per stream: records read and authenticated, first and last\n"
    "    sequence number and time, modified records, missing sequence ranges, benign\n"
    "    duplicates versus conflicting copies, reordered records, chain breaks,\n"
    "    misplaced (spliced) records, unknown key IDs, a missing CLOSE or missing first\n"
    "    records; per file: torn tail and damaged byte ranges. Nothing decrypted is\n"
    "    printed. Memory use does not grow with the number of records.\n"
    "\n",
    SOURCES_TEXT
    "OPTIONS\n" KEYS_TEXT
    "    --json\n"
    "        Print the report as one JSON object instead of the human summary.\n"
    "    -h, --help\n"
    "        Show this help and exit.\n"
    "    --  End of options.\n"
    "\n",
    EXIT_TEXT
    "EXAMPLES\n"
    "    Keyless check of a log directory (framing, sequence, chain):\n"
    "        $ phiaudit verify /var/log/ehr-audit/\n"
    "    Full check with the key, JSON report for a SIEM:\n"
    "        $ phiaudit verify --key /etc/phiaudit/ehr.key --json /var/log/ehr-audit/\n"
    "    Several years of logs sealed with rotated keys:\n"
    "        $ phiaudit verify --keyring /etc/phiaudit/keys /archive/ehr-audit/\n",
    NULL,
};

const char *const phiaudit_cmd_decrypt_help[] = {
    "NAME\n"
    "    phiaudit decrypt - print the authenticated records of audit logs as JSON Lines\n"
    "\n"
    "SYNOPSIS\n"
    "    phiaudit decrypt (--key FILE | --keyring DIR)... [--] SOURCE...\n"
    "    phiaudit decrypt --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Prints one line per authenticated record, in file order:\n"
    "        {\"stream\":\"<stream ID hex>\",\"seq\":N,\"key_id\":\"<hex>\",\n"
    "         \"type\":\"open|data|close\",\"record\":<payload>}\n"
    "    where <payload> is the record's JSON object exactly as sealed (FHIR-mappable\n"
    "    fields, see docs/FORMAT.md §6), or a JSON string for records written in the\n"
    "    classic text format. A benign duplicate copy of a record is printed once.\n"
    "\n"
    "    A record that fails authentication is never printed, not even in part. It\n"
    "    and every other finding of `phiaudit verify` is reported on standard error\n"
    "    (stream ID, sequence number, problem: never record content) and in the exit\n"
    "    status, so `phiaudit decrypt` also verifies everything it reads.\n"
    "\n"
    "    The output contains protected health information: send it only where such\n"
    "    data may go.\n"
    "\n",
    SOURCES_TEXT
    "OPTIONS\n" KEYS_TEXT
    "    -h, --help\n"
    "        Show this help and exit.\n"
    "    --  End of options.\n"
    "\n",
    EXIT_TEXT
    "EXAMPLES\n"
    "    $ phiaudit decrypt --key /etc/phiaudit/ehr.key /var/log/ehr-audit/ > events.jsonl\n"
    "    $ phiaudit decrypt --keyring /etc/phiaudit/keys app.log | jq -c .record\n",
    NULL,
};

const char *const phiaudit_cmd_query_help[] = {
    "NAME\n"
    "    phiaudit query - find audit records by patient, clinician, action and time\n"
    "\n"
    "SYNOPSIS\n"
    "    phiaudit query (--key FILE | --keyring DIR)... [--patient ID] [--clinician ID]\n"
    "                   [--action A] [--since TIME] [--until TIME] [--] SOURCE...\n"
    "    phiaudit query --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Prints the DATA records (audit events) that match every given filter, as\n"
    "    JSON Lines in the format of `phiaudit decrypt`. This answers \"who accessed\n"
    "    patient X\" (--patient) and \"what did clinician Y access\" (--clinician).\n"
    "\n"
    "    Filters compare the decrypted record exactly, byte for byte (no case folding,\n"
    "    no trimming). Records sealed with blind-index tags are pre-selected by their\n"
    "    tags; every record is still authenticated, so the exit status and standard\n"
    "    error report the same findings as `phiaudit verify`. Filter values are\n"
    "    protected health information and are never printed, not even in errors.\n"
    "\n",
    SOURCES_TEXT
    "OPTIONS\n" KEYS_TEXT
    "    --patient ID\n"
    "        Only records whose patient identifier is exactly ID.\n"
    "    --clinician ID\n"
    "        Only records whose clinician identifier is exactly ID.\n"
    "    --action A\n"
    "        Only records of action A: C (create), R (read), U (update), D (delete) or\n"
    "        E (execute).\n"
    "    --since TIME, --until TIME\n"
    "        Only records whose action started at or after --since and before --until.\n"
    "        TIME is YYYY-MM-DD (midnight UTC) or YYYY-MM-DDTHH:MM[:SS[.ffffff]]\n"
    "        followed by Z or an offset such as +02:00. Records in the classic text\n"
    "        format carry no start time; their sealing time is used.\n"
    "    -h, --help\n"
    "        Show this help and exit.\n"
    "    --  End of options.\n"
    "\n",
    EXIT_TEXT
    "EXAMPLES\n"
    "    Everything that happened to one patient's record in March 2024:\n"
    "        $ phiaudit query --key ehr.key --patient MRN-004711 \\\n"
    "              --since 2024-03-01 --until 2024-04-01 /var/log/ehr-audit/\n"
    "    Every deletion by one clinician:\n"
    "        $ phiaudit query --key ehr.key --clinician dr.house --action D logs/\n",
    NULL,
};

/* ---- Output helpers ------------------------------------------------------------------------ */

static void print_help(const char *const *help)
{
    for (size_t i = 0; help[i]; i++)
        fputs(help[i], stdout);
}

/* A path for a human reader: control characters and DEL escaped. */
static void put_sanitized(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", (unsigned)c);
        else
            fputc(c, f);
    }
}

static void err_begin(const char *cmd)
{
    fflush(stdout);
    fprintf(stderr, "phiaudit %s: ", cmd);
}

static void usage_error(const char *cmd, const char *msg)
{
    err_begin(cmd);
    fprintf(stderr, "%s\nTry 'phiaudit %s --help'.\n", msg, cmd);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

/* A JSON string literal of s[0..n); invalid UTF-8 bytes become U+FFFD. */
static void put_json_string_n(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", (unsigned)c);
            i++;
        } else {
            size_t k = utf8_seq(p + i, n - i);
            if (k == 0) {
                fputs("\\ufffd", f);
                i++;
            } else {
                fwrite(p + i, 1, k, f);
                i += k;
            }
        }
    }
    fputc('"', f);
}

static void put_json_string(FILE *f, const char *s)
{
    put_json_string_n(f, s, strlen(s));
}

static void put_hex(FILE *f, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[64];
    for (size_t i = 0; i < n && i < 32; i++) {
        tmp[2 * i] = digits[b[i] >> 4];
        tmp[2 * i + 1] = digits[b[i] & 15];
    }
    fwrite(tmp, 1, 2 * (n < 32 ? n : 32), f);
}

static void format_time(int64_t us, char out[96])
{
    int64_t secs = us / 1000000;
    int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
        snprintf(out, 96, "@%" PRId64 "us", us);
        return;
    }
    snprintf(out, 96, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

static const char *type_name(uint8_t t)
{
    switch (t) {
    case PHIAUDIT_RECORD_OPEN: return "open";
    case PHIAUDIT_RECORD_DATA: return "data";
    case PHIAUDIT_RECORD_CLOSE: return "close";
    default: return "unknown";
    }
}

/* ---- Argument parsing ----------------------------------------------------------------------- */

typedef struct read_args {
    const char *cmd;
    int json;
    const char *keys[MAX_KEYS];
    size_t nkeys;
    const char *keyrings[MAX_KEYS];
    size_t nkeyrings;
    char **sources;
    size_t nsources;
    int has_query;
    phiaudit_query q;
} read_args;

enum { OPT_JSON = 1, OPT_KEY, OPT_KEYRING, OPT_PATIENT, OPT_CLINICIAN, OPT_ACTION, OPT_SINCE,
       OPT_UNTIL };

typedef struct opt_def {
    const char *name;
    int id;
    int has_arg;
} opt_def;

/* Returns -1 to continue, or an exit status (help printed, usage error). */
static int parse_args(int argc, char **argv, read_args *a, const opt_def *opts,
                      const char *const *help)
{
    a->sources = calloc((size_t)argc + 1, sizeof *a->sources);
    if (!a->sources) {
        err_begin(a->cmd);
        fputs("out of memory\n", stderr);
        return EXIT_USAGE;
    }
    int only_sources = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (only_sources || arg[0] != '-' || arg[1] == '\0') {
            a->sources[a->nsources++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_sources = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_help(help);
            return 0;
        }
        const char *name = arg[1] == '-' ? arg + 2 : arg + 1;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_def *o = NULL;
        for (size_t k = 0; opts[k].name; k++)
            if (arg[1] == '-' && strlen(opts[k].name) == nlen &&
                memcmp(opts[k].name, name, nlen) == 0)
                o = &opts[k];
        if (!o) {
            /* Option names are echoed only if they look like option names (no PHI). */
            int plain = nlen > 0 && nlen < 32;
            for (size_t k = 0; k < nlen && plain; k++)
                plain = (name[k] >= 'a' && name[k] <= 'z') || name[k] == '-';
            err_begin(a->cmd);
            if (plain)
                fprintf(stderr, "unknown option '--%.*s'\n", (int)nlen, name);
            else
                fputs("unrecognized option\n", stderr);
            fprintf(stderr, "Try 'phiaudit %s --help'.\n", a->cmd);
            return EXIT_USAGE;
        }
        const char *val = NULL;
        if (o->has_arg) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                err_begin(a->cmd);
                fprintf(stderr, "option '--%s' needs a value\nTry 'phiaudit %s --help'.\n",
                        o->name, a->cmd);
                return EXIT_USAGE;
            }
        } else if (eq) {
            err_begin(a->cmd);
            fprintf(stderr, "option '--%s' takes no value\n", o->name);
            return EXIT_USAGE;
        }
        switch (o->id) {
        case OPT_JSON: a->json = 1; break;
        case OPT_KEY:
        case OPT_KEYRING: {
            const char **list = o->id == OPT_KEY ? a->keys : a->keyrings;
            size_t *n = o->id == OPT_KEY ? &a->nkeys : &a->nkeyrings;
            if (*n == MAX_KEYS) {
                usage_error(a->cmd, "too many --key/--keyring options");
                return EXIT_USAGE;
            }
            list[(*n)++] = val;
            break;
        }
        case OPT_PATIENT:
        case OPT_CLINICIAN: {
            const char **dst = o->id == OPT_PATIENT ? &a->q.patient_id : &a->q.clinician_id;
            if (*dst) {
                err_begin(a->cmd);
                fprintf(stderr, "option '--%s' given twice\n", o->name);
                return EXIT_USAGE;
            }
            *dst = val;
            a->has_query = 1;
            break;
        }
        case OPT_ACTION:
            if (strlen(val) != 1 || !strchr("CRUDE", val[0])) {
                usage_error(a->cmd, "--action must be one of C, R, U, D, E");
                return EXIT_USAGE;
            }
            a->q.action = val[0];
            break;
        case OPT_SINCE:
        case OPT_UNTIL: {
            int64_t t;
            if (phiaudit_time_parse(val, &t) != 0) {
                err_begin(a->cmd);
                fprintf(stderr,
                        "--%s: not a time (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)\n",
                        o->name);
                return EXIT_USAGE;
            }
            if (o->id == OPT_SINCE)
                a->q.since_us = t;
            else
                a->q.until_us = t;
            break;
        }
        default: break;
        }
    }
    if (a->nsources == 0) {
        usage_error(a->cmd, "missing SOURCE (a log file or directory)");
        return EXIT_USAGE;
    }
    return -1;
}

static int load_keys(const read_args *a, phiaudit_keyring **kr_out)
{
    *kr_out = NULL;
    if (a->nkeys == 0 && a->nkeyrings == 0)
        return -1;
    phiaudit_keyring *kr = NULL;
    if (phiaudit_keyring_new(&kr) != 0) {
        err_begin(a->cmd);
        fputs("out of memory\n", stderr);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < a->nkeys; i++) {
        int rc = phiaudit_keyring_add_file(kr, a->keys[i]);
        if (rc) {
            err_begin(a->cmd);
            fputs("cannot load key file ", stderr);
            put_sanitized(stderr, a->keys[i]);
            fprintf(stderr, ": %s\n", rc == PHIAUDIT_E_NOT_FOUND ? "no such file"
                                                                   : phiaudit_strerror(rc));
            phiaudit_keyring_free(&kr);
            return EXIT_USAGE;
        }
    }
    for (size_t i = 0; i < a->nkeyrings; i++) {
        size_t added = 0;
        int rc = phiaudit_keyring_add_dir(kr, a->keyrings[i], &added);
        if (rc) {
            err_begin(a->cmd);
            fputs("cannot load keyring ", stderr);
            put_sanitized(stderr, a->keyrings[i]);
            fprintf(stderr, ": %s (after %zu key file%s)\n",
                    rc == PHIAUDIT_E_NOT_FOUND ? "no such directory" : phiaudit_strerror(rc),
                    added, added == 1 ? "" : "s");
            phiaudit_keyring_free(&kr);
            return EXIT_USAGE;
        }
    }
    if (phiaudit_keyring_count(kr) == 0) {
        usage_error(a->cmd, "no key loaded (the keyring directory is empty)");
        phiaudit_keyring_free(&kr);
        return EXIT_USAGE;
    }
    *kr_out = kr;
    return -1;
}

static int open_reader(const read_args *a, phiaudit_keyring *kr, phiaudit_reader **r)
{
    int rc = phiaudit_reader_open(r, (const char *const *)a->sources, a->nsources, kr);
    if (rc == 0)
        return -1;
    /* Find the offending source for a precise message. */
    for (size_t i = 0; i < a->nsources; i++) {
        const char *one[1] = {a->sources[i]};
        phiaudit_reader *probe = NULL;
        int prc = phiaudit_reader_open(&probe, one, 1, NULL);
        phiaudit_reader_free(&probe);
        if (prc == PHIAUDIT_E_NOT_FOUND || prc == PHIAUDIT_E_IO) {
            err_begin(a->cmd);
            put_sanitized(stderr, a->sources[i]);
            fprintf(stderr, ": %s\n",
                    prc == PHIAUDIT_E_NOT_FOUND
                        ? "no such file or directory"
                        : "cannot read (not a file or directory, or permission denied)");
            return EXIT_USAGE;
        }
    }
    err_begin(a->cmd);
    fprintf(stderr, "cannot open sources: %s\n", phiaudit_strerror(rc));
    return EXIT_USAGE;
}

/* ---- Reports --------------------------------------------------------------------------------- */

static void human_ranges(FILE *f, const char *what, const phiaudit_range *r, size_t n,
                         uint64_t total)
{
    fprintf(f, "    %s:", what);
    for (size_t i = 0; i < n; i++) {
        if (r[i].first == r[i].last)
            fprintf(f, " %" PRIu64, r[i].first);
        else
            fprintf(f, " %" PRIu64 "-%" PRIu64, r[i].first, r[i].last);
    }
    if (total > n)
        fprintf(f, " ... (%" PRIu64 " ranges in all)", total);
    fputc('\n', f);
}

static void count_line(FILE *f, uint64_t n, const char *text)
{
    if (n)
        fprintf(f, "    %s: %" PRIu64 "\n", text, n);
}

/* Human summary. With only_problems, intact files and streams are skipped (decrypt/query
 * print it on stderr). */
static void report_human(FILE *f, phiaudit_reader *r, int keyed, int only_problems)
{
    size_t nsrc = phiaudit_reader_source_count(r);
    size_t nst = phiaudit_reader_stream_count(r);
    uint64_t frames = 0;
    for (size_t i = 0; i < nsrc; i++) {
        phiaudit_source_report s;
        if (phiaudit_reader_source(r, i, &s) != 0)
            continue;
        frames += s.frames;
        if (only_problems && s.verdict == PHIAUDIT_VERDICT_INTACT)
            continue;
        fputs("file ", f);
        put_sanitized(f, s.path);
        fprintf(f, ": records: %" PRIu64 ", bytes: %" PRIu64 ": %s\n", s.frames, s.bytes,
                phiaudit_verdict_name((int)s.verdict));
        if (s.error == PHIAUDIT_E_FORMAT)
            fputs("    not a phiaudit log (no record found)\n", f);
        else if (s.error)
            fprintf(f, "    cannot be read: %s\n", phiaudit_strerror(s.error));
        if (s.torn_tail_bytes)
            fprintf(f,
                    "    torn tail: the file ends inside a record (%" PRIu64
                    " bytes at offset %" PRIu64 "): possibly lost records (crash)\n",
                    s.torn_tail_bytes, s.torn_tail_offset);
        if (s.damaged_bytes) {
            fprintf(f, "    damaged bytes (not records) in the middle: %" PRIu64 "\n",
                    s.damaged_bytes);
            human_ranges(f, "damaged byte ranges", s.damaged_ranges, s.damaged_ranges_len,
                         s.damaged_range_count);
        }
    }
    for (size_t i = 0; i < nst; i++) {
        phiaudit_stream_report s;
        if (phiaudit_reader_stream(r, i, &s) != 0)
            continue;
        if (only_problems && s.verdict == PHIAUDIT_VERDICT_INTACT)
            continue;
        char t0[96], t1[96];
        format_time(s.first_time_us, t0);
        format_time(s.last_time_us, t1);
        fputs("stream ", f);
        put_hex(f, s.stream_id, 16);
        fprintf(f, ": %s\n", phiaudit_verdict_name((int)s.verdict));
        fputs("    key ID ", f);
        put_hex(f, s.key_id, 16);
        fprintf(f, "; seq %" PRIu64 "..%" PRIu64 ", %s .. %s\n", s.first_seq, s.last_seq, t0,
                t1);
        fprintf(f, "    records: %" PRIu64, s.records);
        if (keyed)
            fprintf(f, ", authenticated: %" PRIu64, s.authenticated);
        else
            fputs(" (keyless check: contents not authenticated)", f);
        fputc('\n', f);
        count_line(f, s.modified, "modified (authentication failed)");
        if (s.flags & PHIAUDIT_SR_ALL_AUTH_FAILED)
            fputs("    every record failed authentication: wrong key for this key ID, or the "
                  "whole stream was altered\n", f);
        count_line(f, s.unknown_key, "key ID not in the keyring");
        if (s.missing_records) {
            fprintf(f, "    missing (deleted) records: %" PRIu64 " in %" PRIu64 " range%s\n",
                    s.missing_records, s.missing_range_count,
                    s.missing_range_count == 1 ? "" : "s");
            human_ranges(f, "missing seq", s.missing_ranges, s.missing_ranges_len,
                         s.missing_range_count);
        }
        count_line(f, s.conflicts, "conflicting copies (same seq, different bytes)");
        count_line(f, s.reordered, "out of order");
        count_line(f, s.chain_breaks, "chain breaks");
        count_line(f, s.misplaced,
                   "misplaced records (wrong type for its seq, after CLOSE, or key changed)");
        count_line(f, s.duplicates, "benign duplicates (identical copies; informational)");
        if (s.flags & PHIAUDIT_SR_MISSING_PREDECESSOR)
            fprintf(f, "    first records missing (seq 0..%" PRIu64
                       " not in the input: older file not given?)\n",
                    s.first_seq ? s.first_seq - 1 : 0);
        if (s.flags & PHIAUDIT_SR_MISSING_CLOSE)
            fputs("    no CLOSE record (crashed, still running, or its last records were cut "
                  "off)\n", f);
    }
    int v = phiaudit_reader_verdict(r);
    if (frames == 0)
        fputs("no records found\n", f);
    fprintf(f, "files: %zu, streams: %zu, records: %" PRIu64 ": %s\n", nsrc, nst, frames,
            phiaudit_verdict_name(v));
}

static void json_u64(FILE *f, const char *key, uint64_t v, int comma)
{
    fprintf(f, "%s\"%s\":%" PRIu64, comma ? "," : "", key, v);
}

static void json_ranges(FILE *f, const char *key, const phiaudit_range *r, size_t n)
{
    fprintf(f, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "", r[i].first, r[i].last);
    fputc(']', f);
}

static void json_bool(FILE *f, const char *key, int v)
{
    fprintf(f, ",\"%s\":%s", key, v ? "true" : "false");
}

static void report_json(FILE *f, phiaudit_reader *r, int keyed)
{
    int v = phiaudit_reader_verdict(r);
    size_t nsrc = phiaudit_reader_source_count(r);
    size_t nst = phiaudit_reader_stream_count(r);
    uint64_t frames = 0;
    fprintf(f, "{\"verdict\":\"%s\",\"exit_status\":%d,\"keyed\":%s,\"files\":[",
            phiaudit_verdict_name(v), v, keyed ? "true" : "false");
    for (size_t i = 0; i < nsrc; i++) {
        phiaudit_source_report s;
        if (phiaudit_reader_source(r, i, &s) != 0)
            continue;
        frames += s.frames;
        fputs(i ? ",{\"path\":" : "{\"path\":", f);
        put_json_string(f, s.path);
        fprintf(f, ",\"verdict\":\"%s\"", phiaudit_verdict_name((int)s.verdict));
        if (s.error) {
            fputs(",\"error\":", f);
            put_json_string(f, s.error == PHIAUDIT_E_FORMAT ? "not a phiaudit log"
                                                            : phiaudit_strerror(s.error));
        } else {
            fputs(",\"error\":null", f);
        }
        json_u64(f, "bytes", s.bytes, 1);
        json_u64(f, "records", s.frames, 1);
        if (s.torn_tail_bytes)
            fprintf(f, ",\"torn_tail\":{\"offset\":%" PRIu64 ",\"bytes\":%" PRIu64 "}",
                    s.torn_tail_offset, s.torn_tail_bytes);
        else
            fputs(",\"torn_tail\":null", f);
        json_u64(f, "damaged_bytes", s.damaged_bytes, 1);
        json_u64(f, "damaged_range_count", s.damaged_range_count, 1);
        json_ranges(f, "damaged_ranges", s.damaged_ranges, s.damaged_ranges_len);
        fputc('}', f);
    }
    fputs("],\"streams\":[", f);
    for (size_t i = 0; i < nst; i++) {
        phiaudit_stream_report s;
        if (phiaudit_reader_stream(r, i, &s) != 0)
            continue;
        char t0[96], t1[96];
        format_time(s.first_time_us, t0);
        format_time(s.last_time_us, t1);
        fputs(i ? ",{\"stream\":\"" : "{\"stream\":\"", f);
        put_hex(f, s.stream_id, 16);
        fputs("\",\"key_id\":\"", f);
        put_hex(f, s.key_id, 16);
        fprintf(f, "\",\"verdict\":\"%s\"", phiaudit_verdict_name((int)s.verdict));
        json_u64(f, "records", s.records, 1);
        json_u64(f, "authenticated", s.authenticated, 1);
        json_u64(f, "first_seq", s.first_seq, 1);
        json_u64(f, "last_seq", s.last_seq, 1);
        fprintf(f, ",\"first_time\":\"%s\",\"last_time\":\"%s\"", t0, t1);
        json_bool(f, "has_open", s.flags & PHIAUDIT_SR_HAS_OPEN);
        json_bool(f, "has_close", s.flags & PHIAUDIT_SR_HAS_CLOSE);
        json_bool(f, "missing_predecessor", s.flags & PHIAUDIT_SR_MISSING_PREDECESSOR);
        json_bool(f, "missing_close", s.flags & PHIAUDIT_SR_MISSING_CLOSE);
        json_bool(f, "all_auth_failed", s.flags & PHIAUDIT_SR_ALL_AUTH_FAILED);
        json_u64(f, "modified", s.modified, 1);
        json_u64(f, "unknown_key", s.unknown_key, 1);
        json_u64(f, "duplicates", s.duplicates, 1);
        json_u64(f, "conflicts", s.conflicts, 1);
        json_u64(f, "reordered", s.reordered, 1);
        json_u64(f, "chain_breaks", s.chain_breaks, 1);
        json_u64(f, "misplaced", s.misplaced, 1);
        json_u64(f, "missing_records", s.missing_records, 1);
        json_u64(f, "missing_range_count", s.missing_range_count, 1);
        json_ranges(f, "missing_ranges", s.missing_ranges, s.missing_ranges_len);
        fputc('}', f);
    }
    fprintf(f, "],\"records\":%" PRIu64 "}\n", frames);
}

/* ---- Commands -------------------------------------------------------------------------------- */

static const opt_def verify_opts[] = {
    {"json", OPT_JSON, 0}, {"key", OPT_KEY, 1}, {"keyring", OPT_KEYRING, 1}, {NULL, 0, 0}};
static const opt_def decrypt_opts[] = {
    {"key", OPT_KEY, 1}, {"keyring", OPT_KEYRING, 1}, {NULL, 0, 0}};
static const opt_def query_opts[] = {
    {"key", OPT_KEY, 1},         {"keyring", OPT_KEYRING, 1}, {"patient", OPT_PATIENT, 1},
    {"clinician", OPT_CLINICIAN, 1}, {"action", OPT_ACTION, 1},   {"since", OPT_SINCE, 1},
    {"until", OPT_UNTIL, 1},     {NULL, 0, 0}};

static int finish_status(phiaudit_reader *r, int rc, const char *cmd)
{
    if (rc < 0) {
        err_begin(cmd);
        fprintf(stderr, "reading stopped: %s\n", phiaudit_reader_errmsg(r));
        return EXIT_USAGE;
    }
    return phiaudit_reader_verdict(r);
}

int phiaudit_cmd_verify(int argc, char **argv)
{
    read_args a;
    memset(&a, 0, sizeof a);
    a.cmd = "verify";
    phiaudit_query_init(&a.q);
    int st = parse_args(argc, argv, &a, verify_opts, phiaudit_cmd_verify_help);
    phiaudit_keyring *kr = NULL;
    phiaudit_reader *r = NULL;
    if (st < 0)
        st = load_keys(&a, &kr);
    if (st < 0)
        st = open_reader(&a, kr, &r);
    if (st < 0) {
        int rc = phiaudit_reader_run(r);
        st = finish_status(r, rc, a.cmd);
        if (rc == 0) {
            if (a.json)
                report_json(stdout, r, kr != NULL);
            else
                report_human(stdout, r, kr != NULL, 0);
        }
    }
    phiaudit_reader_free(&r);
    phiaudit_keyring_free(&kr);
    free(a.sources);
    return st;
}

/* One problem line per record on stderr (no content), capped. */
static void note_record(const char *cmd, const phiaudit_reader_record *rec, unsigned long *notes)
{
    uint32_t bad = rec->status & (PHIAUDIT_RS_TAMPER_MASK | PHIAUDIT_RS_UNKNOWN_KEY);
    if (!bad)
        return;
    if (++*notes > MAX_RECORD_NOTES) {
        if (*notes == MAX_RECORD_NOTES + 1) {
            err_begin(cmd);
            fputs("more problems: see the summary below\n", stderr);
        }
        return;
    }
    err_begin(cmd);
    fputs("stream ", stderr);
    put_hex(stderr, rec->header.stream_id, 16);
    fprintf(stderr, " seq %" PRIu64 ":", rec->header.seq);
    if (bad & PHIAUDIT_RS_AUTH_FAILED)
        fputs(" authentication failed (modified or wrong key), not printed;", stderr);
    if (bad & PHIAUDIT_RS_UNKNOWN_KEY)
        fputs(" key ID not in the keyring, not printed;", stderr);
    if (bad & PHIAUDIT_RS_CONFLICT)
        fputs(" conflicting copy of an earlier record;", stderr);
    if (bad & PHIAUDIT_RS_REORDERED)
        fputs(" out of order;", stderr);
    if (bad & PHIAUDIT_RS_CHAIN_BREAK)
        fputs(" chain break;", stderr);
    if (bad & PHIAUDIT_RS_GAP_BEFORE)
        fputs(" records missing before it;", stderr);
    if (bad & PHIAUDIT_RS_MISPLACED)
        fputs(" does not fit its stream;", stderr);
    fputc('\n', stderr);
}

/* A payload is copied verbatim only if it looks like one JSON object on one line;
 * otherwise (classic text format) it is printed as a JSON string. */
static int payload_is_object(const uint8_t *p, size_t n)
{
    if (n < 2 || p[0] != '{' || p[n - 1] != '}')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    return 1;
}

static void print_record(const phiaudit_reader_record *rec)
{
    fputs("{\"stream\":\"", stdout);
    put_hex(stdout, rec->header.stream_id, 16);
    fprintf(stdout, "\",\"seq\":%" PRIu64 ",\"key_id\":\"", rec->header.seq);
    put_hex(stdout, rec->header.key_id, 16);
    fprintf(stdout, "\",\"type\":\"%s\",\"record\":", type_name(rec->header.type));
    if (payload_is_object(rec->payload, rec->payload_len))
        fwrite(rec->payload, 1, rec->payload_len, stdout);
    else
        put_json_string_n(stdout, (const char *)rec->payload, rec->payload_len);
    fputs("}\n", stdout);
}

static int decrypt_like(int argc, char **argv, const char *cmd, const opt_def *opts,
                        const char *const *help, int query)
{
    read_args a;
    memset(&a, 0, sizeof a);
    a.cmd = cmd;
    phiaudit_query_init(&a.q);
    int st = parse_args(argc, argv, &a, opts, help);
    phiaudit_keyring *kr = NULL;
    phiaudit_reader *r = NULL;
    if (st < 0) {
        st = load_keys(&a, &kr);
        if (st < 0 && !kr) {
            usage_error(cmd, "--key FILE or --keyring DIR is required");
            st = EXIT_USAGE;
        }
    }
    if (st < 0)
        st = open_reader(&a, kr, &r);
    if (st < 0 && query) {
        int rc = phiaudit_reader_set_query(r, &a.q);
        if (rc) {
            /* Never echo the value: it is PHI. */
            usage_error(cmd, rc == PHIAUDIT_E_INVALID
                                 ? "invalid query"
                                 : "--patient/--clinician: not a valid identifier (1-256 "
                                   "bytes of UTF-8 without control characters)");
            st = EXIT_USAGE;
        }
    }
    if (st < 0) {
        phiaudit_reader_record rec;
        unsigned long notes = 0;
        int rc;
        while ((rc = phiaudit_reader_next(r, &rec)) == 1) {
            note_record(cmd, &rec, &notes);
            if (!(rec.status & PHIAUDIT_RS_AUTHENTICATED) || (rec.status & PHIAUDIT_RS_DUPLICATE))
                continue;
            if (query && !(rec.status & PHIAUDIT_RS_MATCH))
                continue;
            print_record(&rec);
        }
        if (fflush(stdout) != 0 || ferror(stdout)) {
            err_begin(cmd);
            fprintf(stderr, "error writing to standard output: %s\n", strerror(errno));
            st = EXIT_USAGE;
        } else {
            st = finish_status(r, rc, cmd);
            if (rc == 0 && st != PHIAUDIT_VERDICT_INTACT) {
                fflush(stdout);
                report_human(stderr, r, 1, 1);
            }
        }
    }
    phiaudit_reader_free(&r);
    phiaudit_keyring_free(&kr);
    free(a.sources);
    return st;
}

int phiaudit_cmd_decrypt(int argc, char **argv)
{
    return decrypt_like(argc, argv, "decrypt", decrypt_opts, phiaudit_cmd_decrypt_help, 0);
}

int phiaudit_cmd_query(int argc, char **argv)
{
    return decrypt_like(argc, argv, "query", query_opts, phiaudit_cmd_query_help, 1);
}
