/*
 * phiaudit reader: stream through log files (or a buffer), verify every stream's sequence
 * and chain, authenticate and decrypt records with a keyring, select records with a query,
 * and get a structured tamper-evidence report.
 *
 * What the reader checks and how each finding is classified is specified in
 * docs/FORMAT.md §9 and §9.1. In short:
 *   - PHIAUDIT_VERDICT_INTACT (0): every check passed;
 *   - PHIAUDIT_VERDICT_TAMPERED (1): proof of modification, deletion inside a stream,
 *     reordering, splicing, conflicting copies or damaged bytes in the middle of a file;
 *   - PHIAUDIT_VERDICT_INCOMPLETE (2): only what a crash, a live writer or a missing
 *     *oldest* file also produces: torn tail at the end of a file, stream without its CLOSE
 *     record, stream whose first records are not in the input;
 *   - PHIAUDIT_VERDICT_ERROR (3): something could not be checked: unreadable source, a
 *     file that is not a phiaudit log, no records at all, or (with a keyring) a key ID the
 *     keyring does not hold.
 * Precedence when several apply: TAMPERED > ERROR > INCOMPLETE > INTACT.
 *
 * Memory is bounded by the number of streams, not the number of records: files are read
 * in 1 MiB chunks; per stream the reader keeps a few counters, the last link, a window of
 * the 16 most recent (seq, link) pairs for duplicate detection and at most
 * PHIAUDIT_REPORT_MAX_RANGES missing ranges.
 *
 * The reader never hands out plaintext of a record that failed authentication.
 *
 * Thread safety: a reader is used by one thread at a time. Different readers may run
 * concurrently provided they do not share a keyring (phiaudit_frame_open caches a derived
 * key inside the keyring).
 */
#ifndef PHIAUDIT_READER_H
#define PHIAUDIT_READER_H

#include <stddef.h>
#include <stdint.h>

#include "phiaudit.h" /* error codes, key/stream ID sizes, phiaudit_record.h */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Verdicts (also the exit codes of `phiaudit verify`) --------------------------------- */

#define PHIAUDIT_VERDICT_INTACT 0     /**< every check passed */
#define PHIAUDIT_VERDICT_TAMPERED 1   /**< modification, deletion, reordering or splicing */
#define PHIAUDIT_VERDICT_INCOMPLETE 2 /**< possibly lost records (crash, live log, old file
                                           not supplied), no proof of tampering */
#define PHIAUDIT_VERDICT_ERROR 3      /**< input could not be (fully) checked */

/** @return "intact", "tampered", "incomplete", "error" or "unknown" (static). Thread-safe. */
PHIAUDIT_API const char *phiaudit_verdict_name(int verdict);

/** Missing ranges and damaged byte ranges kept per stream / per file in a report. */
#define PHIAUDIT_REPORT_MAX_RANGES 64
/** Size of the per-stream window of recent records used to tell duplicates from conflicts. */
#define PHIAUDIT_READER_DUP_WINDOW 16

/* ---- Per-record status bits (phiaudit_reader_record.status) ------------------------------ */

#define PHIAUDIT_RS_AUTHENTICATED 0x0001u /**< tag verified under the keyring; payload set */
#define PHIAUDIT_RS_AUTH_FAILED 0x0002u   /**< tag failed: record modified (or wrong key) */
#define PHIAUDIT_RS_UNKNOWN_KEY 0x0004u   /**< keyring given but it lacks this key ID */
#define PHIAUDIT_RS_DUPLICATE 0x0008u     /**< same seq, same header and tag as a recent
                                               record of the stream: benign copy */
#define PHIAUDIT_RS_CONFLICT 0x0010u      /**< same seq as a recent record, different bytes */
#define PHIAUDIT_RS_REORDERED 0x0020u     /**< seq lower than one already seen (late record
                                               filling a gap, or an unexplained old seq) */
#define PHIAUDIT_RS_CHAIN_BREAK 0x0040u   /**< prev link does not match its predecessor */
#define PHIAUDIT_RS_GAP_BEFORE 0x0080u    /**< records missing between the stream's last
                                               record and this one */
#define PHIAUDIT_RS_MISPLACED 0x0100u     /**< does not fit its stream: OPEN not at seq 0,
                                               seq 0 not OPEN, after CLOSE, key ID changed */
#define PHIAUDIT_RS_NEW_STREAM 0x0200u    /**< first record seen of its stream */
#define PHIAUDIT_RS_MATCH 0x1000u         /**< authenticated DATA record matching the query
                                               (only when a query is set) */

