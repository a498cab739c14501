/*
 * queue.h - intrusive singly-linked FIFO queues (not thread-safe; the owner locks if needed).
 *
 * An element embeds `struct eccl_qnode`; containerof gets the element back.
 */
#ifndef ECCL_COMMON_QUEUE_H
#define ECCL_COMMON_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#define eccl_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct eccl_qnode {
    struct eccl_qnode *next;
};

struct eccl_queue {
    struct eccl_qnode *head;
    struct eccl_qnode *tail;
    size_t len;
};

static inline void eccl_queue_init(struct eccl_queue *q)
{
    q->head = q->tail = NULL;
    q->len = 0;
}

static inline bool eccl_queue_empty(const struct eccl_queue *q)
{
    return q->head == NULL;
}

static inline void eccl_queue_push(struct eccl_queue *q, struct eccl_qnode *n)
{
    n->next = NULL;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    q->len++;
}

static inline struct eccl_qnode *eccl_queue_pop(struct eccl_queue *q)
{
    struct eccl_qnode *n = q->head;
    if (!n)
        return NULL;
    q->head = n->next;
    if (!q->head)
        q->tail = NULL;
    n->next = NULL;
    q->len--;
    return n;
}

static inline struct eccl_qnode *eccl_queue_peek(const struct eccl_queue *q)
{
    return q->head;
}

/* Moves every element of `from` to the end of `to`. */
static inline void eccl_queue_splice(struct eccl_queue *to, struct eccl_queue *from)
{
    if (!from->head)
        return;
    if (to->tail)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    to->len += from->len;
    eccl_queue_init(from);
}

#endif
