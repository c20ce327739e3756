/* Keys: key files, permission refusal, key sources of the logger. */
#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/phiaudit-keys-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void test_generate_and_load(void **state)
{
    (void)state;
    char p[128];
    path_in(p, sizeof p, "k1");
    uint8_t id[16], id2[16], key[32];
    assert_int_equal(phiaudit_key_generate_file(p, id), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(phiaudit_key_load_file(p, id2, key), 0);
    assert_memory_equal(id, id2, 16);
    /* never overwrites */
    assert_int_equal(phiaudit_key_generate_file(p, NULL), PHIAUDIT_E_IO);
    assert_int_equal(phiaudit_key_load_file(p, id2, key), 0);
    assert_memory_equal(id, id2, 16);
    /* two keys differ */
    char p2[128];
    path_in(p2, sizeof p2, "k2");
    uint8_t other[16];
    assert_int_equal(phiaudit_key_generate_file(p2, other), 0);
    assert_memory_not_equal(id, other, 16);
    assert_int_equal(phiaudit_key_generate_file(NULL, NULL), PHIAUDIT_E_INVALID);
}

static void test_permissions_refused(void **state)
{
    (void)state;
    char p[128];
    path_in(p, sizeof p, "k-perm");
    uint8_t id[16], key[32];
    assert_int_equal(phiaudit_key_generate_file(p, id), 0);
    mode_t bad[] = {0640, 0604, 0660, 0644, 0602, 0610};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(p, bad[i]), 0);
        memset(key, 0x55, sizeof key);
        assert_int_equal(phiaudit_key_load_file(p, id, key), PHIAUDIT_E_KEY_PERMS);
        for (size_t j = 0; j < 32; j++) /* nothing of the key leaks out on refusal */
            assert_true(key[j] == 0x55 || key[j] == 0);
    }
    assert_int_equal(chmod(p, 0400), 0);
    assert_int_equal(phiaudit_key_load_file(p, id, key), 0);
    assert_string_equal(phiaudit_strerror(PHIAUDIT_E_KEY_PERMS),
                        "key file is accessible by group or others (chmod 600)");

    /* the logger refuses it too, with the same code */
    assert_int_equal(chmod(p, 0644), 0);
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    test_config(&c, &mem);
    c.key = NULL;
    c.key_id = NULL;
    c.key_file = p;
    phiaudit_logger *lg = (phiaudit_logger *)&c; /* must be reset to NULL */
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_KEY_PERMS);
    assert_null(lg);
    assert_int_equal(phiaudit_sink_memory_count(mem), 0);
    phiaudit_sink_close(&mem);
}

static void test_symlink_and_missing(void **state)
{
    (void)state;
    char p[128], l[128];
    path_in(p, sizeof p, "k-real");
    path_in(l, sizeof l, "k-link");
    uint8_t id[16], key[32];
    assert_int_equal(phiaudit_key_generate_file(p, id), 0);
    assert_int_equal(symlink(p, l), 0);
    assert_int_equal(phiaudit_key_load_file(l, id, key), PHIAUDIT_E_IO);
    char m[128];
    path_in(m, sizeof m, "missing");
    assert_int_equal(phiaudit_key_load_file(m, id, key), PHIAUDIT_E_NOT_FOUND);
    assert_int_equal(phiaudit_key_load_file(dir, id, key), PHIAUDIT_E_IO);
    char fifo[128];
    path_in(fifo, sizeof fifo, "k-fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(phiaudit_key_load_file(fifo, id, key), PHIAUDIT_E_IO); /* no hang */
}

static void test_malformed(void **state)
{
    (void)state;
    const char *bodies[] = {
        "",
        "# only a comment\n",
        "PHIAUDIT-KEY-1 zz\n",
        "PHIAUDIT-KEY-1 000102030405060708090a0b0c0d0e0f 00\n",
        "PHIAUDIT-KEY-1 000102030405060708090a0b0c0d0e0f "
        "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0fff\n",
        "PHIAUDIT-KEY-1 000102030405060708090a0b0c0d0e0g "
        "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f\n",
    };
    char p[128];
    path_in(p, sizeof p, "k-bad");
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        unlink(p);
        FILE *f = fopen(p, "w");
        fputs(bodies[i], f);
        fclose(f);
        chmod(p, 0600);
        uint8_t id[16], key[32];
        assert_int_equal(phiaudit_key_load_file(p, id, key), PHIAUDIT_E_KEY);
    }
    unlink(p);
    FILE *f = fopen(p, "w");
    fputs("# hand-written\r\nPHIAUDIT-KEY-1 000102030405060708090A0B0C0D0E0F "
          "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f\r\n", f);
    fclose(f);
    chmod(p, 0600);
    uint8_t id[16], key[32];
    assert_int_equal(phiaudit_key_load_file(p, id, key), 0);
    assert_int_equal(id[15], 0x0f);
    assert_int_equal(key[31], 0x0f);
}

static int key_cb_calls;
static int key_cb(void *ctx, uint8_t id[16], uint8_t key[32])
{
    key_cb_calls++;
    if (ctx)
        return PHIAUDIT_E_KEY;
    memcpy(id, test_key_id, 16);
    memcpy(key, test_key, 32);
    return 0;
}

static void test_key_sources(void **state)
{
    (void)state;
    phiaudit_sink *mem = NULL;
    assert_int_equal(phiaudit_sink_memory_open(&mem), 0);
    phiaudit_config c;
    phiaudit_logger *lg = NULL;

    test_config(&c, &mem);
    c.key = NULL;
    c.key_id = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_KEY); /* none */
    test_config(&c, &mem);
    c.key_file = "/nonexistent";
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_KEY); /* two */
    test_config(&c, &mem);
    c.key_id = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_KEY); /* key without ID */

    test_config(&c, &mem);
    c.key = NULL;
    c.key_id = NULL;
    c.key_callback = key_cb;
    c.key_callback_ctx = (void *)1;
    assert_int_equal(phiaudit_logger_open(&lg, &c), PHIAUDIT_E_KEY);
    c.key_callback_ctx = NULL;
    assert_int_equal(phiaudit_logger_open(&lg, &c), 0);
    assert_int_equal(key_cb_calls, 2);
    assert_int_equal(phiaudit_log_event(lg, &(phiaudit_event){.version = 1, .action = 'R',
                                                              .clinician_id = "c",
                                                              .patient_id = CANARY_PATIENT}),
                     0);
    assert_int_equal(phiaudit_logger_close(&lg), 0);
    phiaudit_header h;
    char *pt = test_open_frame(mem, 1, &h); /* opens with the callback's key */
    assert_non_null(strstr(pt, CANARY_PATIENT));
    free(pt);
    phiaudit_sink_close(&mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_and_load), cmocka_unit_test(test_permissions_refused),
        cmocka_unit_test(test_symlink_and_missing), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_key_sources),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
