/* Test library "crop": cuts a crop_height x crop_width window of `image` (1,C,H,W) at every box of `boxes` (1,K,3:
 * score, y, x) whose score is above `threshold` -> crops (N,1,C,ch,cw) and their scores (N,1,1), N varying per
 * request: the outputs of a dynamic demultiplexer. Param `shift` moves boxes down (off the image, for tests); `mode`
 * breaks the contract on purpose for error tests. */
#include <stdio.h>
#include "common.h"

int getInputsInfo(struct CustomNodeTensorInfo** info, int* infoCount, const struct CustomNodeParam* params,
                  int paramsCount, void* manager) {
    (void)manager;
    if (strcmp(param(params, paramsCount, "mode", ""), "fail_metadata") == 0) return 5;
    *infoCount = 2;
    *info = (struct CustomNodeTensorInfo*)give(2 * sizeof(struct CustomNodeTensorInfo));
    uint64_t image[] = {1, 0, 0, 0}, boxes[] = {1, 0, 3};
    set_info(&(*info)[0], "image", FP32, 4, image);
    set_info(&(*info)[1], "boxes", FP32, 3, boxes);
    return 0;
}

int getOutputsInfo(struct CustomNodeTensorInfo** info, int* infoCount, const struct CustomNodeParam* params,
                   int paramsCount, void* manager) {
    (void)manager;
    uint64_t ch = int_param(params, paramsCount, "crop_height", 4), cw = int_param(params, paramsCount, "crop_width", 4);
    *infoCount = 2;
    *info = (struct CustomNodeTensorInfo*)give(2 * sizeof(struct CustomNodeTensorInfo));
    uint64_t crops[] = {0, 1, 0, ch, cw}, scores[] = {0, 1, 1};
    set_info(&(*info)[0], "crops", FP32, 5, crops);
    set_info(&(*info)[1], "scores", FP32, 3, scores);
    return 0;
}

static const struct CustomNodeTensor* input(const struct CustomNodeTensor* inputs, int count, const char* name) {
    for (int i = 0; i < count; i++)
        if (strcmp(inputs[i].name, name) == 0) return &inputs[i];
    return NULL;
}

int execute(const struct CustomNodeTensor* inputs, int inputsCount, struct CustomNodeTensor** outputs,
            int* outputsCount, const struct CustomNodeParam* params, int paramsCount, void* manager) {
    (void)manager;
    const char* mode = param(params, paramsCount, "mode", "");
    if (strcmp(mode, "fail") == 0) return 1;
    if (strcmp(mode, "null_outputs") == 0) { *outputs = NULL; *outputsCount = 2; return 0; }
    const struct CustomNodeTensor* image = input(inputs, inputsCount, "image");
    const struct CustomNodeTensor* boxes = input(inputs, inputsCount, "boxes");
    if (!image || !boxes || image->dimsCount != 4 || boxes->dimsCount != 3 || boxes->dims[2] != 3) return 2;
    uint64_t C = image->dims[1], H = image->dims[2], W = image->dims[3], K = boxes->dims[1];
    uint64_t ch = int_param(params, paramsCount, "crop_height", 4), cw = int_param(params, paramsCount, "crop_width", 4);
    float threshold = (float)atof(param(params, paramsCount, "threshold", "0.5"));
    uint64_t shift = int_param(params, paramsCount, "shift", 0);
    const float* box = (const float*)boxes->data;
    const float* pixels = (const float*)image->data;
    uint64_t n = 0;
    for (uint64_t k = 0; k < K; k++) {
        if (box[k * 3] <= threshold) continue;
        uint64_t y = (uint64_t)box[k * 3 + 1] + shift, x = (uint64_t)box[k * 3 + 2];
        if (box[k * 3 + 1] < 0 || box[k * 3 + 2] < 0 || y + ch > H || x + cw > W) return 4;  /* box off the image */
        n++;
    }
    *outputsCount = 2;
    *outputs = (struct CustomNodeTensor*)give(2 * sizeof(struct CustomNodeTensor));
    uint64_t crop_dims[] = {n, 1, C, ch, cw}, score_dims[] = {n, 1, 1};
    const char* crops_name = strcmp(mode, "no_name") == 0 ? NULL : strcmp(mode, "bad_name") == 0 ? "cr\xffps" : "crops";
    set_output(&(*outputs)[0], crops_name, FP32, 4, 5, crop_dims);
    set_output(&(*outputs)[1], "scores", FP32, 4, 3, score_dims);
    if (strcmp(mode, "bad_size") == 0) (*outputs)[0].dataBytes += 4;
    float* crops = (float*)(*outputs)[0].data;
    float* scores = (float*)(*outputs)[1].data;
    uint64_t i = 0;
    for (uint64_t k = 0; k < K; k++) {
        if (box[k * 3] <= threshold) continue;
        uint64_t y = (uint64_t)box[k * 3 + 1] + shift, x = (uint64_t)box[k * 3 + 2];
        for (uint64_t c = 0; c < C; c++)
            for (uint64_t r = 0; r < ch; r++)
                memcpy(&crops[((i * C + c) * ch + r) * cw], &pixels[(c * H + y + r) * W + x], cw * sizeof(float));
        scores[i++] = box[k * 3];
    }
    return 0;
}
