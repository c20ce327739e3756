/* Record module: GCM known answers, golden frame, parse/open/tamper, keyring, blind index. */
#include "testutil.h"
#include "internal.h"

#include <openssl/evp.h>

static void unhex(const char *h, uint8_t *out, size_t n)
{
    assert_int_equal(strlen(h), 2 * n);
    assert_int_equal(phiaudit_unhex(h, n, out), 0);
}

/* NIST SP 800-38D / McGrew-Viega GCM test cases 13, 14, 16 (AES-256, 96-bit IV), run
 * through the same EVP calls and context-reuse pattern the sealer uses. */
static void test_gcm_kat(void **state)
{
    (void)state;
    struct {
        const char *k, *iv, *p, *a, *c, *t;
    } v[] = {
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "00000000000000000000000000000000", "",
         "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
        {"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
         "cafebabefacedbaddecaf888",
         "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
         "feedfacedeadbeeffeedfacedeadbeefabaddad2",
         "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
         "76fc6ece0f4e1768cddf8853bb2d551b"},
    };
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t k[32], iv[12], p[64], a[32], c[64], t[16], out[64], tag[16];
        size_t pn = strlen(v[i].p) / 2, an = strlen(v[i].a) / 2;
        unhex(v[i].k, k, 32);
        unhex(v[i].iv, iv, 12);
        unhex(v[i].p, p, pn);
        unhex(v[i].a, a, an);
        unhex(v[i].c, c, pn);
        unhex(v[i].t, t, 16);
        int len = 0, fin = 0;
        assert_int_equal(EVP_EncryptInit_ex(ctx, cipher, NULL, k, NULL), 1);
        /* twice with the same key and only the IV re-set, as the sealer does */
        for (int round = 0; round < 2; round++) {
            assert_int_equal(EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv), 1);
            if (an)
                assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &len, a, (int)an), 1);
            assert_int_equal(EVP_EncryptUpdate(ctx, out, &len, p, (int)pn), 1);
            assert_int_equal(EVP_EncryptFinal_ex(ctx, out + len, &fin), 1);
            assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag), 1);
            assert_memory_equal(out, c, pn);
            assert_memory_equal(tag, t, 16);
        }
    }
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
}

/* Golden frame computed independently (Python `cryptography`, following docs/FORMAT.md). */
static const char GOLDEN_FRAME[] =
    "504841310101020000000095404142434445464748494a4b4c4d4e4fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
    "0000000000000007000644fc3ca47a40000000001111111111111111111111111111111111111111111111111111"
    "11111111111100000000000000000000000000000000247c58f3a7f6db4cb553f7ce7bb08d21273ee4bce57064"
    "ae79897861c2e5be33eda6c22580";
static const char GOLDEN_LINK[] = "554e9169729087e71e190935e50d8b93c521c414a6b4355da7d0195b5754884d";
static const char GOLDEN_PT[] = "{\"v\":1,\"golden\":true}";

static void golden_inputs(uint8_t master[32], uint8_t kid[16], uint8_t sid[16])
{
    for (int i = 0; i < 32; i++)
        master[i] = (uint8_t)i;
    for (int i = 0; i < 16; i++) {
        kid[i] = (uint8_t)(0x40 + i);
        sid[i] = (uint8_t)(0xa0 + i);
    }
}

