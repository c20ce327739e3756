/*
 * The logger: scopes, sealing into the stream, the delivery queue and its flusher thread,
 * fork safety.
 *
 * Data flow: scope_end formats the payload on the caller's thread (no lock), then under
 * `mu` assigns the next sequence number, seals the frame directly into the queue and links
 * it into the chain. The flusher thread swaps the queue out and hands it to the sinks, so
 * sinks are only ever called from one thread and never under `mu`.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_FLUSH_MS 10
#define DEFAULT_QUEUE_BYTES (64u << 20)
#define DEFAULT_BLOCK_MS 1000
/* Ask the flusher to start a batch early once this much is queued: bounds write() sizes. */
#define HIGH_WATER_BYTES (1u << 20)
#define RETRY_MIN_MS 10
#define RETRY_MAX_MS 1000
/* At close, keep retrying a failing sink for at most this long before giving up loudly. */
#define CLOSE_RETRY_MS 2000

typedef struct frame_meta {
    size_t offset;
    uint32_t len;
    uint8_t type;
    uint64_t seq;
    int64_t time_us;
} frame_meta;

/* Sealed frames back to back plus their metadata. */
typedef struct frame_queue {
    phiaudit_buf bytes;
    frame_meta *meta;
    size_t count, cap;
    uint64_t last_ticket;
    int64_t first_mono_ns; /* when the oldest frame was queued */
} frame_queue;

struct phiaudit_scope {
    phiaudit_logger *lg;
    phiaudit_scope *prev, *next; /* in lg->scopes, under scopes_mu */
    int detached;                /* logger closed (recorded as abandoned) or, in a forked
                                    child, begun by a thread that does not exist there */
    pthread_t owner;             /* thread that began it */
    int action;
    int outcome;                 /* for autoend */
    int break_glass;
    int64_t start_wall_us;
    int64_t start_mono_ns;
    size_t clinician_len, patient_len;
    char *clinician, *patient; /* inside this allocation */
    char *event_type, *event_subtype, *purpose, *detail;
};

struct phiaudit_logger {
    /* Immutable after open. */
    uint32_t durability, flush_ms, flags, format, max_block_ms;
    uint64_t max_queue_bytes;
    char *app, *host;
    size_t app_len, host_len;
    uint8_t key_id[16];
    /* Long-term key and blind-index key, in their own mapping excluded from core dumps. */
    struct secrets {
        uint8_t master[32];
        uint8_t index_key[32];
    } *secrets;
    phiaudit_sink **sinks;
    uint8_t *sink_owned;
    uint8_t *sink_done;    /* per sink: inflight batch written and synced (flusher only) */
    uint8_t *sink_written; /* per sink: inflight batch written; a retry only syncs */
    size_t nsinks;
    phiaudit_diag_fn diag;
    void *diag_ctx;
    uint64_t torn_bytes_at_open;

    pthread_mutex_t mu;
    pthread_cond_t flusher_cv;
    pthread_cond_t done_cv;
    /* Stream state, under mu. */
    phiaudit_sealer *sealer;
    uint8_t stream_id[16];
    char stream_hex[32]; /* for record IDs */
    uint8_t prev_link[32];
    uint64_t next_seq;
    uint64_t stream_data_records;
    pid_t pid;
    /* Fork state in a page mapped with MADV_WIPEONFORK: it reads all zero in any child
     * that got a copy of our memory (fork(), or a raw clone() that skipped the
     * pthread_atfork handlers), for the price of a load instead of a getpid() syscall
     * before every record. NULL where the kernel lacks MADV_WIPEONFORK: then the pid
     * fields below play its part. */
    struct fork_guard {
        _Atomic uint8_t reinit;       /* 0: fresh child; 1: re-init running; 2: done */
        _Atomic uint8_t stream_owned; /* 1: this process started the current stream */
    } *fork_guard;
    _Atomic pid_t claim_pid;   /* without the guard page: process that claimed re-init */
    _Atomic pid_t reinit_pid;  /* ... process whose re-init is done */
    _Atomic pid_t stream_pid;  /* ... process that started the current stream */
    uint8_t parent_stream[16]; /* in a child: where the parent's stream stood at fork */
    uint64_t parent_next_seq;
    int need_new_stream;
    int sinks_need_fork_reset; /* after_fork_child still to be called on the sinks */
    int abort_delivery;        /* open failed: the flusher stops without retrying */
    int sync_ready;            /* mutexes and condition variables initialised */
    const char *next_reason;   /* "start" or "fork": why the next stream starts */
    int streams_started;
    /* Queue state, under mu. */
    frame_queue queue, inflight;
    uint64_t enqueued, delivered;
    int waiters;      /* threads waiting for delivery: flush now */
    int failing;      /* latched sink failure: fail closed */
    int fail_rc;
    int closing;
    int flusher_running;
    pthread_t flusher;
    uint64_t records_sealed, records_written, sink_errors;
    char errmsg[256];

    pthread_mutex_t scopes_mu;
    phiaudit_scope *scopes;
    uint64_t abandoned;

    phiaudit_logger *reg_next; /* fork registry, under reg_mu */
};

/* ---- Fork registry ---------------------------------------------------------------------- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
/* Set on the thread running fork() from our prepare handler until our parent handler: the
 * logger's locks are held then, so a call from another application atfork handler in the
 * parent would deadlock and is refused (PHIAUDIT_E_STATE). In the child (another pid) the
 * call is fine: it re-initialises the logger first. */
static _Thread_local int in_fork_prepare;
static _Thread_local pid_t in_fork_prepare_pid;

static int refuse_during_fork(void)
{
    return in_fork_prepare && in_fork_prepare_pid == getpid();
}
static phiaudit_logger *reg_head;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
    in_fork_prepare = 1;
    in_fork_prepare_pid = getpid();
    pthread_mutex_lock(&reg_mu);
    for (phiaudit_logger *lg = reg_head; lg; lg = lg->reg_next) {
        pthread_mutex_lock(&lg->scopes_mu);
        pthread_mutex_lock(&lg->mu);
    }
}

static void atfork_parent(void)
{
    in_fork_prepare = 0;
    for (phiaudit_logger *lg = reg_head; lg; lg = lg->reg_next) {
        pthread_mutex_unlock(&lg->mu);
        pthread_mutex_unlock(&lg->scopes_mu);
    }
    pthread_mutex_unlock(&reg_mu);
}

static void queue_reset(frame_queue *q)
{
    q->bytes.len = 0;
    q->count = 0;
    q->last_ticket = 0;
}

static int init_sync(phiaudit_logger *lg);

static void unlink_scope(phiaudit_logger *lg, phiaudit_scope *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        lg->scopes = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static int init_cond(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca))
        return PHIAUDIT_E_NOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &ca) == 0 ? 0 : PHIAUDIT_E_NOMEM;
    pthread_condattr_destroy(&ca);
    return rc;
}

static void reinit_sync(phiaudit_logger *lg)
{
    memset(&lg->mu, 0, sizeof lg->mu);
    memset(&lg->scopes_mu, 0, sizeof lg->scopes_mu);
    memset(&lg->flusher_cv, 0, sizeof lg->flusher_cv);
    memset(&lg->done_cv, 0, sizeof lg->done_cv);
    (void)init_sync(lg); /* cannot fail for default attributes on Linux */
}

