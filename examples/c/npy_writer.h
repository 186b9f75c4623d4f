/* A .npy file written row by row, whose row count is known only at the end (frames can come
 * from a pipe), and which appears at its path only when complete: the rows go to a hidden
 * temporary file beside the target, which commit renames over it. */
#ifndef DINO_NPY_WRITER_H
#define DINO_NPY_WRITER_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *file;          /* the temporary file; NULL before open and after commit/discard */
    char *path, *temp;   /* the target and the temporary file beside it */
    char descr[8];       /* numpy dtype: "<f4", "|b1" */
    size_t shape[3];     /* of one row */
    int row_rank;        /* 1 or 2 */
    size_t row_bytes, rows;
} npy_writer_t;

/* Starts the file of rows of shape row_shape (row_rank dims) and dtype descr with items of
 * item_size bytes. 0, or -1 after a one-line report. */
int npy_open(npy_writer_t *w, const char *path, const char *descr, size_t item_size,
             const size_t *row_shape, int row_rank);

/* Appends count rows from data. 0, or -1 after a one-line report (a full disk). */
int npy_append(npy_writer_t *w, const void *data, size_t count);

/* Writes the header with the final row count, syncs, renames over the target. */
int npy_commit(npy_writer_t *w);

/* Removes the temporary file (when not committed) and frees the writer; safe on a zeroed one. */
void npy_discard(npy_writer_t *w);

#endif