static void test_golden_frame(void **state)
{
    (void)state;
    uint8_t master[32], kid[16], sid[16], prev[32], link[32], want_link[32];
    uint8_t want[sizeof GOLDEN_FRAME / 2];
    golden_inputs(master, kid, sid);
    memset(prev, 0x11, 32);
    unhex(GOLDEN_FRAME, want, sizeof want);
    unhex(GOLDEN_LINK, want_link, 32);

    phiaudit_sealer *s = NULL;
    assert_int_equal(phiaudit_sealer_new(&s), 0);
    assert_int_equal(phiaudit_sealer_start(s, master, kid, sid), 0);
    phiaudit_seal_params p = {.type = PHIAUDIT_RECORD_DATA, .seq = 7, .time_us = 1764700000123456,
                              .prev_link = prev};
    phiaudit_buf out = {0};
    assert_int_equal(phiaudit_seal(s, &p, (const uint8_t *)GOLDEN_PT, strlen(GOLDEN_PT), &out,
                                   link, NULL, 0), 0);
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    assert_memory_equal(link, want_link, 32);
    uint8_t link2[32];
    assert_int_equal(phiaudit_frame_link(out.data, out.len, link2), 0);
    assert_memory_equal(link2, want_link, 32);

    /* and it opens back */
    phiaudit_keyring *kr = NULL;
    assert_int_equal(phiaudit_keyring_new(&kr), 0);
    assert_int_equal(phiaudit_keyring_add(kr, kid, master), 0);
    uint8_t pt[64];
    size_t n = 0;
    assert_int_equal(phiaudit_frame_open(kr, want, sizeof want, pt, sizeof pt, &n), 0);
    assert_int_equal(n, strlen(GOLDEN_PT));
    assert_memory_equal(pt, GOLDEN_PT, n);

    /* blind index of the canary, also computed independently */
    uint8_t tag[8], want_tag[8];
    unhex("fc707abc546a5bcd", want_tag, 8);
    assert_int_equal(phiaudit_blind_index(kr, kid, 'P', CANARY_PATIENT, tag), 0);
    assert_memory_equal(tag, want_tag, 8);
    assert_int_equal(phiaudit_blind_index(kr, kid, 'X', CANARY_PATIENT, tag), PHIAUDIT_E_INVALID);
    assert_int_equal(phiaudit_blind_index(kr, sid, 'P', CANARY_PATIENT, tag), PHIAUDIT_E_UNKNOWN_KEY);

    phiaudit_keyring_free(&kr);
    assert_null(kr);
    phiaudit_buf_free(&out);
    phiaudit_sealer_free(&s);
    assert_null(s);
}

/* Any single flipped bit anywhere in the frame is caught by parse or by the tag, and no
 * plaintext is released. */
