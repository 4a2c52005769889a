/*
 * preload/lib/shared.c: opening, checking and mapping the host-wide state
 * segment (see shared.h).
 *
 * Descriptors are closed with the raw syscall: this file runs inside the
 * library (where close() is the shim's own wrapper) and in the stats tool.
 */
#include "preload/lib/shared.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void
raw_close(int fd)
{
    if (fd >= 0) {
        syscall(SYS_close, fd);
    }
}

uint64_t
mcs_shared_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
mcs_shared_default_path(char *out, size_t cap)
{
    snprintf(out, cap, "/dev/shm/mcshim-%u.seg", (unsigned)geteuid());
}

/* Reads up to cap-1 bytes of a small /proc file into buf (NUL-terminated). */
static ssize_t
read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return -1;
    }
    ssize_t n;
    do {
        n = read(fd, buf, cap - 1);
    } while (n < 0 && errno == EINTR);
    raw_close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

void
mcs_shared_boot_id(uint8_t out[16])
{
    char buf[64];
    memset(out, 0, 16);
    int saved = errno;
    if (read_small("/proc/sys/kernel/random/boot_id", buf, sizeof(buf)) > 0) {
        unsigned n = 0;
        for (const char *p = buf; *p != '\0' && n < 32; p++) {
            int v = hexval(*p);
            if (v >= 0) {
                out[n / 2] = (uint8_t)(out[n / 2] | (n % 2 == 0 ? v << 4 : v));
                n++;
            }
        }
    }
    errno = saved;
}

uint64_t
mcs_shared_proc_ticket(long pid)
{
    char path[64];
    char buf[1024];
    int saved = errno;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    ssize_t n = read_small(path, buf, sizeof(buf));
    errno = saved;
    if (n <= 0) {
        return 0;
    }
    /* "pid (comm) state ..." : comm may hold spaces and ')'; fields count from the last ')'. */
    const char *p = strrchr(buf, ')');
    if (p == NULL) {
        return 0;
    }
    unsigned field = 2;
    uint64_t v = 0;
    for (p++; *p != '\0'; p++) {
        if (*p == ' ') {
            field++;
            continue;
        }
        if (field == 22) {
            if (*p < '0' || *p > '9') {
                return 0;
            }
            v = v * 10 + (uint64_t)(*p - '0');
        } else if (field > 22) {
            break;
        }
    }
    return v;
}

/* Is the file fd describes one this process may use? Returns 0; 1 if it is,
 * but not of this version's size; -1 if not (err says why). */
static int
check_file(int fd, unsigned mode, const char *path, struct stat *st, char *err, size_t errlen)
{
    if (fstat(fd, st) != 0) {
        snprintf(err, errlen, "MCSHIM_SHARED: cannot stat %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "MCSHIM_SHARED: %s is not a regular file", path);
        return -1;
    }
    unsigned have = (unsigned)st->st_mode & 07777;
    bool group_ok = false;
    if (mode == 0660 && have == 0660) {
        gid_t groups[256];
        int ng = getgroups(256, groups);
        group_ok = st->st_gid == getegid();
        for (int i = 0; i < ng && !group_ok; i++) {
            group_ok = groups[i] == st->st_gid;
        }
    }
    if (st->st_uid != geteuid() && !group_ok) {
        snprintf(err, errlen, "MCSHIM_SHARED: %s belongs to uid %u, not to this user (%u)%s", path,
                 (unsigned)st->st_uid, (unsigned)geteuid(),
                 mode == 0660 ? " nor to one of its groups with mode 0660" : "");
        return -1;
    }
    if (have != mode) {
        snprintf(err, errlen, "MCSHIM_SHARED: %s has mode %04o, expected %04o (MCSHIM_SHARED_MODE)", path, have, mode);
        return -1;
    }
    if ((uint64_t)st->st_size != MCS_SEG_SIZE) {
        snprintf(err, errlen, "MCSHIM_SHARED: %s is %lld bytes, not a segment of this version (%zu)", path,
                 (long long)st->st_size, (size_t)MCS_SEG_SIZE);
        return 1;   /* ours, but of another version (or cut short): rebuilt when writing */
    }
    return 0;
}

/* Writes a fresh, complete segment under a temporary name next to path and
 * links it in: replace true renames it over whatever is there, else it is only
 * linked if nothing is. Returns 0, 1 (something appeared at path first), or -1
 * with err. */
static int
create_segment(const char *path, unsigned mode, bool replace, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "MCSHIM_SHARED: cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    int rc = -1;
    void *m = MAP_FAILED;
    if (fchmod(fd, mode) != 0) {
        snprintf(err, errlen, "MCSHIM_SHARED: chmod %s: %s", tmp, strerror(errno));
        goto out;
    }
    int e = posix_fallocate(fd, 0, (off_t)MCS_SEG_SIZE);
    if (e != 0) {
        snprintf(err, errlen, "MCSHIM_SHARED: cannot allocate %zu bytes for %s: %s", (size_t)MCS_SEG_SIZE, tmp,
                 strerror(e));
        goto out;
    }
    m = mmap(NULL, MCS_SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "MCSHIM_SHARED: cannot map %s: %s", tmp, strerror(errno));
        goto out;
    }
    uint8_t boot[16];
    mcs_shared_boot_id(boot);
    mcs_seg_format(m, boot, mcs_shared_now_ms());
    if (replace) {
        if (rename(tmp, path) != 0) {
            snprintf(err, errlen, "MCSHIM_SHARED: cannot replace %s: %s", path, strerror(errno));
            goto out;
        }
        rc = 0;
    } else if (link(tmp, path) == 0) {
        rc = 0;
    } else if (errno == EEXIST) {
        rc = 1;
    } else {
        snprintf(err, errlen, "MCSHIM_SHARED: cannot create %s: %s", path, strerror(errno));
    }
out:
    if (m != MAP_FAILED) {
        munmap(m, MCS_SEG_SIZE);
    }
    raw_close(fd);
    unlink(tmp);
    return rc;
}

