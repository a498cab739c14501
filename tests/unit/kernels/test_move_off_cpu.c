/*
 * test_move_off_cpu.c - kern_move_off_cpu (kernels/host_exec.h), what the host waits call when
 * the scheduler keeps ranks that wait for each other on one core: the calling thread ends up on
 * another CPU of its mask, and the mask it had is restored exactly; a thread whose mask holds
 * one CPU is left where it is. And kern_spread_after_wait: a thread whose waits keep yielding
 * moves once, after 64 of them, and not again within a second; a spin in between starts the
 * count again; with the watch off, nothing moves.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/host_exec.h"

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
        assert_int_equal(kern_move_off_cpu(&from, &to), 1);
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
    assert_int_equal(kern_move_off_cpu(&from, &to), 0);
    assert_int_equal(from, cpu);
    assert_int_equal(to, cpu);
    cpu_set_t now;
    assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
    assert_true(CPU_EQUAL(&now, &one));
    assert_int_equal(sched_setaffinity(0, sizeof(orig), &orig), 0);
}

static void test_spread_after_waits(void **state)
{
    (void)state;
    if (CPU_COUNT(&orig) < 2)
        skip();
    struct kern_spread off = {.on = false, .rank = 1};
    for (int i = 0; i < 200; i++)
        kern_spread_after_wait(&off, false);
    assert_int_equal(off.moved_ns, 0);
    kern_spread_after_wait(NULL, false); /* no watch: nothing to do */

    struct kern_spread s = {.on = true, .rank = 1};
    for (int i = 0; i < 63; i++)
        kern_spread_after_wait(&s, false);
    kern_spread_after_wait(&s, true); /* a spin: the count starts again */
    for (int i = 0; i < 63; i++)
        kern_spread_after_wait(&s, false);
    assert_int_equal(s.moved_ns, 0);
    kern_spread_after_wait(&s, false); /* the 64th in a row: it moves */
    assert_true(s.moved_ns != 0);
    cpu_set_t now;
    assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
    assert_true(CPU_EQUAL(&now, &orig));
    uint64_t first = s.moved_ns;
    for (int i = 0; i < 64; i++)
        kern_spread_after_wait(&s, false);
    assert_int_equal(s.moved_ns, first); /* not again within a second */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moves_and_restores),
        cmocka_unit_test(test_one_cpu_stays),
        cmocka_unit_test(test_spread_after_waits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
