/* Field validation and payload formatting (JSON mapping to a FHIR R4 AuditEvent). */
#include "internal.h"

#include <string.h>

/* Decode one UTF-8 sequence at s[i..n). Returns its length (1..4) and the code point, or 0
 * if the sequence is invalid (overlong, surrogate, > U+10FFFF, truncated). */
static size_t utf8_decode(const unsigned char *s, size_t i, size_t n, uint32_t *cp)
{
    unsigned char c = s[i];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2; v = c & 0x1F; min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3; v = c & 0x0F; min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4; v = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (n - i < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[i + k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* Shared scanner: length check first (so a 1 MiB field costs one bounded strnlen), then
 * UTF-8 and, for identifiers, the control-character rule. */
static int validate(const char *s, size_t max, size_t *out_len, int is_id)
{
    if (!s)
        return PHIAUDIT_E_INVALID;
    size_t n = strnlen(s, max + 1);
    if (n > max)
        return PHIAUDIT_E_TOO_LONG;
    if (is_id && n == 0)
        return PHIAUDIT_E_EMPTY;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] >= 0x20 && u[i] < 0x7F) { /* fast path: printable ASCII */
            i++;
            continue;
        }
        uint32_t cp;
        size_t len = utf8_decode(u, i, n, &cp);
        if (!len)
            return PHIAUDIT_E_UTF8;
        if (is_id && (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029))
            return PHIAUDIT_E_BAD_CHAR;
        i += len;
    }
    if (out_len)
        *out_len = n;
    return 0;
}

int phiaudit_validate_id(const char *s, size_t max, size_t *len)
{
    return validate(s, max, len, 1);
}

int phiaudit_validate_text(const char *s, size_t max, size_t *len)
{
    return validate(s, max, len, 0);
}

/* ---- Appending without snprintf (about 5x faster on this path) ---------------------------- */

static inline void put(phiaudit_buf *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}
#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_u64(phiaudit_buf *b, uint64_t v)
{
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b, tmp + i, (size_t)(20 - i));
}

static void put_i64(phiaudit_buf *b, int64_t v)
{
    if (v < 0) {
        PUTS(b, "-");
        put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(b, (uint64_t)v);
    }
}

static void put_time(phiaudit_buf *b, int64_t us)
{
    char t[28];
    phiaudit_format_time_us(us, t);
    PUTS(b, "\"");
    put(b, t, 27);
    PUTS(b, "\"");
}

/* Worst case of one escaped byte is \u00XX (6 bytes). */
#define JSON_WORST(n) ((n) * 6 + 2)

