/*
 * clinic_demo — a small multi-threaded "clinical service" that records every access to a
 * patient record with phiaudit.
 *
 *   clinic_demo KEY_FILE LOG_FILE [ACCESSES]
 *
 * Four worker threads serve ACCESSES requests (default 400) in all: each request is a
 * clinician reading or updating a patient's chart. Every request is wrapped in a phiaudit
 * scope, so the record carries who, which patient, what, when, how long and the outcome.
 * Records are sealed with the key in KEY_FILE (make one with `phiaudit keygen`) and
 * appended to LOG_FILE with group-commit durability.
 */
#include "phiaudit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WORKERS 4

typedef struct worker {
    phiaudit_logger *logger;
    int id;
    int requests;
    int failures;
} worker;

/* Stand-in for real work: look the chart up, sometimes fail. */
static int serve_request(unsigned *seed)
{
    struct timespec pause = {0, (long)(rand_r(seed) % 200) * 1000}; /* up to 0.2 ms */
    nanosleep(&pause, NULL);
    return rand_r(seed) % 50 == 0 ? PHIAUDIT_OUTCOME_MINOR_FAILURE : PHIAUDIT_OUTCOME_SUCCESS;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    unsigned seed = (unsigned)w->id * 7919u + 1u;
    for (int i = 0; i < w->requests; i++) {
        char clinician[32], patient[32];
        snprintf(clinician, sizeof clinician, "dr-%03u", rand_r(&seed) % 20);
        snprintf(patient, sizeof patient, "MRN-%06u", rand_r(&seed) % 500);
        int action = rand_r(&seed) % 4 ? PHIAUDIT_ACTION_READ : PHIAUDIT_ACTION_UPDATE;

        phiaudit_scope *scope = NULL;
        int rc = phiaudit_scope_begin(&scope, w->logger, clinician, patient, action);
        if (rc == 0) {
            phiaudit_scope_set_purpose(scope, "TREAT");
            if (i % 100 == 0)
                phiaudit_scope_set_break_glass(scope, 1);
            int outcome = serve_request(&seed);
            rc = phiaudit_scope_end(&scope, outcome);
        }
        if (rc != 0) {
            /* A service should refuse the access it cannot audit (fail closed). */
            fprintf(stderr, "worker %d: audit failed: %s\n", w->id, phiaudit_strerror(rc));
            w->failures++;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s KEY_FILE LOG_FILE [ACCESSES]\n", argv[0]);
        return 2;
    }
    int accesses = argc == 4 ? atoi(argv[3]) : 400;
    if (accesses < WORKERS) {
        fprintf(stderr, "ACCESSES must be at least %d\n", WORKERS);
        return 2;
    }

    char sink_uri[4096];
    snprintf(sink_uri, sizeof sink_uri, "file:%s", argv[2]);
    const char *sinks[] = {sink_uri};

    phiaudit_config cfg;
    phiaudit_config_init(&cfg);
    cfg.app_name = "clinic-demo";
    cfg.key_file = argv[1];
    cfg.sink_uris = sinks;
    cfg.sink_uri_count = 1;
    cfg.durability = PHIAUDIT_DURABILITY_GROUP;

    phiaudit_logger *logger = NULL;
    int rc = phiaudit_logger_open(&logger, &cfg);
    if (rc != 0) {
        fprintf(stderr, "cannot open audit log: %s (%s)\n", phiaudit_strerror(rc),
                phiaudit_logger_errmsg(NULL));
        return 1;
    }

    worker workers[WORKERS];
    pthread_t threads[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        workers[i] = (worker){logger, i, accesses / WORKERS + (i < accesses % WORKERS), 0};
        pthread_create(&threads[i], NULL, run_worker, &workers[i]);
    }
    int failures = 0;
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
        failures += workers[i].failures;
    }

    phiaudit_stats stats = {.version = PHIAUDIT_STATS_VERSION};
    phiaudit_logger_stats(logger, &stats);
    rc = phiaudit_logger_close(&logger);
    if (rc != 0 || failures) {
        fprintf(stderr, "audit log incomplete: %s, %d failed accesses\n", phiaudit_strerror(rc),
                failures);
        return 1;
    }
    printf("clinic_demo: %d workers served %d accesses; %llu sealed audit records written to %s\n",
           WORKERS, accesses, (unsigned long long)stats.records_sealed, argv[2]);
    return 0;
}
