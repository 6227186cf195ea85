/*
 * store/sqlite_backup.c - kw_store_sqlite_backup (audit.h): a consistent copy of a live
 * SQLite database with SQLite's online backup API.
 *
 * One sqlite3_backup_step(-1) copies every page inside ONE read transaction on the
 * source: the copy is the state of the last transaction committed before it started,
 * whatever writers do meanwhile (in WAL mode they are not blocked; they simply are not in
 * the copy). Stepping in chunks instead would let a writer of another process restart the
 * copy again and again. The new file is created mode 0600 (it holds the same secrets as
 * the source) and never replaces an existing one.
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "store.h"

#define KW_MODULE "store"

/* Busy waits on the source: a checkpoint or another writer's brief exclusive moments. */
#define BACKUP_BUSY_MS 5000

static int quick_check(sqlite3 *db, kw_diag_t *diag)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
    bool ok = false;
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        ok = t && strcmp((const char *)t, "ok") == 0;
    }
    sqlite3_finalize(st);
    return ok ? KW_OK : kw_diag_set(diag, KW_EDB, 0, 0, "the copy failed its integrity check");
}

int kw_store_sqlite_backup(const char *src_path, const char *dst_path, int *pages, kw_diag_t *diag)
{
    if (!src_path || !dst_path || !*src_path || !*dst_path)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "source and destination paths are required");
    struct stat sb;
    if (stat(src_path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return kw_diag_set(diag, KW_ENOTFOUND, 0, 0, "the database file %s does not exist",
                           src_path);
    int fd = open(dst_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return kw_diag_set(diag, errno == EEXIST ? KW_EEXISTS : KW_EIO, 0, 0,
                           errno == EEXIST ? "%s already exists: refusing to overwrite it"
                                           : "cannot create %s",
                           dst_path);
    close(fd);
    sqlite3 *src = NULL, *dst = NULL;
    int rc = KW_OK;
    int src_rc = sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READWRITE, NULL);
    if (src_rc == SQLITE_OK)
        src_rc = sqlite3_busy_timeout(src, BACKUP_BUSY_MS);
    if (src_rc != SQLITE_OK) {
        rc = kw_diag_set(diag, KW_EDB, 0, 0, "cannot open %s: %s", src_path,
                         src ? sqlite3_errmsg(src) : sqlite3_errstr(src_rc));
        goto done;
    }
    if (sqlite3_open_v2(dst_path, &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        rc = kw_diag_set(diag, KW_EDB, 0, 0, "cannot open %s", dst_path);
        goto done;
    }
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) {
        rc = kw_diag_set(diag, KW_EDB, 0, 0, "cannot start the backup: %s", sqlite3_errmsg(dst));
        goto done;
    }
    int step = sqlite3_backup_step(b, -1);
    int total = sqlite3_backup_pagecount(b);
    int fin = sqlite3_backup_finish(b);
    if (step != SQLITE_DONE || fin != SQLITE_OK) {
        rc = kw_diag_set(diag, KW_EDB, 0, 0, "the backup failed: %s",
                         sqlite3_errstr(step != SQLITE_DONE ? step : fin));
        goto done;
    }
    rc = quick_check(dst, diag);
    if (rc == KW_OK && pages)
        *pages = total;
done:
    sqlite3_close(dst);
    sqlite3_close(src);
    if (rc != KW_OK) {
        unlink(dst_path);
        kw_log(KW_LOG_ERROR, KW_MODULE, "backup of %s failed", src_path);
    }
    return rc;
}
