/* Key files: generation and loading with ssh-style permission checks. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One line: "PHIAUDIT-KEY-1 <32 hex key ID> <64 hex key>\n", after comment lines. */
static const char KEY_TAG[] = "PHIAUDIT-KEY-1 ";
static const char KEY_COMMENT[] =
    "# phiaudit key file. SECRET: anyone holding it can read and forge audit records.\n"
    "# Keep mode 0600, back it up securely: records stay readable only while it exists.\n";

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return PHIAUDIT_E_IO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int phiaudit_key_generate_file(const char *path, uint8_t key_id_out[16])
{
    if (!path || !*path)
        return PHIAUDIT_E_INVALID;
    uint8_t id[16], key[32];
    char line[sizeof KEY_TAG + 32 + 1 + 64 + 2];
    int rc = phiaudit_random(id, sizeof id);
    if (rc == 0)
        rc = phiaudit_random(key, sizeof key);
    if (rc)
        return rc;
    size_t n = sizeof KEY_TAG - 1;
    memcpy(line, KEY_TAG, n);
    phiaudit_hex(id, 16, line + n);
    n += 32;
    line[n++] = ' ';
    phiaudit_hex(key, 32, line + n);
    n += 64;
    line[n++] = '\n';

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = PHIAUDIT_E_IO;
    } else {
        rc = fchmod(fd, 0600) == 0 ? 0 : PHIAUDIT_E_IO;
        if (rc == 0)
            rc = write_all(fd, KEY_COMMENT, sizeof KEY_COMMENT - 1);
        if (rc == 0)
            rc = write_all(fd, line, n);
        if (rc == 0 && fsync(fd) != 0)
            rc = PHIAUDIT_E_IO;
        if (close(fd) != 0 && rc == 0)
            rc = PHIAUDIT_E_IO;
        if (rc)
            unlink(path); /* we created it exclusively: remove the partial file */
    }
    if (rc == 0 && key_id_out)
        memcpy(key_id_out, id, 16);
    phiaudit_wipe(key, sizeof key);
    phiaudit_wipe(line, sizeof line);
    return rc;
}

int phiaudit_key_load_file(const char *path, uint8_t key_id_out[16], uint8_t key_out[32])
{
    if (!path || !key_id_out || !key_out)
        return PHIAUDIT_E_INVALID;
    /* O_NONBLOCK: a FIFO planted at the key path must not hang us before the S_ISREG check. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? PHIAUDIT_E_NOT_FOUND : PHIAUDIT_E_IO;
    struct stat st;
    char buf[4096];
    size_t len = 0;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        rc = PHIAUDIT_E_IO;
    else if (st.st_mode & (S_IRWXG | S_IRWXO))
        rc = PHIAUDIT_E_KEY_PERMS; /* like ssh: a shared secret is no secret */
    while (rc == 0 && len < sizeof buf - 1) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = PHIAUDIT_E_IO;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';

    if (rc == 0) {
        rc = PHIAUDIT_E_KEY;
        for (char *line = buf; line && *line;) {
            char *next = strchr(line, '\n');
            if (strncmp(line, KEY_TAG, sizeof KEY_TAG - 1) == 0) {
                char *p = line + sizeof KEY_TAG - 1;
                size_t rest = (size_t)((next ? next : buf + len) - p);
                if (rest >= 32 + 1 + 64 && p[32] == ' ' &&
                    (rest == 97 || (rest == 98 && p[97] == '\r')) &&
                    phiaudit_unhex(p, 16, key_id_out) == 0 &&
                    phiaudit_unhex(p + 33, 32, key_out) == 0)
                    rc = 0;
                break;
            }
            line = next ? next + 1 : NULL;
        }
    }
    phiaudit_wipe(buf, sizeof buf);
    if (rc)
        phiaudit_wipe(key_out, 32);
    return rc;
}
