/*
 * phiaudit — encrypted, tamper-evident audit logging of clinician access to patient records.
 *
 * This is the umbrella header: the logger, scopes, events, keys and error codes.
 * Sink authors also read <phiaudit_sink.h>; readers and verifiers <phiaudit_record.h>.
 * Both are included from here.
 *
 * Conventions (see README.md):
 *  - Fallible functions return int: 0 (PHIAUDIT_OK) or a negative PHIAUDIT_E_* code.
 *  - Constructors take `T **out` first and set *out = NULL on failure.
 *  - Destructors take `T **`, accept NULL and NULL the caller's pointer.
 *  - Strings are NUL-terminated UTF-8, borrowed for the duration of the call.
 *  - No function prints; diagnostics go to the optional diagnostic callback.
 */
#ifndef PHIAUDIT_H
#define PHIAUDIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PHIAUDIT_BUILDING) && defined(__GNUC__)
#define PHIAUDIT_API __attribute__((visibility("default")))
#else
#define PHIAUDIT_API
#endif

#if defined(__GNUC__)
#define PHIAUDIT_WUR __attribute__((warn_unused_result))
#else
#define PHIAUDIT_WUR
#endif

/* ---- Version ---------------------------------------------------------------------------- */

#define PHIAUDIT_VERSION_MAJOR 0
#define PHIAUDIT_VERSION_MINOR 1
#define PHIAUDIT_VERSION_PATCH 0

/** @return the library version as "MAJOR.MINOR.PATCH" (static string). Thread-safe. */
PHIAUDIT_API const char *phiaudit_version(void);

/* ---- Errors (append-only: values are never renumbered) ----------------------------------- */

#define PHIAUDIT_OK 0
#define PHIAUDIT_E_INVALID (-1)     /**< bad argument (NULL, unknown enum value, bad struct version) */
#define PHIAUDIT_E_NOMEM (-2)       /**< memory allocation failed */
#define PHIAUDIT_E_TOO_LONG (-3)    /**< a field exceeds its documented limit */
#define PHIAUDIT_E_UTF8 (-4)        /**< a field is not valid UTF-8 */
#define PHIAUDIT_E_EMPTY (-5)       /**< a required identifier is empty */
#define PHIAUDIT_E_BAD_CHAR (-6)    /**< a control character or NUL where none is allowed */
#define PHIAUDIT_E_CRYPTO (-7)      /**< OpenSSL failed (detail in phiaudit_logger_errmsg) */
#define PHIAUDIT_E_IO (-8)          /**< an operating-system I/O call failed */
#define PHIAUDIT_E_SINK (-9)        /**< a sink failed; records already queued stay queued and
                                         are retried (do not log them again) */
#define PHIAUDIT_E_KEY (-10)        /**< key missing, malformed or unusable */
#define PHIAUDIT_E_KEY_PERMS (-11)  /**< key file is readable or writable by group/others */
#define PHIAUDIT_E_CLOSED (-12)     /**< the logger was closed (scope ended after close) */
#define PHIAUDIT_E_URI (-13)        /**< malformed sink URI or unknown scheme */
#define PHIAUDIT_E_FORMAT (-14)     /**< malformed record frame or file */
#define PHIAUDIT_E_AUTH (-15)       /**< authentication failed: record modified or wrong key */
#define PHIAUDIT_E_VERSION (-16)    /**< unsupported struct or format version */
#define PHIAUDIT_E_TRUNCATED (-17)  /**< input ends inside a record (torn tail) */
#define PHIAUDIT_E_UNSUPPORTED (-18) /**< feature not compiled in */
#define PHIAUDIT_E_QUEUE_FULL (-19) /**< queue limit reached and did not drain in time */
#define PHIAUDIT_E_UNKNOWN_KEY (-20) /**< no key with this key ID in the keyring */
#define PHIAUDIT_E_STATE (-21)      /**< call not valid in the object's current state (e.g.
                                         from a pthread_atfork prepare/parent handler) */
#define PHIAUDIT_E_NOT_FOUND (-22)  /**< no such file, record or entry */
#define PHIAUDIT_E_SINK_DOWN (-23)  /**< a sink is failing: this record was NOT sealed or
                                         queued (fail-closed); log it again later or deny
                                         the access */

/** @return static English text for an error code; never NULL, never contains PHI. Thread-safe. */
PHIAUDIT_API const char *phiaudit_strerror(int rc);

