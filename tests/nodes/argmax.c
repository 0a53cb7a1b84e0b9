/* Test library "argmax": for gathered scores (N,1,K) gives each row's best class -> labels (N,1) I32. */
#include "common.h"

int getInputsInfo(struct CustomNodeTensorInfo** info, int* infoCount, const struct CustomNodeParam* params,
                  int paramsCount, void* manager) {
    (void)params; (void)paramsCount; (void)manager;
    *infoCount = 1;
    *info = (struct CustomNodeTensorInfo*)give(sizeof(struct CustomNodeTensorInfo));
    uint64_t dims[] = {0, 1, 0};
    set_info(&(*info)[0], "scores", FP32, 3, dims);
    return 0;
}

int getOutputsInfo(struct CustomNodeTensorInfo** info, int* infoCount, const struct CustomNodeParam* params,
                   int paramsCount, void* manager) {
    (void)params; (void)paramsCount; (void)manager;
    *infoCount = 1;
    *info = (struct CustomNodeTensorInfo*)give(sizeof(struct CustomNodeTensorInfo));
    uint64_t dims[] = {0, 1};
    set_info(&(*info)[0], "labels", I32, 2, dims);
    return 0;
}

int execute(const struct CustomNodeTensor* inputs, int inputsCount, struct CustomNodeTensor** outputs,
            int* outputsCount, const struct CustomNodeParam* params, int paramsCount, void* manager) {
    (void)params; (void)paramsCount; (void)manager;
    if (inputsCount != 1 || inputs[0].dimsCount != 3 || inputs[0].precision != FP32) return 1;
    uint64_t n = inputs[0].dims[0], k = inputs[0].dims[2];
    const float* scores = (const float*)inputs[0].data;
    *outputsCount = 1;
    *outputs = (struct CustomNodeTensor*)give(sizeof(struct CustomNodeTensor));
    uint64_t dims[] = {n, 1};
    set_output(&(*outputs)[0], "labels", I32, 4, 2, dims);
    int32_t* labels = (int32_t*)(*outputs)[0].data;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t best = 0;
        for (uint64_t j = 1; j < k; j++)
            if (scores[i * k + j] > scores[i * k + best]) best = j;
        labels[i] = (int32_t)best;
    }
    return 0;
}
