/* Application pthread_atfork handlers that call the logger: registered before the logger
 * (as at program start), so the application's child handler runs before the library's and
 * its prepare handler runs while the library holds its locks. The child handler's record
 * must be kept (re-init once), the prepare handler must be refused, not deadlock. */
#include "testutil.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static phiaudit_logger *lg;
static int prepare_rc = 1, child_rc = 1;

static void app_prepare(void)
{
    prepare_rc = phiaudit_logger_flush(lg);
}

static void app_child(void)
{
    phiaudit_event ev = canary_event("child-handler");
    child_rc = phiaudit_log_event(lg, &ev);
}

static void test_app_atfork_handlers(void **state)
{
    (void)state;
    char dir[] = "/tmp/phiaudit-atfork-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128];
    snprintf(uri, sizeof uri, "file:%s/audit.log", dir);
    const char *uris[] = {uri};
    phiaudit_config c;
    test_config_uri(&c, uris);
    assert_int_equal(pthread_atfork(app_prepare, NULL, app_child), 0); /* before the logger */
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    phiaudit_event ev = canary_event("parent");
    assert_int_equal(phiaudit_log_event(lg, &ev), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        phiaudit_event again = canary_event("child");
        int ok = child_rc == 0 && phiaudit_log_event(lg, &again) == 0 &&
                 phiaudit_logger_close(&lg) == 0;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(prepare_rc, PHIAUDIT_E_STATE); /* refused, not deadlocked */
    assert_int_equal(phiaudit_logger_close(&lg), 0);

    phiaudit_keyring *kr = keyring_with_test_key();
    const char *sources[] = {dir};
    phiaudit_reader *r = NULL;
    assert_int_equal(phiaudit_reader_open(&r, sources, 1, kr), 0);
    assert_int_equal(phiaudit_reader_run(r), 0);
    assert_int_equal(phiaudit_reader_verdict(r), PHIAUDIT_VERDICT_INTACT);
    assert_int_equal(phiaudit_reader_stream_count(r), 2);
    size_t total = 0;
    for (size_t i = 0; i < 2; i++) {
        phiaudit_stream_report rep;
        memset(&rep, 0, sizeof rep);
        assert_int_equal(phiaudit_reader_stream(r, i, &rep), 0);
        total += (size_t)rep.records;
    }
    /* parent: open, event, close; child: open, handler's event, event, close */
    assert_int_equal(total, 3 + 4);
    phiaudit_reader_free(&r);
    phiaudit_keyring_free(&kr);
    test_rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_app_atfork_handlers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
