#define _POSIX_C_SOURCE 200809L /* fseeko, ftello */

#include "onnx_meta.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "report.h"

/* Protobuf field numbers (onnx.proto): ModelProto.metadata_props, StringStringEntryProto. */
#define METADATA_PROPS 14
#define ENTRY_KEY 1
#define ENTRY_VALUE 2
#define MAX_ENTRY 4096 /* an entry read whole; larger ones (none of ours) are skipped */
#define MAX_VALUE 255  /* the longest value of a field read here (dino.arch: 64 characters) */

/* The limits of ModelMetadata.validate (dino_core/metadata.py). */
#define MAX_SIDE 8192
#define MAX_BATCH 4096

/* The fields read here; the first REQUIRED have no default in ModelMetadata. */
enum { ARCH, PATCH_SIZE, EMBED_DIM, NUM_HEADS, DEPTH, IMG_SIZE, INPUT_NAME, INPUT_FORMAT, BATCH,
       PRECISION, N_FIELDS };
static const char *const FIELDS[N_FIELDS] = {
    "arch", "patch_size", "embed_dim", "num_heads", "depth", "img_size", "input_name",
    "input_format", "batch", "precision"};
static const char *const DEFAULTS[N_FIELDS] = {
    [INPUT_NAME] = "\"images\"", [INPUT_FORMAT] = "\"float_nchw_rgb_normalized\"",
    [BATCH] = "\"1\"", [PRECISION] = "\"fp32\""};
#define REQUIRED (IMG_SIZE + 1)

typedef struct {
    char value[N_FIELDS][MAX_VALUE + 1]; /* the raw JSON text */
    int found[N_FIELDS];
} props_t;

/* -- protobuf ------------------------------------------------------------------------------- */

/* 1: a varint read; 0: end of file before its first byte; -1: truncated or over 64 bits. */
static int file_varint(FILE *file, uint64_t *value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        int byte = getc(file);
        if (byte == EOF) return (shift == 0 && !ferror(file)) ? 0 : -1;
        *value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return 1;
    }
    return -1;
}

static int buffer_varint(const uint8_t **p, const uint8_t *end, uint64_t *value) {
    *value = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t byte = *(*p)++;
        *value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return 0;
    }
    return -1;
}

/* One StringStringEntryProto: keeps the value of a "dino.<field>" key read here. 0, or -1 for
 * a malformed entry (reported by the caller) or a value too long (reported here, -2). */
static int parse_entry(const uint8_t *p, const uint8_t *end, props_t *props, const char *path) {
    const uint8_t *key = NULL, *value = NULL;
    uint64_t key_length = 0, value_length = 0;
    while (p < end) {
        uint64_t tag, length;
        if (buffer_varint(&p, end, &tag) || (tag & 7) != 2) return -1;
        if (buffer_varint(&p, end, &length) || length > (uint64_t)(end - p)) return -1;
        if ((tag >> 3) == ENTRY_KEY) key = p, key_length = length;
        if ((tag >> 3) == ENTRY_VALUE) value = p, value_length = length;
        p += length;
    }
    if (key == NULL || key_length <= 5 || memcmp(key, "dino.", 5) != 0) return 0;
    for (int i = 0; i < N_FIELDS; ++i) {
        if (strlen(FIELDS[i]) != key_length - 5 || memcmp(key + 5, FIELDS[i], key_length - 5))
            continue;
        if (value_length > MAX_VALUE || (value && memchr(value, 0, value_length))) {
            fail("%s: metadata dino.%s: not a JSON value of at most %d bytes", path, FIELDS[i],
                 MAX_VALUE);
            return -2;
        }
        if (value) memcpy(props->value[i], value, value_length);
        props->value[i][value_length] = '\0';
        props->found[i] = 1;
    }
    return 0;
}

/* Walks the ModelProto's top-level fields; seeks past all but metadata_props (the graph, with
 * its weights, is one length-delimited field: one seek). */
