/* Record frames: key derivation, sealing, parsing, chain links, authenticated opening. */
#include "internal.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/sha.h>
#include <openssl/opensslv.h>
#include <openssl/err.h>
#include <openssl/crypto.h>

#include <string.h>

/* Header offsets (docs/FORMAT.md). */
enum {
    OFF_MAGIC = 0, OFF_VERSION = 4, OFF_SUITE = 5, OFF_TYPE = 6, OFF_FLAGS = 7, OFF_LEN = 8,
    OFF_KEY_ID = 12, OFF_STREAM_ID = 28, OFF_SEQ = 44, OFF_TIME = 52, OFF_EPOCH = 60,
    OFF_PREV = 64, OFF_BI_PATIENT = 96, OFF_BI_CLINICIAN = 104
};

static const char STREAM_INFO[] = "phiaudit/v1/stream-key";
static const char INDEX_INFO[] = "phiaudit/v1/blind-index";

static int hkdf(const uint8_t master[32], const uint8_t *salt, size_t salt_len,
                const char *label, const uint8_t key_id[16], uint8_t out[32])
{
    uint8_t info[64];
    size_t label_len = strlen(label);
    memcpy(info, label, label_len);
    memcpy(info + label_len, key_id, 16);

    int rc = PHIAUDIT_E_CRYPTO;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (kctx) {
        OSSL_PARAM params[5], *p = params;
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)master, 32);
        if (salt_len)
            *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, label_len + 16);
        *p = OSSL_PARAM_construct_end();
        if (EVP_KDF_derive(kctx, out, 32, params) == 1)
            rc = 0;
    }
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    if (rc)
        phiaudit_crypto_error(NULL, 0, "HKDF");
    return rc;
}

int phiaudit_hkdf_stream_key(const uint8_t master[32], const uint8_t key_id[16],
                             const uint8_t stream_id[16], uint8_t out[32])
{
    return hkdf(master, stream_id, 16, STREAM_INFO, key_id, out);
}

int phiaudit_hkdf_index_key(const uint8_t master[32], const uint8_t key_id[16], uint8_t out[32])
{
    return hkdf(master, NULL, 0, INDEX_INFO, key_id, out);
}

int phiaudit_blind_tag(const uint8_t index_key[32], int which, const char *id, size_t id_len,
                       uint8_t out[8])
{
    uint8_t msg[1 + PHIAUDIT_MAX_ID_LEN];
    uint8_t mac[32];
    size_t mac_len = 0;
    if (id_len > PHIAUDIT_MAX_ID_LEN)
        return PHIAUDIT_E_TOO_LONG;
    msg[0] = (uint8_t)which;
    memcpy(msg + 1, id, id_len);
    int ok = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, index_key, 32, msg, id_len + 1, mac,
                       sizeof mac, &mac_len) != NULL;
    phiaudit_wipe(msg, sizeof msg);
    if (!ok)
        return phiaudit_crypto_error(NULL, 0, "HMAC");
    memcpy(out, mac, 8);
    return 0;
}

static void make_iv(uint8_t iv[12], uint64_t seq)
{
    memset(iv, 0, 4);
    phiaudit_put_u64(iv + 4, seq);
}

/* ---- Sealing ------------------------------------------------------------------------------ */

struct phiaudit_sealer {
    EVP_CIPHER *cipher;
    EVP_CIPHER_CTX *ctx;
    uint8_t key_id[16];
    uint8_t stream_id[16];
};

int phiaudit_sealer_new(phiaudit_sealer **out)
{
    *out = NULL;
    phiaudit_sealer *s = phiaudit_calloc(1, sizeof *s);
    if (!s)
        return PHIAUDIT_E_NOMEM;
    s->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    s->ctx = EVP_CIPHER_CTX_new();
    if (!s->cipher || !s->ctx) {
        phiaudit_sealer_free(&s);
        return phiaudit_crypto_error(NULL, 0, "cipher setup");
    }
    *out = s;
    return 0;
}

void phiaudit_sealer_free(phiaudit_sealer **sp)
{
    phiaudit_sealer *s = sp ? *sp : NULL;
    if (!s)
        return;
    EVP_CIPHER_CTX_free(s->ctx); /* also cleanses the expanded key */
    EVP_CIPHER_free(s->cipher);
    phiaudit_free(s);
    *sp = NULL;
}

