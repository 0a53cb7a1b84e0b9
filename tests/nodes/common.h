/* Helpers shared by the test libraries: params, allocation counting (so tests can see leaks), tensor info. */
#pragma once
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "custom_node_interface.h"

static atomic_long live_allocations = 0;  /* blocks handed to ovserve and not yet released */
static atomic_long live_managers = 0;     /* initialize() calls not yet deinitialized */

long test_live_allocations(void) { return atomic_load(&live_allocations); }
long test_live_managers(void) { return atomic_load(&live_managers); }

static inline void* give(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (p) atomic_fetch_add(&live_allocations, 1);
    return p;
}

int release(void* ptr, void* manager) {
    (void)manager;
    if (ptr == NULL) return 1;
    free(ptr);
    atomic_fetch_sub(&live_allocations, 1);
    return 0;
}

static inline const char* param(const struct CustomNodeParam* params, int count, const char* key, const char* fallback) {
    for (int i = 0; i < count; i++)
        if (strcmp(params[i].key, key) == 0) return params[i].value;
    return fallback;
}

static inline int int_param(const struct CustomNodeParam* params, int count, const char* key, int fallback) {
    const char* text = param(params, count, key, NULL);
    return text ? atoi(text) : fallback;
}

int initialize(void** manager, const struct CustomNodeParam* params, int paramsCount) {
    if (int_param(params, paramsCount, "fail_initialize", 0)) return 3;
    *manager = malloc(16);  /* an opaque per-node state, as real libraries keep */
    atomic_fetch_add(&live_managers, 1);
    return 0;
}

int deinitialize(void* manager) {
    if (manager == NULL) return 1;
    free(manager);
    atomic_fetch_sub(&live_managers, 1);
    return 0;
}

static inline void set_info(struct CustomNodeTensorInfo* info, const char* name, CustomNodeTensorPrecision precision,
                     int dimsCount, const uint64_t* dims) {
    info->name = name;
    info->precision = precision;
    info->dimsCount = dimsCount;
    info->dims = (uint64_t*)give(dimsCount * sizeof(uint64_t));
    memcpy(info->dims, dims, dimsCount * sizeof(uint64_t));
}

static inline int set_output(struct CustomNodeTensor* out, const char* name, CustomNodeTensorPrecision precision,
                      size_t elementSize, int dimsCount, const uint64_t* dims) {
    uint64_t count = 1;
    for (int i = 0; i < dimsCount; i++) count *= dims[i];
    out->name = name;
    out->precision = precision;
    out->dimsCount = dimsCount;
    out->dims = (uint64_t*)give(dimsCount * sizeof(uint64_t));
    memcpy(out->dims, dims, dimsCount * sizeof(uint64_t));
    out->dataBytes = count * elementSize;
    out->data = (uint8_t*)give(out->dataBytes);
    return out->data != NULL && out->dims != NULL;
}
