/* In-memory sink: keeps a copy of every frame, for test harnesses. */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct memory_sink {
    pthread_mutex_t mu; /* readers run on the test's thread, writes on the flusher */
    phiaudit_buf bytes;
    size_t *offsets;
    size_t count, cap;
} memory_sink;

static int memory_write(void *state, const phiaudit_batch *batch)
{
    memory_sink *m = state;
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    if (m->count + batch->count > m->cap) {
        size_t cap = m->cap ? m->cap : 64;
        while (cap < m->count + batch->count)
            cap *= 2;
        size_t *o = phiaudit_realloc(m->offsets, (cap + 1) * sizeof *o);
        if (!o)
            rc = PHIAUDIT_E_NOMEM;
        else {
            m->offsets = o;
            m->cap = cap;
        }
    }
    size_t base = m->bytes.len;
    if (!rc)
        rc = phiaudit_buf_append(&m->bytes, batch->data, batch->len);
    if (!rc) {
        /* All or nothing: offsets are recorded only once the bytes are in. */
        for (size_t i = 0; i < batch->count; i++) {
            m->offsets[m->count++] = base + (size_t)(batch->records[i].frame - batch->data);
        }
        m->offsets[m->count] = m->bytes.len;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static void memory_destroy(void *state)
{
    memory_sink *m = state;
    pthread_mutex_destroy(&m->mu);
    phiaudit_buf_free(&m->bytes);
    phiaudit_free(m->offsets);
    phiaudit_free(m);
}

/* The parent's flusher may have held the lock at fork(): the child gets a fresh one. */
static int memory_after_fork_child(void *state)
{
    memory_sink *m = state;
    memset(&m->mu, 0, sizeof m->mu);
    return pthread_mutex_init(&m->mu, NULL) == 0 ? 0 : PHIAUDIT_E_NOMEM;
}

const phiaudit_sink_ops phiaudit_memory_sink_ops = {
    .version = PHIAUDIT_SINK_OPS_VERSION,
    .name = "memory",
    .write = memory_write,
    .after_fork_child = memory_after_fork_child,
    .destroy = memory_destroy,
};

int phiaudit_sink_memory_open(phiaudit_sink **out)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    memory_sink *m = phiaudit_calloc(1, sizeof *m);
    if (!m)
        return PHIAUDIT_E_NOMEM;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        phiaudit_free(m);
        return PHIAUDIT_E_NOMEM;
    }
    return phiaudit_sink_new(out, &phiaudit_memory_sink_ops, m);
}

static memory_sink *as_memory(phiaudit_sink *s)
{
    return s && s->ops == &phiaudit_memory_sink_ops ? s->state : NULL;
}

size_t phiaudit_sink_memory_count(phiaudit_sink *sink)
{
    memory_sink *m = as_memory(sink);
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    size_t n = m->count;
    pthread_mutex_unlock(&m->mu);
    return n;
}