/* ---- Limits (each has a function twin for bindings) -------------------------------------- */

#define PHIAUDIT_MAX_ID_LEN 256       /**< clinician/patient IDs, bytes of UTF-8 */
#define PHIAUDIT_MAX_CODE_LEN 256     /**< event type/subtype, purpose of use, app, host */
#define PHIAUDIT_MAX_DETAIL_LEN 4096  /**< free-text detail, bytes of UTF-8 */
#define PHIAUDIT_KEY_LEN 32           /**< AES-256 long-term key */
#define PHIAUDIT_KEY_ID_LEN 16        /**< key identifier */
#define PHIAUDIT_STREAM_ID_LEN 16     /**< random per stream */

/** Function twins of the limits above, for bindings (a test checks they agree).
 *  Thread-safe, cannot fail. */
PHIAUDIT_API size_t phiaudit_max_id_len(void);
PHIAUDIT_API size_t phiaudit_max_code_len(void);
PHIAUDIT_API size_t phiaudit_max_detail_len(void);
PHIAUDIT_API size_t phiaudit_key_len(void);
PHIAUDIT_API size_t phiaudit_key_id_len(void);

/* ---- Actions and outcomes (FHIR R4 AuditEvent.action / .outcome) ------------------------- */

#define PHIAUDIT_ACTION_CREATE 'C'
#define PHIAUDIT_ACTION_READ 'R'
#define PHIAUDIT_ACTION_UPDATE 'U'
#define PHIAUDIT_ACTION_DELETE 'D'
#define PHIAUDIT_ACTION_EXECUTE 'E'

#define PHIAUDIT_OUTCOME_SUCCESS 0
#define PHIAUDIT_OUTCOME_MINOR_FAILURE 4
#define PHIAUDIT_OUTCOME_SERIOUS_FAILURE 8
#define PHIAUDIT_OUTCOME_MAJOR_FAILURE 12

/* ---- Keys --------------------------------------------------------------------------------- */

/**
 * Generate a new random key and write it to @p path as a key file (mode 0600, created
 * exclusively: an existing file is never overwritten).
 * @param path   destination path; must not exist.
 * @param key_id_out  optional (may be NULL): receives the new key's ID.
 * @return 0; PHIAUDIT_E_INVALID (NULL path); PHIAUDIT_E_IO (exists, or cannot write;
 *         errno tells which); PHIAUDIT_E_CRYPTO (no randomness).
 * Thread-safe. Key bytes are wiped from memory before returning.
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_key_generate_file(const char *path,
                                                         uint8_t key_id_out[PHIAUDIT_KEY_ID_LEN]);

/**
 * Load a key file. Refuses files that are not regular files, are symlinks, or are readable
 * or writable by group or others.
 * @param key_id_out receives the key ID; @param key_out receives the key (wipe it after use
 *        with phiaudit_wipe()).
 * @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_NOT_FOUND (no such file); PHIAUDIT_E_IO;
 *         PHIAUDIT_E_KEY_PERMS; PHIAUDIT_E_KEY (malformed).
 * Thread-safe.
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_key_load_file(const char *path,
                                                     uint8_t key_id_out[PHIAUDIT_KEY_ID_LEN],
                                                     uint8_t key_out[PHIAUDIT_KEY_LEN]);

/** Overwrite @p len bytes at @p p with zeros in a way the compiler cannot elide. Thread-safe. */
PHIAUDIT_API void phiaudit_wipe(void *p, size_t len);

/**
 * Key callback (KMS/HSM integration): fill @p key_id and @p key; return 0 or a negative code.
 * Called once by phiaudit_logger_open() on the calling thread.
 */
typedef int (*phiaudit_key_fn)(void *ctx, uint8_t key_id[PHIAUDIT_KEY_ID_LEN],
                               uint8_t key[PHIAUDIT_KEY_LEN]);

/* ---- Diagnostics -------------------------------------------------------------------------- */

#define PHIAUDIT_DIAG_INFO 0
#define PHIAUDIT_DIAG_WARN 1
#define PHIAUDIT_DIAG_ERROR 2

/**
 * Diagnostic callback: receives messages (never PHI or key bytes) such as a torn tail found
 * on open, a sink failure or recovery. May be called from the caller's thread or from the
 * logger's flusher thread; must not call back into the same logger.
 */
typedef void (*phiaudit_diag_fn)(void *ctx, int level, const char *message);

