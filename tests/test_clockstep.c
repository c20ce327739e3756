/* A wall clock stepped back mid-run (NTP, VM resume) must not make an untouched, rotated
 * log look reordered: the reader orders each stream's files by sequence, not by time.
 * This executable replaces clock_gettime() to step CLOCK_REALTIME back one hour. */
#include "testutil.h"

#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long step_back_s;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int r = (int)syscall(SYS_clock_gettime, id, ts);
    if (id == CLOCK_REALTIME)
        ts->tv_sec -= step_back_s;
    return r;
}

static void test_clock_step_back_is_not_tampering(void **state)
{
    (void)state;
    char dir[] = "/tmp/phiaudit-clockstep-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128];
    snprintf(uri, sizeof uri, "file:%s/audit.log?max_bytes=4096", dir);
    const char *uris[] = {uri};
    phiaudit_config c;
    test_config_uri(&c, uris);
    c.durability = PHIAUDIT_DURABILITY_SYNC; /* one batch per record: many rotations */
    phiaudit_logger *lg = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_event ev;
    phiaudit_event_init(&ev);
    ev.clinician_id = "c";
    ev.patient_id = CANARY_PATIENT;
    for (int i = 0; i < 60; i++) {
        if (i == 30)
            step_back_s = 3600;
        assert_int_equal(phiaudit_log_event(lg, &ev), 0);
    }
    assert_int_equal(phiaudit_logger_close(&lg), 0);

    phiaudit_keyring *kr = keyring_with_test_key();
    const char *sources[] = {dir};
    phiaudit_reader *r = NULL;
    assert_int_equal(phiaudit_reader_open(&r, sources, 1, kr), 0);
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INTACT);
    phiaudit_reader_free(&r);
    phiaudit_keyring_free(&kr);
    test_rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_clock_step_back_is_not_tampering)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
