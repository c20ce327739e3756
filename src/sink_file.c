/*
 * Append-only file sink.
 *
 * Invariants this file maintains:
 *  - PATH only ever receives whole frames. Every append and every rotation happens while this
 *    process holds flock(LOCK_EX) on the open file description of the inode PATH currently
 *    names, so several processes (or several sink instances) can share one PATH.
 *  - A batch is appended with write() under the lock; if any write fails the file is
 *    truncated back to its size before the batch, so a retry leaves exactly one copy.
 *  - Nothing is ever deleted or overwritten: rotation renames PATH with RENAME_NOREPLACE and
 *    a torn tail (a writer crashed mid-frame) is kept intact at the end of the rotated file.
 *  - Before appending, every byte of PATH that this instance has not yet seen (everything at
 *    open; afterwards only what other writers appended since our last look) is walked frame
 *    by frame, so we never append after a torn frame another process left behind.
 *
 * phiaudit_sink_file_open_uri() (internal.h) serves sink.c's URI parser: `rest` is what
 * follows "file:" — PATH, optionally followed by "?max_bytes=N".
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

#define FS_SCAN_BUF (1u << 20)      /* read existing content in 1 MiB chunks */
#define FS_ACQUIRE_TRIES 64         /* bound on "PATH changed under us" retries */
#define FS_ROTATE_SUFFIX_MAX 10000  /* bound on -1, -2, ... name collisions */
#define FS_PARTIAL_HDR 12           /* bytes of header that carry the frame length */

typedef struct fs_state {
    char *path;
    int fd;                 /* O_WRONLY|O_APPEND on PATH (or on what PATH was); -1 if none */
    dev_t fd_dev;           /* the file fd was opened on: after fork() the child checks */
    ino_t fd_ino;           /* the number still names it before closing it */
    uint64_t max_bytes;     /* 0 = never rotate by size */
    _Atomic uint64_t torn_bytes; /* read by phiaudit_sink_file_torn_bytes from any thread */
    /* What we know is whole frames: [0, known_end) of inode (known_dev, known_ino). */
    int known_valid;
    dev_t known_dev;
    ino_t known_ino;
    uint64_t known_end;
    int dirty;        /* we wrote through fd since the last successful fdatasync */
    int dir_dirty;    /* directory entries changed (create/rename) since the last dir fsync */
    int sync_failed;  /* sticky: an fdatasync failed, so written data may be lost */
} fs_state;

/* ---- Small helpers --------------------------------------------------------------------------- */

static int fs_errno_rc(int e)
{
    return e == ENOMEM ? PHIAUDIT_E_NOMEM : PHIAUDIT_E_IO;
}

static void fs_close_fd(int fd)
{
    if (fd >= 0) {
        /* Linux releases the descriptor even when close() fails (EINTR/EIO); never retry.
         * Data durability is reported by fdatasync, not here. */
        (void)close(fd);
    }
}

static int fs_flock(int fd, int op)
{
    int r;
    do {
        r = flock(fd, op);
    } while (r != 0 && errno == EINTR);
    return r;
}

/* Open PATH for appending; refuse symlinks (O_NOFOLLOW) and anything but a regular file.
 * O_NONBLOCK keeps a FIFO planted at PATH from blocking open(); it is cleared afterwards. */
static int fs_open_path(const char *path, int *fd_out)
{
    int fd;
    struct stat st;

    *fd_out = -1;
    do {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                  0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return fs_errno_rc(errno);
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fs_close_fd(fd);
        return PHIAUDIT_E_IO;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        fs_close_fd(fd);
        return PHIAUDIT_E_IO;
    }
    *fd_out = fd;
    return 0;
}

/* fsync the directory holding PATH so a create/rename survives a crash.
 * @return 0; FS_DIR_UNTRIED (could not even try: no memory, no descriptor);
 *         FS_DIR_FAILED (fsync itself failed: the entries may be lost). */
