/* Checks llama-sys's driver loader (llama-sys/build/cuda_driver.rs) against a real driver: the
 * driver calls ggml's CUDA backend makes (its virtual-memory pool), made through the generated
 * trampolines instead of a linked libcuda. Built and run by scripts/cuda-driver-check.sh.
 * Without a driver every call returns CUDA_ERROR_NO_DEVICE (100). */
#include <cuda.h>
#include <stdio.h>

static int failures = 0;

static CUresult check(const char *what, CUresult r) {
    const char *msg = NULL;
    if (cuGetErrorString(r, &msg) != CUDA_SUCCESS || msg == NULL) {
        msg = "(no message)";
    }
    printf("%-36s %3d %s\n", what, (int) r, msg);
    if (r != CUDA_SUCCESS) {
        failures++;
    }
    return r;
}

int main(void) {
    if (check("cuInit", cuInit(0)) != CUDA_SUCCESS) {
        return 1;
    }
    int version = 0, count = 0;
    check("cuDriverGetVersion", cuDriverGetVersion(&version));
    check("cuDeviceGetCount", cuDeviceGetCount(&count));
    printf("driver API version %d, %d device(s)\n", version, count);
    if (count < 1) {
        return 1;
    }
    CUdevice dev;
    char name[256] = {0};
    check("cuDeviceGet", cuDeviceGet(&dev, 0));
    check("cuDeviceGetName", cuDeviceGetName(name, sizeof name, dev));
    int vmm = 0;
    check("cuDeviceGetAttribute(VMM)",
          cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev));
    printf("device 0: %s, virtual memory management %s\n", name, vmm ? "supported" : "not supported");
    CUcontext ctx;
    check("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain(&ctx, dev));
    check("cuCtxSetCurrent", cuCtxSetCurrent(ctx));
    size_t free_b = 0, total_b = 0;
    check("cuMemGetInfo", cuMemGetInfo(&free_b, &total_b));
    printf("memory: %zu of %zu MiB free\n", free_b >> 20, total_b >> 20);

    /* The sequence of ggml_cuda_pool_vmm: reserve address space, create physical memory, map it,
     * grant access, write through the mapping, then undo it all. */
    CUmemAllocationProp prop = {0};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    size_t gran = 0;
    check("cuMemGetAllocationGranularity",
          cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
    size_t size = gran * 4;
    CUdeviceptr base = 0;
    CUmemGenericAllocationHandle handle;
    check("cuMemAddressReserve", cuMemAddressReserve(&base, size, 0, 0, 0));
    check("cuMemCreate", cuMemCreate(&handle, size, &prop, 0));
    check("cuMemMap", cuMemMap(base, size, 0, handle, 0));
    CUmemAccessDesc access = {0};
    access.location = prop.location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    check("cuMemSetAccess", cuMemSetAccess(base, size, &access, 1));
    unsigned char back[16] = {0};
    check("cuMemsetD8", cuMemsetD8(base, 0x5a, size));
    check("cuMemcpyDtoH", cuMemcpyDtoH(back, base + size - sizeof back, sizeof back));
    printf("read back 0x%02x (want 0x5a)\n", back[sizeof back - 1]);
    if (back[sizeof back - 1] != 0x5a) {
        failures++;
    }
    check("cuMemUnmap", cuMemUnmap(base, size));
    check("cuMemRelease", cuMemRelease(handle));
    check("cuMemAddressFree", cuMemAddressFree(base, size));
    check("cuDevicePrimaryCtxRelease", cuDevicePrimaryCtxRelease(dev));
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
    return failures ? 1 : 0;
}