/* ---- Configuration -------------------------------------------------------------------------- */

#include "phiaudit_sink.h"

#define PHIAUDIT_CONFIG_VERSION 1

/** end() returns once the record is queued; written within flush_interval_ms; no fsync. */
#define PHIAUDIT_DURABILITY_NONE 0
/** end() returns once queued; one write() + one fdatasync() per batch every flush_interval_ms.
 *  phiaudit_logger_flush() waits until everything ended before it is durable. */
#define PHIAUDIT_DURABILITY_GROUP 1
/** end() returns only after the record is durable in every sink (concurrent callers share
 *  one fdatasync()). */
#define PHIAUDIT_DURABILITY_SYNC 2

#define PHIAUDIT_FORMAT_JSON 0 /**< payload is JSON mapping to a FHIR R4 AuditEvent (default) */
#define PHIAUDIT_FORMAT_TEXT 1 /**< classic one-line message (compatibility) */

/** Store keyed blind-index tags of the patient and clinician IDs in the record header. They
 *  let a holder of the key find records without decrypting all of them, but they reveal to
 *  anyone which records concern the same patient/clinician. Off by default. */
#define PHIAUDIT_FLAG_BLIND_INDEX 0x1u

/**
 * Logger configuration. Fill with phiaudit_config_init() then set fields. Only pointers,
 * fixed-width integers and function pointers (stable for FFI). Everything is copied or
 * consumed by phiaudit_logger_open() except `sinks`, which are borrowed for the logger's
 * lifetime.
 */
typedef struct phiaudit_config {
    uint32_t version;           /**< PHIAUDIT_CONFIG_VERSION */
    uint32_t durability;        /**< PHIAUDIT_DURABILITY_* (default NONE) */
    uint32_t flush_interval_ms; /**< batching window in ms, 0..10000 (0 = default 10) */
    uint32_t flags;             /**< PHIAUDIT_FLAG_* */
    uint32_t payload_format;    /**< PHIAUDIT_FORMAT_* (default JSON) */
    uint32_t reserved0;
    uint64_t max_queue_bytes;   /**< sealed bytes waiting for sinks before end() blocks
                                     (default 64 MiB) */
    uint32_t max_block_ms;      /**< longest end() waits for queue room (default 1000) */
    uint32_t reserved1;
    const char *app_name;       /**< source application (required, no PHI) */
    const char *host_name;      /**< source host; NULL = gethostname() */
    /* Key source: exactly one of key_file, key (with key_id), key_callback. */
    const char *key_file;
    const uint8_t *key;         /**< PHIAUDIT_KEY_LEN bytes; copied, caller wipes its copy */
    const uint8_t *key_id;      /**< PHIAUDIT_KEY_ID_LEN bytes */
    phiaudit_key_fn key_callback;
    void *key_callback_ctx;
    /* Sinks: URIs opened and owned by the logger, and/or sink objects borrowed from the
     * caller (they must outlive the logger). At least one in total. */
    const char *const *sink_uris;
    size_t sink_uri_count;
    phiaudit_sink *const *sinks;
    size_t sink_count;
    phiaudit_diag_fn diag;      /**< optional diagnostics callback */
    void *diag_ctx;
} phiaudit_config;

/** Fill @p cfg with defaults (version set, everything else zero/default). Thread-safe. */
PHIAUDIT_API void phiaudit_config_init(phiaudit_config *cfg);

/* ---- Logger ------------------------------------------------------------------------------- */

typedef struct phiaudit_logger phiaudit_logger;

/**
 * Open a logger: load the key, open the sinks, start a stream (a fresh random stream ID and
 * derived stream key) and write its stream-open record.
 * @return 0; PHIAUDIT_E_INVALID (bad config); PHIAUDIT_E_VERSION; PHIAUDIT_E_NOMEM;
 *         key errors (PHIAUDIT_E_KEY, _KEY_PERMS, _NOT_FOUND, _IO); PHIAUDIT_E_URI;
 *         PHIAUDIT_E_UNSUPPORTED; sink open errors; PHIAUDIT_E_CRYPTO.
 * Not thread-safe with respect to other calls on the same logger (there are none yet).
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_logger_open(phiaudit_logger **out,
                                                   const phiaudit_config *cfg);

/**
 * Close: record every scope still open as abandoned, write the stream-close record, flush
 * and sync all sinks, close URI sinks, stop the flusher and wipe keys. *logger becomes NULL.
 * Accepts NULL. Scopes still open must still be ended (that frees them; it returns
 * PHIAUDIT_E_CLOSED).
 * @return 0; PHIAUDIT_E_SINK if some records could not be delivered (their count goes to
 *         the diagnostic callback); PHIAUDIT_E_CRYPTO/_NOMEM/_IO/_SINK_DOWN if the close
 *         record could not be sealed (the stream then reads as incomplete); the logger is
 *         freed either way — except PHIAUDIT_E_STATE (called from an atfork handler), which
 *         changes nothing.
 * Not thread-safe: no other call on this logger may run concurrently or follow.
 */
