/* Payload module: validation rules, JSON escaping, limits, formats. */
#include "testutil.h"
#include "internal.h"

static char *json_of(const char *s, size_t n)
{
    phiaudit_buf b = {0};
    assert_int_equal(phiaudit_json_string(&b, s, n), 0);
    char *out = malloc(b.len + 1);
    memcpy(out, b.data, b.len);
    out[b.len] = 0;
    phiaudit_buf_free(&b);
    return out;
}

static void test_escaping(void **state)
{
    (void)state;
    struct { const char *in; size_t n; const char *want; } cases[] = {
        {"plain", 5, "\"plain\""},
        {"q\"b\\", 4, "\"q\\\"b\\\\\""},
        {"a\nb\rc\td", 7, "\"a\\nb\\rc\\td\""},
        {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\""},
        {"\b\f", 2, "\"\\b\\f\""},
        {"x\xe2\x80\xa8y\xe2\x80\xa9", 8, "\"x\\u2028y\\u2029\""},
        {"\xe2\x82\xac", 3, "\"\xe2\x82\xac\""}, /* EURO SIGN passes through */
        {"%n%s", 4, "\"%n%s\""},
        {"a\0b", 3, "\"a\\u0000b\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = json_of(cases[i].in, cases[i].n);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
}

static void test_id_rules(void **state)
{
    (void)state;
    size_t n;
    assert_int_equal(phiaudit_validate_id(NULL, 256, &n), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_validate_id("", 256, &n), PHIAUDIT_E_EMPTY);
    assert_int_equal(phiaudit_validate_id("dr-1", 256, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(phiaudit_validate_id("a\nb", 256, &n), PHIAUDIT_E_BAD_CHAR);
    assert_int_equal(phiaudit_validate_id("a\rb", 256, &n), PHIAUDIT_E_BAD_CHAR);
    assert_int_equal(phiaudit_validate_id("a\x7f", 256, &n), PHIAUDIT_E_BAD_CHAR);
    assert_int_equal(phiaudit_validate_id("a\xc2\x85", 256, &n), PHIAUDIT_E_BAD_CHAR); /* NEL */
    assert_int_equal(phiaudit_validate_id("a\xe2\x80\xa8", 256, &n), PHIAUDIT_E_BAD_CHAR);
    assert_int_equal(phiaudit_validate_id("\xff", 256, &n), PHIAUDIT_E_UTF8);
    assert_int_equal(phiaudit_validate_id("\xc0\xaf", 256, &n), PHIAUDIT_E_UTF8);     /* overlong */
    assert_int_equal(phiaudit_validate_id("\xed\xa0\x80", 256, &n), PHIAUDIT_E_UTF8); /* surrogate */
    assert_int_equal(phiaudit_validate_id("\xf4\x90\x80\x80", 256, &n), PHIAUDIT_E_UTF8);
    assert_int_equal(phiaudit_validate_id("\xe2\x82", 256, &n), PHIAUDIT_E_UTF8); /* truncated */
    assert_int_equal(phiaudit_validate_id("Müller-Łukasz-患者", 256, &n), 0);
    assert_int_equal(phiaudit_validate_id("%n%s\"'\\", 256, &n), 0);

    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[299] = 0;
    assert_int_equal(phiaudit_validate_id(big, 256, &n), PHIAUDIT_E_TOO_LONG);
    big[256] = 0;
    assert_int_equal(phiaudit_validate_id(big, 256, &n), 0);
    big[257 - 1] = 0;
}

static void test_text_rules(void **state)
{
    (void)state;
    size_t n;
    assert_int_equal(phiaudit_validate_text("", 4096, &n), 0);
    assert_int_equal(phiaudit_validate_text("line\nbreak\ttab", 4096, &n), 0);
    assert_int_equal(phiaudit_validate_text("\xff", 4096, &n), PHIAUDIT_E_UTF8);
    size_t mib = 1u << 20;
    char *huge = malloc(mib + 1);
    memset(huge, 'x', mib);
    huge[mib] = 0;
    assert_int_equal(phiaudit_validate_text(huge, 4096, &n), PHIAUDIT_E_TOO_LONG);
    assert_int_equal(phiaudit_validate_id(huge, 256, &n), PHIAUDIT_E_TOO_LONG);
    free(huge);
}

static phiaudit_payload_fields sample(void)
{
    phiaudit_payload_fields f;
    memset(&f, 0, sizeof f);
    f.clinician = "dr-7"; f.clinician_len = 4;
    f.patient = CANARY_PATIENT; f.patient_len = strlen(CANARY_PATIENT);
    f.app = "app"; f.app_len = 3;
    f.host = "h"; f.host_len = 1;
    f.pid = 42;
    f.action = 'R';
    f.outcome = 4;
    f.recorded_us = 1764700000123456; /* 2025-12-02T18:26:40.123456Z */
    f.start_us = 1764700000000000;
    f.duration_us = 123400;
    return f;
}

static void test_json_payload(void **state)
{
    (void)state;
    phiaudit_payload_fields f = sample();
    f.detail = "say \"hi\"\n"; f.detail_len = strlen(f.detail);
    f.break_glass = 1;
    f.purpose = "TREAT"; f.purpose_len = 5;
    phiaudit_buf b = {0};
    size_t id_off;
    assert_int_equal(phiaudit_payload_format(&b, PHIAUDIT_FORMAT_JSON, &f, &id_off), 0);
    phiaudit_payload_patch_id(b.data + id_off, "abababababababababababababababab", 12345);
    assert_int_equal(phiaudit_buf_append(&b, "", 1), 0);
    const char *want =
        "{\"v\":1,\"id\":\"abababababababababababababababab-00000000000000012345\","
        "\"recorded\":\"2025-12-02T18:26:40.123456Z\",\"start\":\"2025-12-02T18:26:40.000000Z\","
        "\"end\":\"2025-12-02T18:26:40.123400Z\",\"duration_us\":123400,\"action\":\"R\","
        "\"outcome\":4,\"clinician\":\"dr-7\",\"patient\":\"" CANARY_PATIENT "\","
        "\"purpose\":\"TREAT\",\"break_glass\":true,\"detail\":\"say \\\"hi\\\"\\n\","
        "\"app\":\"app\",\"host\":\"h\",\"pid\":42}";
    assert_string_equal((char *)b.data, want);
    phiaudit_buf_free(&b);
}

static void test_text_payload(void **state)
{
    (void)state;
    phiaudit_payload_fields f = sample();
    phiaudit_buf b = {0};
    size_t id_off;
    assert_int_equal(phiaudit_payload_format(&b, PHIAUDIT_FORMAT_TEXT, &f, &id_off), 0);
    assert_int_equal(id_off, SIZE_MAX);
    assert_int_equal(phiaudit_buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data,
                        "Clinician dr-7 processed action R on Patient " CANARY_PATIENT " in 0.1234s");
    phiaudit_buf_free(&b);
}

static void test_time_format(void **state)
{
    (void)state;
    char t[28];
    phiaudit_format_time_us(0, t);
    assert_string_equal(t, "1970-01-01T00:00:00.000000Z");
    phiaudit_format_time_us(951782400000001, t); /* leap day 2000 */
    assert_string_equal(t, "2000-02-29T00:00:00.000001Z");
    phiaudit_format_time_us(4102444799999999, t);
    assert_string_equal(t, "2099-12-31T23:59:59.999999Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escaping),     cmocka_unit_test(test_id_rules),
        cmocka_unit_test(test_text_rules),   cmocka_unit_test(test_json_payload),
        cmocka_unit_test(test_text_payload), cmocka_unit_test(test_time_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