int phiaudit_sealer_start(phiaudit_sealer *s, const uint8_t master[32], const uint8_t key_id[16],
                          const uint8_t stream_id[16])
{
    uint8_t key[32];
    int rc = phiaudit_hkdf_stream_key(master, key_id, stream_id, key);
    if (rc == 0 && EVP_EncryptInit_ex(s->ctx, s->cipher, NULL, key, NULL) != 1)
        rc = phiaudit_crypto_error(NULL, 0, "AES-256-GCM key setup");
    phiaudit_wipe(key, sizeof key);
    if (rc == 0) {
        memcpy(s->key_id, key_id, 16);
        memcpy(s->stream_id, stream_id, 16);
    }
    return rc;
}

int phiaudit_chain_link(const uint8_t *frame, size_t frame_len, uint8_t link[32])
{
#if OPENSSL_VERSION_MAJOR < 4
    /* Computed for every record, by the writer under the logger's lock and by every
     * verifier. For these 128 bytes the EVP digest path costs three times the hashing
     * itself (provider dispatch), so this uses the direct SHA-256 functions, deprecated in
     * OpenSSL 3 but present; the EVP path below is for versions that drop them. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    SHA256_CTX c;
    int ok = SHA256_Init(&c) && SHA256_Update(&c, frame, PHIAUDIT_HEADER_LEN) &&
             SHA256_Update(&c, frame + frame_len - PHIAUDIT_TAG_LEN, PHIAUDIT_TAG_LEN) &&
             SHA256_Final(link, &c);
#pragma GCC diagnostic pop
    return ok ? 0 : phiaudit_crypto_error(NULL, 0, "SHA-256");
#else
    unsigned int n = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex2(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, frame, PHIAUDIT_HEADER_LEN) == 1 &&
             EVP_DigestUpdate(md, frame + frame_len - PHIAUDIT_TAG_LEN, PHIAUDIT_TAG_LEN) == 1 &&
             EVP_DigestFinal_ex(md, link, &n) == 1;
    EVP_MD_CTX_free(md);
    return ok ? 0 : phiaudit_crypto_error(NULL, 0, "SHA-256");
#endif
}

static void write_header(uint8_t *h, const phiaudit_seal_params *p, uint32_t frame_len,
                         const uint8_t key_id[16], const uint8_t stream_id[16])
{
    memcpy(h + OFF_MAGIC, PHIAUDIT_FRAME_MAGIC, 4);
    h[OFF_VERSION] = PHIAUDIT_FORMAT_VERSION;
    h[OFF_SUITE] = PHIAUDIT_SUITE_AES256GCM_HKDF_SHA256;
    h[OFF_TYPE] = p->type;
    h[OFF_FLAGS] = p->flags;
    phiaudit_put_u32(h + OFF_LEN, frame_len);
    memcpy(h + OFF_KEY_ID, key_id, 16);
    memcpy(h + OFF_STREAM_ID, stream_id, 16);
    phiaudit_put_u64(h + OFF_SEQ, p->seq);
    phiaudit_put_u64(h + OFF_TIME, (uint64_t)p->time_us);
    phiaudit_put_u32(h + OFF_EPOCH, 0);
    memcpy(h + OFF_PREV, p->prev_link, 32);
    if (p->bi_patient)
        memcpy(h + OFF_BI_PATIENT, p->bi_patient, 8);
    else
        memset(h + OFF_BI_PATIENT, 0, 8);
    if (p->bi_clinician)
        memcpy(h + OFF_BI_CLINICIAN, p->bi_clinician, 8);
    else
        memset(h + OFF_BI_CLINICIAN, 0, 8);
}

int phiaudit_seal(phiaudit_sealer *s, const phiaudit_seal_params *p, const uint8_t *pt, size_t n,
                  phiaudit_buf *out, uint8_t link_out[32], char *msg, size_t msg_cap)
{
    if (n > PHIAUDIT_MAX_FRAME_LEN - PHIAUDIT_MIN_FRAME_LEN)
        return PHIAUDIT_E_TOO_LONG;
    size_t total = PHIAUDIT_MIN_FRAME_LEN + n;
    int rc = phiaudit_buf_reserve(out, total);
    if (rc)
        return rc;
    uint8_t *h = out->data + out->len;
    write_header(h, p, (uint32_t)total, s->key_id, s->stream_id);

    uint8_t iv[12];
    make_iv(iv, p->seq);
    int len = 0, fin = 0;
    uint8_t *ct = h + PHIAUDIT_HEADER_LEN;
    /* get_params directly: the GCM_GET_TAG ctrl wrapper costs a third more per record. */
    OSSL_PARAM tag_param[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, ct + n, PHIAUDIT_TAG_LEN),
        OSSL_PARAM_END};
    if (EVP_EncryptInit_ex(s->ctx, NULL, NULL, NULL, iv) != 1 ||
        EVP_EncryptUpdate(s->ctx, NULL, &len, h, PHIAUDIT_HEADER_LEN) != 1 ||
        EVP_EncryptUpdate(s->ctx, ct, &len, pt, (int)n) != 1 ||
        EVP_EncryptFinal_ex(s->ctx, ct + len, &fin) != 1 ||
        EVP_CIPHER_CTX_get_params(s->ctx, tag_param) != 1)
        return phiaudit_crypto_error(msg, msg_cap, "AES-256-GCM seal");
    if (phiaudit_chain_link(h, total, link_out) != 0)
        return phiaudit_crypto_error(msg, msg_cap, "SHA-256 link");
    out->len += total;
    return 0;
}

