/* dino_embed: [CLS] embeddings and attention masks of raw video frames, with OpenVINO's C API.
 *
 *   dino_embed MODEL.onnx FRAMES [--cls CLS.npy] [--masks MASKS.npy] [--batch N]
 *              [--precision fp32|bf16] [--threads N] [--mass 0.6]
 *
 * MODEL.onnx: a file exported with `dino-export --preprocess` (its graph takes the raw uint8
 * BGR pixels). FRAMES: raw bgr24 frames at the model's input size (its dino.img_size), one
 * after the other, or - for standard input, e.g. from
 *   ffmpeg -i clip.mp4 -vf scale=W:H -pix_fmt bgr24 -f rawvideo -
 * Writes CLS.npy, float32 (N, D): the [CLS] embeddings, and MASKS.npy, bool (N, H/p, W/p): per
 * frame the patches that hold `mass` of the last block's head-mean [CLS] attention (the
 * official mass threshold). Prints the model, the engine and the timing.
 * Exit status: 0, 1 (a bad file or a failed call: one line on stderr), 2 (bad usage), 130
 * (interrupted). Outputs appear whole or not at all. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, sigaction, fstat */

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mass_mask.h"
#include "npy_writer.h"
#include "onnx_meta.h"
#include "ov_session.h"
#include "report.h"

#define USAGE                                                                                  \
    "usage: " PROGRAM " MODEL.onnx FRAMES [--cls CLS.npy] [--masks MASKS.npy] [--batch N]\n" \
    "                  [--precision fp32|bf16] [--threads N] [--mass 0.6]\n"
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

typedef struct {
    const char *model, *frames, *cls, *masks, *precision;
    int batch, threads; /* 0: the file's batch (its opt for a dynamic one); OpenVINO's threads */
    double mass;        /* the official visualize_attention.py --threshold */
} options_t;

typedef struct {
    size_t frames, calls;
    double infer_seconds, wall_seconds;
} timing_t;

static volatile sig_atomic_t interrupted = 0;

static void on_interrupt(int signal) {
    (void)signal;
    interrupted = 1;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* -- options ------------------------------------------------------------------------------- */

static int usage_error(const char *reason, const char *value) {
    fail("%s%s (%s --help for the options)", reason, value ? value : "", PROGRAM);
    return EXIT_USAGE;
}

static int parse_int(const char *text, int low, int *out) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < low || value > INT_MAX) return -1;
    *out = (int)value;
    return 0;
}

/* 0 to run, -1 after --help, EXIT_USAGE after a one-line report. */
static int parse_args(int argc, char **argv, options_t *o) {
    *o = (options_t){.cls = "cls.npy", .masks = "masks.npy", .precision = "fp32", .mass = 0.6};
    int positional = 0;
    for (int i = 1; i < argc; ++i) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(USAGE, stdout);
            return -1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (positional == 2) return usage_error("unexpected argument ", arg);
            *(positional++ ? &o->frames : &o->model) = arg;
            continue;
        }
        if (value == NULL) return usage_error(arg, " needs a value");
        ++i;
        char *end;
        if (strcmp(arg, "--cls") == 0) {
            o->cls = value;
        } else if (strcmp(arg, "--masks") == 0) {
            o->masks = value;
        } else if (strcmp(arg, "--batch") == 0) {
            if (parse_int(value, 1, &o->batch))
                return usage_error("--batch: expected N >= 1, got ", value);
        } else if (strcmp(arg, "--threads") == 0) {
            if (parse_int(value, 1, &o->threads))
                return usage_error("--threads: expected N >= 1, got ", value);
        } else if (strcmp(arg, "--precision") == 0) {
            if (strcmp(value, "fp32") && strcmp(value, "bf16"))
                return usage_error("--precision: expected fp32 or bf16, got ", value);
            o->precision = value;
        } else if (strcmp(arg, "--mass") == 0) {
            o->mass = strtod(value, &end);
            if (end == value || *end || !(o->mass > 0.0 && o->mass <= 1.0))
                return usage_error("--mass: expected a mass fraction in (0, 1], got ", value);
        } else {
            return usage_error("unknown option ", arg);
        }
    }
    if (positional < 2) return usage_error("expected MODEL.onnx and FRAMES", NULL);
    return 0;
}