/* Everything a forked child does before it touches the logger, once per fork, on the
 * child's only thread and before any flusher thread exists in it (so re-initialising the
 * locks is safe; they may have been held by parent threads that do not exist here):
 * - the queued frames belong to the parent, which delivers them;
 * - the condition variables still count the parent's waiters: re-initialise, don't signal;
 * - scopes begun by other parent threads are not this process's accesses: detach them;
 * - the stream must not continue: the next record starts a new one (new random stream ID,
 *   hence new key and nonce space), after the sinks dropped what they share with the parent. */
static void child_reinit(phiaudit_logger *lg)
{
    lg->pid = getpid();
    memcpy(lg->parent_stream, lg->stream_id, 16);
    lg->parent_next_seq = lg->next_seq;
    lg->records_sealed = lg->records_written = lg->sink_errors = 0;
    lg->fail_rc = 0;
    lg->abandoned = 0;
    reinit_sync(lg);
    queue_reset(&lg->queue);
    queue_reset(&lg->inflight);
    lg->enqueued = lg->delivered = 0;
    lg->waiters = 0;
    lg->flusher_running = 0;
    lg->failing = 0;
    lg->need_new_stream = 1;
    lg->next_reason = "fork";
    lg->sinks_need_fork_reset = 1;
    pthread_t self = pthread_self();
    for (phiaudit_scope *s = lg->scopes, *next; s; s = next) {
        next = s->next;
        if (!pthread_equal(s->owner, self)) {
            unlink_scope(lg, s);
            s->detached = 1; /* never recorded here; freed if ever ended */
        }
    }
}

/* Has this process copied the logger from a parent without re-initialising it yet? */
static int forked(phiaudit_logger *lg)
{
    if (lg->fork_guard)
        return atomic_load_explicit(&lg->fork_guard->reinit, memory_order_acquire) != 2;
    return atomic_load_explicit(&lg->reinit_pid, memory_order_acquire) != getpid();
}

/* Did this process start the stream the logger holds? (Not so in a child, until it starts
 * its own: sealing on the parent's stream would reuse its key and nonces.) */
static int stream_owned(phiaudit_logger *lg)
{
    if (lg->fork_guard)
        return atomic_load_explicit(&lg->fork_guard->stream_owned, memory_order_relaxed) == 1;
    return atomic_load_explicit(&lg->stream_pid, memory_order_relaxed) == getpid();
}

static void mark_stream_owned(phiaudit_logger *lg)
{
    if (lg->fork_guard)
        atomic_store_explicit(&lg->fork_guard->stream_owned, 1, memory_order_relaxed);
    else
        atomic_store_explicit(&lg->stream_pid, getpid(), memory_order_relaxed);
}

/* At every public entry, before taking a lock: the first caller in a child (even one whose
 * fork skipped the pthread_atfork handlers, such as a raw clone()) runs child_reinit();
 * callers on other threads of the child wait until it is done. A load, not a syscall,
 * where MADV_WIPEONFORK exists. */
static void check_fork(phiaudit_logger *lg)
{
    if (!forked(lg))
        return;
    int claimed;
    pid_t me = getpid();
    if (lg->fork_guard) {
        uint8_t fresh = 0;
        claimed = atomic_compare_exchange_strong(&lg->fork_guard->reinit, &fresh, 1);
    } else {
        pid_t seen = atomic_load(&lg->claim_pid);
        claimed = seen != me && atomic_compare_exchange_strong(&lg->claim_pid, &seen, me);
    }
    if (claimed) {
        child_reinit(lg);
        if (lg->fork_guard)
            atomic_store_explicit(&lg->fork_guard->reinit, 2, memory_order_release);
        else
            atomic_store_explicit(&lg->reinit_pid, me, memory_order_release);
        return;
    }
    while (forked(lg))
        sched_yield();
}

static void atfork_child(void)
{
    in_fork_prepare = 0;
    /* check_fork, not child_reinit: an application child handler that ran before this one
     * may already have used (and so re-initialised) the logger. */
    for (phiaudit_logger *lg = reg_head; lg; lg = lg->reg_next)
        check_fork(lg);
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    reg_mu = fresh;
}

static void register_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ---- Per-thread scratch buffer for payload formatting ---------------------------------------- */

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_destroy(void *p)
{
    phiaudit_buf *b = p;
    phiaudit_buf_free(b); /* wipes: it held plaintext */
    phiaudit_free(b);
}

static void scratch_init(void)
{
    pthread_key_create(&scratch_key, scratch_destroy);
}

static phiaudit_buf *scratch_get(void)
{
    pthread_once(&scratch_once, scratch_init);
    phiaudit_buf *b = pthread_getspecific(scratch_key);
    if (!b) {
        b = phiaudit_calloc(1, sizeof *b);
        if (!b)
            return NULL;
        if (pthread_setspecific(scratch_key, b) != 0) {
            phiaudit_free(b);
            return NULL;
        }
    }
    b->len = 0;
    return b;
}

/* Plaintext must not linger in a thread's scratch buffer between records. */
static void scratch_done(phiaudit_buf *b)
{
    phiaudit_wipe(b->data, b->len);
    b->len = 0;
}

/* ---- Small helpers ---------------------------------------------------------------------------- */

static void diag(phiaudit_logger *lg, int level, const char *msg)
{
    if (lg->diag)
        lg->diag(lg->diag_ctx, level, msg);
}

static void set_errmsg(phiaudit_logger *lg, const char *msg)
{
    snprintf(lg->errmsg, sizeof lg->errmsg, "%s", msg);
}

static struct timespec deadline_after_ms(int64_t base_ns, int64_t ms)
{
    int64_t t = base_ns + ms * 1000000;
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000), .tv_nsec = (long)(t % 1000000000)};
    return ts;
}

static int queue_reserve_meta(frame_queue *q)
{
    if (q->count < q->cap)
        return 0;
    size_t cap = q->cap ? q->cap * 2 : 256;
    frame_meta *m = phiaudit_realloc(q->meta, cap * sizeof *m);
    if (!m)
        return PHIAUDIT_E_NOMEM;
    q->meta = m;
    q->cap = cap;
    return 0;
}

static void queue_free(frame_queue *q)
{
    phiaudit_buf_free(&q->bytes);
    phiaudit_free(q->meta);
    memset(q, 0, sizeof *q);
}

static void *flusher_main(void *arg);