/** Bits of PHIAUDIT_RS_* that make a record evidence of tampering. */
#define PHIAUDIT_RS_TAMPER_MASK                                                             \
    (PHIAUDIT_RS_AUTH_FAILED | PHIAUDIT_RS_CONFLICT | PHIAUDIT_RS_REORDERED |               \
     PHIAUDIT_RS_CHAIN_BREAK | PHIAUDIT_RS_GAP_BEFORE | PHIAUDIT_RS_MISPLACED)

/** One record as returned by phiaudit_reader_next(). Every pointer is owned by the reader
 *  and valid until the next phiaudit_reader_next() or phiaudit_reader_free() call (the
 *  payload buffer is then wiped). */
typedef struct phiaudit_reader_record {
    phiaudit_header header;    /**< parsed plaintext header (no PHI) */
    uint32_t status;           /**< PHIAUDIT_RS_* bits */
    uint32_t reserved;
    const uint8_t *frame;      /**< the whole frame, header.frame_len bytes */
    size_t frame_len;
    const uint8_t *payload;    /**< decrypted payload (not NUL-terminated), or NULL unless
                                    status has PHIAUDIT_RS_AUTHENTICATED */
    size_t payload_len;
    size_t source_index;       /**< index for phiaudit_reader_source() */
    uint64_t offset;           /**< byte offset of the frame in that source */
} phiaudit_reader_record;

/* ---- Reports ------------------------------------------------------------------------------ */

/** Inclusive range of sequence numbers or bytes. */
typedef struct phiaudit_range {
    uint64_t first;
    uint64_t last;
} phiaudit_range;

/* Stream report flags. */
#define PHIAUDIT_SR_HAS_OPEN 0x01u             /**< the OPEN record (seq 0) was seen */
#define PHIAUDIT_SR_HAS_CLOSE 0x02u            /**< a CLOSE record was seen */
#define PHIAUDIT_SR_MISSING_PREDECESSOR 0x04u  /**< records before the first one seen are not
                                                    in the input (incomplete) */
#define PHIAUDIT_SR_MISSING_CLOSE 0x08u        /**< no CLOSE record (incomplete) */
#define PHIAUDIT_SR_ALL_AUTH_FAILED 0x10u      /**< every record under a known key failed:
                                                    most likely the wrong key for this key ID
                                                    (still reported as tampered) */

/** What the reader found about one stream. Filled by phiaudit_reader_stream(). */
typedef struct phiaudit_stream_report {
    uint8_t stream_id[PHIAUDIT_STREAM_ID_LEN];
    uint8_t key_id[PHIAUDIT_KEY_ID_LEN]; /**< key ID of the stream's first record seen */
    uint32_t verdict;            /**< PHIAUDIT_VERDICT_* for this stream */
    uint32_t flags;              /**< PHIAUDIT_SR_* */
    uint64_t records;            /**< frames of this stream read, duplicates included */
    uint64_t authenticated;      /**< frames whose tag verified (0 without a keyring) */
    uint64_t first_seq;          /**< lowest sequence number seen */
    uint64_t last_seq;           /**< highest sequence number seen */
    int64_t first_time_us;       /**< header time of the record with first_seq */
    int64_t last_time_us;        /**< header time of the record with last_seq */
    uint64_t modified;           /**< tag failures */
    uint64_t unknown_key;        /**< frames whose key ID is not in the keyring */
    uint64_t duplicates;         /**< benign copies (informational) */
    uint64_t conflicts;          /**< same seq, different bytes */
    uint64_t reordered;          /**< records with a seq lower than one seen before */
    uint64_t chain_breaks;       /**< prev-link mismatches */
    uint64_t misplaced;          /**< records that do not fit the stream (see RS_MISPLACED) */
    uint64_t missing_records;    /**< sequence numbers missing between first_seq and last_seq */
    uint64_t missing_range_count; /**< number of missing ranges (all, stored or not) */
    const phiaudit_range *missing_ranges; /**< the first missing ranges, ascending */
    size_t missing_ranges_len;   /**< <= PHIAUDIT_REPORT_MAX_RANGES */
} phiaudit_stream_report;

/** What the reader found about one input file (or buffer). */
typedef struct phiaudit_source_report {
    const char *path;            /**< file path (sources joined with directory entries), or
                                      the name given to phiaudit_reader_open_buffer() */
    int error;                   /**< 0, or PHIAUDIT_E_IO / _NOT_FOUND (cannot read),
                                      PHIAUDIT_E_FORMAT (not a phiaudit log: no frame) */
    uint32_t verdict;            /**< PHIAUDIT_VERDICT_* for the file's own findings */
    uint64_t bytes;              /**< bytes read */
    uint64_t frames;             /**< frames parsed */
    uint64_t torn_tail_offset;   /**< where a torn final frame starts */
    uint64_t torn_tail_bytes;    /**< its length (0 = none) */
    uint64_t damaged_bytes;      /**< bytes in the middle that are not frames */
    uint64_t damaged_range_count;
    const phiaudit_range *damaged_ranges; /**< byte offsets, first ones only */
    size_t damaged_ranges_len;
} phiaudit_source_report;

