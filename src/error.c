/* Error strings, version and limit twins. */
#include "internal.h"

const char *phiaudit_version(void)
{
    return "0.1.0";
}

const char *phiaudit_strerror(int rc)
{
    switch (rc) {
    case PHIAUDIT_OK: return "success";
    case PHIAUDIT_E_INVALID: return "invalid argument";
    case PHIAUDIT_E_NOMEM: return "out of memory";
    case PHIAUDIT_E_TOO_LONG: return "field too long";
    case PHIAUDIT_E_UTF8: return "invalid UTF-8";
    case PHIAUDIT_E_EMPTY: return "required identifier is empty";
    case PHIAUDIT_E_BAD_CHAR: return "control character or NUL not allowed";
    case PHIAUDIT_E_CRYPTO: return "cryptographic operation failed";
    case PHIAUDIT_E_IO: return "I/O error";
    case PHIAUDIT_E_SINK: return "sink failed; records not yet delivered";
    case PHIAUDIT_E_KEY: return "key missing or malformed";
    case PHIAUDIT_E_KEY_PERMS: return "key file is accessible by group or others (chmod 600)";
    case PHIAUDIT_E_CLOSED: return "logger closed";
    case PHIAUDIT_E_URI: return "malformed sink URI or unknown scheme";
    case PHIAUDIT_E_FORMAT: return "malformed record or not a phiaudit log";
    case PHIAUDIT_E_AUTH: return "authentication failed (record modified or wrong key)";
    case PHIAUDIT_E_VERSION: return "unsupported version";
    case PHIAUDIT_E_TRUNCATED: return "input ends inside a record (torn tail)";
    case PHIAUDIT_E_UNSUPPORTED: return "feature not compiled in";
    case PHIAUDIT_E_QUEUE_FULL: return "queue full";
    case PHIAUDIT_E_UNKNOWN_KEY: return "unknown key ID";
    case PHIAUDIT_E_STATE: return "call not valid in the current state";
    case PHIAUDIT_E_NOT_FOUND: return "not found";
    case PHIAUDIT_E_SINK_DOWN: return "sink failing; record not written";
    default: return "unknown error";
    }
}

size_t phiaudit_max_id_len(void) { return PHIAUDIT_MAX_ID_LEN; }
size_t phiaudit_max_code_len(void) { return PHIAUDIT_MAX_CODE_LEN; }
size_t phiaudit_max_detail_len(void) { return PHIAUDIT_MAX_DETAIL_LEN; }
size_t phiaudit_key_len(void) { return PHIAUDIT_KEY_LEN; }
size_t phiaudit_key_id_len(void) { return PHIAUDIT_KEY_ID_LEN; }
size_t phiaudit_header_len(void) { return PHIAUDIT_HEADER_LEN; }
size_t phiaudit_max_frame_len(void) { return PHIAUDIT_MAX_FRAME_LEN; }