static int ensure_flusher(phiaudit_logger *lg)
{
    if (lg->flusher_running)
        return 0;
    /* The flusher must not run the application's signal handlers. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&lg->flusher, NULL, flusher_main, lg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        set_errmsg(lg, "cannot start flusher thread");
        return PHIAUDIT_E_NOMEM;
    }
    lg->flusher_running = 1;
    return 0;
}

/* ---- Sealing (under mu) ------------------------------------------------------------------------ */

/* Seal plaintext into the queue as the next record of the stream. On failure nothing is
 * queued and the sequence number is not consumed, so the chain has no gap. */
static int seal_locked(phiaudit_logger *lg, uint8_t type, uint8_t *pt, size_t n, size_t id_offset,
                       const uint8_t *bi_patient, const uint8_t *bi_clinician, int64_t now)
{
    frame_queue *q = &lg->queue;
    int rc = queue_reserve_meta(q);
    if (rc)
        return rc;
    if (id_offset != SIZE_MAX)
        phiaudit_payload_patch_id(pt + id_offset, lg->stream_hex, lg->next_seq);
    phiaudit_seal_params p = {
        .type = type,
        .flags = bi_patient ? PHIAUDIT_HFLAG_BLIND_INDEX : 0,
        .seq = lg->next_seq,
        .time_us = now,
        .prev_link = lg->prev_link,
        .bi_patient = bi_patient,
        .bi_clinician = bi_clinician,
    };
    size_t offset = q->bytes.len;
    uint8_t link[32];
    rc = phiaudit_seal(lg->sealer, &p, pt, n, &q->bytes, link, lg->errmsg, sizeof lg->errmsg);
    if (rc)
        return rc;
    q->meta[q->count++] = (frame_meta){.offset = offset,
                                       .len = (uint32_t)(q->bytes.len - offset),
                                       .type = type,
                                       .seq = p.seq,
                                       .time_us = now};
    if (q->count == 1)
        q->first_mono_ns = phiaudit_now_mono_ns();
    q->last_ticket = ++lg->enqueued;
    memcpy(lg->prev_link, link, 32);
    lg->next_seq++;
    if (type == PHIAUDIT_RECORD_DATA) {
        lg->stream_data_records++;
        lg->records_sealed++;
    }
    /* Wake the flusher when a batch starts (it sleeps without deadline on an empty queue)
     * and when the batch grows large. */
    if (q->count == 1 || q->bytes.len >= HIGH_WATER_BYTES)
        pthread_cond_signal(&lg->flusher_cv);
    return 0;
}

static int json_open_record(phiaudit_logger *lg, phiaudit_buf *b, const char *reason,
                            const uint8_t *parent_stream, uint64_t parent_seq)
{
    char tmp[160];
    int rc = phiaudit_buf_append(b, "{\"v\":1,\"event\":\"stream-open\",\"reason\":\"", 39);
    if (!rc)
        rc = phiaudit_buf_append(b, reason, strlen(reason));
    if (!rc)
        rc = phiaudit_buf_append(b, "\",\"app\":", 8);
    if (!rc)
        rc = phiaudit_json_string(b, lg->app, lg->app_len);
    if (!rc)
        rc = phiaudit_buf_append(b, ",\"host\":", 8);
    if (!rc)
        rc = phiaudit_json_string(b, lg->host, lg->host_len);
    if (!rc) {
        int n = snprintf(tmp, sizeof tmp, ",\"pid\":%ld,\"lib\":\"%s\",\"durability\":%u",
                         (long)lg->pid, phiaudit_version(), lg->durability);
        rc = phiaudit_buf_append(b, tmp, (size_t)n);
    }
    if (!rc && lg->torn_bytes_at_open && !parent_stream) {
        int n = snprintf(tmp, sizeof tmp, ",\"recovered_torn_bytes\":%llu",
                         (unsigned long long)lg->torn_bytes_at_open);
        rc = phiaudit_buf_append(b, tmp, (size_t)n);
    }
    if (!rc && parent_stream) {
        char hex[33];
        phiaudit_hex(parent_stream, 16, hex);
        hex[32] = 0;
        int n = snprintf(tmp, sizeof tmp, ",\"parent_stream\":\"%s\",\"parent_next_seq\":%llu",
                         hex, (unsigned long long)parent_seq);
        rc = phiaudit_buf_append(b, tmp, (size_t)n);
    }
    if (!rc)
        rc = phiaudit_buf_append(b, "}", 1);
    return rc;
}

/* Start a new stream: random stream ID → fresh derived key → nonces from seq 0 again are
 * safe. Used at open and in a forked child before its first record. */
static int start_stream_locked(phiaudit_logger *lg, const char *reason)
{
    int after_fork = strcmp(reason, "fork") == 0;

    uint8_t sid[16];
    int rc = phiaudit_random(sid, sizeof sid);
    if (!rc)
        rc = phiaudit_sealer_start(lg->sealer, lg->secrets->master, lg->key_id, sid);
    if (rc) {
        set_errmsg(lg, "cannot start stream (randomness or key derivation failed)");
        return rc;
    }
    memcpy(lg->stream_id, sid, 16);
    phiaudit_hex(sid, 16, lg->stream_hex);
    memset(lg->prev_link, 0, 32);
    lg->next_seq = 0;
    lg->stream_data_records = 0;
    lg->need_new_stream = 0;
    lg->streams_started++;
    mark_stream_owned(lg);

    phiaudit_buf b = {0};
    rc = json_open_record(lg, &b, reason, after_fork ? lg->parent_stream : NULL,
                          lg->parent_next_seq);
    if (!rc)
        rc = seal_locked(lg, PHIAUDIT_RECORD_OPEN, b.data, b.len, SIZE_MAX, NULL, NULL,
                         phiaudit_now_wall_us());
    phiaudit_buf_free(&b);
    if (rc)
        lg->need_new_stream = 1; /* never continue a stream whose open record is missing */
    return rc;
}

/* Before every seal: start the stream if this process has none yet (first record after a
 * fork, or a stream start that failed). */
static int check_stream_locked(phiaudit_logger *lg)
{
    if (forked(lg)) /* an entry point missed check_fork(): never seal on a stale stream */
        return PHIAUDIT_E_STATE;
    if (!stream_owned(lg))
        lg->need_new_stream = 1; /* belt and braces: whatever happened, not the parent's */
    if (!lg->need_new_stream)
        return 0;
    if (lg->sinks_need_fork_reset) {
        /* No flusher exists yet in the child, so no one else calls the sinks now. */
        for (size_t i = 0; i < lg->nsinks; i++) {
            const phiaudit_sink_ops *ops = lg->sinks[i]->ops;
            int rc = ops->after_fork_child ? ops->after_fork_child(lg->sinks[i]->state) : 0;
            if (rc) {
                set_errmsg(lg, "sink failed to reinitialise after fork");
                return PHIAUDIT_E_SINK_DOWN; /* nothing sealed; retried on the next call */
            }
        }
        lg->sinks_need_fork_reset = 0;
    }
    return start_stream_locked(lg, lg->next_reason);
}

/* Wait for room in the queue, bounded by max_block_ms. */
static int wait_room_locked(phiaudit_logger *lg, size_t need)
{
    if (lg->queue.bytes.len + lg->inflight.bytes.len + need <= lg->max_queue_bytes)
        return 0;
    struct timespec dl = deadline_after_ms(phiaudit_now_mono_ns(), lg->max_block_ms);
    while (lg->queue.bytes.len + lg->inflight.bytes.len + need > lg->max_queue_bytes) {
        if (lg->failing)
            return PHIAUDIT_E_SINK_DOWN;
        pthread_cond_signal(&lg->flusher_cv);
        if (pthread_cond_timedwait(&lg->done_cv, &lg->mu, &dl) == ETIMEDOUT)
            return PHIAUDIT_E_QUEUE_FULL;
    }
    return 0;
}

/* Wait until `ticket` is delivered. Records stay queued on failure. */
static int wait_delivered_locked(phiaudit_logger *lg, uint64_t ticket)
{
    int rc = ensure_flusher(lg);
    if (rc)
        return rc;
    lg->waiters++;
    pthread_cond_signal(&lg->flusher_cv);
    while (lg->delivered < ticket && !lg->failing)
        pthread_cond_wait(&lg->done_cv, &lg->mu);
    lg->waiters--;
    return lg->delivered >= ticket ? 0 : PHIAUDIT_E_SINK;
}

/* Seal one data record (payload already formatted in pt) and apply the durability mode.
 * at_close: a scope recorded as abandoned by close(), which must be queued even while the
 * sink is failing (close retries and reports what stays undelivered). */
static int submit_data(phiaudit_logger *lg, uint8_t *pt, size_t n, size_t id_offset,
                       const uint8_t *bi_p, const uint8_t *bi_c, int64_t recorded_us, int at_close)
{
    pthread_mutex_lock(&lg->mu);
    int rc = lg->closing ? PHIAUDIT_E_CLOSED : 0;
    if (!rc && lg->failing && !at_close)
        rc = PHIAUDIT_E_SINK_DOWN; /* fail closed: the caller learns now, nothing is sealed */
    if (!rc)
        rc = check_stream_locked(lg);
    if (!rc && !at_close)
        rc = wait_room_locked(lg, n + PHIAUDIT_MIN_FRAME_LEN);
    if (!rc)
        rc = ensure_flusher(lg); /* before sealing: once sealed, the record is queued */
    if (!rc)
        rc = seal_locked(lg, PHIAUDIT_RECORD_DATA, pt, n, id_offset, bi_p, bi_c, recorded_us);
    if (!rc && lg->durability == PHIAUDIT_DURABILITY_SYNC && !at_close)
        rc = wait_delivered_locked(lg, lg->enqueued);
    pthread_mutex_unlock(&lg->mu);
    return rc;
}

/* ---- Delivery (flusher thread) ------------------------------------------------------------------ */

static int deliver(phiaudit_logger *lg, frame_queue *q, phiaudit_batch_record *recs)
{
    for (size_t i = 0; i < q->count; i++) {
        const frame_meta *m = &q->meta[i];
        const uint8_t *f = q->bytes.data + m->offset;
        recs[i] = (phiaudit_batch_record){.frame = f,
                                          .frame_len = m->len,
                                          .type = m->type,
                                          .seq = m->seq,
                                          .time_us = m->time_us,
                                          .stream_id = f + 28,
                                          .key_id = f + 12};
    }
    phiaudit_batch batch = {q->bytes.data, q->bytes.len, recs, q->count};
    int result = 0;
    for (size_t s = 0; s < lg->nsinks; s++) {
        if (lg->sink_done[s])
            continue;
        const phiaudit_sink_ops *ops = lg->sinks[s]->ops;
        void *st = lg->sinks[s]->state;
        /* Once a batch is written, a retry must not write it again (the copies would
         * look like replayed records): only the sync is retried. */
        int rc = lg->sink_written[s] ? 0 : ops->write(st, &batch);
        if (!rc)
            lg->sink_written[s] = 1;
        if (!rc && ops->sync && lg->durability != PHIAUDIT_DURABILITY_NONE)
            rc = ops->sync(st);
        if (rc)
            result = rc < 0 ? rc : PHIAUDIT_E_SINK;
        else
            lg->sink_done[s] = 1;
    }
    return result;
}

static void *flusher_main(void *arg)
{
    phiaudit_logger *lg = arg;
    phiaudit_batch_record *recs = NULL;
    size_t recs_cap = 0;
    int64_t backoff_ms = 0, retry_at_ns = 0, close_deadline_ns = 0;
    char msg[160];

    pthread_mutex_lock(&lg->mu);
    for (;;) {
        /* Decide what to do next, sleeping until it is due. */
        for (;;) {
            if (lg->abort_delivery)
                goto out;
            int64_t now = phiaudit_now_mono_ns();
            if (lg->closing && !close_deadline_ns)
                close_deadline_ns = now + (int64_t)CLOSE_RETRY_MS * 1000000;
            if (lg->inflight.count) {
                if (now >= retry_at_ns || (lg->closing && now >= close_deadline_ns))
                    break;
                struct timespec dl = deadline_after_ms(retry_at_ns, 0);
                pthread_cond_timedwait(&lg->flusher_cv, &lg->mu, &dl);
                continue;
            }
            if (lg->queue.count) {
                int64_t due = lg->queue.first_mono_ns + (int64_t)lg->flush_ms * 1000000;
                if (lg->closing || lg->waiters || now >= due ||
                    lg->queue.bytes.len >= HIGH_WATER_BYTES)
                    break;
                struct timespec dl = deadline_after_ms(due, 0);
                pthread_cond_timedwait(&lg->flusher_cv, &lg->mu, &dl);
                continue;
            }
            if (lg->closing)
                goto out;
            pthread_cond_wait(&lg->flusher_cv, &lg->mu);
        }
        if (lg->closing && lg->inflight.count && lg->failing &&
            phiaudit_now_mono_ns() >= close_deadline_ns)
            goto out; /* give up: close() reports what is undelivered */

        if (!lg->inflight.count) {
            frame_queue t = lg->inflight;
            lg->inflight = lg->queue;
            lg->queue = t;
            queue_reset(&lg->queue);
            memset(lg->sink_done, 0, lg->nsinks);
            memset(lg->sink_written, 0, lg->nsinks);
        }
        frame_queue *q = &lg->inflight;
        int rc = 0;
        if (q->count > recs_cap) {
            phiaudit_batch_record *r = phiaudit_realloc(recs, q->count * sizeof *r);
            if (r) {
                recs = r;
                recs_cap = q->count;
            } else {
                rc = PHIAUDIT_E_NOMEM;
            }
        }
        pthread_mutex_unlock(&lg->mu);
        if (!rc)
            rc = deliver(lg, q, recs);
        pthread_mutex_lock(&lg->mu);

        if (rc == 0) {
            lg->delivered = q->last_ticket;
            lg->records_written += q->count;
            queue_reset(q);
            backoff_ms = 0;
            if (lg->failing) {
                lg->failing = 0;
                pthread_mutex_unlock(&lg->mu);
                diag(lg, PHIAUDIT_DIAG_INFO, "sink recovered; queued records delivered");
                pthread_mutex_lock(&lg->mu);
            }
        } else {
            int was_failing = lg->failing;
            lg->failing = 1;
            lg->fail_rc = rc;
            lg->sink_errors++;
            backoff_ms = backoff_ms ? backoff_ms * 2 : RETRY_MIN_MS;
            if (backoff_ms > RETRY_MAX_MS)
                backoff_ms = RETRY_MAX_MS;
            retry_at_ns = phiaudit_now_mono_ns() + backoff_ms * 1000000;
            snprintf(msg, sizeof msg, "sink write failed (%s); %zu records queued, retrying",
                     phiaudit_strerror(rc), q->count + lg->queue.count);
            set_errmsg(lg, msg);
            if (!was_failing) {
                pthread_mutex_unlock(&lg->mu);
                diag(lg, PHIAUDIT_DIAG_ERROR, msg);
                pthread_mutex_lock(&lg->mu);
            }
        }
        pthread_cond_broadcast(&lg->done_cv);
    }
out:
    pthread_cond_broadcast(&lg->done_cv);
    pthread_mutex_unlock(&lg->mu);
    phiaudit_free(recs);
    return NULL;
}

/* ---- Public: config, open, close ------------------------------------------------------------ */

void phiaudit_config_init(phiaudit_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->version = PHIAUDIT_CONFIG_VERSION;
    cfg->durability = PHIAUDIT_DURABILITY_NONE;
    cfg->flush_interval_ms = DEFAULT_FLUSH_MS;
    cfg->payload_format = PHIAUDIT_FORMAT_JSON;
    cfg->max_queue_bytes = DEFAULT_QUEUE_BYTES;
    cfg->max_block_ms = DEFAULT_BLOCK_MS;
}

static int load_key(phiaudit_logger *lg, const phiaudit_config *cfg)
{
    int sources = (cfg->key_file != NULL) + (cfg->key != NULL || cfg->key_id != NULL) +
                  (cfg->key_callback != NULL);
    if (sources != 1) {
        set_errmsg(lg, "exactly one key source (key_file, key+key_id, key_callback) required");
        return PHIAUDIT_E_KEY;
    }
    if (cfg->key_file) {
        int rc = phiaudit_key_load_file(cfg->key_file, lg->key_id, lg->secrets->master);
        if (rc)
            set_errmsg(lg, phiaudit_strerror(rc));
        return rc;
    }
    if (cfg->key) {
        if (!cfg->key_id) {
            set_errmsg(lg, "key given without key_id");
            return PHIAUDIT_E_KEY;
        }
        memcpy(lg->secrets->master, cfg->key, 32);
        memcpy(lg->key_id, cfg->key_id, 16);
        return 0;
    }
    int rc = cfg->key_callback(cfg->key_callback_ctx, lg->key_id, lg->secrets->master);
    if (rc) {
        set_errmsg(lg, "key callback failed");
        return rc < 0 ? rc : PHIAUDIT_E_KEY;
    }
    return 0;
}

static int validate_config(const phiaudit_config *cfg)
{
    if (cfg->version != PHIAUDIT_CONFIG_VERSION)
        return PHIAUDIT_E_VERSION;
    if (cfg->durability > PHIAUDIT_DURABILITY_SYNC || cfg->payload_format > PHIAUDIT_FORMAT_TEXT ||
        (cfg->flags & ~PHIAUDIT_FLAG_BLIND_INDEX) || cfg->flush_interval_ms > 10000 ||
        (cfg->sink_uri_count && !cfg->sink_uris) || (cfg->sink_count && !cfg->sinks) ||
        cfg->sink_uri_count + cfg->sink_count == 0 || cfg->sink_uri_count + cfg->sink_count > 64)
        return PHIAUDIT_E_INVALID;
    for (size_t i = 0; i < cfg->sink_count; i++)
        if (!cfg->sinks[i])
            return PHIAUDIT_E_INVALID;
    return 0;
}

/* Key material lives in its own page: never in a core dump, never swapped if mlock is
 * allowed (best effort: RLIMIT_MEMLOCK may forbid it). */
static struct secrets *map_secrets(void)
{
    long page = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_DONTDUMP
    madvise(p, (size_t)page, MADV_DONTDUMP);
#endif
    (void)mlock(p, (size_t)page);
    return p;
}

static struct fork_guard *map_fork_guard(void)
{
#ifdef MADV_WIPEONFORK
    long page = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (madvise(p, (size_t)page, MADV_WIPEONFORK) != 0) {
        munmap(p, (size_t)page);
        return NULL;
    }
    return p;
#else
    return NULL;
#endif
}

static void logger_free(phiaudit_logger *lg)
{
    if (lg->sync_ready) {
        pthread_mutex_destroy(&lg->mu);
        pthread_mutex_destroy(&lg->scopes_mu);
        pthread_cond_destroy(&lg->flusher_cv);
        pthread_cond_destroy(&lg->done_cv);
    }
    if (lg->fork_guard)
        munmap((void *)lg->fork_guard, (size_t)sysconf(_SC_PAGESIZE));
    for (size_t i = 0; lg->sinks && i < lg->nsinks; i++)
        if (lg->sink_owned[i])
            phiaudit_sink_close(&lg->sinks[i]);
    phiaudit_free(lg->sinks);
    phiaudit_free(lg->sink_owned);
    phiaudit_free(lg->sink_done);
    phiaudit_free(lg->sink_written);
    phiaudit_sealer_free(&lg->sealer);
    queue_free(&lg->queue);
    queue_free(&lg->inflight);
    phiaudit_free(lg->app);
    phiaudit_free(lg->host);
    if (lg->secrets) {
        phiaudit_wipe(lg->secrets, sizeof *lg->secrets);
        munmap(lg->secrets, (size_t)sysconf(_SC_PAGESIZE));
    }
    phiaudit_free(lg);
}

static int init_sync(phiaudit_logger *lg)
{
    int ok = pthread_mutex_init(&lg->mu, NULL) == 0;
    ok = ok && pthread_mutex_init(&lg->scopes_mu, NULL) == 0;
    ok = ok && init_cond(&lg->flusher_cv) == 0;
    ok = ok && init_cond(&lg->done_cv) == 0;
    return ok ? 0 : PHIAUDIT_E_NOMEM;
}

static int open_sinks(phiaudit_logger *lg, const phiaudit_config *cfg)
{
    size_t n = cfg->sink_uri_count + cfg->sink_count;
    lg->sinks = phiaudit_calloc(n, sizeof *lg->sinks);
    lg->sink_owned = phiaudit_calloc(n, 1);
    lg->sink_done = phiaudit_calloc(n, 1);
    lg->sink_written = phiaudit_calloc(n, 1);
    if (!lg->sinks || !lg->sink_owned || !lg->sink_done || !lg->sink_written)
        return PHIAUDIT_E_NOMEM;
    for (size_t i = 0; i < cfg->sink_uri_count; i++) {
        if (!cfg->sink_uris[i])
            return PHIAUDIT_E_INVALID;
        int rc = phiaudit_sink_open_uri(&lg->sinks[lg->nsinks], cfg->sink_uris[i]);
        if (rc) {
            char m[96];
            snprintf(m, sizeof m, "cannot open sink #%zu: %s", i + 1, phiaudit_strerror(rc));
            set_errmsg(lg, m);
            return rc;
        }
        lg->sink_owned[lg->nsinks++] = 1;
        lg->torn_bytes_at_open += phiaudit_sink_file_torn_bytes(lg->sinks[lg->nsinks - 1]);
    }
    for (size_t i = 0; i < cfg->sink_count; i++) {
        lg->sinks[lg->nsinks++] = cfg->sinks[i];
        lg->torn_bytes_at_open += phiaudit_sink_file_torn_bytes(cfg->sinks[i]);
    }
    return 0;
}

/* Last error text of a failed open, for callers that only get a NULL logger back. Written
 * only by phiaudit_logger_open on failure. */
static _Thread_local char open_errmsg[256];

int phiaudit_logger_open(phiaudit_logger **out, const phiaudit_config *cfg)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    if (!cfg)
        return PHIAUDIT_E_INVALID;
    int rc = validate_config(cfg);
    if (rc)
        return rc;
    size_t app_len = 0, host_len = 0;
    rc = phiaudit_validate_id(cfg->app_name, PHIAUDIT_MAX_CODE_LEN, &app_len);
    if (rc)
        return rc;
    char hostbuf[256];
    const char *host = cfg->host_name;
    if (!host) {
        if (gethostname(hostbuf, sizeof hostbuf) != 0)
            snprintf(hostbuf, sizeof hostbuf, "localhost");
        hostbuf[sizeof hostbuf - 1] = 0;
        host = hostbuf;
    }
    rc = phiaudit_validate_id(host, PHIAUDIT_MAX_CODE_LEN, &host_len);
    if (rc)
        return rc;

    phiaudit_logger *lg = phiaudit_calloc(1, sizeof *lg);
    if (!lg)
        return PHIAUDIT_E_NOMEM;
    lg->durability = cfg->durability;
    lg->flush_ms = cfg->flush_interval_ms ? cfg->flush_interval_ms : DEFAULT_FLUSH_MS;
    lg->flags = cfg->flags;
    lg->format = cfg->payload_format;
    lg->max_queue_bytes = cfg->max_queue_bytes ? cfg->max_queue_bytes : DEFAULT_QUEUE_BYTES;
    lg->max_block_ms = cfg->max_block_ms;
    lg->diag = cfg->diag;
    lg->diag_ctx = cfg->diag_ctx;
    lg->pid = getpid();
    lg->fork_guard = map_fork_guard();
    if (lg->fork_guard)
        atomic_store(&lg->fork_guard->reinit, 2);
    atomic_store(&lg->claim_pid, lg->pid);
    atomic_store(&lg->reinit_pid, lg->pid);
    lg->secrets = map_secrets();
    lg->app = phiaudit_strdup(cfg->app_name);
    lg->host = phiaudit_strdup(host);
    lg->app_len = app_len;
    lg->host_len = host_len;
    rc = (lg->app && lg->host && lg->secrets) ? 0 : PHIAUDIT_E_NOMEM;
    if (!rc)
        rc = load_key(lg, cfg);
    if (!rc && (lg->flags & PHIAUDIT_FLAG_BLIND_INDEX))
        rc = phiaudit_hkdf_index_key(lg->secrets->master, lg->key_id, lg->secrets->index_key);
    if (!rc)
        rc = phiaudit_sealer_new(&lg->sealer);
    if (!rc)
        rc = open_sinks(lg, cfg);
    if (rc) {
        snprintf(open_errmsg, sizeof open_errmsg, "%s", lg->errmsg[0] ? lg->errmsg : phiaudit_strerror(rc));
        logger_free(lg);
        return rc;
    }
    rc = init_sync(lg);
    if (rc) {
        logger_free(lg);
        return rc;
    }
    lg->sync_ready = 1;
    if (lg->torn_bytes_at_open) {
        char m[128];
        snprintf(m, sizeof m, "torn record (%llu bytes) found at the end of a log file; it was "
                 "kept and rotated away", (unsigned long long)lg->torn_bytes_at_open);
        diag(lg, PHIAUDIT_DIAG_WARN, m);
    }

    /* Write the stream-open record and wait for it: a sink that cannot take a record should
     * fail here, loudly, not at the first patient access. */
    pthread_mutex_lock(&lg->mu);
    lg->next_reason = "start";
    rc = start_stream_locked(lg, lg->next_reason);
    if (!rc)
        rc = ensure_flusher(lg);
    if (!rc)
        rc = wait_delivered_locked(lg, lg->enqueued);
    if (rc == PHIAUDIT_E_SINK && lg->fail_rc)
        rc = lg->fail_rc;
    if (rc) {
        /* Give up on the undeliverable open record: the flusher stops without retrying,
         * and only after it has stopped are the queues dropped. (With several sinks, one
         * that took the open record keeps a stream without close: incomplete, not lost.) */
        lg->closing = 1;
        lg->abort_delivery = 1;
        pthread_cond_signal(&lg->flusher_cv);
    }
    int running = lg->flusher_running;
    pthread_mutex_unlock(&lg->mu);
    if (rc) {
        if (running)
            pthread_join(lg->flusher, NULL);
        snprintf(open_errmsg, sizeof open_errmsg, "%s", lg->errmsg[0] ? lg->errmsg : phiaudit_strerror(rc));
        logger_free(lg);
        return rc;
    }

    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&reg_mu);
    lg->reg_next = reg_head;
    reg_head = lg;
    pthread_mutex_unlock(&reg_mu);
    *out = lg;
    return 0;
}

