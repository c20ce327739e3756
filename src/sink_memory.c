/* In-memory sink: keeps a copy of every frame, for test harnesses. */
#include "internal.h"

#include <pthread.h>
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
