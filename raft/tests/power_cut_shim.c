/*
 * A power cut, emulated for one process (LD_PRELOAD), for
 * `log_store_power_cut.rs`.
 *
 * The shim keeps, beside the watched directory, the state a disk would be
 * left with if the power went out now: what the process made durable, and
 * nothing else. `QL_POWER_CUT_DATA` names the watched directory (it must
 * exist), `QL_POWER_CUT_SHADOW` the shadow (made at start). Under the
 * shadow:
 *
 *   tree/     the durable state: a file here is a name that survives, with
 *             the content that was last synced under it;
 *   pending/  content synced under a name that is not durable yet.
 *
 * The model, stricter than most file systems and as strict as POSIX:
 *   - whatever the watched directory holds when the process starts is
 *     durable;
 *   - fsync/fdatasync on a file makes its current content durable (copied
 *     to tree/ if its name is durable, else to pending/);
 *   - fsync on a directory that is itself durable makes the names in it
 *     durable (a new name takes its pending content, or none) and the
 *     names gone from it gone;
 *   - a rename moves the synced content to the new name, which is pending
 *     until its directory is synced;
 *   - nothing else is durable: not a write, not sync_file_range, not a
 *     directory's new entry without an fsync of the directory.
 * After a SIGKILL, the test replaces the watched directory with tree/.
 *
 * Without the two variables the shim passes every call through unchanged.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char watch[PATH_MAX];
static size_t watch_len;
static char shadow[PATH_MAX];
static int active;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned int);

static void die(const char *what, const char *path) {
    fprintf(stderr, "power_cut_shim: %s %s: %s\n", what, path, strerror(errno));
    abort();
}

/* The part of `path` under the watched directory ("" for the directory
 * itself), or NULL if it is elsewhere. */
static const char *relative(const char *path) {
    if (strncmp(path, watch, watch_len) != 0) return NULL;
    if (path[watch_len] == '\0') return "";
    if (path[watch_len] != '/') return NULL;
    return path + watch_len + 1;
}

static void join(char *out, const char *a, const char *b, const char *c) {
    snprintf(out, PATH_MAX, "%s%s%s%s%s", a, *b ? "/" : "", b, *c ? "/" : "", c);
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static void make_dirs(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) die("mkdir", buf);
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) die("mkdir", buf);
}

static void parent_dirs(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    if (slash && slash != buf) {
        *slash = '\0';
        make_dirs(buf);
    }
}

/* Copy what the open file `in` holds (from its start) to `to`. */
static void copy_fd(int in, const char *to) {
    parent_dirs(to);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) die("create", to);
    static char buf[1 << 16];
    for (off_t at = 0;;) {
        ssize_t n = pread(in, buf, sizeof buf, at);
        if (n < 0) die("read for", to);
        if (n == 0) break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0) die("write", to);
            done += w;
        }
        at += n;
    }
    close(out);
}

static void copy_file(const char *from, const char *to) {
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) die("open", from);
    copy_fd(in, to);
    close(in);
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) die("opendir", path);
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char child[PATH_MAX];
            join(child, path, e->d_name, "");
            remove_tree(child);
        }
        closedir(d);
        if (rmdir(path) != 0) die("rmdir", path);
    } else if (unlink(path) != 0) {
        die("unlink", path);
    }
}

static void copy_tree(const char *from, const char *to) {
    make_dirs(to);
    DIR *d = opendir(from);
    if (!d) die("opendir", from);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char a[PATH_MAX], b[PATH_MAX];
        join(a, from, e->d_name, "");
        join(b, to, e->d_name, "");
        struct stat st;
        if (lstat(a, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) copy_tree(a, b);
        else if (S_ISREG(st.st_mode)) copy_file(a, b);
    }
    closedir(d);
}

/* The durable effect of syncing the open file `fd`, named `rel`. */
static void sync_file(int fd, const char *rel) {
    char durable[PATH_MAX], pending[PATH_MAX];
    join(durable, shadow, "tree", rel);
    join(pending, shadow, "pending", rel);
    /* Reopened for reading: `fd` may be open for writing only. */
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int in = open(link, O_RDONLY | O_CLOEXEC);
    if (in < 0) die("reopen", link);
    copy_fd(in, exists(durable) ? durable : pending);
    close(in);
}

