/* Internal declarations shared by the library's source files. Not installed. */
#ifndef PHIAUDIT_INTERNAL_H
#define PHIAUDIT_INTERNAL_H

#ifndef PHIAUDIT_BUILDING
#define PHIAUDIT_BUILDING 1
#endif

#include "phiaudit.h"

#include <stddef.h>
#include <stdint.h>

#define PHIAUDIT_INTERNAL __attribute__((visibility("hidden")))

/* ---- Allocation (wrapped so tests can fail the Nth allocation) ------------------------- */

PHIAUDIT_INTERNAL void *phiaudit_malloc(size_t n);
PHIAUDIT_INTERNAL void *phiaudit_calloc(size_t n, size_t size);
PHIAUDIT_INTERNAL void *phiaudit_realloc(void *p, size_t n);
PHIAUDIT_INTERNAL void phiaudit_free(void *p);
PHIAUDIT_INTERNAL char *phiaudit_strdup(const char *s);

/* Test hook (tests link the static library, so hidden symbols are reachable): after `n`
 * further successful allocations every later one fails; n < 0 disables. Returns the number
 * of allocations attempted since the last call. */
PHIAUDIT_INTERNAL long phiaudit_test_fail_alloc_after(long n);

/* ---- Growable byte buffer ---------------------------------------------------------------- */

typedef struct phiaudit_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} phiaudit_buf;

/* Ensure room for `extra` more bytes. 0 or PHIAUDIT_E_NOMEM. */
PHIAUDIT_INTERNAL int phiaudit_buf_reserve(phiaudit_buf *b, size_t extra);
PHIAUDIT_INTERNAL int phiaudit_buf_append(phiaudit_buf *b, const void *p, size_t n);
/* Wipe (the whole capacity) and free. */
PHIAUDIT_INTERNAL void phiaudit_buf_free(phiaudit_buf *b);

/* ---- Time, hex, randomness ---------------------------------------------------------------- */

PHIAUDIT_INTERNAL int64_t phiaudit_now_wall_us(void);  /* CLOCK_REALTIME, µs */
PHIAUDIT_INTERNAL int64_t phiaudit_now_mono_ns(void);  /* CLOCK_MONOTONIC, ns */
/* Write "YYYY-MM-DDTHH:MM:SS.ffffffZ" (27 chars + NUL) into out[28]. */
PHIAUDIT_INTERNAL void phiaudit_format_time_us(int64_t us, char out[28]);
/* Lowercase hex of n bytes into out (2n chars, no NUL). */
PHIAUDIT_INTERNAL void phiaudit_hex(const uint8_t *in, size_t n, char *out);
/* Parse exactly 2n hex chars. 0 or PHIAUDIT_E_FORMAT. */
PHIAUDIT_INTERNAL int phiaudit_unhex(const char *in, size_t n, uint8_t *out);
/* OpenSSL RAND_bytes; 0 or PHIAUDIT_E_CRYPTO. */
PHIAUDIT_INTERNAL int phiaudit_random(uint8_t *out, size_t n);

/* ---- Error detail -------------------------------------------------------------------------- */

/* Copy the reason of the newest OpenSSL error into msg (cap bytes) prefixed by `what`, and
 * drain the OpenSSL error queue. Returns PHIAUDIT_E_CRYPTO. */
PHIAUDIT_INTERNAL int phiaudit_crypto_error(char *msg, size_t cap, const char *what);

/* ---- Field validation and payload formatting (payload.c) ---------------------------------- */

/* Identifier rules: 1..max bytes, valid UTF-8, no C0/C1 control characters or DEL.
 * Sets *len. Returns 0, PHIAUDIT_E_INVALID (NULL), _EMPTY, _TOO_LONG, _UTF8, _BAD_CHAR. */
PHIAUDIT_INTERNAL int phiaudit_validate_id(const char *s, size_t max, size_t *len);
/* Free-text rules: 0..max bytes, valid UTF-8 (control characters allowed; escaped later). */
PHIAUDIT_INTERNAL int phiaudit_validate_text(const char *s, size_t max, size_t *len);

typedef struct phiaudit_payload_fields {
    const char *clinician;
    size_t clinician_len;
    const char *patient;
    size_t patient_len;
    const char *event_type;    /* NULL = absent */
    size_t event_type_len;
    const char *event_subtype;
    size_t event_subtype_len;
    const char *purpose;
    size_t purpose_len;
    const char *detail;
    size_t detail_len;
    const char *app;
    size_t app_len;
    const char *host;
    size_t host_len;
    long pid;
    int action;      /* 'C','R','U','D','E' */
    int outcome;     /* 0,4,8,12 */
    int break_glass; /* 0/1 */
    int abandoned;   /* 0/1: scope left open at logger close */
    int64_t recorded_us;
    int64_t start_us;
    int64_t duration_us;
} phiaudit_payload_fields;

/* Length of the record-ID placeholder the JSON formatter leaves: 32 hex chars of stream ID,
 * '-', 20 decimal digits of sequence number. */
#define PHIAUDIT_RECORD_ID_LEN 53

