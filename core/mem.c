/*
 * mem.c - ecclMemAlloc and ecclMemFree: device memory for users' buffers.
 *
 * The memory is a cuMem allocation (cuMemCreate, mapped into a reserved range, readable and
 * writable by the device that was current), exportable as a POSIX file descriptor, the kind
 * eccl's own GPU connectors use (kernels/dev_mem.h); with ECCL_CUMEM_ENABLE=0, or on a device
 * that cannot export file descriptors, it is cudaMalloc memory. Sizes are rounded up to the
 * allocation granularity (2 MiB on current GPUs for cuMem).
 *
 * Every allocation is kept in a list, so that ecclMemFree knows what it is given: a pointer that
 * did not come from ecclMemAlloc, or was freed already, is refused with an error instead of being
 * unmapped blindly. A registration (core/reg.c) holds a reference on the allocation it lies in:
 * memory freed while registered is released when the last registration of it goes, so that its
 * addresses are not reused under a registration peers may have mapped.
 */
#include <pthread.h>
#include <stddef.h>

#include "common/alloc.h"
#include "common/check.h"
#include "common/log.h"
#include "core/core_int.h"
#include "kernels/dev_mem.h"

#ifdef ECCL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

struct user_mem {
    struct user_mem *next;
    void *ptr;
    struct kern_dev_mem *mem;
    int refs; /* the user's (until ecclMemFree) and registrations'; under mem_lock */
};

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct user_mem *mem_list;

/* Takes `ptr`'s entry out of the list; NULL when it has none. */
static struct user_mem *mem_take(void *ptr)
{
    pthread_mutex_lock(&mem_lock);
    struct user_mem **pp = &mem_list;
    while (*pp && (*pp)->ptr != ptr)
        pp = &(*pp)->next;
    struct user_mem *u = *pp;
    if (u)
        *pp = u->next;
    pthread_mutex_unlock(&mem_lock);
    return u;
}

ECCL_API ecclResult_t ecclMemAlloc(void **ptr, size_t size)
{
    ECCL_ARG_CHECK(ptr != NULL, "ecclMemAlloc: ptr is NULL");
    ECCL_ARG_CHECK(size > 0, "ecclMemAlloc: size is 0");
    *ptr = NULL;
#ifdef ECCL_HAVE_CUDA
    int ndev = 0;
    int dev = -1;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev <= 0 ||
        cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        WARN("ecclMemAlloc allocates CUDA device memory, and no CUDA device is present; host "
             "communicators use ordinary host memory");
        return ecclInvalidUsage;
    }
    enum kern_dev_mem_mode mode = kern_dev_mem_pick(dev, core_cumem_enabled());
    struct user_mem *u = eccl_calloc(1, sizeof(*u), "user-mem");
    if (!u)
        return ecclSystemError;
    ecclResult_t res = kern_dev_mem_create_user(dev, mode, size, &u->mem);
    if (res != ecclSuccess) {
        WARN("ecclMemAlloc: %zu bytes on CUDA device %d (%s) could not be allocated", size, dev,
             mode == KERN_DEV_MEM_CUMEM ? "cuMem" : "cudaMalloc");
        eccl_free(u);
        return res;
    }
    u->ptr = kern_dev_mem_ptr(u->mem);
    u->refs = 1;
    pthread_mutex_lock(&mem_lock);
    u->next = mem_list;
    mem_list = u;
    pthread_mutex_unlock(&mem_lock);
    INFO(ECCL_LOG_ALLOC,
         "ecclMemAlloc: %zu bytes (%zu with the granularity) at %p on device %d, %s", size,
         kern_dev_mem_size(u->mem), u->ptr, dev,
         mode == KERN_DEV_MEM_CUMEM ? "cuMem, exportable as a file descriptor" : "cudaMalloc");
    *ptr = u->ptr;
    return ecclSuccess;
#else
    WARN("ecclMemAlloc allocates CUDA device memory, and this build of eccl has no CUDA support; "
         "host communicators use ordinary host memory");
    return ecclInvalidUsage;
#endif
}

ECCL_API ecclResult_t ecclMemFree(void *ptr)
{
    ECCL_ARG_CHECK(ptr != NULL, "ecclMemFree: ptr is NULL");
    struct user_mem *u = mem_take(ptr);
    if (!u) {
        WARN("ecclMemFree: %p did not come from ecclMemAlloc, or was freed already", ptr);
        return ecclInvalidArgument;
    }
    return core_mem_unref(u);
}

struct user_mem *core_mem_ref(const void *p, size_t size)
{
    uintptr_t a = (uintptr_t)p;
    pthread_mutex_lock(&mem_lock);
    struct user_mem *u = mem_list;
    for (; u; u = u->next) {
        uintptr_t base = (uintptr_t)u->ptr;
        size_t bytes = kern_dev_mem_size(u->mem);
        if (a >= base && a - base <= bytes && size <= bytes - (a - base))
            break;
    }
    if (u)
        u->refs++;
    pthread_mutex_unlock(&mem_lock);
    return u;
}

ecclResult_t core_mem_unref(struct user_mem *u)
{
    if (!u)
        return ecclSuccess;
    pthread_mutex_lock(&mem_lock);
    bool last = --u->refs == 0;
    pthread_mutex_unlock(&mem_lock);
    if (!last)
        return ecclSuccess;
    ecclResult_t res = kern_dev_mem_free_user(u->mem);
    eccl_free(u);
    return res;
}

struct kern_dev_mem *core_mem_dev(const struct user_mem *u)
{
    return u->mem;
}
