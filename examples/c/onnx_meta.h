/* The dino-export metadata of an ONNX file, read from the file itself.
 *
 * dino-export writes ModelMetadata (dino_core/metadata.py) into the ONNX ModelProto's
 * metadata_props: one entry per field, key "dino.<field>", value JSON. OpenVINO's ONNX reader
 * keeps these entries in the model's rt_info (rt_info["framework"]["dino.img_size"] in Python),
 * but its C API (2026.4) has no rt_info accessor, so this reads them from the protobuf
 * directly: a walk over the ModelProto's top-level fields that seeks past the graph. */
#ifndef DINO_ONNX_META_H
#define DINO_ONNX_META_H

#define DINO_INPUT_BGR "images_bgr"          /* the --preprocess graph's input */
#define DINO_FORMAT_BGR "uint8_nhwc_bgr"     /* its dino.input_format */

typedef struct {
    char arch[65];          /* e.g. "vit_small" */
    char precision[17];     /* the file's: fp32, fp16 or int8 */
    int patch_size, embed_dim, num_heads, depth;
    int height, width;      /* dino.img_size: the input (H, W) the graph was exported for */
    int grid_h, grid_w;     /* the attention map (H/p, W/p) */
    int batch_fixed;        /* N of a fixed-batch graph; 0 for a dynamic one */
    int batch_min, batch_opt, batch_max;  /* equal to batch_fixed for a fixed graph */
} dino_meta_t;

/* Reads and checks the metadata of the --preprocess ONNX file at path. 0 on success; -1 after
 * a one-line report (not an ONNX file, not a dino-export file, a value out of range, a float
 * input graph). */
int dino_meta_read(const char *path, dino_meta_t *meta);

#endif