const char *phiaudit_logger_errmsg(const phiaudit_logger *lg)
{
    if (!lg)
        return open_errmsg[0] ? open_errmsg : "no logger";
    return lg->errmsg[0] ? lg->errmsg : "no error";
}

static int format_and_submit(phiaudit_logger *lg, phiaudit_payload_fields *f, int at_close);

static void scope_fields(const phiaudit_scope *s, phiaudit_payload_fields *f)
{
    memset(f, 0, sizeof *f);
    f->clinician = s->clinician;
    f->clinician_len = s->clinician_len;
    f->patient = s->patient;
    f->patient_len = s->patient_len;
#define OPT(field, src)                      \
    if (src) {                               \
        f->field = src;                      \
        f->field##_len = strlen(src);        \
    }
    OPT(event_type, s->event_type)
    OPT(event_subtype, s->event_subtype)
    OPT(purpose, s->purpose)
    OPT(detail, s->detail)
#undef OPT
    f->action = s->action;
    f->break_glass = s->break_glass;
    f->start_us = s->start_wall_us;
    f->duration_us = (phiaudit_now_mono_ns() - s->start_mono_ns) / 1000;
    /* A scope is recorded as it ends: its start plus the monotonic duration saves a clock
     * read and keeps "recorded" consistent with "end". */
    f->recorded_us = f->start_us + f->duration_us;
}

