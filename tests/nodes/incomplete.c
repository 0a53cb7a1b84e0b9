/* Test library without getOutputsInfo: loading it must fail with "failed to load symbol". */
#include "common.h"

int getInputsInfo(struct CustomNodeTensorInfo** info, int* infoCount, const struct CustomNodeParam* params,
                  int paramsCount, void* manager) {
    (void)info; (void)infoCount; (void)params; (void)paramsCount; (void)manager;
    return 1;
}

int execute(const struct CustomNodeTensor* inputs, int inputsCount, struct CustomNodeTensor** outputs,
            int* outputsCount, const struct CustomNodeParam* params, int paramsCount, void* manager) {
    (void)inputs; (void)inputsCount; (void)outputs; (void)outputsCount; (void)params; (void)paramsCount;
    (void)manager;
    return 1;
}