PHIAUDIT_API int phiaudit_logger_close(phiaudit_logger **logger);

/**
 * Wait until every record ended before this call has been written to all sinks and (in
 * GROUP/SYNC durability) synced.
 * @return 0; PHIAUDIT_E_SINK (a sink is failing; records remain queued); PHIAUDIT_E_INVALID.
 * Thread-safe.
 */
PHIAUDIT_API int phiaudit_logger_flush(phiaudit_logger *logger);

/**
 * Last error detail for this logger (a copy inside the logger, never PHI or key bytes).
 * With @p logger NULL: the detail of the last phiaudit_logger_open() that failed on the
 * calling thread (e.g. which sink could not be opened). Never returns NULL.
 * Thread-safe, but the text may be replaced by a concurrent failure.
 */
PHIAUDIT_API const char *phiaudit_logger_errmsg(const phiaudit_logger *logger);

/** Statistics (for monitoring; no PHI). Thread-safe snapshot. */
typedef struct phiaudit_stats {
    uint32_t version;          /**< set to PHIAUDIT_STATS_VERSION before calling */
    uint32_t sink_failing;     /**< 1 while a sink write is failing */
    uint64_t records_sealed;   /**< data records sealed by this process's logger */
    uint64_t records_written;  /**< frames delivered to all sinks */
    uint64_t queued_bytes;     /**< sealed bytes not yet delivered */
    uint64_t sink_errors;      /**< failed sink attempts */
    uint64_t streams;          /**< streams started (1 + forks/restarts) */
} phiaudit_stats;
#define PHIAUDIT_STATS_VERSION 1
/** Fill @p stats (whose version field the caller set to PHIAUDIT_STATS_VERSION).
 *  @return 0 or PHIAUDIT_E_INVALID (NULL, wrong version). Thread-safe. */
PHIAUDIT_API int phiaudit_logger_stats(phiaudit_logger *logger, phiaudit_stats *stats);

/* ---- Scoped API --------------------------------------------------------------------------- */

typedef struct phiaudit_scope phiaudit_scope;

/**
 * Begin timing an action of a clinician on a patient's record.
 * @param clinician_id, patient_id  1..PHIAUDIT_MAX_ID_LEN bytes of UTF-8 without control
 *        characters (C0, DEL, C1) or U+2028/U+2029 (PHIAUDIT_E_BAD_CHAR); copied.
 * @param action PHIAUDIT_ACTION_* ('C','R','U','D','E').
 * @return 0; PHIAUDIT_E_INVALID (NULL, bad action); PHIAUDIT_E_EMPTY; PHIAUDIT_E_TOO_LONG;
 *         PHIAUDIT_E_UTF8; PHIAUDIT_E_BAD_CHAR; PHIAUDIT_E_NOMEM.
 * Thread-safe: many threads may begin/end scopes on one logger. A scope itself is used by
 * one thread at a time.
 */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_scope_begin(phiaudit_scope **out, phiaudit_logger *logger,
                                                   const char *clinician_id,
                                                   const char *patient_id, int action);

/** Optional setters. Each validates and copies its text; on error the scope is unchanged.
 *  Codes (type, subtype, purpose): 1..PHIAUDIT_MAX_CODE_LEN bytes, no control characters.
 *  Detail: 0..PHIAUDIT_MAX_DETAIL_LEN bytes of UTF-8, no NUL; other control characters are
 *  escaped in the payload.
 *  @return 0; PHIAUDIT_E_INVALID; PHIAUDIT_E_EMPTY; PHIAUDIT_E_TOO_LONG; PHIAUDIT_E_UTF8;
 *          PHIAUDIT_E_BAD_CHAR; PHIAUDIT_E_NOMEM. */