/* ---- Reader ------------------------------------------------------------------------------- */

typedef struct phiaudit_reader phiaudit_reader;

/**
 * Open a reader over files and directories of rotated files.
 *
 * A directory contributes every regular file in it (symlinks to regular files included)
 * whose name does not begin with '.'; subdirectories are not descended into. All files
 * of all sources are read in the order of the time of their first frame, then by path; a
 * file named twice (same device and inode) is read once. A file without any frame is
 * reported as "not a phiaudit log" (PHIAUDIT_VERDICT_ERROR); an empty file is fine.
 *
 * @param out      receives the reader; *out = NULL on failure.
 * @param sources  @p n paths (borrowed for the call).
 * @param n        number of sources, >= 1.
 * @param keyring  optional (NULL = keyless verification: framing, sequence and chain only).
 *                 Borrowed: must outlive the reader and not be used by another thread
 *                 meanwhile.
 * @return 0; PHIAUDIT_E_INVALID (NULL out/sources, n == 0, NULL path);
 *         PHIAUDIT_E_NOT_FOUND (a source does not exist); PHIAUDIT_E_IO (a source is
 *         neither a regular file nor a directory, or a directory cannot be listed);
 *         PHIAUDIT_E_NOMEM; PHIAUDIT_E_CRYPTO.
 *         A file that cannot be opened or read is not an error here: it is reported in its
 *         source report (error PHIAUDIT_E_IO, verdict PHIAUDIT_VERDICT_ERROR).
 * Thread-safe (creates an independent object).
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_reader_open(phiaudit_reader **out,
                                                   const char *const *sources, size_t n,
                                                   phiaudit_keyring *keyring);

/**
 * Open a reader over frames held in memory (for example rows fetched from a database, a
 * capture, or a fuzzer's input), treated as one file.
 * @param buf, len  the bytes; borrowed: must stay valid and unchanged until the reader is
 *                  freed. len may be 0 (buf may then be NULL).
 * @param name      name used in the report (copied); NULL = "<buffer>".
 * @param keyring   as phiaudit_reader_open().
 * @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_NOMEM; PHIAUDIT_E_CRYPTO.
 * Thread-safe.
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_reader_open_buffer(phiaudit_reader **out,
                                                          const uint8_t *buf, size_t len,
                                                          const char *name,
                                                          phiaudit_keyring *keyring);

/** Wipe all plaintext and free. Accepts NULL; sets *reader = NULL. Not thread-safe. */
PHIAUDIT_API void phiaudit_reader_free(phiaudit_reader **reader);

/**
 * Read the next frame of any stream, check it against its stream and (with a keyring)
 * authenticate and decrypt it. Every frame is returned, including damaged or
 * misplaced ones (see rec->status); bytes that are not frames are not returned but
 * recorded in the report.
 * @param rec receives the record (pointers valid until the next call).
 * @return 1 (a record was stored in @p rec); 0 (end of input: the report is final);
 *         PHIAUDIT_E_INVALID; PHIAUDIT_E_NOMEM; PHIAUDIT_E_CRYPTO (the reader is then
 *         unusable; detail in phiaudit_reader_errmsg()).
 * Not thread-safe.
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_reader_next(phiaudit_reader *reader,
                                                   phiaudit_reader_record *rec);

/**
 * Read the input to its end, discarding records (a verify pass). Equivalent to calling
 * phiaudit_reader_next() until it returns 0.
 * @return 0; errors as phiaudit_reader_next(). Not thread-safe.
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_reader_run(phiaudit_reader *reader);

/** Overall verdict so far (final once phiaudit_reader_next() returned 0): the most severe
 *  verdict of all streams and sources, PHIAUDIT_VERDICT_ERROR if there was no record at all.
 *  @return PHIAUDIT_VERDICT_*, or PHIAUDIT_VERDICT_ERROR for NULL. Not thread-safe. */
PHIAUDIT_API int phiaudit_reader_verdict(const phiaudit_reader *reader);

/** Number of streams seen so far. Not thread-safe. */
PHIAUDIT_API size_t phiaudit_reader_stream_count(const phiaudit_reader *reader);

