/* An exported --preprocess ONNX file compiled by OpenVINO's C API for the CPU, at a static
 * batch: frames go into `input`, dino_session_infer fills `cls` and `attn`. Every C API call
 * is checked; a failure is reported with the call's name. */
#ifndef DINO_OV_SESSION_H
#define DINO_OV_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <openvino/c/openvino.h>

#include "onnx_meta.h"

typedef struct {
    const char *precision; /* "fp32" or "bf16": OpenVINO's inference precision on the CPU */
    int threads;           /* 0: OpenVINO's default (one per core) */
    int batch;             /* frames per call, checked against the file's dino.batch */
} dino_session_options_t;

typedef struct {
    ov_core_t *core;
    ov_model_t *model;
    ov_compiled_model_t *compiled;
    ov_infer_request_t *request;
    ov_tensor_t *input_tensor, *cls_tensor, *attn_tensor;
    uint8_t *input;          /* (batch, H, W, 3) uint8 BGR: the frames go here */
    const float *cls;        /* (batch, D) after dino_session_infer */
    const float *attn;       /* (batch, heads, H/p, W/p) after dino_session_infer */
    size_t batch, input_bytes, cls_bytes, attn_bytes;
    char version[64];        /* OpenVINO's build number */
    char precision[16];      /* the compiled model's inference precision, as OpenVINO reports it */
    char threads[16];        /* its number of threads, likewise */
} dino_session_t;

/* Reads, checks against meta, reshapes and compiles the model; s must be zeroed. 0, or -1
 * after a one-line report (free s with dino_session_close either way). */
int dino_session_open(dino_session_t *s, const char *model_path, const dino_meta_t *meta,
                      const dino_session_options_t *options);

/* Runs the frames in s->input; s->cls and s->attn point at the results until the next call. */
int dino_session_infer(dino_session_t *s);

/* Frees what open made; safe on a zeroed or partly opened session. */
void dino_session_close(dino_session_t *s);

#endif
