/*
 * phiaudit record frames and keyrings: the low-level half of the reader.
 * The byte layout is specified in docs/FORMAT.md; this header exposes parsing, chain links
 * and authenticated decryption of single frames.
 */
#ifndef PHIAUDIT_RECORD_H
#define PHIAUDIT_RECORD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef PHIAUDIT_API
#if defined(PHIAUDIT_BUILDING) && defined(__GNUC__)
#define PHIAUDIT_API __attribute__((visibility("default")))
#else
#define PHIAUDIT_API
#endif
#endif

#define PHIAUDIT_FRAME_MAGIC "PHA1"
#define PHIAUDIT_FORMAT_VERSION 1
#define PHIAUDIT_SUITE_AES256GCM_HKDF_SHA256 1
#define PHIAUDIT_HEADER_LEN 112      /**< bytes of plaintext header (the AAD) */
#define PHIAUDIT_TAG_LEN 16          /**< GCM tag */
#define PHIAUDIT_LINK_LEN 32         /**< SHA-256 chain link */
#define PHIAUDIT_BLIND_INDEX_LEN 8   /**< truncated HMAC-SHA256 */
#define PHIAUDIT_MIN_FRAME_LEN (PHIAUDIT_HEADER_LEN + PHIAUDIT_TAG_LEN)
#define PHIAUDIT_MAX_FRAME_LEN 65536 /**< larger frames are rejected as malformed */

PHIAUDIT_API size_t phiaudit_header_len(void);
PHIAUDIT_API size_t phiaudit_max_frame_len(void);

/* Record types (header byte 6). */
#define PHIAUDIT_RECORD_OPEN 1  /**< first record of a stream (seq 0) */
#define PHIAUDIT_RECORD_DATA 2  /**< one audit event */
#define PHIAUDIT_RECORD_CLOSE 3 /**< last record of a stream (clean close) */

/* Header flags (header byte 7). */
#define PHIAUDIT_HFLAG_BLIND_INDEX 0x01 /**< blind-index tags present */

/** Parsed plaintext header of a frame. */
typedef struct phiaudit_header {
    uint8_t version;
    uint8_t suite;
    uint8_t type;
    uint8_t flags;
    uint32_t frame_len;
    uint8_t key_id[16];
    uint8_t stream_id[16];
    uint64_t seq;
    int64_t time_us;
    uint32_t epoch;
    uint8_t prev_link[PHIAUDIT_LINK_LEN];
    uint8_t bi_patient[PHIAUDIT_BLIND_INDEX_LEN];
    uint8_t bi_clinician[PHIAUDIT_BLIND_INDEX_LEN];
} phiaudit_header;

/**
 * Parse the frame starting at @p buf. Checks magic, version, suite, type, and that the
 * declared length is within [PHIAUDIT_MIN_FRAME_LEN, PHIAUDIT_MAX_FRAME_LEN].
 * @return 0 (the whole frame, hdr->frame_len bytes, is inside buf);
 *         PHIAUDIT_E_TRUNCATED (buf ends before the frame does; hdr->frame_len is set when
 *         at least 12 bytes were available, else 0); PHIAUDIT_E_FORMAT (not a frame);
 *         PHIAUDIT_E_VERSION (unknown version or suite); PHIAUDIT_E_INVALID (NULL).
 * Thread-safe. Reads at most @p len bytes.
 */
PHIAUDIT_API int phiaudit_frame_parse(const uint8_t *buf, size_t len, phiaudit_header *hdr);

/** Chain link of a complete frame: SHA-256(header ‖ tag). The next record of the stream
 *  carries it as prev_link. @return 0, PHIAUDIT_E_INVALID or PHIAUDIT_E_CRYPTO. Thread-safe. */
PHIAUDIT_API int phiaudit_frame_link(const uint8_t *frame, size_t frame_len,
                                     uint8_t link[PHIAUDIT_LINK_LEN]);

/* ---- Keyrings --------------------------------------------------------------------------- */

typedef struct phiaudit_keyring phiaudit_keyring;

/** @return 0 or PHIAUDIT_E_NOMEM / PHIAUDIT_E_INVALID. Thread-safe. */
PHIAUDIT_API int phiaudit_keyring_new(phiaudit_keyring **out);

/** Add a key (copied; the caller wipes its own copy). Adding the same key ID with the same
 *  key again is a no-op. @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_KEY (same ID, different
 *  key); PHIAUDIT_E_NOMEM. Not thread-safe on the same keyring. */
PHIAUDIT_API int phiaudit_keyring_add(phiaudit_keyring *kr, const uint8_t key_id[16],
                                      const uint8_t key[32]);

/** Load a key file (see phiaudit_key_load_file) into the keyring. Errors as that function
 *  and phiaudit_keyring_add. Not thread-safe on the same keyring. */
PHIAUDIT_API int phiaudit_keyring_add_file(phiaudit_keyring *kr, const char *path);

/** Number of keys. Thread-safe with other readers. */
PHIAUDIT_API size_t phiaudit_keyring_count(const phiaudit_keyring *kr);

/** 1 if the keyring holds @p key_id, else 0. */
PHIAUDIT_API int phiaudit_keyring_has(const phiaudit_keyring *kr, const uint8_t key_id[16]);

/** Wipe all keys and free. Accepts NULL; sets *kr = NULL. */
PHIAUDIT_API void phiaudit_keyring_free(phiaudit_keyring **kr);

/**
 * Authenticate and decrypt one complete frame. Plaintext is written to @p out only if the
 * tag verifies; on any failure @p out is zeroed up to @p cap.
 * @param out_len receives the plaintext length (frame_len - 128).
 * @return 0; PHIAUDIT_E_AUTH (modified or wrong key); PHIAUDIT_E_UNKNOWN_KEY;
 *         PHIAUDIT_E_TOO_LONG (cap too small; *out_len set to the size needed);
 *         parse errors as phiaudit_frame_parse; PHIAUDIT_E_CRYPTO.
 * Not thread-safe on the same keyring (it caches the derived keys of recent streams).
 */
PHIAUDIT_API int phiaudit_frame_open(phiaudit_keyring *kr, const uint8_t *frame,
                                     size_t frame_len, uint8_t *out, size_t cap,
                                     size_t *out_len);

/**
 * Blind-index tag of an identifier under key @p key_id: what a record written with
 * PHIAUDIT_FLAG_BLIND_INDEX carries in bi_patient (@p which = 'P') or bi_clinician
 * (@p which = 'C'). Identifiers are compared byte for byte (no case folding).
 * @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_UNKNOWN_KEY; PHIAUDIT_E_CRYPTO.
 */
PHIAUDIT_API int phiaudit_blind_index(phiaudit_keyring *kr, const uint8_t key_id[16],
                                      int which, const char *id,
                                      uint8_t tag[PHIAUDIT_BLIND_INDEX_LEN]);

#ifdef __cplusplus
}
#endif
#endif /* PHIAUDIT_RECORD_H */
