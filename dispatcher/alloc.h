/*
 * alloc - herold's allocator wrappers.
 *
 * Every allocation in the delivery path goes through these so that unit
 * tests can inject failures (hiredis alloc.h, beanstalkd falloc): set
 * herold_alloc_fail_after to N and the N+1-th allocation from then on
 * returns NULL.  Callers check and return -1 / NULL; they never abort on
 * allocation failure in the delivery path.
 */
#ifndef HEROLD_ALLOC_H
#define HEROLD_ALLOC_H

#include <stddef.h>

/* -1 (default): never fail.  N >= 0: allow N more allocations, then fail. */
extern long herold_alloc_fail_after;

void *herold_malloc(size_t n);
void *herold_calloc(size_t nmemb, size_t size);
void *herold_realloc(void *p, size_t n);
char *herold_strdup(const char *s);
char *herold_strndup(const char *s, size_t n);
void herold_free(void *p);

/* herold_free_secret - overwrite s with zeros, then free it. NULL is a no-op. */
void herold_free_secret(char *s);

#endif