static void scope_free(phiaudit_scope *s)
{
    char *texts[] = {s->event_type, s->event_subtype, s->purpose, s->detail};
    for (size_t i = 0; i < 4; i++) {
        if (texts[i]) {
            phiaudit_wipe(texts[i], strlen(texts[i]));
            phiaudit_free(texts[i]);
        }
    }
    phiaudit_wipe(s, sizeof *s + s->clinician_len + s->patient_len + 2);
    phiaudit_free(s);
}


int phiaudit_logger_close(phiaudit_logger **lgp)
{
    phiaudit_logger *lg = lgp ? *lgp : NULL;
    if (!lg)
        return 0;
    if (refuse_during_fork())
        return PHIAUDIT_E_STATE;
    *lgp = NULL;
    check_fork(lg);

    /* Scopes never ended are recorded, not lost: queued even while a sink fails (the
     * retries below decide), counted as lost only if they cannot even be sealed. */
    uint64_t lost = 0;
    pthread_mutex_lock(&lg->scopes_mu);
    while (lg->scopes) {
        phiaudit_scope *s = lg->scopes;
        unlink_scope(lg, s);
        s->detached = 1;
        phiaudit_payload_fields f;
        scope_fields(s, &f);
        f.outcome = PHIAUDIT_OUTCOME_SERIOUS_FAILURE;
        f.abandoned = 1;
        if (format_and_submit(lg, &f, 1) == 0)
            lg->abandoned++;
        else
            lost++;
    }
    pthread_mutex_unlock(&lg->scopes_mu);

    pthread_mutex_lock(&reg_mu);
    for (phiaudit_logger **p = &reg_head; *p; p = &(*p)->reg_next) {
        if (*p == lg) {
            *p = lg->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);

    pthread_mutex_lock(&lg->mu);
    int rc = check_stream_locked(lg);
    if (!rc) {
        char body[192];
        int n = snprintf(body, sizeof body,
                         "{\"v\":1,\"event\":\"stream-close\",\"records\":%llu,\"abandoned\":%llu%s",
                         (unsigned long long)lg->stream_data_records,
                         (unsigned long long)lg->abandoned, lost ? "" : "}");
        if (lost)
            n += snprintf(body + n, sizeof body - (size_t)n, ",\"abandoned_lost\":%llu}",
                          (unsigned long long)lost);
        rc = seal_locked(lg, PHIAUDIT_RECORD_CLOSE, (uint8_t *)body, (size_t)n, SIZE_MAX, NULL,
                         NULL, phiaudit_now_wall_us());
    }
    if (!rc)
        rc = ensure_flusher(lg);
    lg->closing = 1;
    pthread_cond_signal(&lg->flusher_cv);
    int running = lg->flusher_running;
    pthread_mutex_unlock(&lg->mu);
    if (running)
        pthread_join(lg->flusher, NULL);

    if (lost) {
        char m[128];
        snprintf(m, sizeof m, "%llu open scopes could not be recorded as abandoned",
                 (unsigned long long)lost);
        diag(lg, PHIAUDIT_DIAG_ERROR, m);
        if (!rc)
            rc = PHIAUDIT_E_SINK;
    }
    size_t undelivered = lg->queue.count + lg->inflight.count;
    if (undelivered) {
        char m[128];
        snprintf(m, sizeof m, "logger closed with %zu records undelivered (sink failing: %s)",
                 undelivered, phiaudit_strerror(lg->fail_rc));
        diag(lg, PHIAUDIT_DIAG_ERROR, m);
        if (!rc)
            rc = PHIAUDIT_E_SINK;
    }
    /* Durable before we report success, whatever the mode. */
    for (size_t i = 0; i < lg->nsinks; i++) {
        const phiaudit_sink_ops *ops = lg->sinks[i]->ops;
        if (ops->sync && ops->sync(lg->sinks[i]->state) != 0 && !rc)
            rc = PHIAUDIT_E_SINK;
    }
    logger_free(lg);
    return rc;
}

int phiaudit_logger_flush(phiaudit_logger *lg)
{
    if (!lg)
        return PHIAUDIT_E_INVALID;
    if (refuse_during_fork())
        return PHIAUDIT_E_STATE;
    check_fork(lg);
    pthread_mutex_lock(&lg->mu);
    int rc = lg->failing ? PHIAUDIT_E_SINK : 0;
    if (!rc)
        rc = wait_delivered_locked(lg, lg->enqueued);
    pthread_mutex_unlock(&lg->mu);
    return rc;
}

int phiaudit_logger_stats(phiaudit_logger *lg, phiaudit_stats *st)
{
    if (!lg || !st || st->version != PHIAUDIT_STATS_VERSION)
        return PHIAUDIT_E_INVALID;
    if (refuse_during_fork())
        return PHIAUDIT_E_STATE;
    check_fork(lg);
    pthread_mutex_lock(&lg->mu);
    st->sink_failing = (uint32_t)lg->failing;
    st->records_sealed = lg->records_sealed;
    st->records_written = lg->records_written;
    st->queued_bytes = lg->queue.bytes.len + lg->inflight.bytes.len;
    st->sink_errors = lg->sink_errors;
    st->streams = (uint64_t)lg->streams_started;
    pthread_mutex_unlock(&lg->mu);
    return 0;
}

/* ---- Records: formatting and submission ---------------------------------------------------------- */

static int valid_action(int a)
{
    return a == 'C' || a == 'R' || a == 'U' || a == 'D' || a == 'E';
}

static int valid_outcome(int o)
{
    return o == 0 || o == 4 || o == 8 || o == 12;
}

static int format_and_submit(phiaudit_logger *lg, phiaudit_payload_fields *f, int at_close)
{
    if (refuse_during_fork())
        return PHIAUDIT_E_STATE;
    check_fork(lg); /* before reading lg->pid into the payload */
    f->app = lg->app;
    f->app_len = lg->app_len;
    f->host = lg->host;
    f->host_len = lg->host_len;
    f->pid = (long)lg->pid; /* refreshed by check_stream_locked after a fork */

    uint8_t bi_p[8], bi_c[8];
    int with_index = (lg->flags & PHIAUDIT_FLAG_BLIND_INDEX) != 0;
    if (with_index) {
        int rc = phiaudit_blind_tag(lg->secrets->index_key, 'P', f->patient, f->patient_len, bi_p);
        if (!rc)
            rc = phiaudit_blind_tag(lg->secrets->index_key, 'C', f->clinician, f->clinician_len, bi_c);
        if (rc)
            return rc;
    }
    phiaudit_buf *b = scratch_get();
    if (!b)
        return PHIAUDIT_E_NOMEM;
    size_t id_offset;
    int rc = phiaudit_payload_format(b, lg->format, f, &id_offset);
    if (!rc)
        rc = submit_data(lg, b->data, b->len, id_offset, with_index ? bi_p : NULL,
                         with_index ? bi_c : NULL, f->recorded_us, at_close);
    scratch_done(b);
    return rc;
}

/* Copy optional text after validation; on error *dst is untouched. */
static int set_text(char **dst, const char *src, size_t max, int is_id)
{
    size_t n;
    int rc = is_id ? phiaudit_validate_id(src, max, &n) : phiaudit_validate_text(src, max, &n);
    if (rc)
        return rc;
    char *copy = phiaudit_malloc(n + 1);
    if (!copy)
        return PHIAUDIT_E_NOMEM;
    memcpy(copy, src, n + 1);
    if (*dst) {
        phiaudit_wipe(*dst, strlen(*dst));
        phiaudit_free(*dst);
    }
    *dst = copy;
    return 0;
}

int phiaudit_scope_begin(phiaudit_scope **out, phiaudit_logger *lg, const char *clinician_id,
                         const char *patient_id, int action)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    if (!lg || !valid_action(action))
        return PHIAUDIT_E_INVALID;
    size_t cl, pl;
    int rc = phiaudit_validate_id(clinician_id, PHIAUDIT_MAX_ID_LEN, &cl);
    if (!rc)
        rc = phiaudit_validate_id(patient_id, PHIAUDIT_MAX_ID_LEN, &pl);
    if (rc)
        return rc;
    phiaudit_scope *s = phiaudit_calloc(1, sizeof *s + cl + pl + 2);
    if (!s)
        return PHIAUDIT_E_NOMEM;
    s->lg = lg;
    s->owner = pthread_self();
    s->action = action;
    s->clinician = (char *)(s + 1);
    s->patient = s->clinician + cl + 1;
    memcpy(s->clinician, clinician_id, cl + 1);
    memcpy(s->patient, patient_id, pl + 1);
    s->clinician_len = cl;
    s->patient_len = pl;
    s->start_wall_us = phiaudit_now_wall_us();
    s->start_mono_ns = phiaudit_now_mono_ns();

    if (refuse_during_fork()) {
        scope_free(s);
        return PHIAUDIT_E_STATE;
    }
    check_fork(lg);
    pthread_mutex_lock(&lg->scopes_mu);
    s->next = lg->scopes;
    if (lg->scopes)
        lg->scopes->prev = s;
    lg->scopes = s;
    pthread_mutex_unlock(&lg->scopes_mu);
    *out = s;
    return 0;
}

