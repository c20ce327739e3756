/* Shared helpers for the cmocka tests. Header-only so each test stays one executable. */
#ifndef PHIAUDIT_TESTUTIL_H
#define PHIAUDIT_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "phiaudit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every test uses this patient ID somewhere; tests/canary_test.sh checks it never reaches
 * disk (or test output) in plaintext. */
#define CANARY_PATIENT "CANARY-PATIENT-7f3a9c"

static const uint8_t test_key[32] = {0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae,
                                     0xf0, 0x85, 0x7d, 0x77, 0x81, 0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61,
                                     0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4};
static const uint8_t test_key_id[16] = {'t', 'e', 's', 't', '-', 'k', 'e', 'y', '-', 'i', 'd',
                                        '-', '0', '0', '0', '1'};

static inline void test_config(phiaudit_config *c, phiaudit_sink **sink)
{
    phiaudit_config_init(c);
    c->app_name = "phiaudit-test";
    c->host_name = "test-host";
    c->key = test_key;
    c->key_id = test_key_id;
    c->sinks = sink;
    c->sink_count = 1;
}

/* A keyring holding the test key. */
static inline phiaudit_keyring *keyring_with_test_key(void)
{
    phiaudit_keyring *kr = NULL;
    assert_int_equal(phiaudit_keyring_new(&kr), 0);
    assert_int_equal(phiaudit_keyring_add(kr, test_key_id, test_key), 0);
    return kr;
}

/* test_config() writing to one sink URI instead of a sink object. */
static inline void test_config_uri(phiaudit_config *c, const char **uri)
{
    test_config(c, NULL);
    c->sinks = NULL;
    c->sink_count = 0;
    c->sink_uris = uri;
    c->sink_uri_count = 1;
}

/* A one-shot event by @p clinician on the canary patient. */
static inline phiaudit_event canary_event(const char *clinician)
{
    phiaudit_event ev;
    phiaudit_event_init(&ev);
    ev.clinician_id = clinician;
    ev.patient_id = CANARY_PATIENT;
    return ev;
}

/* Remove a test directory and everything in it. */
static inline void test_rm_rf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Decrypt frame i of a memory sink into a NUL-terminated malloc'd string (caller frees);
 * hdr receives the header. Fails the test if the frame does not authenticate. */
static inline char *test_open_frame(phiaudit_sink *mem, size_t i, phiaudit_header *hdr)
{
    static uint8_t frame[PHIAUDIT_MAX_FRAME_LEN];
    size_t len = sizeof frame;
    assert_int_equal(phiaudit_sink_memory_get(mem, i, frame, &len), 0);
    assert_int_equal(phiaudit_frame_parse(frame, len, hdr), 0);
    phiaudit_keyring *kr = keyring_with_test_key();
    char *out = malloc(len + 1);
    size_t n = 0;
    assert_int_equal(phiaudit_frame_open(kr, frame, len, (uint8_t *)out, len, &n), 0);
    out[n] = '\0';
    phiaudit_keyring_free(&kr);
    return out;
}

#endif