int phiaudit_sink_memory_get(phiaudit_sink *sink, size_t index, uint8_t *buf, size_t *len)
{
    memory_sink *m = as_memory(sink);
    if (!m || !len || (!buf && *len))
        return PHIAUDIT_E_INVALID;
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    if (index >= m->count) {
        rc = PHIAUDIT_E_NOT_FOUND;
    } else {
        size_t n = m->offsets[index + 1] - m->offsets[index];
        if (*len < n)
            rc = PHIAUDIT_E_TOO_LONG;
        else
            memcpy(buf, m->bytes.data + m->offsets[index], n);
        *len = n;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int phiaudit_sink_memory_clear(phiaudit_sink *sink)
{
    memory_sink *m = as_memory(sink);
    if (!m)
        return PHIAUDIT_E_INVALID;
    pthread_mutex_lock(&m->mu);
    m->bytes.len = 0;
    m->count = 0;
    if (m->offsets)
        m->offsets[0] = 0;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* open_record with the caller's PHIAUDIT_MAX_FRAME_LEN-byte frame buffer. */
static int open_record_with(phiaudit_sink *sink, phiaudit_keyring *kr, size_t index,
                            uint8_t *frame, char *buf, size_t cap, size_t *len, int *type)
{
    size_t flen = PHIAUDIT_MAX_FRAME_LEN;
    phiaudit_header h;
    int rc = phiaudit_sink_memory_get(sink, index, frame, &flen);
    if (!rc)
        rc = phiaudit_frame_parse(frame, flen, &h);
    if (!rc)
        rc = phiaudit_frame_open(kr, frame, flen, (uint8_t *)buf, cap ? cap - 1 : 0, len);
    if (!rc) {
        buf[*len] = '\0';
        if (type)
            *type = h.type;
    } else if (rc == PHIAUDIT_E_TOO_LONG) {
        *len += 1;
    }
    return rc;
}

int phiaudit_sink_memory_open_record(phiaudit_sink *sink, phiaudit_keyring *kr, size_t index,
                                     char *buf, size_t cap, size_t *len, int *type)
{
    if (!as_memory(sink) || !kr || !len || (!buf && cap))
        return PHIAUDIT_E_INVALID;
    uint8_t *frame = phiaudit_malloc(PHIAUDIT_MAX_FRAME_LEN);
    if (!frame)
        return PHIAUDIT_E_NOMEM;
    int rc = open_record_with(sink, kr, index, frame, buf, cap, len, type);
    phiaudit_free(frame);
    return rc;
}

/* Append `"key":<value as the payload serializes it>` so that matching is exact even for
 * identifiers the JSON escapes. */
static int want_field(phiaudit_buf *b, const char *key, const char *value)
{
    b->len = 0;
    int rc = phiaudit_buf_append(b, key, strlen(key));
    return rc ? rc : phiaudit_json_string(b, value, strlen(value));
}

static int has_field(const char *payload, phiaudit_buf *want)
{
    return phiaudit_buf_append(want, "", 1) == 0 && strstr(payload, (const char *)want->data);
}

int phiaudit_sink_memory_count_access(phiaudit_sink *sink, phiaudit_keyring *kr,
                                      const char *clinician, const char *patient, int action,
                                      int outcome, size_t *count)
{
    if (!as_memory(sink) || !kr || !count)
        return PHIAUDIT_E_INVALID;
    *count = 0;
    size_t cap = PHIAUDIT_MAX_FRAME_LEN;
    char *pt = phiaudit_malloc(cap);
    uint8_t *frame = phiaudit_malloc(PHIAUDIT_MAX_FRAME_LEN); /* one for all frames */
    phiaudit_buf want = {0};
    if (!pt || !frame) {
        phiaudit_free(pt);
        phiaudit_free(frame);
        return PHIAUDIT_E_NOMEM;
    }
    int rc = 0;
    size_t n = phiaudit_sink_memory_count(sink);
    for (size_t i = 0; i < n && !rc; i++) {
        size_t len = 0;
        int type = 0;
        rc = open_record_with(sink, kr, i, frame, pt, cap, &len, &type);
        if (rc || type != PHIAUDIT_RECORD_DATA)
            continue;
        int match = 1;
        char tail[32];
        if (match && clinician)
            match = want_field(&want, "\"clinician\":", clinician) == 0 && has_field(pt, &want);
        if (match && patient)
            match = want_field(&want, "\"patient\":", patient) == 0 && has_field(pt, &want);
        if (match && action) {
            snprintf(tail, sizeof tail, "\"action\":\"%c\",", action);
            match = strstr(pt, tail) != NULL;
        }
        if (match && outcome >= 0) {
            snprintf(tail, sizeof tail, "\"outcome\":%d,", outcome);
            match = strstr(pt, tail) != NULL;
        }
        if (match)
            (*count)++;
    }
    phiaudit_wipe(pt, cap);
    phiaudit_free(pt);
    phiaudit_free(frame);
    phiaudit_buf_free(&want);
    return rc;
}