PHIAUDIT_API int phiaudit_scope_set_event_type(phiaudit_scope *scope, const char *type);
PHIAUDIT_API int phiaudit_scope_set_event_subtype(phiaudit_scope *scope, const char *subtype);
PHIAUDIT_API int phiaudit_scope_set_purpose(phiaudit_scope *scope, const char *purpose);
PHIAUDIT_API int phiaudit_scope_set_detail(phiaudit_scope *scope, const char *detail);
/** Mark an emergency ("break-glass") access. @return 0 or PHIAUDIT_E_INVALID. */
PHIAUDIT_API int phiaudit_scope_set_break_glass(phiaudit_scope *scope, int on);
/** Outcome used by phiaudit_scope_autoend() (default PHIAUDIT_OUTCOME_SUCCESS).
 *  @return 0 or PHIAUDIT_E_INVALID. */
PHIAUDIT_API int phiaudit_scope_set_outcome(phiaudit_scope *scope, int outcome);

/**
 * End the scope: measure its duration (monotonic clock), format, seal and queue the record
 * (or, in SYNC durability, wait until it is durable). Always consumes the scope: *scope is
 * freed and set to NULL whatever the result.
 * @param outcome PHIAUDIT_OUTCOME_* (0, 4, 8, 12).
 * @return 0; PHIAUDIT_E_INVALID (NULL, bad outcome: the scope is then recorded with outcome
 *         8 and the error returned); PHIAUDIT_E_CLOSED (logger closed: the scope was
 *         recorded as abandoned at close; or, in a forked child, the scope was begun by a
 *         parent thread other than the one that forked, and is not the child's to record); PHIAUDIT_E_SINK_DOWN (a sink was already
 *         failing: fail-closed, the record was NOT sealed or queued); PHIAUDIT_E_SINK (SYNC
 *         mode only: the record is queued but could not be made durable yet; it stays
 *         queued and is retried — do not log it again); PHIAUDIT_E_QUEUE_FULL (not
 *         written); PHIAUDIT_E_CRYPTO, PHIAUDIT_E_NOMEM (not written); PHIAUDIT_E_STATE.
 * Thread-safe (see phiaudit_scope_begin).
 */
PHIAUDIT_API int phiaudit_scope_end(phiaudit_scope **scope, int outcome);

/** Cleanup-attribute helper: ends *scope (if not already ended) with its set outcome. */
PHIAUDIT_API void phiaudit_scope_autoend(phiaudit_scope **scope);

#if defined(__GNUC__)
/** Declare a scope variable that ends itself when it goes out of scope (GCC/Clang):
 *    PHIAUDIT_SCOPE(s); if (phiaudit_scope_begin(&s, lg, "c1", "p1", 'R') == 0) { ... }   */
#define PHIAUDIT_SCOPE(name) \
    phiaudit_scope *name __attribute__((cleanup(phiaudit_scope_autoend))) = NULL
#endif

/* ---- One-shot events ---------------------------------------------------------------------- */

#define PHIAUDIT_EVENT_VERSION 1

/** An already-timed event (e.g. imported from another system). Fill with
 *  phiaudit_event_init(). Same field rules as the scope setters. */
typedef struct phiaudit_event {
    uint32_t version;        /**< PHIAUDIT_EVENT_VERSION */
    int32_t action;          /**< PHIAUDIT_ACTION_* */
    int32_t outcome;         /**< PHIAUDIT_OUTCOME_* */
    int32_t break_glass;     /**< 0 or 1 */
    int64_t start_us;        /**< wall-clock start, µs since the Unix epoch; 0 = now */
    int64_t duration_us;     /**< >= 0 */
    const char *clinician_id;
    const char *patient_id;
    const char *event_type;  /**< optional */
    const char *event_subtype;
    const char *purpose;
    const char *detail;
} phiaudit_event;

PHIAUDIT_API void phiaudit_event_init(phiaudit_event *ev);

/** Seal and queue one event. @return as phiaudit_scope_begin and phiaudit_scope_end, and
 *  PHIAUDIT_E_VERSION (ev->version), PHIAUDIT_E_INVALID (times beyond year 9999, negative
 *  duration, bad outcome/action/break_glass). Thread-safe. */
PHIAUDIT_API PHIAUDIT_WUR int phiaudit_log_event(phiaudit_logger *logger, const phiaudit_event *ev);

#include "phiaudit_record.h"
#include "phiaudit_reader.h"

#ifdef __cplusplus
}
#endif
#endif /* PHIAUDIT_H */