static int walk_model(FILE *file, const char *path, off_t size, props_t *props) {
    uint8_t entry[MAX_ENTRY];
    uint64_t tag, length;
    int read;
    while ((read = file_varint(file, &tag)) == 1) {
        int wire = (int)(tag & 7);
        if ((tag >> 3) == 0) break;
        if (wire == 0) {
            if (file_varint(file, &length) != 1) break;
            continue;
        }
        if (wire == 1 || wire == 5)
            length = wire == 1 ? 8 : 4;
        else if (wire != 2 || file_varint(file, &length) != 1)
            break;
        off_t here = ftello(file);
        if (here < 0 || length > (uint64_t)(size - here)) break;
        if (wire == 2 && (tag >> 3) == METADATA_PROPS && length <= MAX_ENTRY) {
            if (fread(entry, 1, (size_t)length, file) != length) break;
            int parsed = parse_entry(entry, entry + length, props, path);
            if (parsed == -2) return -1;
            if (parsed < 0) break;
        } else if (fseeko(file, (off_t)length, SEEK_CUR) != 0) {
            break;
        }
    }
    if (read == 0) return 0;
    return fail("%s: not an ONNX file (malformed protobuf near byte %lld)", path,
                (long long)ftello(file));
}

static int read_props(const char *path, props_t *props) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return fail("%s: cannot open the model (%s)", path, strerror(errno));
    struct stat info;
    int status;
    if (fstat(fileno(file), &info) != 0 || !S_ISREG(info.st_mode))
        status = fail("%s: not a model file", path);
    else
        status = walk_model(file, path, info.st_size, props);
    fclose(file);
    return status;
}

/* -- the few JSON forms dino-export writes: integers, [int, int], plain "strings" ----------- */

static const char *skip_space(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') ++s;
    return s;
}

/* Up to 9 decimal digits at *s (enough for every limit here, no overflow). */
static int read_digits(const char **s, long *out) {
    const char *p = *s;
    long value = 0;
    int count = 0;
    for (; *p >= '0' && *p <= '9'; ++p) {
        if (++count > 9) return -1;
        value = value * 10 + (*p - '0');
    }
    if (count == 0) return -1;
    *s = p;
    *out = value;
    return 0;
}

static int expect(const char **s, char c) {
    *s = skip_space(*s);
    if (**s != c) return -1;
    *s = skip_space(*s + 1);
    return 0;
}

static int json_int(const char *text, long *out) {
    const char *s = skip_space(text);
    return (read_digits(&s, out) || *skip_space(s)) ? -1 : 0;
}

static int json_int_pair(const char *text, long *a, long *b) {
    const char *s = text;
    if (expect(&s, '[') || read_digits(&s, a) || expect(&s, ',') || read_digits(&s, b) ||
        expect(&s, ']'))
        return -1;
    return *s ? -1 : 0;
}

/* A JSON string without escapes (ours are ASCII names) into out. */
static int json_string(const char *text, char *out, size_t size) {
    const char *s = skip_space(text);
    if (*s++ != '"') return -1;
    const char *end = strchr(s, '"');
    if (end == NULL || memchr(s, '\\', (size_t)(end - s)) || (size_t)(end - s) >= size ||
        *skip_space(end + 1))
        return -1;
    memcpy(out, s, (size_t)(end - s));
    out[end - s] = '\0';
    return 0;
}

/* "N" or "dynamic:MIN,OPT,MAX" (BatchSpec). */
static int parse_batch(const char *text, dino_meta_t *meta) {
    long fixed, lo, opt, hi;
    const char *s = text;
    if (strncmp(s, "dynamic:", 8) != 0) {
        if (read_digits(&s, &fixed) || *s || fixed < 1 || fixed > MAX_BATCH) return -1;
        meta->batch_fixed = meta->batch_min = meta->batch_opt = meta->batch_max = (int)fixed;
        return 0;
    }
    s += 8;
    if (read_digits(&s, &lo) || *s++ != ',' || read_digits(&s, &opt) || *s++ != ',' ||
        read_digits(&s, &hi) || *s)
        return -1;
    if (!(1 <= lo && lo <= opt && opt <= hi && hi <= MAX_BATCH)) return -1;
    meta->batch_fixed = 0;
    meta->batch_min = (int)lo, meta->batch_opt = (int)opt, meta->batch_max = (int)hi;
    return 0;
}

/* -- ModelMetadata's checks, for the fields this program uses ------------------------------- */

static int bad_value(const char *path, int field, const props_t *p, const char *expected) {
    return fail("%s: metadata dino.%s %s: expected %s; re-export the file with dino-export", path,
                FIELDS[field], p->value[field], expected);
}