/* Append the payload to out. For JSON, *id_offset receives the offset (relative to the
 * start of this payload) of the PHIAUDIT_RECORD_ID_LEN-byte record-ID placeholder, which
 * phiaudit_payload_patch_id() fills once the sequence number is known; for TEXT, SIZE_MAX.
 * Returns 0 or PHIAUDIT_E_NOMEM. Fields must already be validated. */
PHIAUDIT_INTERNAL int phiaudit_payload_format(phiaudit_buf *out, uint32_t format,
                                              const phiaudit_payload_fields *f,
                                              size_t *id_offset);
PHIAUDIT_INTERNAL void phiaudit_payload_patch_id(uint8_t *id_at, const char stream_hex[32],
                                                 uint64_t seq);
/* Append a JSON string literal (with quotes) for valid UTF-8 s[0..n). Escapes ", \, all
 * control characters, DEL, and U+2028/U+2029. Returns 0 or PHIAUDIT_E_NOMEM. */
PHIAUDIT_INTERNAL int phiaudit_json_string(phiaudit_buf *out, const char *s, size_t n);

/* ---- Record sealing (record.c) --------------------------------------------------------- */

/* Per-stream sealing state: derived key loaded into a reusable cipher context. */
typedef struct phiaudit_sealer phiaudit_sealer;

PHIAUDIT_INTERNAL int phiaudit_hkdf_stream_key(const uint8_t master[32], const uint8_t key_id[16],
                                               const uint8_t stream_id[16], uint8_t out[32]);
PHIAUDIT_INTERNAL int phiaudit_hkdf_index_key(const uint8_t master[32], const uint8_t key_id[16],
                                              uint8_t out[32]);
PHIAUDIT_INTERNAL int phiaudit_blind_tag(const uint8_t index_key[32], int which, const char *id,
                                         size_t id_len, uint8_t out[8]);

PHIAUDIT_INTERNAL int phiaudit_sealer_new(phiaudit_sealer **out);
PHIAUDIT_INTERNAL void phiaudit_sealer_free(phiaudit_sealer **s);
/* Start a new stream: stream_id is random (chosen by the caller), key derived here. */
PHIAUDIT_INTERNAL int phiaudit_sealer_start(phiaudit_sealer *s, const uint8_t master[32],
                                            const uint8_t key_id[16],
                                            const uint8_t stream_id[16]);

typedef struct phiaudit_seal_params {
    uint8_t type;
    uint8_t flags;
    uint64_t seq;
    int64_t time_us;
    const uint8_t *prev_link; /* 32 bytes */
    const uint8_t *bi_patient;   /* 8 bytes or NULL */
    const uint8_t *bi_clinician; /* 8 bytes or NULL */
} phiaudit_seal_params;

/* Seal plaintext pt[0..n) into out (appends one frame of n + 128 bytes) and compute its link.
 * pt may point into scratch memory distinct from out. Returns 0, PHIAUDIT_E_TOO_LONG,
 * PHIAUDIT_E_NOMEM or PHIAUDIT_E_CRYPTO (msg filled). */
PHIAUDIT_INTERNAL int phiaudit_seal(phiaudit_sealer *s, const phiaudit_seal_params *p,
                                    const uint8_t *pt, size_t n, phiaudit_buf *out,
                                    uint8_t link_out[32], char *msg, size_t msg_cap);

/* Chain link of a whole frame: SHA-256(header ‖ tag) (docs/FORMAT.md §5). 0 or
 * PHIAUDIT_E_CRYPTO. The writer and every reader use this one function. */
PHIAUDIT_INTERNAL int phiaudit_chain_link(const uint8_t *frame, size_t frame_len,
                                          uint8_t link[32]);

/* phiaudit_frame_open for a frame the caller has already parsed completely (hdr from
 * phiaudit_frame_parse returning 0): the reader's path, without a second parse. */
PHIAUDIT_INTERNAL int phiaudit_frame_open_parsed(phiaudit_keyring *kr, const uint8_t *frame,
                                                 const phiaudit_header *hdr, uint8_t *out,
                                                 size_t cap, size_t *out_len);

/* Big-endian helpers. */
static inline void phiaudit_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void phiaudit_put_u64(uint8_t *p, uint64_t v)
{
    phiaudit_put_u32(p, (uint32_t)(v >> 32));
    phiaudit_put_u32(p + 4, (uint32_t)v);
}
static inline uint32_t phiaudit_get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t phiaudit_get_u64(const uint8_t *p)
{
    return ((uint64_t)phiaudit_get_u32(p) << 32) | phiaudit_get_u32(p + 4);
}

/* ---- Sinks (sink.c) ------------------------------------------------------------------------ */

struct phiaudit_sink {
    const phiaudit_sink_ops *ops;
    void *state;
};

/* Built-in sink constructors used by phiaudit_sink_open_uri: `rest` follows the scheme. */
PHIAUDIT_INTERNAL int phiaudit_sink_file_open_uri(phiaudit_sink **out, const char *rest);
PHIAUDIT_INTERNAL extern const phiaudit_sink_ops phiaudit_file_sink_ops;
PHIAUDIT_INTERNAL extern const phiaudit_sink_ops phiaudit_memory_sink_ops;

#endif /* PHIAUDIT_INTERNAL_H */