static void put_json_string(phiaudit_buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    uint8_t *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7F && c != 0xE2) {
            *o++ = c;
            continue;
        }
        if (c == 0xE2 && i + 2 < n && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
            /* U+2028/U+2029: legal JSON but line breaks for JavaScript and many log viewers. */
            memcpy(o, s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
            o += 6;
            i += 2;
            continue;
        }
        if (c == 0xE2) {
            *o++ = c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

int phiaudit_json_string(phiaudit_buf *out, const char *s, size_t n)
{
    int rc = phiaudit_buf_reserve(out, JSON_WORST(n));
    if (rc)
        return rc;
    put_json_string(out, s, n);
    return 0;
}

static void put_field(phiaudit_buf *b, const char *key, size_t key_len, const char *v, size_t n)
{
    put(b, key, key_len);
    put_json_string(b, v, n);
}
#define FIELD(b, lit, v, n) put_field((b), (lit), sizeof(lit) - 1, (v), (n))

static int format_json(phiaudit_buf *b, const phiaudit_payload_fields *f, size_t *id_offset)
{
    size_t need = 512 + JSON_WORST(f->clinician_len) + JSON_WORST(f->patient_len) +
                  JSON_WORST(f->event_type_len) + JSON_WORST(f->event_subtype_len) +
                  JSON_WORST(f->purpose_len) + JSON_WORST(f->detail_len) +
                  JSON_WORST(f->app_len) + JSON_WORST(f->host_len);
    int rc = phiaudit_buf_reserve(b, need);
    if (rc)
        return rc;
    size_t start = b->len;
    PUTS(b, "{\"v\":1,\"id\":\"");
    *id_offset = b->len - start;
    memset(b->data + b->len, '0', PHIAUDIT_RECORD_ID_LEN);
    b->len += PHIAUDIT_RECORD_ID_LEN;
    PUTS(b, "\",\"recorded\":");
    put_time(b, f->recorded_us);
    PUTS(b, ",\"start\":");
    put_time(b, f->start_us);
    PUTS(b, ",\"end\":");
    put_time(b, f->start_us + f->duration_us);
    PUTS(b, ",\"duration_us\":");
    put_i64(b, f->duration_us);
    PUTS(b, ",\"action\":\"");
    char action = (char)f->action;
    put(b, &action, 1);
    PUTS(b, "\",\"outcome\":");
    put_u64(b, (uint64_t)f->outcome);
    FIELD(b, ",\"clinician\":", f->clinician, f->clinician_len);
    FIELD(b, ",\"patient\":", f->patient, f->patient_len);
    if (f->event_type)
        FIELD(b, ",\"type\":", f->event_type, f->event_type_len);
    if (f->event_subtype)
        FIELD(b, ",\"subtype\":", f->event_subtype, f->event_subtype_len);
    if (f->purpose)
        FIELD(b, ",\"purpose\":", f->purpose, f->purpose_len);
    if (f->break_glass)
        PUTS(b, ",\"break_glass\":true");
    if (f->abandoned)
        PUTS(b, ",\"abandoned\":true");
    if (f->detail)
        FIELD(b, ",\"detail\":", f->detail, f->detail_len);
    FIELD(b, ",\"app\":", f->app, f->app_len);
    FIELD(b, ",\"host\":", f->host, f->host_len);
    PUTS(b, ",\"pid\":");
    put_i64(b, f->pid);
    PUTS(b, "}");
    return 0;
}

/* The classic one-line message of the seed code, kept for compatibility. It carries only
 * clinician, action, patient and duration; identifiers cannot contain control characters,
 * so the line cannot be split. */
static int format_text(phiaudit_buf *b, const phiaudit_payload_fields *f)
{
    int rc = phiaudit_buf_reserve(b, 96 + f->clinician_len + f->patient_len);
    if (rc)
        return rc;
    PUTS(b, "Clinician ");
    put(b, f->clinician, f->clinician_len);
    PUTS(b, " processed action ");
    char action = (char)f->action;
    put(b, &action, 1);
    PUTS(b, " on Patient ");
    put(b, f->patient, f->patient_len);
    PUTS(b, " in ");
    int64_t us = f->duration_us < 0 ? 0 : f->duration_us;
    /* seconds with 4 decimals, rounded like printf("%.4f") */
    int64_t tenth_ms = (us + 50) / 100;
    put_i64(b, tenth_ms / 10000);
    PUTS(b, ".");
    char frac[4];
    int64_t r = tenth_ms % 10000;
    for (int i = 3; i >= 0; i--, r /= 10)
        frac[i] = (char)('0' + r % 10);
    put(b, frac, 4);
    PUTS(b, "s");
    return 0;
}

int phiaudit_payload_format(phiaudit_buf *out, uint32_t format, const phiaudit_payload_fields *f,
                            size_t *id_offset)
{
    *id_offset = SIZE_MAX;
    if (format == PHIAUDIT_FORMAT_TEXT)
        return format_text(out, f);
    return format_json(out, f, id_offset);
}

void phiaudit_payload_patch_id(uint8_t *id_at, const char stream_hex[32], uint64_t seq)
{
    memcpy(id_at, stream_hex, 32);
    id_at[32] = '-';
    /* The placeholder is all '0': only the significant digits need writing. */
    for (int i = 52; seq; i--, seq /= 10)
        id_at[i] = (uint8_t)('0' + seq % 10);
}