static int read_int(const char *path, const props_t *p, int field, long low, long high,
                    int *out) {
    long value;
    if (json_int(p->value[field], &value) || value < low || value > high) {
        char expected[64];
        snprintf(expected, sizeof expected, "an integer in %ld..%ld", low, high);
        return bad_value(path, field, p, expected);
    }
    *out = (int)value;
    return 0;
}

static int check_required(const char *path, props_t *p) {
    char missing[256] = "";
    for (int i = 0; i < REQUIRED; ++i) {
        if (p->found[i]) continue;
        size_t used = strlen(missing);
        snprintf(missing + used, sizeof missing - used, "%sdino.%s", used ? ", " : "", FIELDS[i]);
    }
    if (missing[0])
        return fail("%s: not a dino-export model: metadata lacks %s; export it with dino-export",
                    path, missing);
    for (int i = REQUIRED; i < N_FIELDS; ++i)
        if (!p->found[i]) strcpy(p->value[i], DEFAULTS[i]);
    return 0;
}

static int check_input(const char *path, const props_t *p) {
    char format[MAX_VALUE + 1], name[MAX_VALUE + 1];
    if (json_string(p->value[INPUT_FORMAT], format, sizeof format))
        return bad_value(path, INPUT_FORMAT, p, "a JSON string");
    if (strcmp(format, DINO_FORMAT_BGR) != 0)
        return fail("%s: the graph takes %s input; %s feeds raw uint8 BGR frames: export the "
                    "model with dino-export --preprocess",
                    path, format, PROGRAM);
    if (json_string(p->value[INPUT_NAME], name, sizeof name) || strcmp(name, DINO_INPUT_BGR))
        return bad_value(path, INPUT_NAME, p, "\"" DINO_INPUT_BGR "\" (dino.input_format is "
                                              DINO_FORMAT_BGR ")");
    return 0;
}

static int check_size(const char *path, const props_t *p, dino_meta_t *m) {
    long h, w;
    if (json_int_pair(p->value[IMG_SIZE], &h, &w) || h < m->patch_size || w < m->patch_size ||
        h > MAX_SIDE || w > MAX_SIDE || h % m->patch_size || w % m->patch_size) {
        char expected[96];
        snprintf(expected, sizeof expected, "[H, W], multiples of the patch size %d up to %d",
                 m->patch_size, MAX_SIDE);
        return bad_value(path, IMG_SIZE, p, expected);
    }
    m->height = (int)h, m->width = (int)w;
    m->grid_h = m->height / m->patch_size, m->grid_w = m->width / m->patch_size;
    return 0;
}

int dino_meta_read(const char *path, dino_meta_t *meta) {
    props_t p;
    memset(&p, 0, sizeof p);
    memset(meta, 0, sizeof *meta);
    if (read_props(path, &p) || check_required(path, &p) || check_input(path, &p)) return -1;
    if (json_string(p.value[ARCH], meta->arch, sizeof meta->arch) || !meta->arch[0])
        return bad_value(path, ARCH, &p, "a string of at most 64 characters");
    if (read_int(path, &p, PATCH_SIZE, 1, 64, &meta->patch_size) ||
        read_int(path, &p, EMBED_DIM, 1, 16384, &meta->embed_dim) ||
        read_int(path, &p, NUM_HEADS, 1, 256, &meta->num_heads) ||
        read_int(path, &p, DEPTH, 1, 1000, &meta->depth) || check_size(path, &p, meta))
        return -1;
    if (meta->embed_dim % meta->num_heads)
        return bad_value(path, EMBED_DIM, &p, "a multiple of dino.num_heads");
    char batch[MAX_VALUE + 1];
    if (json_string(p.value[BATCH], batch, sizeof batch) || parse_batch(batch, meta))
        return bad_value(path, BATCH, &p, "\"N\" or \"dynamic:MIN,OPT,MAX\" within 1..4096");
    if (json_string(p.value[PRECISION], meta->precision, sizeof meta->precision) ||
        (strcmp(meta->precision, "fp32") && strcmp(meta->precision, "fp16") &&
         strcmp(meta->precision, "bf16") && strcmp(meta->precision, "int8")))
        return bad_value(path, PRECISION, &p, "one of fp32, fp16, bf16, int8");
    return 0;
}