/* The durable effect of syncing the directory at `rel`. */
static void sync_dir(const char *rel) {
    char dir[PATH_MAX], durable_dir[PATH_MAX];
    join(dir, watch, rel, "");
    join(durable_dir, shadow, "tree", rel);
    if (!exists(durable_dir)) return; /* its own name is not durable */
    DIR *d = opendir(dir);
    if (!d) die("opendir", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char live[PATH_MAX], durable[PATH_MAX], pending_dir[PATH_MAX], pending[PATH_MAX];
        join(live, dir, e->d_name, "");
        join(durable, durable_dir, e->d_name, "");
        join(pending_dir, shadow, "pending", rel);
        join(pending, pending_dir, e->d_name, "");
        if (exists(durable)) continue;
        struct stat st;
        if (lstat(live, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            make_dirs(durable);
        } else if (S_ISREG(st.st_mode)) {
            if (exists(pending)) {
                if (real_rename(pending, durable) != 0) die("rename", pending);
            } else {
                int fd = open(durable, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0) die("create", durable);
                close(fd);
            }
        }
    }
    closedir(d);
    /* Names no longer in the directory are gone. */
    d = opendir(durable_dir);
    if (!d) die("opendir", durable_dir);
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char live[PATH_MAX], durable[PATH_MAX];
        join(live, dir, e->d_name, "");
        join(durable, durable_dir, e->d_name, "");
        if (!exists(live)) remove_tree(durable);
    }
    closedir(d);
}

static void on_sync(int fd) {
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return;
    path[n] = '\0';
    if (n > 10 && !strcmp(path + n - 10, " (deleted)")) return;
    const char *rel = relative(path);
    if (!rel) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    pthread_mutex_lock(&lock);
    if (S_ISDIR(st.st_mode)) sync_dir(rel);
    else if (S_ISREG(st.st_mode)) sync_file(fd, rel);
    pthread_mutex_unlock(&lock);
}

/* A rename's effect on synced content: it moves to the new name, pending. */
static void on_rename(const char *from_path, const char *to_path) {
    char from_abs[PATH_MAX], to_abs[PATH_MAX];
    if (!realpath(from_path, from_abs)) return;
    /* The new name does not exist yet: resolve its directory. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", to_path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : to_path;
    if (slash) *slash = '\0'; else snprintf(dir, sizeof dir, ".");
    char dir_abs[PATH_MAX];
    if (!realpath(dir, dir_abs)) return;
    join(to_abs, dir_abs, base, "");
    const char *from = relative(from_abs), *to = relative(to_abs);
    if (!from || !to) return;
    char durable[PATH_MAX], pending_from[PATH_MAX], pending_to[PATH_MAX];
    join(durable, shadow, "tree", from);
    join(pending_from, shadow, "pending", from);
    join(pending_to, shadow, "pending", to);
    pthread_mutex_lock(&lock);
    if (exists(pending_from)) {
        parent_dirs(pending_to);
        if (real_rename(pending_from, pending_to) != 0) die("rename", pending_from);
    } else if (exists(durable)) {
        copy_file(durable, pending_to);
    }
    pthread_mutex_unlock(&lock);
}

__attribute__((constructor)) static void init(void) {
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_rename = dlsym(RTLD_NEXT, "rename");
    real_renameat = dlsym(RTLD_NEXT, "renameat");
    real_renameat2 = dlsym(RTLD_NEXT, "renameat2");
    const char *w = getenv("QL_POWER_CUT_DATA"), *s = getenv("QL_POWER_CUT_SHADOW");
    if (!w || !s) return;
    if (!realpath(w, watch)) die("realpath", w);
    watch_len = strlen(watch);
    snprintf(shadow, sizeof shadow, "%s", s);
    char tree[PATH_MAX], pending[PATH_MAX];
    join(tree, shadow, "tree", "");
    join(pending, shadow, "pending", "");
    remove_tree(tree);
    remove_tree(pending);
    copy_tree(watch, tree);
    make_dirs(pending);
    active = 1;
}

int fsync(int fd) {
    int r = real_fsync(fd);
    if (r == 0 && active) on_sync(fd);
    return r;
}

int fdatasync(int fd) {
    int r = real_fdatasync(fd);
    if (r == 0 && active) on_sync(fd);
    return r;
}

int rename(const char *from, const char *to) {
    if (active) on_rename(from, to);
    return real_rename(from, to);
}

int renameat(int from_dir, const char *from, int to_dir, const char *to) {
    /* Relative names against a directory fd are not followed. */
    if (active && from_dir == AT_FDCWD && to_dir == AT_FDCWD) on_rename(from, to);
    return real_renameat(from_dir, from, to_dir, to);
}

int renameat2(int from_dir, const char *from, int to_dir, const char *to, unsigned int flags) {
    if (active && from_dir == AT_FDCWD && to_dir == AT_FDCWD) on_rename(from, to);
    return real_renameat2(from_dir, from, to_dir, to, flags);
}
