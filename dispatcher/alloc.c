/*
 * alloc - allocator wrappers with failure injection for tests.
 * Owns no memory itself.  Single-threaded use of the failure counter:
 * worker threads do not allocate through a failing counter in tests.
 */
#include "alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

long herold_alloc_fail_after = -1;

static int alloc_should_fail(void)
{
    if (herold_alloc_fail_after < 0)
        return 0;
    if (herold_alloc_fail_after == 0) {
        errno = ENOMEM;   /* as a real failing malloc does */
        return 1;
    }
    herold_alloc_fail_after--;
    return 0;
}

void *herold_malloc(size_t n)
{
    return alloc_should_fail() ? NULL : malloc(n ? n : 1);
}

void *herold_calloc(size_t nmemb, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *herold_realloc(void *p, size_t n)
{
    return alloc_should_fail() ? NULL : realloc(p, n ? n : 1);
}

char *herold_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = herold_malloc(len + 1);

    if (d == NULL)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *herold_strdup(const char *s)
{
    return herold_strndup(s, strlen(s));
}

void herold_free(void *p)
{
    free(p);
}

void herold_free_secret(char *s)
{
    if (s == NULL)
        return;
    /* volatile pointer so the compiler cannot drop the clearing store. */
    for (volatile char *v = s; *v != '\0'; v++)
        *v = '\0';
    free(s);
}