#define FS_DIR_UNTRIED (-1)
#define FS_DIR_FAILED (-2)
static int fs_sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    size_t n;

    if (slash == NULL) {
        dir = phiaudit_strdup(".");
    } else {
        n = slash == path ? 1 : (size_t)(slash - path);
        dir = phiaudit_malloc(n + 1);
        if (dir != NULL) {
            memcpy(dir, path, n);
            dir[n] = '\0';
        }
    }
    if (dir == NULL) {
        return FS_DIR_UNTRIED;
    }
    int dfd;
    do {
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } while (dfd < 0 && errno == EINTR);
    phiaudit_free(dir);
    if (dfd < 0) {
        return FS_DIR_UNTRIED;
    }
    int r = fsync(dfd);
    fs_close_fd(dfd);
    return r == 0 ? 0 : FS_DIR_FAILED;
}

/* Replace s->fd (which we may hold locked) by new_fd. Data we wrote through the old
 * descriptor is made durable first: once the descriptor is gone a later sync() could not
 * cover it. A failure there is remembered (sticky) rather than silently forgotten. */
/* Remember which file a descriptor we hold refers to. */
static void fs_note_fd(fs_state *s)
{
    struct stat st;
    if (s->fd >= 0 && fstat(s->fd, &st) == 0) {
        s->fd_dev = st.st_dev;
        s->fd_ino = st.st_ino;
    } else {
        s->fd_dev = 0;
        s->fd_ino = 0;
    }
}

static void fs_switch_fd(fs_state *s, int new_fd)
{
    if (s->fd >= 0) {
        if (s->dirty && fdatasync(s->fd) != 0) {
            s->sync_failed = 1;
        }
        (void)fs_flock(s->fd, LOCK_UN);
        fs_close_fd(s->fd);
    }
    s->dirty = 0;
    s->fd = new_fd;
    fs_note_fd(s);
    s->dir_dirty = 1; /* a fresh open may have created PATH */
}

/* ---- Rotation -------------------------------------------------------------------------------- */

static int fs_rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) {
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS) {
        return -1;
    }
    /* Filesystem without RENAME_NOREPLACE: link() never replaces an existing name either. */
    if (link(from, to) != 0) {
        return -1;
    }
    if (unlink(from) != 0) {
        int e = errno;
        (void)unlink(to); /* undo our own extra name; the data is still reachable as `from` */
        errno = e;
        return -1;
    }
    return 0;
}

/*
 * Rename PATH to PATH.YYYYMMDDTHHMMSS.ffffffZ[-N] and open a fresh PATH.
 * Precondition: we hold LOCK_EX on s->fd and PATH names s->fd's inode.
 * On success s->fd is the new (unlocked) file and the old one is closed (lock released).
 * On failure s->fd is unchanged and still locked.
 */
static int fs_rotate(fs_state *s)
{
    struct timespec ts;
    struct tm tm;
    size_t plen = strlen(s->path);
    size_t cap = plen + 64;
    char *name = phiaudit_malloc(cap);
    int rc;

    if (name == NULL) {
        return PHIAUDIT_E_NOMEM;
    }
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL) {
        phiaudit_free(name);
        return PHIAUDIT_E_IO;
    }
    int base = snprintf(name, cap, "%s.%04d%02d%02dT%02d%02d%02d.%06ldZ", s->path,
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                        tm.tm_sec, (long)(ts.tv_nsec / 1000));
    if (base < 0 || (size_t)base >= cap) {
        phiaudit_free(name);
        return PHIAUDIT_E_IO;
    }
    rc = PHIAUDIT_E_IO;
    for (int n = 0; n <= FS_ROTATE_SUFFIX_MAX; n++) {
        if (n > 0) {
            int w = snprintf(name + base, cap - (size_t)base, "-%d", n);
            if (w < 0 || (size_t)w >= cap - (size_t)base) {
                break;
            }
        }
        if (fs_rename_noreplace(s->path, name) == 0) {
            rc = 0;
            break;
        }
        if (errno != EEXIST) {
            break;
        }
    }
    phiaudit_free(name);
    if (rc != 0) {
        return rc;
    }
    s->dir_dirty = 1;

    int nfd;
    rc = fs_open_path(s->path, &nfd);
    if (rc != 0) {
        /* PATH is gone but nothing is lost; the next acquire recreates it. */
        return rc;
    }
    fs_switch_fd(s, nfd);
    int drc = fs_sync_dir(s->path);
    if (drc == 0) {
        s->dir_dirty = 0;
    } else if (drc == FS_DIR_FAILED) {
        s->sync_failed = 1; /* the rename may not survive a crash: stop promising durability */
    }
    s->known_valid = 0; /* scan the new file (normally empty) before appending */
    return 0;
}

