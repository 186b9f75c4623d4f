#include "ov_session.h"

#include <stdio.h>
#include <string.h>

#include "report.h"

/* The plugin this example runs on. OpenVINO also offers GPU and NPU plugins; this program is
 * tested on the CPU only. */
#define DEVICE "CPU"

/* 0 when status is OK; else reports "<call> failed: <status> (<OpenVINO's message>)". */
static int ov_check(ov_status_e status, const char *call) {
    if (status == OK) return 0;
    const char *detail = ov_get_last_err_msg(); /* a copy (or NULL), freed with ov_free */
    const char *text = detail ? detail : "no message";
    int length = (int)strlen(text);
    while (length > 0 && (text[length - 1] == '\n' || text[length - 1] == ' ')) --length;
    fail("%s failed: %s (%.*s)", call, ov_get_error_info(status), length, text);
    if (detail) ov_free(detail);
    return -1;
}

/* Calls an OpenVINO C API function and checks its status under the function's own name. */
#define OV_CALL(function, ...) ov_check(function(__VA_ARGS__), #function)

/* The static dims of a port, or -1 (reported) when it is not static of rank `rank`. */
static int port_dims(const ov_output_const_port_t *port, const char *what, int64_t *dims,
                     int rank) {
    ov_partial_shape_t shape = {0};
    if (OV_CALL(ov_port_get_partial_shape, port, &shape)) return -1;
    int status = 0;
    if (ov_rank_is_dynamic(shape.rank) || shape.rank.max != rank) {
        status = fail("%s has rank %lld, expected %d", what, (long long)shape.rank.max, rank);
    } else {
        for (int i = 0; i < rank; ++i)
            dims[i] = ov_dimension_is_dynamic(shape.dims[i]) ? -1 : shape.dims[i].max;
    }
    ov_partial_shape_free(&shape);
    return status;
}

/* The graph's input: one uint8 (B, H, W, 3) tensor named images_bgr, as the metadata says. */
static int check_input(dino_session_t *s, const char *path, const dino_meta_t *meta,
                       int *dynamic_batch) {
    size_t count = 0;
    ov_output_const_port_t *port = NULL;
    char *name = NULL;
    ov_element_type_e type = DYNAMIC;
    int64_t dims[4] = {0};
    int status = -1;
    if (OV_CALL(ov_model_inputs_size, s->model, &count)) return -1;
    if (count != 1) return fail("%s: the graph has %zu inputs, expected 1", path, count);
    if (OV_CALL(ov_model_const_input_by_index, s->model, 0, &port) ||
        OV_CALL(ov_port_get_any_name, port, &name) ||
        OV_CALL(ov_port_get_element_type, port, &type) ||
        port_dims(port, "the graph's input", dims, 4))
        goto done;
    if (strcmp(name, DINO_INPUT_BGR) != 0 || type != U8 || dims[1] != meta->height ||
        dims[2] != meta->width || dims[3] != 3) {
        fail("%s: the graph's input %s is not uint8 (B, %d, %d, 3) as its metadata says; "
             "re-export it with dino-export --preprocess",
             path, name, meta->height, meta->width);
        goto done;
    }
    *dynamic_batch = dims[0] < 0;
    if (!*dynamic_batch && dims[0] != meta->batch_max) {
        fail("%s: the graph's batch is %lld, its metadata says %d", path, (long long)dims[0],
             meta->batch_max);
        goto done;
    }
    status = 0;
done:
    if (name) ov_free(name);
    if (port) ov_output_const_port_free(port);
    return status;
}

/* A dynamic-batch graph is made static at the chosen batch before compiling: the CPU plugin
 * then plans each kernel once for one shape, instead of per call. */
static int set_batch(dino_session_t *s, const dino_meta_t *meta) {
    int64_t dims[4] = {(int64_t)s->batch, meta->height, meta->width, 3};
    ov_partial_shape_t shape = {0};
    if (OV_CALL(ov_partial_shape_create_static, 4, dims, &shape)) return -1;
    int status = OV_CALL(ov_model_reshape_single_input, s->model, shape);
    ov_partial_shape_free(&shape);
    return status;
}

/* bf16 only where the CPU plugin lists it as a native capability (AVX512-BF16, AMX): elsewhere
 * it would be emulated, slower than fp32, as dino-run refuses it too. */
static int check_bf16(dino_session_t *s) {
    char *capabilities = NULL;
    if (OV_CALL(ov_core_get_property, s->core, DEVICE, ov_property_key_device_capabilities,
                &capabilities))
        return -1;
    int native = strstr(capabilities, "BF16") != NULL;
    ov_free(capabilities);
    return native ? 0
                  : fail("--precision bf16: this CPU has no native bf16 (OpenVINO lists no BF16 "
                         "capability); use --precision fp32");
}

/* The compiled model's reading of a property, for the summary. */
static int read_property(dino_session_t *s, const char *key, char *out, size_t size) {
    char *value = NULL;
    if (OV_CALL(ov_compiled_model_get_property, s->compiled, key, &value)) return -1;
    snprintf(out, size, "%s", value);
    ov_free(value);
    return 0;
}

