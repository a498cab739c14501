/*
 * test_flat_move.c - kern_flat_move_off_cpu (kernels/host_flat.h), what the flat waits call when
 * the scheduler keeps ranks that wait for each other on one core: the calling thread ends up on
 * another CPU of its mask, and the mask it had is restored exactly; a thread whose mask holds
 * one CPU is left where it is. Skips where the process may use only one CPU.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/host_flat.h"

static cpu_set_t orig;

static int setup(void **state)
{
    (void)state;
    if (sched_getaffinity(0, sizeof(orig), &orig) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return sched_setaffinity(0, sizeof(orig), &orig);
}

static void test_moves_and_restores(void **state)
{
    (void)state;
    if (CPU_COUNT(&orig) < 2)
        skip();
    for (int i = 0; i < 8; i++) {
        int from = -2, to = -2;
        assert_int_equal(kern_flat_move_off_cpu(&from, &to), 1);
        assert_true(CPU_ISSET(from, &orig));
        assert_true(CPU_ISSET(to, &orig));
        assert_int_not_equal(from, to); /* read while the mask left `from` out */
        cpu_set_t now;
        assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
        assert_true(CPU_EQUAL(&now, &orig));
    }
}

static void test_one_cpu_stays(void **state)
{
    (void)state;
    int cpu = sched_getcpu();
    assert_true(cpu >= 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    int from = -2, to = -2;
    assert_int_equal(kern_flat_move_off_cpu(&from, &to), 0);
    assert_int_equal(from, cpu);
    assert_int_equal(to, cpu);
    cpu_set_t now;
    assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
    assert_true(CPU_EQUAL(&now, &one));
    assert_int_equal(sched_setaffinity(0, sizeof(orig), &orig), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moves_and_restores),
        cmocka_unit_test(test_one_cpu_stays),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