/* The frames per call: a fixed-batch file's own batch; for a dynamic one --batch within its
 * range, by default its opt (the batch it was tuned for). */
static int choose_batch(const dino_meta_t *m, int requested, int *batch) {
    char range[64];
    if (m->batch_fixed) {
        if (requested && requested != m->batch_fixed) {
            fail("--batch %d: this file has a fixed batch of %d; export one with "
                 "dino-export --dynamic-batch to choose",
                 requested, m->batch_fixed);
            return EXIT_USAGE;
        }
        *batch = m->batch_fixed;
        return 0;
    }
    *batch = requested ? requested : m->batch_opt;
    if (*batch < m->batch_min || *batch > m->batch_max) {
        snprintf(range, sizeof range, "%d..%d", m->batch_min, m->batch_max);
        fail("--batch %d: this file takes batches of %s", requested, range);
        return EXIT_USAGE;
    }
    return 0;
}

/* -- frames -------------------------------------------------------------------------------- */

/* Opens FRAMES (or standard input for "-"); a regular file must hold whole frames. */
static FILE *open_frames(const char *path, size_t frame_bytes, const dino_meta_t *m) {
    if (strcmp(path, "-") == 0) return stdin;
    FILE *file = fopen(path, "rb");
    struct stat info;
    if (file == NULL) {
        fail("%s: cannot open the frames (%s)", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(file), &info) == 0 && S_ISREG(info.st_mode) &&
        (info.st_size == 0 || (size_t)info.st_size % frame_bytes)) {
        fail("%s: %lld bytes is not a whole number of bgr24 frames %d wide and %d high (%zu "
             "bytes each); "
             "write frames at the model's size, e.g. ffmpeg -i VIDEO -vf scale=%d:%d "
             "-pix_fmt bgr24 -f rawvideo %s",
             path, (long long)info.st_size, m->width, m->height, frame_bytes, m->width,
             m->height, path);
        fclose(file);
        return NULL;
    }
    return file;
}

/* Up to max frames into buffer: how many (0 at the end), or -1 after a report. */
static long read_frames(FILE *file, const char *path, uint8_t *buffer, size_t frame_bytes,
                        size_t max) {
    size_t bytes = fread(buffer, 1, frame_bytes * max, file);
    if (interrupted) return 0; /* a signal cut the read short: the caller reports it */
    if (ferror(file)) {
        fail("%s: cannot read the frames (%s)", path, strerror(errno));
        return -1;
    }
    if (bytes % frame_bytes) {
        fail("%s: ends with a partial frame (%zu of %zu bytes)", path, bytes % frame_bytes,
             frame_bytes);
        return -1;
    }
    return (long)(bytes / frame_bytes);
}

/* -- the run ------------------------------------------------------------------------------- */

typedef struct {
    dino_session_t session;
    npy_writer_t cls, masks;
    mask_item_t *scratch; /* (H/p * W/p) items for the mask's sort */
    uint8_t *keep;        /* one frame's mask */
    FILE *frames;
} run_state_t;

/* One call's results: the n real frames' embeddings and masks appended to the outputs. */
static int write_results(run_state_t *r, const dino_meta_t *m, size_t n, double mass) {
    size_t grid = (size_t)m->grid_h * (size_t)m->grid_w, heads = (size_t)m->num_heads;
    if (npy_append(&r->cls, r->session.cls, n)) return -1;
    for (size_t i = 0; i < n; ++i) {
        mass_threshold_mask(r->session.attn + i * heads * grid, heads, grid, mass, r->scratch,
                            r->keep);
        if (npy_append(&r->masks, r->keep, 1)) return -1;
    }
    return 0;
}

/* Every frame through the model, batch by batch. */
static int process(run_state_t *r, const options_t *o, const dino_meta_t *m, timing_t *t) {
    const size_t frame_bytes = (size_t)m->height * (size_t)m->width * 3;
    const size_t batch = r->session.batch;
    /* The first call plans and allocates: a warm-up on zeros keeps that out of the timing. */
    memset(r->session.input, 0, r->session.input_bytes);
    if (dino_session_infer(&r->session)) return -1;
    double start = now();
    for (;;) {
        long n = read_frames(r->frames, o->frames, r->session.input, frame_bytes, batch);
        if (interrupted) return fail("interrupted"), EXIT_INTERRUPTED;
        if (n < 0) return -1;
        if (n == 0) break;
        /* A short last call is padded with black frames; their rows are not written. */
        memset(r->session.input + (size_t)n * frame_bytes, 0, (batch - (size_t)n) * frame_bytes);
        double t0 = now();
        if (dino_session_infer(&r->session)) return -1;
        t->infer_seconds += now() - t0;
        t->calls += 1;
        t->frames += (size_t)n;
        if (write_results(r, m, (size_t)n, o->mass)) return -1;
    }
    t->wall_seconds = now() - start;
    if (t->frames == 0) return fail("%s: no frames", o->frames);
    return 0;
}