static int compile(dino_session_t *s, const dino_session_options_t *options) {
    /* Set always: on CPUs with native bf16, OpenVINO's default inference precision is bf16,
     * which would run an fp32 file in bf16 without being asked. */
    const char *precision = strcmp(options->precision, "bf16") == 0 ? "bf16" : "f32";
    /* LATENCY: one stream, all cores on each call (this program makes one call at a time). */
    const char *mode = "LATENCY";
    int failed;
    if (options->threads > 0) {
        char threads[16];
        snprintf(threads, sizeof threads, "%d", options->threads);
        failed = OV_CALL(ov_core_compile_model, s->core, s->model, DEVICE, 6, &s->compiled,
                         ov_property_key_hint_performance_mode, mode,
                         ov_property_key_hint_inference_precision, precision,
                         ov_property_key_inference_num_threads, threads);
    } else {
        failed = OV_CALL(ov_core_compile_model, s->core, s->model, DEVICE, 4, &s->compiled,
                         ov_property_key_hint_performance_mode, mode,
                         ov_property_key_hint_inference_precision, precision);
    }
    if (failed ||
        read_property(s, ov_property_key_hint_inference_precision, s->precision,
                      sizeof s->precision) ||
        read_property(s, ov_property_key_inference_num_threads, s->threads, sizeof s->threads))
        return -1;
    return 0;
}

/* An output of the compiled model: float32, of the static shape the metadata implies. */
static int check_output(dino_session_t *s, const char *path, const char *name,
                        const int64_t *expected, int rank, size_t *bytes) {
    ov_output_const_port_t *port = NULL;
    ov_element_type_e type = DYNAMIC;
    int64_t dims[4] = {0};
    int status = -1;
    if (OV_CALL(ov_compiled_model_output_by_name, s->compiled, name, &port) ||
        OV_CALL(ov_port_get_element_type, port, &type) || port_dims(port, name, dims, rank))
        goto done;
    *bytes = sizeof(float);
    for (int i = 0; i < rank; ++i) {
        if (dims[i] != expected[i] || type != F32) {
            fail("%s: output %s does not have the float32 shape its metadata implies; "
                 "re-export it with dino-export",
                 path, name);
            goto done;
        }
        *bytes *= (size_t)dims[i];
    }
    status = 0;
done:
    if (port) ov_output_const_port_free(port);
    return status;
}

static int open_request(dino_session_t *s, const dino_meta_t *meta) {
    void *data = NULL;
    size_t bytes = 0;
    if (OV_CALL(ov_compiled_model_create_infer_request, s->compiled, &s->request) ||
        OV_CALL(ov_infer_request_get_input_tensor_by_index, s->request, 0, &s->input_tensor) ||
        OV_CALL(ov_tensor_get_byte_size, s->input_tensor, &bytes) ||
        OV_CALL(ov_tensor_data, s->input_tensor, &data))
        return -1;
    s->input_bytes = s->batch * (size_t)meta->height * (size_t)meta->width * 3;
    if (bytes != s->input_bytes)
        return fail("the input tensor has %zu bytes, expected %zu", bytes, s->input_bytes);
    s->input = data;
    return 0;
}

static int read_version(dino_session_t *s) {
    ov_version_t version = {0};
    if (OV_CALL(ov_get_openvino_version, &version)) return -1;
    snprintf(s->version, sizeof s->version, "%s", version.buildNumber);
    ov_version_free(&version);
    return 0;
}

int dino_session_open(dino_session_t *s, const char *model_path, const dino_meta_t *meta,
                      const dino_session_options_t *options) {
    int dynamic = 0;
    s->batch = (size_t)options->batch;
    if (read_version(s) || OV_CALL(ov_core_create, &s->core)) return -1;
    if (strcmp(options->precision, "bf16") == 0 && check_bf16(s)) return -1;
    if (OV_CALL(ov_core_read_model, s->core, model_path, NULL, &s->model) ||
        check_input(s, model_path, meta, &dynamic) || (dynamic && set_batch(s, meta)) ||
        compile(s, options))
        return -1;
    int64_t b = (int64_t)s->batch;
    const int64_t cls[2] = {b, meta->embed_dim};
    const int64_t attn[4] = {b, meta->num_heads, meta->grid_h, meta->grid_w};
    if (check_output(s, model_path, "cls", cls, 2, &s->cls_bytes) ||
        check_output(s, model_path, "attn", attn, 4, &s->attn_bytes))
        return -1;
    return open_request(s, meta);
}

/* The request's output tensor `name` after a call, checked against its expected size. */
static int fetch_output(dino_session_t *s, const char *name, size_t expected,
                        ov_tensor_t **tensor, const float **data) {
    void *p = NULL;
    size_t bytes = 0;
    if (*tensor) ov_tensor_free(*tensor);
    *tensor = NULL;
    if (OV_CALL(ov_infer_request_get_tensor, s->request, name, tensor) ||
        OV_CALL(ov_tensor_get_byte_size, *tensor, &bytes) || OV_CALL(ov_tensor_data, *tensor, &p))
        return -1;
    if (bytes != expected) return fail("output %s: %zu bytes, expected %zu", name, bytes, expected);
    *data = p;
    return 0;
}

int dino_session_infer(dino_session_t *s) {
    if (OV_CALL(ov_infer_request_infer, s->request)) return -1;
    if (fetch_output(s, "cls", s->cls_bytes, &s->cls_tensor, &s->cls) ||
        fetch_output(s, "attn", s->attn_bytes, &s->attn_tensor, &s->attn))
        return -1;
    return 0;
}

void dino_session_close(dino_session_t *s) {
    if (s->attn_tensor) ov_tensor_free(s->attn_tensor);
    if (s->cls_tensor) ov_tensor_free(s->cls_tensor);
    if (s->input_tensor) ov_tensor_free(s->input_tensor);
    if (s->request) ov_infer_request_free(s->request);
    if (s->compiled) ov_compiled_model_free(s->compiled);
    if (s->model) ov_model_free(s->model);
    if (s->core) ov_core_free(s->core);
    memset(s, 0, sizeof *s);
}
