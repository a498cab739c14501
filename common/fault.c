/*
 * fault.c - fault points driven by ECCL_FAULT=site:N[+][,site:N...].
 *
 * A small fixed table of armed sites; hits are counted per armed site under a mutex (fault
 * builds only, so the cost does not matter). Unarmed sites are not counted unless
 * ECCL_FAULT_COUNT=1, which counts every site (used to size allocation torture loops).
 */
#include "common/fault.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define FAULT_MAX_SITES 64

struct fault_site {
    char name[48];
    uint64_t fail_at; /* 0: not armed, count only */
    bool sticky;
    uint64_t hits;
};

static struct fault_site sites[FAULT_MAX_SITES];
static int nsites;
static int count_all;
static int loaded;
static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;

static struct fault_site *find_site(const char *name, bool create)
{
    for (int i = 0; i < nsites; i++)
        if (strcmp(sites[i].name, name) == 0)
            return &sites[i];
    if (!create || nsites == FAULT_MAX_SITES)
        return NULL;
    struct fault_site *s = &sites[nsites++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    return s;
}

static void load_locked(void)
{
    loaded = 1;
    nsites = 0;
    const char *c = getenv("ECCL_FAULT_COUNT");
    count_all = c && atoi(c) == 1;
    const char *env = getenv("ECCL_FAULT");
    if (!env || !*env)
        return;
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *end = NULL;
        unsigned long long n = strtoull(colon + 1, &end, 10);
        if (n == 0 || !end)
            continue;
        struct fault_site *s = find_site(tok, true);
        if (!s)
            continue;
        s->fail_at = n;
        s->sticky = (*end == '+');
    }
}

void eccl_fault_reset(void)
{
    pthread_mutex_lock(&fault_lock);
    load_locked();
    pthread_mutex_unlock(&fault_lock);
}

void eccl_fault_arm(const char *site, uint64_t n, bool sticky)
{
    pthread_mutex_lock(&fault_lock);
    if (!loaded)
        load_locked();
    struct fault_site *s = find_site(site, true);
    if (s) {
        s->fail_at = n;
        s->sticky = sticky;
        s->hits = 0;
    }
    pthread_mutex_unlock(&fault_lock);
}

uint64_t eccl_fault_count(const char *site)
{
    pthread_mutex_lock(&fault_lock);
    struct fault_site *s = find_site(site, false);
    uint64_t n = s ? s->hits : 0;
    pthread_mutex_unlock(&fault_lock);
    return n;
}

void eccl_fault_dump(FILE *f)
{
    pthread_mutex_lock(&fault_lock);
    for (int i = 0; i < nsites; i++)
        fprintf(f, "%s %llu\n", sites[i].name, (unsigned long long)sites[i].hits);
    pthread_mutex_unlock(&fault_lock);
}

#ifdef ECCL_FAULT_ENABLED
bool eccl_fault_hit(const char *site)
{
    bool fail = false;
    pthread_mutex_lock(&fault_lock);
    if (!loaded)
        load_locked();
    struct fault_site *s = find_site(site, count_all != 0);
    if (s) {
        s->hits++;
        if (s->fail_at && (s->hits == s->fail_at || (s->sticky && s->hits > s->fail_at)))
            fail = true;
    }
    pthread_mutex_unlock(&fault_lock);
    return fail;
}
#endif
