/* allreduce.c - four ranks, one process each, sum a vector on host memory. */
#include <eccl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    enum { NRANKS = 4, COUNT = 1 << 20 };
    ecclUniqueId id;
    if (ecclGetUniqueId(&id) != ecclSuccess) /* rank 0's root; the children inherit the id */
        return 1;
    for (int rank = 0; rank < NRANKS; rank++) {
        if (fork() != 0)
            continue;
        static float buf[COUNT];
        for (int i = 0; i < COUNT; i++)
            buf[i] = (float)rank;
        ecclComm_t comm;
        ecclResult_t r = ecclCommInitRank(&comm, NRANKS, id, rank);
        if (r == ecclSuccess)
            r = ecclAllReduce(buf, buf, COUNT, ecclFloat, ecclSum, comm, NULL); /* in place */
        if (r != ecclSuccess) {
            fprintf(stderr, "rank %d: %s: %s\n", rank, ecclGetErrorString(r),
                    ecclGetLastError(NULL));
            _exit(1);
        }
        printf("rank %d: buf[0] = %.0f (expected %d)\n", rank, buf[0], NRANKS * (NRANKS - 1) / 2);
        ecclCommDestroy(comm);
        fflush(stdout);
        _exit(buf[COUNT - 1] == NRANKS * (NRANKS - 1) / 2 ? 0 : 1);
    }
    int status, failed = 0;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    return failed;
}
