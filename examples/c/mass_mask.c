#include "mass_mask.h"

#include <stdlib.h>

/* Ascending by value, ties by index: the order of numpy's stable argsort. */
static int ascending(const void *a, const void *b) {
    const mask_item_t *x = a, *y = b;
    if (x->value != y->value) return x->value < y->value ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

void mass_threshold_mask(const float *attn, size_t heads, size_t n, double mass,
                         mask_item_t *scratch, uint8_t *keep) {
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double sum = 0.0;
        for (size_t h = 0; h < heads; ++h) sum += attn[h * n + i];
        scratch[i].value = sum / (double)heads;
        scratch[i].index = i;
        total += scratch[i].value;
    }
    qsort(scratch, n, sizeof *scratch, ascending);
    /* Sorted ascending, the patches after the first (1 - mass) of the total hold `mass` of it.
     * Sums in double, as the reference, so the mask does not depend on the output dtype. */
    double cumulative = 0.0;
    for (size_t i = 0; i < n; ++i) {
        cumulative += total > 0.0 ? scratch[i].value / total : 0.0;
        keep[scratch[i].index] = total > 0.0 && cumulative > 1.0 - mass;
    }
}