int phiaudit_scope_set_event_type(phiaudit_scope *s, const char *v)
{
    return s ? set_text(&s->event_type, v, PHIAUDIT_MAX_CODE_LEN, 1) : PHIAUDIT_E_INVALID;
}

int phiaudit_scope_set_event_subtype(phiaudit_scope *s, const char *v)
{
    return s ? set_text(&s->event_subtype, v, PHIAUDIT_MAX_CODE_LEN, 1) : PHIAUDIT_E_INVALID;
}

int phiaudit_scope_set_purpose(phiaudit_scope *s, const char *v)
{
    return s ? set_text(&s->purpose, v, PHIAUDIT_MAX_CODE_LEN, 1) : PHIAUDIT_E_INVALID;
}

int phiaudit_scope_set_detail(phiaudit_scope *s, const char *v)
{
    return s ? set_text(&s->detail, v, PHIAUDIT_MAX_DETAIL_LEN, 0) : PHIAUDIT_E_INVALID;
}

int phiaudit_scope_set_break_glass(phiaudit_scope *s, int on)
{
    if (!s || (on != 0 && on != 1))
        return PHIAUDIT_E_INVALID;
    s->break_glass = on;
    return 0;
}

int phiaudit_scope_set_outcome(phiaudit_scope *s, int outcome)
{
    if (!s || !valid_outcome(outcome))
        return PHIAUDIT_E_INVALID;
    s->outcome = outcome;
    return 0;
}