/* ---- Parsing ------------------------------------------------------------------------------ */

int phiaudit_frame_parse(const uint8_t *buf, size_t len, phiaudit_header *hdr)
{
    if (!buf || !hdr)
        return PHIAUDIT_E_INVALID;
    memset(hdr, 0, sizeof *hdr);
    /* Check what we have of the fixed prefix before declaring truncation, so garbage is
     * reported as garbage even when short. */
    size_t have = len < 4 ? len : 4;
    if (memcmp(buf, PHIAUDIT_FRAME_MAGIC, have) != 0)
        return PHIAUDIT_E_FORMAT;
    if (len > OFF_VERSION && buf[OFF_VERSION] != PHIAUDIT_FORMAT_VERSION)
        return PHIAUDIT_E_VERSION;
    if (len > OFF_SUITE && buf[OFF_SUITE] != PHIAUDIT_SUITE_AES256GCM_HKDF_SHA256)
        return PHIAUDIT_E_VERSION;
    if (len > OFF_TYPE && (buf[OFF_TYPE] < PHIAUDIT_RECORD_OPEN || buf[OFF_TYPE] > PHIAUDIT_RECORD_CLOSE))
        return PHIAUDIT_E_FORMAT;
    if (len > OFF_FLAGS && (buf[OFF_FLAGS] & ~PHIAUDIT_HFLAG_BLIND_INDEX))
        return PHIAUDIT_E_FORMAT;
    if (len < OFF_LEN + 4)
        return PHIAUDIT_E_TRUNCATED;
    uint32_t frame_len = phiaudit_get_u32(buf + OFF_LEN);
    if (frame_len < PHIAUDIT_MIN_FRAME_LEN || frame_len > PHIAUDIT_MAX_FRAME_LEN)
        return PHIAUDIT_E_FORMAT;
    hdr->frame_len = frame_len;
    if (len < PHIAUDIT_HEADER_LEN) /* not enough for the rest of the header */
        return PHIAUDIT_E_TRUNCATED;
    hdr->version = buf[OFF_VERSION];
    hdr->suite = buf[OFF_SUITE];
    hdr->type = buf[OFF_TYPE];
    hdr->flags = buf[OFF_FLAGS];
    memcpy(hdr->key_id, buf + OFF_KEY_ID, 16);
    memcpy(hdr->stream_id, buf + OFF_STREAM_ID, 16);
    hdr->seq = phiaudit_get_u64(buf + OFF_SEQ);
    hdr->time_us = (int64_t)phiaudit_get_u64(buf + OFF_TIME);
    hdr->epoch = phiaudit_get_u32(buf + OFF_EPOCH);
    memcpy(hdr->prev_link, buf + OFF_PREV, 32);
    memcpy(hdr->bi_patient, buf + OFF_BI_PATIENT, 8);
    memcpy(hdr->bi_clinician, buf + OFF_BI_CLINICIAN, 8);
    if (len < frame_len)
        return PHIAUDIT_E_TRUNCATED;
    return 0;
}

int phiaudit_frame_link(const uint8_t *frame, size_t frame_len, uint8_t link[32])
{
    if (!frame || !link || frame_len < PHIAUDIT_MIN_FRAME_LEN)
        return PHIAUDIT_E_INVALID;
    return phiaudit_chain_link(frame, frame_len, link);
}

/* ---- Keyring and opening ------------------------------------------------------------------- */

