/* A custom node library for ovserve (and OVMS): "scales" turns one row x (1,N) FP32 into `copies` scaled rows
 * (copies,1,N) = x*1, x*2, ..., x*copies. Used with "demultiply_count": -1, every row becomes a branch of the
 * pipeline. Build: gcc -shared -fPIC -O2 -Wall -I tests/nodes -o libscales.so docs/examples/custom_node/scales.c */
#include <stdlib.h>
#include <string.h>
#include "custom_node_interface.h"

/* What initialize keeps for a node: its params, parsed once. */
struct Scales { int copies; };

int initialize(void** manager, const struct CustomNodeParam* params, int paramsCount) {
    struct Scales* state = malloc(sizeof *state);
    if (state == NULL) return 1;
    state->copies = 3;
    for (int i = 0; i < paramsCount; i++)
        if (strcmp(params[i].key, "copies") == 0) state->copies = atoi(params[i].value);
    if (state->copies < 0 || state->copies > 10000) { free(state); return 2; }  /* non-zero: the pipeline fails */
    *manager = state;
    return 0;
}

int deinitialize(void* manager) {
    free(manager);
    return 0;
}

/* Every pointer handed to the server (info arrays, dims, output arrays and data) comes back here. */
int release(void* ptr, void* manager) {
    (void)manager;
    free(ptr);
    return 0;
}

static int describe(struct CustomNodeTensorInfo** info, int* infoCount, const char* name, int dimsCount,
                    const uint64_t* dims) {
    *info = malloc(sizeof **info);
    uint64_t* copy = malloc(dimsCount * sizeof *copy);
    if (*info == NULL || copy == NULL) { free(*info); free(copy); return 1; }
    memcpy(copy, dims, dimsCount * sizeof *copy);
    (*info)[0] = (struct CustomNodeTensorInfo){.name = name, .dims = copy, .dimsCount = dimsCount, .precision = FP32};
    *infoCount = 1;
    return 0;
}

int getInputsInfo(struct CustomNodeTensorInfo** info, int* infoCount, const struct CustomNodeParam* params,
                  int paramsCount, void* manager) {
    (void)params; (void)paramsCount; (void)manager;
    const uint64_t dims[] = {1, 0};  /* 0: any size */
    return describe(info, infoCount, "x", 2, dims);
}

int getOutputsInfo(struct CustomNodeTensorInfo** info, int* infoCount, const struct CustomNodeParam* params,
                   int paramsCount, void* manager) {
    (void)params; (void)paramsCount; (void)manager;
    const uint64_t dims[] = {0, 1, 0};  /* a demultiplexer's outputs have 3 dimensions or more */
    return describe(info, infoCount, "scaled", 3, dims);
}

int execute(const struct CustomNodeTensor* inputs, int inputsCount, struct CustomNodeTensor** outputs,
            int* outputsCount, const struct CustomNodeParam* params, int paramsCount, void* manager) {
    (void)params; (void)paramsCount;
    int copies = ((struct Scales*)manager)->copies;
    if (inputsCount != 1 || inputs[0].precision != FP32 || inputs[0].dimsCount != 2 || inputs[0].dims[0] != 1)
        return 1;  /* the client sees "Custom node failed during execution" */
    uint64_t n = inputs[0].dims[1];
    const float* x = (const float*)inputs[0].data;
    struct CustomNodeTensor* out = malloc(sizeof *out);
    uint64_t* dims = malloc(3 * sizeof *dims);
    float* data = malloc(copies * n * sizeof *data + 1);
    if (out == NULL || dims == NULL || data == NULL) { free(out); free(dims); free(data); return 2; }
    for (int c = 0; c < copies; c++)
        for (uint64_t i = 0; i < n; i++) data[c * n + i] = x[i] * (float)(c + 1);
    dims[0] = copies; dims[1] = 1; dims[2] = n;
    out[0] = (struct CustomNodeTensor){
        .name = "scaled", .data = (uint8_t*)data, .dataBytes = copies * n * sizeof *data,
        .dims = dims, .dimsCount = 3, .precision = FP32};
    *outputs = out;
    *outputsCount = 1;
    return 0;
}