int
mcs_shared_map(struct mcs_shared *sh, const char *path, unsigned mode, bool write, char *err, size_t errlen)
{
    int saved = errno;
    int rc = -1;
    memset(sh, 0, sizeof(*sh));
    snprintf(sh->path, sizeof(sh->path), "%s", path);
    uint8_t boot[16];
    mcs_shared_boot_id(boot);
    bool rebuilt = false;
    for (int attempt = 0; attempt < 4; attempt++) {
        int fd = open(path, (write ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno != ENOENT || !write) {
                snprintf(err, errlen, "MCSHIM_SHARED: cannot open %s: %s", path, strerror(errno));
                goto out;
            }
            if (create_segment(path, mode, false, err, errlen) < 0) {
                goto out;
            }
            continue;   /* open what is there now: ours, or another process's */
        }
        struct stat st;
        int fit = check_file(fd, mode, path, &st, err, errlen);
        if (fit != 0) {
            raw_close(fd);
            if (fit < 0 || !write || rebuilt || create_segment(path, mode, true, err, errlen) < 0) {
                goto out;
            }
            rebuilt = true;
            continue;
        }
        void *m = mmap(NULL, MCS_SEG_SIZE, write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
        raw_close(fd);
        if (m == MAP_FAILED) {
            snprintf(err, errlen, "MCSHIM_SHARED: cannot map %s: %s", path, strerror(errno));
            goto out;
        }
        struct mcs_seg *seg = m;
        bool ok;
        if (write) {
            ok = mcs_seg_check(seg, (uint64_t)st.st_size, boot) == MCS_SEG_OK;
        } else {
            ok = seg->header.magic == MCS_SEG_MAGIC && seg->header.version == MCS_SEG_VERSION
                 && seg->header.size == MCS_SEG_SIZE && !mcs_seg_broken(seg);
        }
        if (ok) {
            sh->seg = seg;
            sh->dev = st.st_dev;
            sh->ino = st.st_ino;
            rc = 0;
            goto out;
        }
        munmap(m, MCS_SEG_SIZE);
        if (!write || rebuilt) {
            snprintf(err, errlen, "MCSHIM_SHARED: %s is not a valid segment of this version%s", path,
                     write ? " (even after rebuilding it)" : "");
            goto out;
        }
        if (create_segment(path, mode, true, err, errlen) < 0) {
            goto out;
        }
        rebuilt = true;
    }
    snprintf(err, errlen, "MCSHIM_SHARED: %s kept changing while it was opened", path);
out:
    errno = saved;
    return rc;
}

void
mcs_shared_unmap(struct mcs_shared *sh)
{
    if (sh->seg != NULL) {
        munmap(sh->seg, MCS_SEG_SIZE);
        sh->seg = NULL;
    }
}

bool
mcs_shared_current(const struct mcs_shared *sh)
{
    struct stat st;
    int saved = errno;
    bool same = stat(sh->path, &st) == 0 && st.st_dev == sh->dev && st.st_ino == sh->ino;
    errno = saved;
    return same;
}
