/* The official DINO attention mask (visualize_attention.py --threshold), as dino_core/masks.py:
 * of the head-mean [CLS] attention, the most-attended patches that hold `mass` of the total. */
#ifndef DINO_MASS_MASK_H
#define DINO_MASS_MASK_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double value; /* the head-mean attention of one patch */
    size_t index; /* the patch, row-major on the (H/p, W/p) grid */
} mask_item_t;

/* attn: one frame's (heads, n) float attention, n = (H/p) * (W/p); keep: n bytes, 1 for the
 * patches kept, else 0. scratch: n items, reused across frames (no allocation per frame). */
void mass_threshold_mask(const float *attn, size_t heads, size_t n, double mass,
                         mask_item_t *scratch, uint8_t *keep);

#endif
