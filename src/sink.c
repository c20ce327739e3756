/* Sink objects and the URI dispatcher. */
#include "internal.h"

#include <string.h>

int phiaudit_sink_new(phiaudit_sink **out, const phiaudit_sink_ops *ops, void *state)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    if (!ops || !ops->write || ops->version == 0)
        return PHIAUDIT_E_INVALID;
    phiaudit_sink *s = phiaudit_calloc(1, sizeof *s);
    if (!s) {
        if (ops->destroy)
            ops->destroy(state);
        return PHIAUDIT_E_NOMEM;
    }
    s->ops = ops;
    s->state = state;
    *out = s;
    return 0;
}

int phiaudit_sink_close(phiaudit_sink **sp)
{
    phiaudit_sink *s = sp ? *sp : NULL;
    if (!s)
        return 0;
    if (s->ops->destroy)
        s->ops->destroy(s->state);
    phiaudit_free(s);
    *sp = NULL;
    return 0;
}

typedef int (*uri_opener)(phiaudit_sink **out, const char *rest);

static int open_memory_uri(phiaudit_sink **out, const char *rest)
{
    return *rest ? PHIAUDIT_E_URI : phiaudit_sink_memory_open(out);
}

static const struct {
    const char *scheme; /* including the separator */
    uri_opener open;
} schemes[] = {
    {"file:", phiaudit_sink_file_open_uri},
    {"memory:", open_memory_uri},
};

/* Schemes that belong to sinks not built into this library (yet). */
static const char *const known_elsewhere[] = {"sqlite:", "postgresql://", "postgres://",
                                              "syslog:", "syslog+tcp://", "syslog+tls://"};

int phiaudit_sink_open_uri(phiaudit_sink **out, const char *uri)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    if (!uri)
        return PHIAUDIT_E_INVALID;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncmp(uri, schemes[i].scheme, n) == 0)
            return schemes[i].open(out, uri + n);
    }
    for (size_t i = 0; i < sizeof known_elsewhere / sizeof known_elsewhere[0]; i++)
        if (strncmp(uri, known_elsewhere[i], strlen(known_elsewhere[i])) == 0)
            return PHIAUDIT_E_UNSUPPORTED;
    return PHIAUDIT_E_URI;
}