typedef struct keyring_entry {
    uint8_t key_id[16];
    uint8_t key[32];
} keyring_entry;

/* Streams of several processes often interleave in one file (a pre-forking server), so the
 * keyring keeps the cipher contexts of the last few streams: deriving a stream key costs an
 * HKDF, switching contexts costs nothing. */
#define STREAM_CACHE 8

typedef struct stream_ctx {
    EVP_CIPHER_CTX *ctx;
    uint8_t key_id[16];
    uint8_t stream_id[16];
    uint64_t last_use;
    int valid;
} stream_ctx;

struct phiaudit_keyring {
    keyring_entry *keys;
    size_t count, cap;
    EVP_CIPHER *cipher;
    stream_ctx cache[STREAM_CACHE];
    uint64_t clock;
};

int phiaudit_keyring_new(phiaudit_keyring **out)
{
    if (!out)
        return PHIAUDIT_E_INVALID;
    *out = NULL;
    phiaudit_keyring *kr = phiaudit_calloc(1, sizeof *kr);
    if (!kr)
        return PHIAUDIT_E_NOMEM;
    *out = kr;
    return 0;
}

void phiaudit_keyring_free(phiaudit_keyring **krp)
{
    phiaudit_keyring *kr = krp ? *krp : NULL;
    if (!kr)
        return;
    phiaudit_wipe(kr->keys, kr->cap * sizeof *kr->keys);
    phiaudit_free(kr->keys);
    for (size_t i = 0; i < STREAM_CACHE; i++)
        EVP_CIPHER_CTX_free(kr->cache[i].ctx); /* cleanses the expanded keys */
    EVP_CIPHER_free(kr->cipher);
    phiaudit_free(kr);
    *krp = NULL;
}

static const keyring_entry *find_key(const phiaudit_keyring *kr, const uint8_t key_id[16])
{
    for (size_t i = 0; i < kr->count; i++)
        if (memcmp(kr->keys[i].key_id, key_id, 16) == 0)
            return &kr->keys[i];
    return NULL;
}

int phiaudit_keyring_add(phiaudit_keyring *kr, const uint8_t key_id[16], const uint8_t key[32])
{
    if (!kr || !key_id || !key)
        return PHIAUDIT_E_INVALID;
    const keyring_entry *e = find_key(kr, key_id);
    if (e)
        return CRYPTO_memcmp(e->key, key, 32) == 0 ? 0 : PHIAUDIT_E_KEY;
    if (kr->count == kr->cap) {
        size_t cap = kr->cap ? kr->cap * 2 : 4;
        keyring_entry *n = phiaudit_calloc(cap, sizeof *n);
        if (!n)
            return PHIAUDIT_E_NOMEM;
        if (kr->keys) {
            memcpy(n, kr->keys, kr->count * sizeof *n);
            phiaudit_wipe(kr->keys, kr->cap * sizeof *n);
            phiaudit_free(kr->keys);
        }
        kr->keys = n;
        kr->cap = cap;
    }
    memcpy(kr->keys[kr->count].key_id, key_id, 16);
    memcpy(kr->keys[kr->count].key, key, 32);
    kr->count++;
    return 0;
}

int phiaudit_keyring_add_file(phiaudit_keyring *kr, const char *path)
{
    uint8_t id[16], key[32];
    if (!kr || !path)
        return PHIAUDIT_E_INVALID;
    int rc = phiaudit_key_load_file(path, id, key);
    if (rc == 0)
        rc = phiaudit_keyring_add(kr, id, key);
    phiaudit_wipe(key, sizeof key);
    return rc;
}

size_t phiaudit_keyring_count(const phiaudit_keyring *kr)
{
    return kr ? kr->count : 0;
}

int phiaudit_keyring_has(const phiaudit_keyring *kr, const uint8_t key_id[16])
{
    return kr && key_id && find_key(kr, key_id) != NULL;
}

/* The cipher context holding this stream's key, deriving it into the least recently used
 * slot if needed. NULL with *rc set on failure. */