int phiaudit_scope_end(phiaudit_scope **sp, int outcome)
{
    phiaudit_scope *s = sp ? *sp : NULL;
    if (!s)
        return PHIAUDIT_E_INVALID;
    *sp = NULL;
    /* A detached scope is not this logger's to record any more: the logger closed (and
     * recorded it as abandoned), or this is a forked child and the scope belongs to a
     * parent thread that does not exist here. */
    if (refuse_during_fork()) {
        scope_free(s);
        return PHIAUDIT_E_STATE;
    }
    if (!s->detached)
        check_fork(s->lg); /* a child's first call: before taking any inherited lock */
    if (s->detached) {
        scope_free(s);
        return PHIAUDIT_E_CLOSED;
    }
    phiaudit_logger *lg = s->lg;
    pthread_mutex_lock(&lg->scopes_mu);
    unlink_scope(lg, s);
    pthread_mutex_unlock(&lg->scopes_mu);

    /* A bad outcome must not lose the access: record it as a serious failure, report EINVAL. */
    int bad = !valid_outcome(outcome);
    phiaudit_payload_fields f;
    scope_fields(s, &f);
    f.outcome = bad ? PHIAUDIT_OUTCOME_SERIOUS_FAILURE : outcome;
    int rc = format_and_submit(lg, &f, 0);
    scope_free(s);
    return rc ? rc : (bad ? PHIAUDIT_E_INVALID : 0);
}

