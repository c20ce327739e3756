/*
 * phiaudit sinks: where sealed records go. Sinks only ever receive sealed frames and their
 * authenticated plaintext header (no PHI); they never see payload plaintext.
 *
 * A sink is a versioned method table (phiaudit_sink_ops) plus per-instance state. The
 * logger calls each sink instance from one thread at a time (its flusher thread, or the
 * thread inside phiaudit_logger_open/close), so a sink needs no locking of its own unless
 * other threads read its state (the memory sink does, and locks).
 */
#ifndef PHIAUDIT_SINK_H
#define PHIAUDIT_SINK_H

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

/** One sealed record inside a batch. `frame` points into phiaudit_batch.data. */
typedef struct phiaudit_batch_record {
    const uint8_t *frame;   /**< the whole frame: header ‖ ciphertext ‖ tag */
    uint32_t frame_len;
    uint8_t type;           /**< PHIAUDIT_RECORD_* */
    uint8_t reserved[3];
    uint64_t seq;           /**< sequence number in its stream */
    int64_t time_us;        /**< header timestamp, µs since the Unix epoch (UTC) */
    const uint8_t *stream_id; /**< PHIAUDIT_STREAM_ID_LEN bytes */
    const uint8_t *key_id;    /**< PHIAUDIT_KEY_ID_LEN bytes */
} phiaudit_batch_record;

/** A batch of consecutive sealed records, in order. `data` holds all frames back to back,
 *  so a byte-stream sink can write it with one call. */
typedef struct phiaudit_batch {
    const uint8_t *data;
    size_t len;
    const phiaudit_batch_record *records;
    size_t count;
} phiaudit_batch;

#define PHIAUDIT_SINK_OPS_VERSION 1

/**
 * Sink method table. Methods are appended only; a table with a lower version simply lacks
 * the later ones. All methods return 0 or a negative PHIAUDIT_E_* code.
 */
typedef struct phiaudit_sink_ops {
    uint32_t version;   /**< PHIAUDIT_SINK_OPS_VERSION */
    const char *name;   /**< short scheme-like name, e.g. "file" */
    /** Write every record of the batch, all or nothing as far as the sink can manage. On error
     *  the logger retries the same batch later, so writing must be idempotent or the sink
     *  must undo partial writes (the file sink truncates them). Required. */
    int (*write)(void *state, const phiaudit_batch *batch);
    /** Make everything written so far durable (fdatasync, COMMIT...). Optional (NULL). */
    int (*sync)(void *state);
    /** Called in the child after fork(), before its first write: drop anything shared with
     *  the parent (connections, locks held through shared file descriptions). Optional. */
    int (*after_fork_child)(void *state);
    /** Release the state. Optional. */
    void (*destroy)(void *state);
} phiaudit_sink_ops;

typedef struct phiaudit_sink phiaudit_sink;

/**
 * Wrap a user-written sink. @p ops must stay valid for the sink's lifetime (usually a static
 * const table); @p state is owned by the sink afterwards and released with ops->destroy.
 * @return 0; PHIAUDIT_E_INVALID (NULL ops/write, ops->version 0); PHIAUDIT_E_NOMEM (then
 *         ops->destroy(state) has been called). Any ops version >= 1 is accepted: methods
 *         are only ever appended, so a newer table is a superset.
 * Thread-safe.
 */
PHIAUDIT_API int phiaudit_sink_new(phiaudit_sink **out, const phiaudit_sink_ops *ops,
                                   void *state);

/**
 * Open a built-in sink from a URI: `file:PATH[?max_bytes=N]`, `memory:`. (Further schemes
 * arrive with their sinks: sqlite:, postgresql://, syslog:, syslog+tcp://, syslog+tls://.)
 * @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_URI (malformed, unknown scheme);
 *         PHIAUDIT_E_UNSUPPORTED (scheme known but not compiled in); sink open errors.
 * Thread-safe.
 */
PHIAUDIT_API int phiaudit_sink_open_uri(phiaudit_sink **out, const char *uri);

/** Close and free a sink. Accepts NULL; sets *sink = NULL. Must not be in use by an open
 *  logger. @return 0 or the error of a final flush. */
PHIAUDIT_API int phiaudit_sink_close(phiaudit_sink **sink);

/* ---- File sink ------------------------------------------------------------------------------ */

#define PHIAUDIT_FILE_OPTIONS_VERSION 1