/* ---- Scanning ---------------------------------------------------------------------------------- */

/* A partial header at offset 0 (fewer than 12 bytes): does what is there look like ours? */
static int fs_prefix_ok(const uint8_t *p, size_t n)
{
    static const uint8_t want[6] = {'P', 'H', 'A', '1', PHIAUDIT_FORMAT_VERSION,
                                    PHIAUDIT_SUITE_AES256GCM_HKDF_SHA256};
    size_t m = n < sizeof want ? n : sizeof want;
    return memcmp(p, want, m) == 0;
}

static int fs_pread_full(int fd, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return PHIAUDIT_E_IO;
        }
        if (r == 0) {
            break;
        }
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

/*
 * Walk the frames in [from, end) of PATH, whose inode must be (dev, ino).
 * @return 0 with *good_end = end (all whole frames);
 *         1 with *good_end = offset where whole frames stop (torn tail or garbage follows);
 *         PHIAUDIT_E_FORMAT (offset 0 is not a frame: not a phiaudit log);
 *         FS_SCAN_CHANGED: PATH no longer names that inode;
 *         PHIAUDIT_E_IO / PHIAUDIT_E_NOMEM.
 */
#define FS_SCAN_TORN 1
#define FS_SCAN_CHANGED 2
static int fs_scan(const fs_state *s, dev_t dev, ino_t ino, uint64_t from, uint64_t end,
                   uint64_t *good_end)
{
    struct stat st;
    int rfd;
    int rc;

    do {
        rfd = open(s->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    } while (rfd < 0 && errno == EINTR);
    if (rfd < 0) {
        return (errno == ENOENT || errno == ELOOP) ? FS_SCAN_CHANGED : fs_errno_rc(errno);
    }
    if (fstat(rfd, &st) != 0) {
        fs_close_fd(rfd);
        return PHIAUDIT_E_IO;
    }
    if (st.st_dev != dev || st.st_ino != ino) {
        fs_close_fd(rfd);
        return FS_SCAN_CHANGED;
    }
    /* Usually only a few new frames from another writer: don't allocate 1 MiB for those. */
    size_t cap = end - from < FS_SCAN_BUF ? (size_t)(end - from) : FS_SCAN_BUF;
    uint8_t *buf = phiaudit_malloc(cap);
    if (buf == NULL) {
        fs_close_fd(rfd);
        return PHIAUDIT_E_NOMEM;
    }

    uint64_t base = from; /* file offset of buf[0] */
    size_t have = 0;      /* valid bytes in buf */
    size_t pos = 0;       /* start of the next frame within buf */
    for (;;) {
        if (base + pos >= end) {
            *good_end = base + pos;
            rc = 0;
            break;
        }
        phiaudit_header hdr;
        int prc = have > pos ? phiaudit_frame_parse(buf + pos, have - pos, &hdr)
                             : PHIAUDIT_E_TRUNCATED;
        if (prc == 0) {
            if (hdr.frame_len < PHIAUDIT_MIN_FRAME_LEN || hdr.frame_len > have - pos) {
                prc = PHIAUDIT_E_FORMAT; /* defensive: the parser broke its contract */
            } else {
                pos += hdr.frame_len;
                continue;
            }
        }
        if (prc == PHIAUDIT_E_TRUNCATED && base + have < end && (have - pos) < cap) {
            /* Refill: keep the partial frame, read the next chunk after it. */
            memmove(buf, buf + pos, have - pos);
            base += pos;
            have -= pos;
            pos = 0;
            uint64_t left = end - (base + have);
            size_t want = cap - have;
            if (left < want) {
                want = (size_t)left;
            }
            size_t got;
            rc = fs_pread_full(rfd, buf + have, want, base + have, &got);
            if (rc != 0) {
                break;
            }
            have += got;
            if (got < want) {
                end = base + have; /* shrank under us (a non-cooperating writer): stop there */
            }
            continue;
        }
        /* Whole frames stop here: torn tail (TRUNCATED at end of file) or garbage. */
        if (base + pos == 0) {
            size_t avail = have - pos;
            if (prc != PHIAUDIT_E_TRUNCATED ||
                (avail < FS_PARTIAL_HDR && !fs_prefix_ok(buf, avail))) {
                rc = PHIAUDIT_E_FORMAT; /* not a phiaudit log: never append to it */
                break;
            }
        }
        *good_end = base + pos;
        rc = FS_SCAN_TORN;
        break;
    }
    phiaudit_free(buf);
    fs_close_fd(rfd);
    return rc;
}

/*
 * Make s->fd name the inode PATH currently names, hold LOCK_EX on it, and make sure the file
 * ends on a frame boundary (scanning what we have not seen; rotating a torn tail away).
 * On success the lock is held and *size_out is the file size. On failure no lock is held
 * (except that s->fd may still be open).
 */
static int fs_acquire(fs_state *s, uint64_t *size_out)
{
    for (int tries = 0; tries < FS_ACQUIRE_TRIES; tries++) {
        struct stat fst, pst;
        int rc;

        if (s->fd < 0) {
            int nfd;
            rc = fs_open_path(s->path, &nfd);
            if (rc != 0) {
                return rc;
            }
            s->fd = nfd;
            fs_note_fd(s);
            s->dirty = 0;
            s->dir_dirty = 1;
        }
        if (fs_flock(s->fd, LOCK_EX) != 0) {
            return PHIAUDIT_E_IO;
        }
        if (fstat(s->fd, &fst) != 0) {
            (void)fs_flock(s->fd, LOCK_UN);
            return PHIAUDIT_E_IO;
        }
        /* lstat: a symlink planted at PATH has its own inode, so it never matches ours. */
        if (lstat(s->path, &pst) != 0) {
            if (errno != ENOENT) {
                (void)fs_flock(s->fd, LOCK_UN);
                return PHIAUDIT_E_IO;
            }
            pst.st_dev = 0;
            pst.st_ino = 0;
        }
        if (pst.st_dev != fst.st_dev || pst.st_ino != fst.st_ino) {
            /* Another process rotated PATH (or it was moved away): follow it. */
            int nfd;
            rc = fs_open_path(s->path, &nfd);
            if (rc != 0) {
                (void)fs_flock(s->fd, LOCK_UN);
                return rc;
            }
            fs_switch_fd(s, nfd);
            continue;
        }

        uint64_t size = (uint64_t)fst.st_size;
        uint64_t from = 0;
        if (s->known_valid && s->known_dev == fst.st_dev && s->known_ino == fst.st_ino &&
            s->known_end <= size) {
            from = s->known_end;
        }
        if (from < size) {
            uint64_t good_end = 0;
            rc = fs_scan(s, fst.st_dev, fst.st_ino, from, size, &good_end);
            if (rc == FS_SCAN_CHANGED) {
                (void)fs_flock(s->fd, LOCK_UN);
                continue;
            }
            if (rc == FS_SCAN_TORN) {
                /* Keep the torn bytes intact at the end of the rotated file. */
                rc = fs_rotate(s);
                if (rc != 0) {
                    (void)fs_flock(s->fd, LOCK_UN);
                    return rc;
                }
                atomic_fetch_add(&s->torn_bytes, size - good_end);
                continue;
            }
            if (rc != 0) {
                (void)fs_flock(s->fd, LOCK_UN);
                return rc;
            }
        }
        s->known_valid = 1;
        s->known_dev = fst.st_dev;
        s->known_ino = fst.st_ino;
        s->known_end = size;
        *size_out = size;
        return 0;
    }
    return PHIAUDIT_E_IO;
}

/* ---- Sink methods ------------------------------------------------------------------------------ */

/* The batch must be exactly a sequence of whole frames: we never put anything else in PATH. */
static int fs_batch_ok(const phiaudit_batch *b)
{
    size_t off = 0;
    while (off < b->len) {
        phiaudit_header hdr;
        if (phiaudit_frame_parse(b->data + off, b->len - off, &hdr) != 0 ||
            hdr.frame_len < PHIAUDIT_MIN_FRAME_LEN || hdr.frame_len > b->len - off) {
            return 0;
        }
        off += hdr.frame_len;
    }
    return 1;
}

static int fs_write(void *state, const phiaudit_batch *batch)
{
    fs_state *s = state;
    uint64_t size_before;
    int rc;

    if (s == NULL || batch == NULL || (batch->len > 0 && batch->data == NULL)) {
        return PHIAUDIT_E_INVALID;
    }
    if (batch->len == 0) {
        return 0;
    }
    if (!fs_batch_ok(batch)) {
        return PHIAUDIT_E_INVALID;
    }
    rc = fs_acquire(s, &size_before);
    if (rc != 0) {
        return rc;
    }

    size_t done = 0;
    while (done < batch->len) {
        ssize_t n = write(s->fd, batch->data + done, batch->len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        done += (size_t)n;
    }
    if (done < batch->len) {
        /* ENOSPC, EIO, EFBIG...: remove the partial bytes, they were never acknowledged.
         * We hold the lock, so nobody appended after them. If even that fails, the bytes stay
         * and the next acquire (ours or another process's) finds a torn tail and rotates it
         * away; the logger's retry then starts a clean file. */
        if (done > 0 && ftruncate(s->fd, (off_t)size_before) != 0) {
            s->known_end = size_before; /* so our next acquire rescans the partial bytes */
        }
        (void)fs_flock(s->fd, LOCK_UN);
        return PHIAUDIT_E_IO;
    }
    s->dirty = 1;
    s->known_end = size_before + batch->len;

    if (s->max_bytes > 0 && s->known_end >= s->max_bytes) {
        /* The batch is written: a rotation failure must not fail it (a retry would duplicate
         * it). The next batch tries again. On success the old fd, and its lock, are gone. */
        if (fs_rotate(s) == 0) {
            return 0;
        }
    }
    (void)fs_flock(s->fd, LOCK_UN);
    return 0;
}

static int fs_sync(void *state)
{
    fs_state *s = state;

    if (s == NULL) {
        return PHIAUDIT_E_INVALID;
    }
    /* After a failed fdatasync the kernel may have dropped the dirty pages and a later
     * fdatasync can succeed without them: never report durability again (sticky). The
     * operator reopens the sink (new logger) once the storage is fixed. */
    if (s->sync_failed) {
        return PHIAUDIT_E_IO;
    }
    if (s->fd >= 0 && fdatasync(s->fd) != 0) {
        s->sync_failed = 1;
        return PHIAUDIT_E_IO;
    }
    s->dirty = 0;
    if (s->dir_dirty) {
        int drc = fs_sync_dir(s->path);
        if (drc != 0) {
            if (drc == FS_DIR_FAILED) {
                s->sync_failed = 1;
            }
            return PHIAUDIT_E_IO;
        }
        s->dir_dirty = 0;
    }
    return 0;
}

static int fs_after_fork_child(void *state)
{
    fs_state *s = state;

    if (s == NULL) {
        return PHIAUDIT_E_INVALID;
    }
    /* The inherited descriptor shares its open file description (and so any flock) with the
     * parent: close it without unlocking (LOCK_UN would release the parent's lock) and without
     * syncing (the parent owns what it wrote). This may run lazily, at the child's first
     * record: if the child has meanwhile closed that number and reused it for a file of its
     * own, leave the number alone. */
    struct stat st;
    if (s->fd >= 0 && fstat(s->fd, &st) == 0 && st.st_dev == s->fd_dev &&
        st.st_ino == s->fd_ino)
        fs_close_fd(s->fd);
    s->fd = -1;
    s->dirty = 0;
    s->sync_failed = 0;
    s->dir_dirty = 0;
    int nfd;
    int rc = fs_open_path(s->path, &nfd);
    if (rc != 0) {
        return rc; /* fd stays -1; the next write retries the open */
    }
    s->fd = nfd;
    fs_note_fd(s);
    return 0;
}

static void fs_destroy(void *state)
{
    fs_state *s = state;

    if (s == NULL) {
        return;
    }
    fs_close_fd(s->fd);
    phiaudit_free(s->path);
    phiaudit_free(s);
}

const phiaudit_sink_ops phiaudit_file_sink_ops = {
    .version = PHIAUDIT_SINK_OPS_VERSION,
    .name = "file",
    .write = fs_write,
    .sync = fs_sync,
    .after_fork_child = fs_after_fork_child,
    .destroy = fs_destroy,
};

/* ---- Public constructors ---------------------------------------------------------------------- */

int phiaudit_sink_file_open(phiaudit_sink **out, const char *path,
                            const phiaudit_file_options *opts)
{
    fs_state *s;
    phiaudit_sink *sink;
    uint64_t size;
    int rc;

    if (out == NULL) {
        return PHIAUDIT_E_INVALID;
    }
    *out = NULL;
    if (path == NULL || path[0] == '\0') {
        return PHIAUDIT_E_INVALID;
    }
    if (opts != NULL && opts->version != PHIAUDIT_FILE_OPTIONS_VERSION) {
        return PHIAUDIT_E_VERSION;
    }
    s = phiaudit_calloc(1, sizeof *s);
    if (s == NULL) {
        return PHIAUDIT_E_NOMEM;
    }
    s->fd = -1;
    atomic_init(&s->torn_bytes, 0);
    s->max_bytes = opts != NULL ? opts->max_bytes : 0;
    s->path = phiaudit_strdup(path);
    sink = phiaudit_calloc(1, sizeof *sink);
    if (s->path == NULL || sink == NULL) {
        phiaudit_free(sink);
        fs_destroy(s);
        return PHIAUDIT_E_NOMEM;
    }
    /* Opens PATH, locks it and scans everything in it (rotating a torn tail away). */
    rc = fs_acquire(s, &size);
    if (rc != 0) {
        phiaudit_free(sink);
        fs_destroy(s);
        return rc;
    }
    (void)size;
    (void)fs_flock(s->fd, LOCK_UN);
    sink->ops = &phiaudit_file_sink_ops;
    sink->state = s;
    *out = sink;
    return 0;
}

uint64_t phiaudit_sink_file_torn_bytes(const phiaudit_sink *sink)
{
    if (sink == NULL || sink->ops != &phiaudit_file_sink_ops || sink->state == NULL) {
        return 0;
    }
    fs_state *s = sink->state;
    return atomic_load(&s->torn_bytes);
}

/* Parse a decimal uint64 occupying exactly [p, p+n): digits only, no sign, no overflow. */
static int fs_parse_u64(const char *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    if (n == 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        uint64_t d = (uint64_t)(p[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return -1;
        }
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

int phiaudit_sink_file_open_uri(phiaudit_sink **out, const char *rest)
{
    phiaudit_file_options opts;
    const char *q;
    size_t plen;
    int have_max = 0;

    if (out == NULL) {
        return PHIAUDIT_E_INVALID;
    }
    *out = NULL;
    if (rest == NULL) {
        return PHIAUDIT_E_INVALID;
    }
    /* "file:///abs/path" (empty authority) is accepted; "file://host/..." is not. */
    if (rest[0] == '/' && rest[1] == '/') {
        if (rest[2] != '/') {
            return PHIAUDIT_E_URI;
        }
        rest += 2;
    }
    memset(&opts, 0, sizeof opts);
    opts.version = PHIAUDIT_FILE_OPTIONS_VERSION;

    q = strchr(rest, '?');
    plen = q != NULL ? (size_t)(q - rest) : strlen(rest);
    if (plen == 0) {
        return PHIAUDIT_E_URI;
    }
    if (q != NULL) {
        const char *p = q + 1;
        if (*p == '\0') {
            return PHIAUDIT_E_URI;
        }
        for (;;) {
            const char *amp = strchr(p, '&');
            size_t n = amp != NULL ? (size_t)(amp - p) : strlen(p);
            static const char key[] = "max_bytes=";
            if (n < sizeof key - 1 || memcmp(p, key, sizeof key - 1) != 0 || have_max) {
                return PHIAUDIT_E_URI;
            }
            if (fs_parse_u64(p + sizeof key - 1, n - (sizeof key - 1), &opts.max_bytes) != 0) {
                return PHIAUDIT_E_URI;
            }
            have_max = 1;
            if (amp == NULL) {
                break;
            }
            p = amp + 1;
        }
    }

    char *path = phiaudit_malloc(plen + 1);
    if (path == NULL) {
        return PHIAUDIT_E_NOMEM;
    }
    memcpy(path, rest, plen);
    path[plen] = '\0';
    int rc = phiaudit_sink_file_open(out, path, &opts);
    phiaudit_free(path);
    return rc;
}
