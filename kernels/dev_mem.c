/*
 * dev_mem.c - exportable device memory (kernels/dev_mem.h): cuMem allocations shared as POSIX
 * file descriptors, or legacy CUDA IPC.
 *
 * The cuMem calls are driver API; the library links only the CUDA runtime, so their addresses
 * come from cudaGetDriverEntryPointByVersion, once per process.
 */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "kernels/dev_mem.h"

#ifdef ECCL_HAVE_CUDA

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

struct kern_dev_mem {
    enum kern_dev_mem_mode mode;
    bool imported;
    bool wrapped; /* a user's allocation (kern_dev_mem_wrap): never freed here */
    int cuda_dev;
    void *ptr;
    size_t size;
    CUmemGenericAllocationHandle handle; /* cuMem */
};

static struct {
    pthread_once_t once;
    bool ok;
    const char *missing; /* the entry point not found, when !ok */
    PFN_cuDeviceGet_v2000 device_get;
    PFN_cuDeviceGetAttribute_v2000 device_attr;
    PFN_cuGetErrorString_v6000 error_string;
    PFN_cuMemCreate_v10020 create;
    PFN_cuMemRelease_v10020 release;
    PFN_cuMemAddressReserve_v10020 reserve;
    PFN_cuMemAddressFree_v10020 address_free;
    PFN_cuMemMap_v10020 map;
    PFN_cuMemUnmap_v10020 unmap;
    PFN_cuMemSetAccess_v10020 set_access;
    PFN_cuMemGetAllocationGranularity_v10020 granularity;
    PFN_cuMemExportToShareableHandle_v10020 export_handle;
    PFN_cuMemImportFromShareableHandle_v10020 import_handle;
    PFN_cuMemGetAddressRange_v3020 address_range;
    PFN_cuPointerGetAttribute_v4000 pointer_attr;
} drv = {.once = PTHREAD_ONCE_INIT};

static bool load_one(const char *name, void **fn)
{
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t e = cudaGetDriverEntryPointByVersion(name, fn, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !*fn) {
        (void)cudaGetLastError();
        INFO(ECCL_LOG_INIT, "CUDA driver entry point %s not found: cuMem sharing is off", name);
        drv.missing = name;
        return false;
    }
    return true;
}

static void load_driver(void)
{
    drv.ok = load_one("cuDeviceGet", (void **)&drv.device_get) &&
             load_one("cuDeviceGetAttribute", (void **)&drv.device_attr) &&
             load_one("cuGetErrorString", (void **)&drv.error_string) &&
             load_one("cuMemCreate", (void **)&drv.create) &&
             load_one("cuMemRelease", (void **)&drv.release) &&
             load_one("cuMemAddressReserve", (void **)&drv.reserve) &&
             load_one("cuMemAddressFree", (void **)&drv.address_free) &&
             load_one("cuMemMap", (void **)&drv.map) &&
             load_one("cuMemUnmap", (void **)&drv.unmap) &&
             load_one("cuMemSetAccess", (void **)&drv.set_access) &&
             load_one("cuMemGetAllocationGranularity", (void **)&drv.granularity) &&
             load_one("cuMemExportToShareableHandle", (void **)&drv.export_handle) &&
             load_one("cuMemImportFromShareableHandle", (void **)&drv.import_handle) &&
             load_one("cuMemGetAddressRange", (void **)&drv.address_range) &&
             load_one("cuPointerGetAttribute", (void **)&drv.pointer_attr);
}

static bool driver(void)
{
    pthread_once(&drv.once, load_driver);
    return drv.ok;
}

/* The error of a cuMem `what` (allocation, import) on a driver without the entry points. */
static ecclResult_t driver_missing(const char *what)
{
    WARN("cuMem %s requested, but the CUDA driver lacks the entry point %s", what,
         drv.missing ? drv.missing : "(unknown)");
    return ecclUnhandledCudaError;
}

static ecclResult_t cu_fail(const char *what, CUresult r)
{
    const char *s = NULL;
    if (drv.error_string)
        drv.error_string(r, &s);
    WARN("%s failed: %s (CUresult %d)", what, s ? s : "unknown error", (int)r);
    return ecclUnhandledCudaError;
}