static void test_every_bit_flip_detected(void **state)
{
    (void)state;
    uint8_t master[32], kid[16], sid[16];
    uint8_t frame[sizeof GOLDEN_FRAME / 2];
    golden_inputs(master, kid, sid);
    unhex(GOLDEN_FRAME, frame, sizeof frame);
    phiaudit_keyring *kr = NULL;
    assert_int_equal(phiaudit_keyring_new(&kr), 0);
    assert_int_equal(phiaudit_keyring_add(kr, kid, master), 0);
    for (size_t bit = 0; bit < sizeof frame * 8; bit++) {
        frame[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        uint8_t pt[64];
        memset(pt, 0xee, sizeof pt);
        size_t n = 0;
        int rc = phiaudit_frame_open(kr, frame, sizeof frame, pt, sizeof pt, &n);
        assert_int_not_equal(rc, 0);
        for (size_t i = 0; i < sizeof pt; i++)
            assert_int_equal(pt[i], 0);
        frame[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    phiaudit_keyring_free(&kr);
}

static void test_parse_errors(void **state)
{
    (void)state;
    uint8_t frame[sizeof GOLDEN_FRAME / 2];
    unhex(GOLDEN_FRAME, frame, sizeof frame);
    phiaudit_header h;
    assert_int_equal(phiaudit_frame_parse(frame, sizeof frame, &h), 0);
    assert_int_equal(h.seq, 7);
    assert_int_equal(h.type, PHIAUDIT_RECORD_DATA);
    assert_int_equal(h.frame_len, sizeof frame);
    assert_int_equal(h.time_us, 1764700000123456);
    /* every truncation is reported as truncation, never as success */
    for (size_t n = 0; n < sizeof frame; n++)
        assert_int_equal(phiaudit_frame_parse(frame, n, &h), PHIAUDIT_E_TRUNCATED);
    assert_int_equal(phiaudit_frame_parse(NULL, 10, &h), PHIAUDIT_E_INVALID);
    uint8_t bad[sizeof frame];
    memcpy(bad, frame, sizeof frame);
    bad[0] = 'X';
    assert_int_equal(phiaudit_frame_parse(bad, sizeof bad, &h), PHIAUDIT_E_FORMAT);
    assert_int_equal(phiaudit_frame_parse(bad, 2, &h), PHIAUDIT_E_FORMAT);
    memcpy(bad, frame, sizeof frame);
    bad[4] = 2;
    assert_int_equal(phiaudit_frame_parse(bad, sizeof bad, &h), PHIAUDIT_E_VERSION);
    memcpy(bad, frame, sizeof frame);
    bad[6] = 9;
    assert_int_equal(phiaudit_frame_parse(bad, sizeof bad, &h), PHIAUDIT_E_FORMAT);
    memcpy(bad, frame, sizeof frame);
    bad[7] = 0x80;
    assert_int_equal(phiaudit_frame_parse(bad, sizeof bad, &h), PHIAUDIT_E_FORMAT);
    memcpy(bad, frame, sizeof frame);
    phiaudit_put_u32(bad + 8, 127);
    assert_int_equal(phiaudit_frame_parse(bad, sizeof bad, &h), PHIAUDIT_E_FORMAT);
    phiaudit_put_u32(bad + 8, PHIAUDIT_MAX_FRAME_LEN + 1);
    assert_int_equal(phiaudit_frame_parse(bad, sizeof bad, &h), PHIAUDIT_E_FORMAT);
}

static void test_keyring(void **state)
{
    (void)state;
    uint8_t master[32], kid[16], sid[16], other[32];
    golden_inputs(master, kid, sid);
    memset(other, 9, 32);
    phiaudit_keyring *kr = NULL;
    assert_int_equal(phiaudit_keyring_new(&kr), 0);
    assert_int_equal(phiaudit_keyring_add(kr, kid, master), 0);
    assert_int_equal(phiaudit_keyring_add(kr, kid, master), 0); /* same: no-op */
    assert_int_equal(phiaudit_keyring_add(kr, kid, other), PHIAUDIT_E_KEY);
    assert_int_equal(phiaudit_keyring_count(kr), 1);
    assert_true(phiaudit_keyring_has(kr, kid));
    assert_false(phiaudit_keyring_has(kr, sid));
    for (int i = 0; i < 20; i++) { /* growth */
        uint8_t id[16] = {0};
        id[0] = (uint8_t)i;
        assert_int_equal(phiaudit_keyring_add(kr, id, other), 0);
    }
    assert_int_equal(phiaudit_keyring_count(kr), 21);

    uint8_t frame[sizeof GOLDEN_FRAME / 2], pt[64];
    size_t n;
    unhex(GOLDEN_FRAME, frame, sizeof frame);
    assert_int_equal(phiaudit_frame_open(kr, frame, sizeof frame, pt, 4, &n), PHIAUDIT_E_TOO_LONG);
    assert_int_equal(n, strlen(GOLDEN_PT));
    phiaudit_keyring *wrong = NULL;
    assert_int_equal(phiaudit_keyring_new(&wrong), 0);
    assert_int_equal(phiaudit_frame_open(wrong, frame, sizeof frame, pt, sizeof pt, &n),
                     PHIAUDIT_E_UNKNOWN_KEY);
    assert_int_equal(phiaudit_keyring_add(wrong, kid, other), 0); /* right ID, wrong key */
    assert_int_equal(phiaudit_frame_open(wrong, frame, sizeof frame, pt, sizeof pt, &n),
                     PHIAUDIT_E_AUTH);
    phiaudit_keyring_free(&wrong);
    phiaudit_keyring_free(&kr);
    phiaudit_keyring_free(NULL);
}

static void test_seal_too_long(void **state)
{
    (void)state;
    uint8_t master[32], kid[16], sid[16], link[32], prev[32] = {0};
    golden_inputs(master, kid, sid);
    phiaudit_sealer *s = NULL;
    assert_int_equal(phiaudit_sealer_new(&s), 0);
    assert_int_equal(phiaudit_sealer_start(s, master, kid, sid), 0);
    size_t n = PHIAUDIT_MAX_FRAME_LEN - PHIAUDIT_MIN_FRAME_LEN + 1;
    uint8_t *big = calloc(1, n);
    phiaudit_seal_params p = {.type = PHIAUDIT_RECORD_DATA, .prev_link = prev};
    phiaudit_buf out = {0};
    assert_int_equal(phiaudit_seal(s, &p, big, n, &out, link, NULL, 0), PHIAUDIT_E_TOO_LONG);
    assert_int_equal(phiaudit_seal(s, &p, big, n - 1, &out, link, NULL, 0), 0);
    assert_int_equal(out.len, PHIAUDIT_MAX_FRAME_LEN);
    free(big);
    phiaudit_buf_free(&out);
    phiaudit_sealer_free(&s);
}

/* Streams interleaved in one input (several processes, one file): more streams than the
 * keyring's context cache, opened round-robin, all authenticate. */
static void test_interleaved_streams(void **state)
{
    (void)state;
    enum { STREAMS = 11, PER = 5 };
    uint8_t master[32], kid[16], sid[16], prev[32] = {0}, link[32];
    golden_inputs(master, kid, sid);
    phiaudit_buf frames[STREAMS];
    memset(frames, 0, sizeof frames);
    for (int st = 0; st < STREAMS; st++) {
        phiaudit_sealer *s = NULL;
        sid[0] = (uint8_t)st;
        assert_int_equal(phiaudit_sealer_new(&s), 0);
        assert_int_equal(phiaudit_sealer_start(s, master, kid, sid), 0);
        for (int i = 0; i < PER; i++) {
            char pt[32];
            int n = snprintf(pt, sizeof pt, "{\"s\":%d,\"i\":%d}", st, i);
            phiaudit_seal_params p = {.type = PHIAUDIT_RECORD_DATA, .seq = (uint64_t)i,
                                      .prev_link = prev};
            assert_int_equal(phiaudit_seal(s, &p, (const uint8_t *)pt, (size_t)n, &frames[st],
                                           link, NULL, 0), 0);
        }
        phiaudit_sealer_free(&s);
    }
    phiaudit_keyring *kr = NULL;
    assert_int_equal(phiaudit_keyring_new(&kr), 0);
    assert_int_equal(phiaudit_keyring_add(kr, kid, master), 0);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < PER; i++) {
            for (int st = 0; st < STREAMS; st++) {
                const uint8_t *f = frames[st].data + (frames[st].len / PER) * (size_t)i;
                phiaudit_header h;
                assert_int_equal(phiaudit_frame_parse(f, frames[st].len / PER, &h), 0);
                char pt[64], want[32];
                size_t n = 0;
                assert_int_equal(phiaudit_frame_open(kr, f, h.frame_len, (uint8_t *)pt,
                                                     sizeof pt, &n), 0);
                int wn = snprintf(want, sizeof want, "{\"s\":%d,\"i\":%d}", st, i);
                assert_int_equal(n, (size_t)wn);
                assert_memory_equal(pt, want, n);
            }
        }
    }
    phiaudit_keyring_free(&kr);
    for (int st = 0; st < STREAMS; st++)
        phiaudit_buf_free(&frames[st]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcm_kat),       cmocka_unit_test(test_golden_frame),
        cmocka_unit_test(test_every_bit_flip_detected),
        cmocka_unit_test(test_parse_errors),  cmocka_unit_test(test_keyring),
        cmocka_unit_test(test_seal_too_long),  cmocka_unit_test(test_interleaved_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