static EVP_CIPHER_CTX *keyring_select(phiaudit_keyring *kr, const phiaudit_header *h, int *rc)
{
    stream_ctx *slot = &kr->cache[0];
    for (size_t i = 0; i < STREAM_CACHE; i++) {
        stream_ctx *c = &kr->cache[i];
        if (c->valid && memcmp(c->stream_id, h->stream_id, 16) == 0 &&
            memcmp(c->key_id, h->key_id, 16) == 0) {
            c->last_use = ++kr->clock;
            return c->ctx;
        }
        if (!c->valid || c->last_use < slot->last_use)
            slot = c;
    }
    const keyring_entry *e = find_key(kr, h->key_id);
    if (!e) {
        *rc = PHIAUDIT_E_UNKNOWN_KEY;
        return NULL;
    }
    if (!kr->cipher)
        kr->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (!slot->ctx)
        slot->ctx = EVP_CIPHER_CTX_new();
    if (!kr->cipher || !slot->ctx) {
        *rc = phiaudit_crypto_error(NULL, 0, "cipher setup");
        return NULL;
    }
    uint8_t key[32];
    slot->valid = 0;
    *rc = phiaudit_hkdf_stream_key(e->key, h->key_id, h->stream_id, key);
    if (*rc == 0 && EVP_DecryptInit_ex(slot->ctx, kr->cipher, NULL, key, NULL) != 1)
        *rc = phiaudit_crypto_error(NULL, 0, "AES-256-GCM key setup");
    phiaudit_wipe(key, sizeof key);
    if (*rc)
        return NULL;
    memcpy(slot->key_id, h->key_id, 16);
    memcpy(slot->stream_id, h->stream_id, 16);
    slot->valid = 1;
    slot->last_use = ++kr->clock;
    return slot->ctx;
}

int phiaudit_frame_open(phiaudit_keyring *kr, const uint8_t *frame, size_t frame_len,
                        uint8_t *out, size_t cap, size_t *out_len)
{
    if (!kr || !frame || !out_len || (!out && cap))
        return PHIAUDIT_E_INVALID;
    if (out)
        memset(out, 0, cap);
    phiaudit_header h;
    int rc = phiaudit_frame_parse(frame, frame_len, &h);
    return rc ? rc : phiaudit_frame_open_parsed(kr, frame, &h, out, cap, out_len);
}

int phiaudit_frame_open_parsed(phiaudit_keyring *kr, const uint8_t *frame,
                               const phiaudit_header *hp, uint8_t *out, size_t cap,
                               size_t *out_len)
{
    const phiaudit_header h = *hp;
    int rc = 0;
    size_t n = h.frame_len - PHIAUDIT_MIN_FRAME_LEN;
    *out_len = n;
    if (cap < n)
        return PHIAUDIT_E_TOO_LONG;
    EVP_CIPHER_CTX *ctx = keyring_select(kr, &h, &rc);
    if (!ctx)
        return rc;
    uint8_t iv[12];
    make_iv(iv, h.seq);
    int len = 0, fin = 0;
    const uint8_t *ct = frame + PHIAUDIT_HEADER_LEN;
    OSSL_PARAM tag_param[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, (void *)(ct + n),
                                          PHIAUDIT_TAG_LEN),
        OSSL_PARAM_END};
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &len, frame, PHIAUDIT_HEADER_LEN) != 1 ||
        EVP_DecryptUpdate(ctx, out, &len, ct, (int)n) != 1 ||
        EVP_CIPHER_CTX_set_params(ctx, tag_param) != 1) {
        phiaudit_wipe(out, cap);
        return phiaudit_crypto_error(NULL, 0, "AES-256-GCM open");
    }
    if (EVP_DecryptFinal_ex(ctx, out + len, &fin) != 1) {
        /* Never release plaintext of a record that failed authentication. */
        phiaudit_wipe(out, cap);
        ERR_clear_error();
        return PHIAUDIT_E_AUTH;
    }
    return 0;
}

int phiaudit_blind_index(phiaudit_keyring *kr, const uint8_t key_id[16], int which,
                         const char *id, uint8_t tag[8])
{
    if (!kr || !key_id || !id || !tag || (which != 'P' && which != 'C'))
        return PHIAUDIT_E_INVALID;
    const keyring_entry *e = find_key(kr, key_id);
    if (!e)
        return PHIAUDIT_E_UNKNOWN_KEY;
    size_t len;
    int rc = phiaudit_validate_id(id, PHIAUDIT_MAX_ID_LEN, &len);
    if (rc)
        return rc;
    uint8_t ikey[32];
    rc = phiaudit_hkdf_index_key(e->key, key_id, ikey);
    if (rc == 0)
        rc = phiaudit_blind_tag(ikey, which, id, len, tag);
    phiaudit_wipe(ikey, sizeof ikey);
    return rc;
}