static ecclResult_t rt_fail(const char *what, cudaError_t e)
{
    WARN("%s failed: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    (void)cudaGetLastError();
    return ecclUnhandledCudaError;
}

/* Makes `cuda_dev` current, keeping the caller's device in *prev for cudaSetDevice after. */
static ecclResult_t device_enter(int cuda_dev, int *prev)
{
    cudaError_t e = cudaGetDevice(prev);
    if (e == cudaSuccess)
        e = cudaSetDevice(cuda_dev);
    return e == cudaSuccess ? ecclSuccess : rt_fail("cudaSetDevice", e);
}

enum kern_dev_mem_mode kern_dev_mem_pick(int cuda_dev, bool cumem)
{
    if (!cumem || !driver())
        return KERN_DEV_MEM_IPC;
    CUdevice dev;
    int supported = 0;
    if (drv.device_get(&dev, cuda_dev) != CUDA_SUCCESS ||
        drv.device_attr(&supported, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
                        dev) != CUDA_SUCCESS ||
        !supported)
        return KERN_DEV_MEM_IPC;
    return KERN_DEV_MEM_CUMEM;
}

static void cumem_prop(CUmemAllocationProp *prop, CUdevice dev)
{
    memset(prop, 0, sizeof(*prop));
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop->location.id = (int)dev;
    prop->requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
}

/* Reserves an address range for m->size bytes of m->handle, maps it, opens it to `dev`. */
static ecclResult_t cumem_map(struct kern_dev_mem *m, CUdevice dev)
{
    CUdeviceptr va = 0;
    CUresult r = drv.reserve(&va, m->size, 0, 0, 0);
    if (r != CUDA_SUCCESS)
        return cu_fail("cuMemAddressReserve", r);
    r = drv.map(va, m->size, 0, m->handle, 0);
    if (r != CUDA_SUCCESS) {
        drv.address_free(va, m->size);
        return cu_fail("cuMemMap", r);
    }
    CUmemAccessDesc access;
    memset(&access, 0, sizeof(access));
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = (int)dev;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = drv.set_access(va, m->size, &access, 1);
    if (r != CUDA_SUCCESS) {
        drv.unmap(va, m->size);
        drv.address_free(va, m->size);
        return cu_fail("cuMemSetAccess", r);
    }
    m->ptr = (void *)(uintptr_t)va;
    return ecclSuccess;
}

/* Connector memory is zeroed (the counters and LL flags start at 0); a user's is not, as cudaMalloc's
 * is not, and its allocation must not wait for the work running on the device. */
static ecclResult_t mem_create(int cuda_dev, enum kern_dev_mem_mode mode, size_t bytes, bool zero,
                               struct kern_dev_mem **out)
{
    ecclResult_t res = ecclSuccess;
    *out = NULL;
    ECCL_ARG_CHECK(bytes > 0, "device memory of 0 bytes");
    struct kern_dev_mem *m = eccl_calloc(1, sizeof(*m), "kern-dev-mem");
    if (!m)
        return ecclSystemError;
    m->mode = mode;
    m->cuda_dev = cuda_dev;
    int prev = -1;
    res = device_enter(cuda_dev, &prev);
    if (res != ecclSuccess)
        goto err_free;
    cudaError_t e = cudaSuccess;
    if (mode == KERN_DEV_MEM_CUMEM) {
        if (!driver()) {
            res = driver_missing("allocation");
            goto err_device;
        }
        CUdevice dev;
        CUresult r = drv.device_get(&dev, cuda_dev);
        if (r != CUDA_SUCCESS) {
            res = cu_fail("cuDeviceGet", r);
            goto err_device;
        }
        CUmemAllocationProp prop;
        cumem_prop(&prop, dev);
        size_t gran = 0;
        r = drv.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        if (r != CUDA_SUCCESS || gran == 0) {
            res = cu_fail("cuMemGetAllocationGranularity", r);
            goto err_device;
        }
        if (bytes > SIZE_MAX - gran) {
            WARN("device memory of %zu bytes: more than the address space holds", bytes);
            res = ecclInvalidArgument;
            goto err_device;
        }
        m->size = (bytes + gran - 1) / gran * gran;
        r = drv.create(&m->handle, m->size, &prop, 0);
        if (r != CUDA_SUCCESS) {
            res = cu_fail("cuMemCreate", r);
            goto err_device;
        }
        res = cumem_map(m, dev);
        if (res != ecclSuccess) {
            drv.release(m->handle);
            goto err_device;
        }
    } else if (mode == KERN_DEV_MEM_IPC) {
        if (bytes > SIZE_MAX - 4095) {
            WARN("device memory of %zu bytes: more than the address space holds", bytes);
            res = ecclInvalidArgument;
            goto err_device;
        }
        m->size = (bytes + 4095) & ~(size_t)4095;
        e = cudaMalloc(&m->ptr, m->size);
        if (e != cudaSuccess) {
            res = rt_fail(zero ? "cudaMalloc of connector memory" : "cudaMalloc", e);
            goto err_device;
        }
    } else {
        WARN("device connector memory: unknown sharing mode %d", (int)mode);
        res = ecclInternalError;
        goto err_device;
    }
    if (zero) {
        e = cudaMemset(m->ptr, 0, m->size);
        if (e == cudaSuccess)
            e = cudaDeviceSynchronize();
    }
    cudaSetDevice(prev);
    if (e != cudaSuccess) {
        rt_fail("cudaMemset of connector memory", e);
        kern_dev_mem_free(m);
        return ecclUnhandledCudaError;
    }
    *out = m;
    return ecclSuccess;
err_device:
    cudaSetDevice(prev);
err_free:
    eccl_free(m);
    return res;
}

ecclResult_t kern_dev_mem_create(int cuda_dev, enum kern_dev_mem_mode mode, size_t bytes,
                                 struct kern_dev_mem **out)
{
    return mem_create(cuda_dev, mode, bytes, true, out);
}

ecclResult_t kern_dev_mem_create_user(int cuda_dev, enum kern_dev_mem_mode mode, size_t bytes,
                                      struct kern_dev_mem **out)
{
    return mem_create(cuda_dev, mode, bytes, false, out);
}

ecclResult_t kern_dev_mem_free_user(struct kern_dev_mem *m)
{
    if (!m)
        return ecclSuccess;
    int prev = -1;
    ecclResult_t res = device_enter(m->cuda_dev, &prev);
    if (res == ecclSuccess) {
        cudaError_t e = cudaDeviceSynchronize();
        cudaSetDevice(prev);
        if (e != cudaSuccess)
            res = rt_fail("cudaDeviceSynchronize before freeing device memory", e);
    }
    /* A device that failed (a sticky error) frees nothing by waiting: the memory is released
     * all the same, as cudaFree does. */
    kern_dev_mem_free(m);
    return res;
}

ecclResult_t kern_dev_mem_export(const struct kern_dev_mem *m, int *fd,
                                 uint8_t ipc[KERN_DEV_IPC_BYTES])
{
    *fd = -1;
    memset(ipc, 0, KERN_DEV_IPC_BYTES);
    if (m->imported) {
        WARN("device connector memory: an imported mapping cannot be exported again");
        return ecclInternalError;
    }
    if (m->mode == KERN_DEV_MEM_CUMEM) {
        int out = -1;
        CUresult r =
            drv.export_handle(&out, m->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        if (r != CUDA_SUCCESS)
            return cu_fail("cuMemExportToShareableHandle", r);
        *fd = out;
        return ecclSuccess;
    }
    _Static_assert(sizeof(cudaIpcMemHandle_t) == KERN_DEV_IPC_BYTES, "IPC handle size");
    cudaIpcMemHandle_t h;
    cudaError_t e = cudaIpcGetMemHandle(&h, m->ptr);
    if (e != cudaSuccess)
        return rt_fail("cudaIpcGetMemHandle", e);
    memcpy(ipc, &h, KERN_DEV_IPC_BYTES);
    return ecclSuccess;
}

ecclResult_t kern_dev_mem_import(int cuda_dev, enum kern_dev_mem_mode mode, int fd,
                                 const uint8_t ipc[KERN_DEV_IPC_BYTES], size_t bytes,
                                 struct kern_dev_mem **out)
{
    ecclResult_t res = ecclSuccess;
    *out = NULL;
    struct kern_dev_mem *m = eccl_calloc(1, sizeof(*m), "kern-dev-mem");
    if (!m) {
        res = ecclSystemError;
        goto out_close;
    }
    m->mode = mode;
    m->imported = true;
    m->cuda_dev = cuda_dev;
    m->size = bytes;
    int prev = -1;
    res = device_enter(cuda_dev, &prev);
    if (res != ecclSuccess)
        goto err_free;
    cudaError_t e = cudaSuccess;
    if (mode == KERN_DEV_MEM_CUMEM) {
        if (fd < 0 || bytes == 0) {
            WARN("device connector memory: import of %zu bytes without a descriptor (%d)", bytes,
                 fd);
            res = ecclInternalError;
            goto err_device;
        }
        if (!driver()) {
            res = driver_missing("import");
            goto err_device;
        }
        CUdevice dev;
        CUresult r = drv.device_get(&dev, cuda_dev);
        if (r != CUDA_SUCCESS) {
            res = cu_fail("cuDeviceGet", r);
            goto err_device;
        }
        r = drv.import_handle(&m->handle, (void *)(uintptr_t)fd,
                              CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (r != CUDA_SUCCESS) {
            res = cu_fail("cuMemImportFromShareableHandle", r);
            goto err_device;
        }
        res = cumem_map(m, dev);
        if (res != ecclSuccess) {
            drv.release(m->handle);
            goto err_device;
        }
    } else if (mode == KERN_DEV_MEM_IPC) {
        cudaIpcMemHandle_t h;
        memcpy(&h, ipc, sizeof(h));
        e = cudaIpcOpenMemHandle(&m->ptr, h, cudaIpcMemLazyEnablePeerAccess);
        if (e != cudaSuccess) {
            res = rt_fail("cudaIpcOpenMemHandle", e);
            goto err_device;
        }
        /* The handle maps the whole allocation: it must be as large as the peer says, or the
         * kernels' bounds would let them read past it. */
        CUdeviceptr base = 0;
        size_t size = 0;
        if (driver() &&
            (drv.address_range(&base, &size, (CUdeviceptr)(uintptr_t)m->ptr) != CUDA_SUCCESS ||
             size - ((uintptr_t)m->ptr - base) < bytes)) {
            WARN("device memory: the peer's IPC handle maps %zu bytes, not the %zu it claims", size,
                 bytes);
            cudaIpcCloseMemHandle(m->ptr);
            res = ecclRemoteError;
            goto err_device;
        }
    } else {
        WARN("device connector memory: unknown sharing mode %d", (int)mode);
        res = ecclInternalError;
        goto err_device;
    }
    cudaSetDevice(prev);
    *out = m;
    goto out_close;
err_device:
    cudaSetDevice(prev);
err_free:
    eccl_free(m);
out_close:
    if (fd >= 0)
        close(fd);
    return res;
}

ecclResult_t kern_dev_mem_wrap(int cuda_dev, const void *p, size_t bytes, struct kern_dev_mem **out,
                               uint64_t *buffer_id)
{
    *out = NULL;
    *buffer_id = 0;
    if (!driver())
        return ecclInvalidUsage;
    int prev = -1;
    ECCL_TRY(device_enter(cuda_dev, &prev));
    ecclResult_t res = ecclInvalidArgument;
    CUdeviceptr base = 0;
    size_t size = 0;
    unsigned long long id = 0;
    cudaIpcMemHandle_t h;
    if (drv.address_range(&base, &size, (CUdeviceptr)(uintptr_t)p) != CUDA_SUCCESS ||
        (uintptr_t)p - base > size || bytes > size - ((uintptr_t)p - base) ||
        drv.pointer_attr(&id, CU_POINTER_ATTRIBUTE_BUFFER_ID, base) != CUDA_SUCCESS)
        goto out; /* not one device allocation */
    res = ecclInvalidUsage;
    if (cudaIpcGetMemHandle(&h, (void *)(uintptr_t)base) != cudaSuccess)
        goto out; /* not cudaMalloc memory */
    struct kern_dev_mem *m = eccl_calloc(1, sizeof(*m), "kern-dev-mem");
    if (!m) {
        res = ecclSystemError;
        goto out;
    }
    m->mode = KERN_DEV_MEM_IPC;
    m->wrapped = true;
    m->cuda_dev = cuda_dev;
    m->ptr = (void *)(uintptr_t)base;
    m->size = size;
    *out = m;
    *buffer_id = id;
    res = ecclSuccess;
out:
    (void)cudaGetLastError();
    cudaSetDevice(prev);
    return res;
}

uint64_t kern_dev_mem_buffer_id(const void *p)
{
    unsigned long long id = 0;
    if (!driver() || drv.pointer_attr(&id, CU_POINTER_ATTRIBUTE_BUFFER_ID,
                                      (CUdeviceptr)(uintptr_t)p) != CUDA_SUCCESS)
        return 0;
    return id;
}

void kern_dev_mem_free(struct kern_dev_mem *m)
{
    if (!m)
        return;
    if (m->wrapped) {
        eccl_free(m);
        return;
    }
    if (m->mode == KERN_DEV_MEM_CUMEM) {
        CUdeviceptr va = (CUdeviceptr)(uintptr_t)m->ptr;
        drv.unmap(va, m->size);
        drv.address_free(va, m->size);
        drv.release(m->handle);
    } else if (m->imported) {
        cudaIpcCloseMemHandle(m->ptr);
    } else {
        cudaFree(m->ptr);
    }
    (void)cudaGetLastError();
    eccl_free(m);
}

void *kern_dev_mem_ptr(const struct kern_dev_mem *m)
{
    return m->ptr;
}

int kern_dev_mem_device(const struct kern_dev_mem *m)
{
    struct cudaPointerAttributes a;
    if (!m || !m->ptr || cudaPointerGetAttributes(&a, m->ptr) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        return -1;
    }
    return a.type == cudaMemoryTypeDevice ? a.device : -1;
}

size_t kern_dev_mem_size(const struct kern_dev_mem *m)
{
    return m->size;
}

enum kern_dev_mem_mode kern_dev_mem_mode_of(const struct kern_dev_mem *m)
{
    return m->mode;
}

#else /* !ECCL_HAVE_CUDA */

enum kern_dev_mem_mode kern_dev_mem_pick(int cuda_dev, bool cumem)
{
    (void)cuda_dev;
    (void)cumem;
    return KERN_DEV_MEM_NONE;
}

ecclResult_t kern_dev_mem_create(int cuda_dev, enum kern_dev_mem_mode mode, size_t bytes,
                                 struct kern_dev_mem **out)
{
    (void)cuda_dev;
    (void)mode;
    (void)bytes;
    *out = NULL;
    WARN("device memory: this build of eccl has no CUDA support");
    return ecclInvalidUsage;
}

ecclResult_t kern_dev_mem_create_user(int cuda_dev, enum kern_dev_mem_mode mode, size_t bytes,
                                      struct kern_dev_mem **out)
{
    return kern_dev_mem_create(cuda_dev, mode, bytes, out);
}

ecclResult_t kern_dev_mem_free_user(struct kern_dev_mem *m)
{
    (void)m;
    return ecclSuccess;
}

ecclResult_t kern_dev_mem_export(const struct kern_dev_mem *m, int *fd,
                                 uint8_t ipc[KERN_DEV_IPC_BYTES])
{
    (void)m;
    *fd = -1;
    memset(ipc, 0, KERN_DEV_IPC_BYTES);
    return ecclInvalidUsage;
}

ecclResult_t kern_dev_mem_import(int cuda_dev, enum kern_dev_mem_mode mode, int fd,
                                 const uint8_t ipc[KERN_DEV_IPC_BYTES], size_t bytes,
                                 struct kern_dev_mem **out)
{
    (void)cuda_dev;
    (void)mode;
    (void)ipc;
    (void)bytes;
    if (fd >= 0)
        close(fd);
    *out = NULL;
    WARN("device memory: this build of eccl has no CUDA support");
    return ecclInvalidUsage;
}

void *kern_dev_mem_ptr(const struct kern_dev_mem *m)
{
    (void)m;
    return NULL;
}

int kern_dev_mem_device(const struct kern_dev_mem *m)
{
    (void)m;
    return -1;
}

size_t kern_dev_mem_size(const struct kern_dev_mem *m)
{
    (void)m;
    return 0;
}

enum kern_dev_mem_mode kern_dev_mem_mode_of(const struct kern_dev_mem *m)
{
    (void)m;
    return KERN_DEV_MEM_NONE;
}

ecclResult_t kern_dev_mem_wrap(int cuda_dev, const void *p, size_t bytes, struct kern_dev_mem **out,
                               uint64_t *buffer_id)
{
    (void)cuda_dev, (void)p, (void)bytes;
    *out = NULL;
    *buffer_id = 0;
    return ecclInvalidUsage;
}

uint64_t kern_dev_mem_buffer_id(const void *p)
{
    (void)p;
    return 0;
}

void kern_dev_mem_free(struct kern_dev_mem *m)
{
    (void)m;
}

#endif
