#define _POSIX_C_SOURCE 200809L /* mkstemp, fchmod, fsync, fdopen */

#include "npy_writer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"

/* numpy format 1.0: magic, version, header length, then the header dict padded with spaces to
 * a multiple of 64 bytes; 128 bytes hold any shape of ours, so the header written first with
 * 0 rows is overwritten in place at the end. */
#define HEADER_BYTES 128

static char *copy_string(const char *s) {
    char *out = malloc(strlen(s) + 1);
    if (out) strcpy(out, s);
    return out;
}

/* "DIR/NAME" -> "DIR/.NAME.XXXXXX" for mkstemp. */
static char *temp_template(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    char *out = malloc(strlen(path) + 9);
    if (out) sprintf(out, "%.*s.%s.XXXXXX", (int)dir, path, path + dir);
    return out;
}

static int write_header(npy_writer_t *w) {
    char header[HEADER_BYTES + 1];
    int n = snprintf(header, sizeof header,
                     "\x93NUMPY%c%c%c%c{'descr': '%s', 'fortran_order': False, 'shape': (%zu, %zu",
                     1, 0, HEADER_BYTES - 10, 0, w->descr, w->rows, w->shape[0]);
    if (w->row_rank == 2)
        n += snprintf(header + n, sizeof header - (size_t)n, ", %zu", w->shape[1]);
    n += snprintf(header + n, sizeof header - (size_t)n, "), }");
    if (n >= HEADER_BYTES) return fail("%s: shape too long for the .npy header", w->path);
    memset(header + n, ' ', (size_t)(HEADER_BYTES - n));
    header[HEADER_BYTES - 1] = '\n';
    if (fseek(w->file, 0, SEEK_SET) || fwrite(header, 1, HEADER_BYTES, w->file) != HEADER_BYTES)
        return fail("%s: cannot write (%s)", w->temp, strerror(errno));
    return fseek(w->file, 0, SEEK_END) ? fail("%s: cannot seek", w->temp) : 0;
}

int npy_open(npy_writer_t *w, const char *path, const char *descr, size_t item_size,
             const size_t *row_shape, int row_rank) {
    memset(w, 0, sizeof *w);
    w->path = copy_string(path);
    w->temp = temp_template(path);
    if (!w->path || !w->temp) return fail("out of memory");
    snprintf(w->descr, sizeof w->descr, "%s", descr);
    w->row_rank = row_rank;
    w->row_bytes = item_size;
    for (int i = 0; i < row_rank; ++i) w->row_bytes *= (w->shape[i] = row_shape[i]);
    int fd = mkstemp(w->temp);
    if (fd < 0) {
        free(w->temp), w->temp = NULL;  /* nothing was created: nothing to remove */
        return fail("%s: cannot write beside it (%s)", path, strerror(errno));
    }
    w->file = fdopen(fd, "wb");
    if (w->file == NULL) {
        close(fd);
        return fail("%s: cannot write (%s)", w->temp, strerror(errno));
    }
    return write_header(w);
}

int npy_append(npy_writer_t *w, const void *data, size_t count) {
    if (fwrite(data, w->row_bytes, count, w->file) != count)
        return fail("%s: cannot write (%s)", w->temp, strerror(errno));
    w->rows += count;
    return 0;
}

int npy_commit(npy_writer_t *w) {
    mode_t mask = umask(0);
    umask(mask);
    /* mkstemp makes the file 0600; the output gets what a plain fopen would give it. */
    if (write_header(w) || fflush(w->file) || fchmod(fileno(w->file), 0666 & ~mask) ||
        fsync(fileno(w->file)))
        return fail("%s: cannot write (%s)", w->temp, strerror(errno));
    int closed = fclose(w->file);
    w->file = NULL;
    if (closed || rename(w->temp, w->path))
        return fail("%s: cannot write (%s)", w->path, strerror(errno));
    free(w->temp), w->temp = NULL;
    return 0;
}

void npy_discard(npy_writer_t *w) {
    if (w->file) fclose(w->file);
    if (w->temp) remove(w->temp);
    free(w->temp);
    free(w->path);
    memset(w, 0, sizeof *w);
}