/**
 * Report of stream @p index (streams are numbered in order of first appearance), as of
 * now. Pointers in @p out are valid until the next phiaudit_reader_stream() call for the
 * same stream or phiaudit_reader_free().
 * @return 0; PHIAUDIT_E_INVALID (NULL); PHIAUDIT_E_NOT_FOUND (index out of range);
 *         PHIAUDIT_E_NOMEM. Not thread-safe.
 */
PHIAUDIT_API int phiaudit_reader_stream(phiaudit_reader *reader, size_t index,
                                        phiaudit_stream_report *out);

/** Number of files (or buffers) in the input, after expanding directories. */
PHIAUDIT_API size_t phiaudit_reader_source_count(const phiaudit_reader *reader);

/**
 * Report of source @p index (in reading order). Pointers valid until the reader is freed.
 * @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_NOT_FOUND. Not thread-safe.
 */
PHIAUDIT_API int phiaudit_reader_source(const phiaudit_reader *reader, size_t index,
                                        phiaudit_source_report *out);

/** Detail of the last fatal error (never PHI or key bytes); "" if none. Never NULL. */
PHIAUDIT_API const char *phiaudit_reader_errmsg(const phiaudit_reader *reader);

/* ---- Queries ------------------------------------------------------------------------------ */

#define PHIAUDIT_QUERY_VERSION 1

/**
 * Record selection, all given criteria must match (AND). Fill with phiaudit_query_init().
 * Matching is done on the decrypted payload (JSON fields, strings unescaped and compared
 * byte for byte; TEXT payloads by their fixed sentence). Only authenticated DATA records
 * can match. Header blind-index tags, when present, are used to skip payload parsing of
 * records that cannot match; every record is still authenticated, so an altered tag
 * cannot hide a record.
 */
typedef struct phiaudit_query {
    uint32_t version;         /**< PHIAUDIT_QUERY_VERSION */
    int32_t action;           /**< PHIAUDIT_ACTION_* or 0 = any */
    const char *patient_id;   /**< exact patient ID, or NULL = any */
    const char *clinician_id; /**< exact clinician ID, or NULL = any */
    int64_t since_us;         /**< action start >= since_us (µs since the Unix epoch);
                                   INT64_MIN = unbounded */
    int64_t until_us;         /**< action start < until_us; INT64_MAX = unbounded */
} phiaudit_query;

/** Fill @p q with "match every DATA record". Thread-safe. */
PHIAUDIT_API void phiaudit_query_init(phiaudit_query *q);

/**
 * Set (or with NULL clear) the query; the strings are copied. Records returned afterwards
 * carry PHIAUDIT_RS_MATCH when they match. Needs a keyring.
 * @return 0; PHIAUDIT_E_INVALID (NULL reader, bad version, bad action, no keyring);
 *         PHIAUDIT_E_EMPTY / _TOO_LONG / _UTF8 / _BAD_CHAR (an ID breaks the identifier
 *         rules: it could never match); PHIAUDIT_E_NOMEM. Not thread-safe.
 */
PHIAUDIT_API int phiaudit_reader_set_query(phiaudit_reader *reader, const phiaudit_query *q);

/**
 * Parse a UTC time: "YYYY-MM-DD" (midnight), "YYYY-MM-DDTHH:MM[:SS[.fraction]]" followed
 * by "Z" or an offset "+HH:MM"/"-HH:MM" ('T' may be a space; fraction up to 9 digits,
 * truncated to µs). Years 0000..9999.
 * @param us receives µs since 1970-01-01T00:00:00Z.
 * @return 0; PHIAUDIT_E_INVALID (NULL); PHIAUDIT_E_FORMAT (anything else). Thread-safe.
 */
PHIAUDIT_API int phiaudit_time_parse(const char *text, int64_t *us);

/* ---- Keyring helper ----------------------------------------------------------------------- */

/**
 * Add every key file in directory @p dir (regular files whose name does not begin with
 * '.') to @p kr, with the checks of phiaudit_key_load_file().
 * @param added optional: receives the number of files loaded.
 * @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_NOT_FOUND (no such directory);
 *         PHIAUDIT_E_IO; PHIAUDIT_E_KEY (a file is not a key file, or two files give one
 *         key ID different keys); PHIAUDIT_E_KEY_PERMS; PHIAUDIT_E_NOMEM. On error the
 *         keys loaded before the failing file stay in the keyring.
 * Not thread-safe on the same keyring.
 */
PHIAUDIT_API int phiaudit_keyring_add_dir(phiaudit_keyring *kr, const char *dir,
                                          size_t *added);

#ifdef __cplusplus
}
#endif
#endif /* PHIAUDIT_READER_H */
