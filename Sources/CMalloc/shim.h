/* glibc's allocator statistics and tuning (mallinfo2, malloc_trim, mallopt): not in Swift's Glibc module. */
#include <malloc.h>