typedef struct phiaudit_file_options {
    uint32_t version;    /**< PHIAUDIT_FILE_OPTIONS_VERSION */
    uint32_t reserved;
    uint64_t max_bytes;  /**< rotate once the file reaches this size (0 = never). Rotation
                              renames PATH to PATH.<UTC time>; nothing is ever deleted. */
} phiaudit_file_options;

/**
 * Append-only file sink. Opens PATH with O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC|O_NOFOLLOW,
 * mode 0600, refuses symlinks and non-regular files. On open it scans the file; a torn last
 * record (crash mid-write) is reported through phiaudit_sink_file_torn_bytes() and the file
 * is rotated away (kept intact, torn tail included) so new records start a clean file.
 * Several processes may append to one PATH (writes are serialized with flock()).
 * @param opts may be NULL (defaults).
 * @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_IO; PHIAUDIT_E_FORMAT (existing file is not a
 *         phiaudit log); PHIAUDIT_E_NOMEM.
 */
PHIAUDIT_API int phiaudit_sink_file_open(phiaudit_sink **out, const char *path,
                                         const phiaudit_file_options *opts);

/** Bytes of torn record found at the end of the file when this sink opened (0 if none).
 *  Returns 0 for a sink that is not a file sink. */
PHIAUDIT_API uint64_t phiaudit_sink_file_torn_bytes(const phiaudit_sink *sink);

/* ---- Memory sink (test harnesses) ----------------------------------------------------------- */

/** In-memory sink that keeps a copy of every frame. @return 0 or PHIAUDIT_E_NOMEM. */
PHIAUDIT_API int phiaudit_sink_memory_open(phiaudit_sink **out);

/** Number of frames held (all record types). Thread-safe. Returns 0 for other sinks. */
PHIAUDIT_API size_t phiaudit_sink_memory_count(phiaudit_sink *sink);

/**
 * Copy frame @p index into @p buf. @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_NOT_FOUND
 * (index out of range); PHIAUDIT_E_TOO_LONG (buf too small; *len set to the size needed).
 * @param len in: capacity of buf; out: frame length. Thread-safe.
 */
PHIAUDIT_API int phiaudit_sink_memory_get(phiaudit_sink *sink, size_t index, uint8_t *buf,
                                          size_t *len);

/** Drop all frames held. Thread-safe. @return 0 or PHIAUDIT_E_INVALID. */
PHIAUDIT_API int phiaudit_sink_memory_clear(phiaudit_sink *sink);

typedef struct phiaudit_keyring phiaudit_keyring;

/**
 * Test-harness helper: authenticate and decrypt frame @p index into @p buf, NUL-terminated.
 * @param kr   keyring holding the logger's key (see phiaudit_record.h).
 * @param len  receives the payload length without the NUL; on PHIAUDIT_E_TOO_LONG the
 *             capacity needed (with the NUL).
 * @param type optional (may be NULL): receives PHIAUDIT_RECORD_OPEN, _DATA or _CLOSE.
 * @return 0; PHIAUDIT_E_INVALID (NULL, not a memory sink); PHIAUDIT_E_NOT_FOUND (index out
 *         of range); PHIAUDIT_E_TOO_LONG; PHIAUDIT_E_NOMEM; errors of phiaudit_frame_open()
 *         (PHIAUDIT_E_AUTH, PHIAUDIT_E_UNKNOWN_KEY...). The buffer holds PHI: wipe it.
 * Thread-safe for the sink; the keyring must not be used by another thread meanwhile.
 */
PHIAUDIT_API int phiaudit_sink_memory_open_record(phiaudit_sink *sink, phiaudit_keyring *kr,
                                                  size_t index, char *buf, size_t cap,
                                                  size_t *len, int *type);

/**
 * Test-harness helper: count the DATA records in the memory sink in which @p clinician
 * (NULL = any) performed @p action (0 = any) on @p patient (NULL = any) with @p outcome
 * (-1 = any). Every frame is authenticated first. Typical use in a service's own tests,
 * after phiaudit_logger_flush(): "exactly one READ of patient P by clinician C, outcome 0".
 * @return 0 and *count; PHIAUDIT_E_INVALID; PHIAUDIT_E_NOMEM; or the first frame's error
 *         (PHIAUDIT_E_AUTH if any frame was modified). Thread-safety as above.
 */
PHIAUDIT_API int phiaudit_sink_memory_count_access(phiaudit_sink *sink, phiaudit_keyring *kr,
                                                   const char *clinician, const char *patient,
                                                   int action, int outcome, size_t *count);

#ifdef __cplusplus
}
#endif
#endif /* PHIAUDIT_SINK_H */