void phiaudit_scope_autoend(phiaudit_scope **sp)
{
    if (sp && *sp)
        (void)phiaudit_scope_end(sp, (*sp)->outcome);
}

void phiaudit_event_init(phiaudit_event *ev)
{
    if (!ev)
        return;
    memset(ev, 0, sizeof *ev);
    ev->version = PHIAUDIT_EVENT_VERSION;
    ev->action = PHIAUDIT_ACTION_READ;
    ev->outcome = PHIAUDIT_OUTCOME_SUCCESS;
}

int phiaudit_log_event(phiaudit_logger *lg, const phiaudit_event *ev)
{
    if (!lg || !ev)
        return PHIAUDIT_E_INVALID;
    if (ev->version != PHIAUDIT_EVENT_VERSION)
        return PHIAUDIT_E_VERSION;
    /* 9999-12-31T23:59:59.999999Z: the largest time the payload can spell */
    const int64_t max_us = INT64_C(253402300799999999);
    if (!valid_action(ev->action) || !valid_outcome(ev->outcome) || ev->duration_us < 0 ||
        (ev->break_glass != 0 && ev->break_glass != 1) || ev->start_us < 0 ||
        ev->start_us > max_us || ev->duration_us > max_us - ev->start_us)
        return PHIAUDIT_E_INVALID;
    phiaudit_payload_fields f;
    memset(&f, 0, sizeof f);
    int rc = phiaudit_validate_id(ev->clinician_id, PHIAUDIT_MAX_ID_LEN, &f.clinician_len);
    if (!rc)
        rc = phiaudit_validate_id(ev->patient_id, PHIAUDIT_MAX_ID_LEN, &f.patient_len);
#define OPT(field, src, max, check)                          \
    if (!rc && src) {                                        \
        rc = check(src, max, &f.field##_len);                \
        f.field = src;                                       \
    }
    OPT(event_type, ev->event_type, PHIAUDIT_MAX_CODE_LEN, phiaudit_validate_id)
    OPT(event_subtype, ev->event_subtype, PHIAUDIT_MAX_CODE_LEN, phiaudit_validate_id)
    OPT(purpose, ev->purpose, PHIAUDIT_MAX_CODE_LEN, phiaudit_validate_id)
    OPT(detail, ev->detail, PHIAUDIT_MAX_DETAIL_LEN, phiaudit_validate_text)
#undef OPT
    if (rc)
        return rc;
    f.clinician = ev->clinician_id;
    f.patient = ev->patient_id;
    f.action = ev->action;
    f.outcome = ev->outcome;
    f.break_glass = ev->break_glass;
    f.duration_us = ev->duration_us;
    f.recorded_us = phiaudit_now_wall_us();
    f.start_us = ev->start_us ? ev->start_us : f.recorded_us - ev->duration_us;
    return format_and_submit(lg, &f, 0);
}