static int open_outputs(run_state_t *r, const options_t *o, const dino_meta_t *m) {
    const size_t cls_row[1] = {(size_t)m->embed_dim};
    const size_t mask_row[2] = {(size_t)m->grid_h, (size_t)m->grid_w};
    size_t grid = mask_row[0] * mask_row[1];
    r->scratch = malloc(grid * sizeof *r->scratch);
    r->keep = malloc(grid);
    if (!r->scratch || !r->keep) return fail("out of memory");
    if (npy_open(&r->cls, o->cls, "<f4", sizeof(float), cls_row, 1) ||
        npy_open(&r->masks, o->masks, "|b1", 1, mask_row, 2))
        return -1;
    return 0;
}

static void print_summary(const run_state_t *r, const options_t *o, const dino_meta_t *m,
                          const timing_t *t) {
    const dino_session_t *s = &r->session;
    char batch[64];
    if (m->batch_fixed)
        snprintf(batch, sizeof batch, "fixed");
    else
        snprintf(batch, sizeof batch, "dynamic %d..%d", m->batch_min, m->batch_max);
    printf("model: %s/%d, input %d wide x %d high uint8 BGR, batch %zu (%s), file %s\n",
           m->arch, m->patch_size, m->width, m->height, s->batch, batch, m->precision);
    printf("engine: OpenVINO %s, %s, inference precision %s, %s threads\n", s->version, "CPU",
           s->precision, s->threads);
    printf("frames: %zu in %zu calls of batch %zu\n", t->frames, t->calls, s->batch);
    printf("inference: %.2f ms per call, %.2f frames/s (OpenVINO infer calls only, after one "
           "warm-up call)\n",
           1e3 * t->infer_seconds / (double)t->calls, (double)t->frames / t->infer_seconds);
    printf("overall: %.2f frames/s (reading, inference, masks, writing)\n",
           (double)t->frames / t->wall_seconds);
    printf("wrote: %s (%zu, %d) float32, %s (%zu, %d, %d) bool (mass %g)\n", o->cls, t->frames,
           m->embed_dim, o->masks, t->frames, m->grid_h, m->grid_w, o->mass);
}

static int run(const options_t *o) {
    dino_meta_t meta;
    run_state_t r;
    timing_t timing = {0};
    memset(&r, 0, sizeof r);
    if (dino_meta_read(o->model, &meta)) return 1;
    dino_session_options_t session = {.precision = o->precision, .threads = o->threads};
    int status = choose_batch(&meta, o->batch, &session.batch);
    if (status) return status;
    r.frames = open_frames(o->frames, (size_t)meta.height * (size_t)meta.width * 3, &meta);
    if (r.frames == NULL) return 1;
    status = 1;
    if (dino_session_open(&r.session, o->model, &meta, &session) || open_outputs(&r, o, &meta))
        goto done;
    int processed = process(&r, o, &meta, &timing);
    if (processed) {
        status = processed == EXIT_INTERRUPTED ? EXIT_INTERRUPTED : 1;
        goto done;
    }
    if (npy_commit(&r.cls) || npy_commit(&r.masks)) goto done;
    print_summary(&r, o, &meta, &timing);
    status = 0;
done:
    npy_discard(&r.cls);
    npy_discard(&r.masks);
    free(r.scratch);
    free(r.keep);
    dino_session_close(&r.session);
    if (r.frames != stdin) fclose(r.frames);
    return status;
}

int main(int argc, char **argv) {
    options_t options;
    int parsed = parse_args(argc, argv, &options);
    if (parsed) return parsed < 0 ? 0 : parsed;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_interrupt; /* checked between calls: outputs are then discarded */
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    return run(&options);
}
